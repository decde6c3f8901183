"""Lineage of a served value: the definitions and artifacts that made it, as served.

A transform view output or an imputed feature depends on more than its view's version: the transform
view's spec and version, the statistics artifacts its transforms and imputations read (their numbers are
copied into the spec at ``apply``), a UDF's version and code fingerprint, and the imputation declared on
the feature views it reads. :func:`describe` records them for a compiled request once, when a logging
reader is made; the served-feature log (:mod:`skewless.servelog`) stores that record in each segment, so
:mod:`skewless.skew` can rebuild a logged value with the definitions that were served (:func:`overlay`)
and say what changed since (:func:`changes`), and :mod:`skewless.explain` can show them.

The record of one output reference, ``served_by`` (JSON)::

    {"transform_view": {"name": str, "version": int, "spec": <the transform view's registry spec>},
     "impute": {"<feature view>": {"version": int, "impute": [<stored Impute specs>]}},
     "views": {"<feature view>": <version>}}

``transform_view`` only for a transform view output; ``impute`` lists the feature views the output reads
that declare imputation; ``views`` every feature view it reads, with its version. A plain feature without
imputation has no record (None).

Example:
    >>> summary("v:x", {"impute": {"v": {"version": 2, "impute": [
    ...     {"feature": "x", "strategy": "median", "stats": 1, "value": 3.0}]}}})["imputation"]
    [{'feature': 'v:x', 'strategy': 'median', 'stats': 'v#1', 'value': 3.0, 'level': 'feature view v v2'}]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from .definitions import dtype_from_name
from .errors import UnknownFeatureError
from .refs import parse_ref
from .transforms import REQUEST, Compiled, compile_request, spec_outputs

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["Described", "describe", "served_by", "overlay", "summary", "text", "changes", "key"]


class Described(NamedTuple):
    """What a logging reader of a compiled request records: each output's reference and Arrow type, the
    version of every feature view and transform view behind them, and each output's ``served_by``."""

    refs: list[str]
    types: list[pa.DataType]
    versions: dict[str, int]
    served_by: dict[str, dict[str, Any]]


def _producer(spec: Mapping[str, Any], output: str) -> Mapping[str, Any]:
    """The transform of a transform view spec that makes ``output``."""
    for t in spec["transforms"]:
        outs = [t["output"]] if t["kind"] != "udf" else [f["name"] for f in t["outputs"]]
        if output in outs:
            return t
    raise KeyError(output)


def _inputs(t: Mapping[str, Any]) -> list[str]:
    return [t["input"]] if t["kind"] != "udf" else list(t["inputs"])


def _output_type(spec: Mapping[str, Any], output: str) -> pa.DataType:
    t = _producer(spec, output)
    if t["kind"] != "udf":
        return dtype_from_name(t["dtype"]).arrow
    return next(dtype_from_name(f["dtype"]).arrow for f in t["outputs"] if f["name"] == output)


def _record(registry: Registry, ref: str) -> tuple[dict[str, Any] | None, pa.DataType, dict[str, int]]:
    """``served_by`` of one output reference, its type, and the versions behind it."""
    view, feat = parse_ref(ref)
    tviews = registry.data.get("transform_views", {})
    if view in tviews:
        spec = tviews[view]["spec"]
        if feat not in spec_outputs(spec):
            raise UnknownFeatureError(
                f"transform view {view!r} has no output {feat!r}; it has {spec_outputs(spec)}"
            )
        version = registry.version("transform_views", view)
        versions = {view: version}
        reads = [parse_ref(i) for i in _inputs(_producer(spec, feat)) if not i.startswith(REQUEST + ":")]
        rec: dict[str, Any] = {
            "transform_view": {"name": view, "version": version, "spec": copy.deepcopy(spec)},
            "impute": {},
            "views": {},
        }
        for v, _ in reads:
            fv = registry.feature_view(v)
            versions[v] = rec["views"][v] = registry.version("feature_views", v)
            if fv.impute:
                rec["impute"][v] = {"version": versions[v], "impute": [i.to_spec() for i in fv.impute]}
        return rec, _output_type(spec, feat), versions
    fv = registry.feature_view(view)
    versions = {view: registry.version("feature_views", view)}
    imps = [i.to_spec() for i in fv.impute if i.feature == feat]
    plain = (
        {"impute": {view: {"version": versions[view], "impute": imps}}, "views": versions} if imps else None
    )
    return plain, fv.feature_dtype(feat).arrow, versions


def describe(registry: Registry, compiled: Compiled) -> Described:
    """The lineage record of every output of ``compiled``, from ``registry`` (the one it was compiled
    from)."""
    types: list[pa.DataType] = []
    versions: dict[str, int] = {}
    by: dict[str, dict[str, Any]] = {}
    for ref in compiled.refs:
        rec, t, vs = _record(registry, ref)
        types.append(t)
        versions.update(vs)
        if rec is not None:
            by[ref] = rec
    return Described(list(compiled.refs), types, versions, by)


def served_by(registry: Registry, ref: str) -> dict[str, Any] | None:
    """The record the registry would serve ``ref`` with now (None: a plain value, nothing to record)."""
    return _record(registry, ref)[0]


def output_type(registry: Registry, ref: str) -> pa.DataType:
    """The Arrow type of a ``view:feature`` or ``transform_view:output`` reference."""
    return _record(registry, ref)[1]


def needs_stage(registry: Registry, ref: str) -> bool:
    """Whether ``ref``'s value is made by the transform stage (a transform view output, or a feature
    with imputation): its rebuild runs that stage."""
    return served_by(registry, ref) is not None


def key(rec: Mapping[str, Any] | None) -> str | None:
    """A record as one canonical JSON string (None stays None): equal records, equal strings."""
    return None if rec is None else json.dumps(rec, sort_keys=True, separators=(",", ":"))


def overlay(registry: Registry, rec: Mapping[str, Any] | None) -> Registry:
    """A copy of ``registry`` (in memory, never saved) holding the served definitions of ``rec``: the
    transform view spec and the feature views' imputation as they were when the value was served."""
    if rec is None:
        return registry
    data = copy.deepcopy(registry.data)
    tv = rec.get("transform_view")
    if tv is not None:
        data.setdefault("transform_views", {})[tv["name"]] = {"version": tv["version"], "spec": tv["spec"]}
    for view, imp in rec.get("impute", {}).items():
        entry = data["feature_views"].get(view)
        if entry is not None:
            entry["spec"]["impute"] = imp["impute"]
    return type(registry)(registry.path, data)


def compile_served(registry: Registry, ref: str, rec: Mapping[str, Any] | None) -> Compiled:
    """``ref`` compiled with the definitions of ``rec`` (the current ones for None)."""
    c = compile_request(overlay(registry, rec), [ref], False)
    assert c is not None, ref
    return c


def _art(view: str, n: Any) -> str | None:
    return None if n is None else f"{view}#{n}"


def _imputation(ref: str, view: str, imp: Mapping[str, Any], level: str) -> dict[str, Any]:
    """One imputation record of ``ref`` (read from ``view``), declared at ``level``."""
    return {
        "feature": ref,
        "strategy": imp["strategy"],
        "stats": _art(view, imp["stats"]),
        "value": imp["value"],
        "level": level,
    }


def _imputations(ref: str, rec: Mapping[str, Any], inputs: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    tv: Mapping[str, Any] | None = rec.get("transform_view")
    for i in inputs:
        if i.startswith(REQUEST + ":"):
            view, feat = REQUEST, parse_ref(i)[1]
        else:
            view, feat = parse_ref(i)
        vi = rec.get("impute", {}).get(view)
        for imp in vi["impute"] if vi else []:
            if imp["feature"] == feat:
                out.append(_imputation(i, view, imp, f"feature view {view} v{vi['version']}"))
        if tv is None:
            continue
        for imp in tv["spec"]["impute"]:
            if imp["feature"] == i:
                out.append(_imputation(i, view, imp, f"transform view {tv['name']} v{tv['version']}"))
    return out


def summary(ref: str, rec: Mapping[str, Any] | None) -> dict[str, Any]:
    """What made ``ref``'s value under record ``rec``: the transform view and version, the transform
    (kind, input(s), the statistics artifact and the numbers it read, a UDF's version and fingerprint),
    the imputation of its inputs (strategy, artifact, fill value, where declared), and every artifact."""
    if rec is None:
        return {"transform_view": None, "transform": None, "imputation": [], "artifacts": []}
    view, feat = parse_ref(ref)
    tv = rec.get("transform_view")
    transform = None
    inputs = [ref]
    if tv is not None:
        t = _producer(tv["spec"], feat)
        inputs = _inputs(t)
        if t["kind"] == "udf":
            transform = {
                "kind": "udf",
                "function": t["function"],
                "version": t["version"],
                "fingerprint": t["fingerprint"],
                "inputs": inputs,
            }
        else:
            src = parse_ref(t["input"])[0]
            p = dict(t["params"])
            if t["kind"] == "zscore":
                p = {"mean": p["mean"], "stddev_samp": p["std"]}
            transform = {
                "kind": t["kind"],
                "input": t["input"],
                "stats": _art(src, t["stats"]),
                "params": p,
            }
    imps = _imputations(ref, rec, inputs)
    arts = [a for a in [transform.get("stats") if transform else None] + [i["stats"] for i in imps] if a]
    return {
        "transform_view": None if tv is None else {"name": tv["name"], "version": tv["version"]},
        "transform": transform,
        "imputation": imps,
        "artifacts": list(dict.fromkeys(arts)),
    }


def text(ref: str, rec: Mapping[str, Any] | None) -> str:
    """:func:`summary` in one line, e.g. ``tv v1: zscore(people:income) artifact people#1 {mean: 20,
    stddev_samp: 14.1}; people:income imputed by median 20.0 (people#1)``."""
    s = summary(ref, rec)
    parts = []
    t = s["transform"]
    if t is not None:
        tv = s["transform_view"]
        if t["kind"] == "udf":
            body = f"udf {t['function']} v{t['version']} ({t['fingerprint'][:15]})"
        else:
            body = f"{t['kind']}({t['input']})"
            if t["stats"]:
                body += f" artifact {t['stats']}"
            if t["params"]:
                body += (
                    " {"
                    + ", ".join(
                        f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                        for k, v in t["params"].items()
                    )
                    + "}"
                )
        parts.append(f"{tv['name']} v{tv['version']}: {body}")
    for i in s["imputation"]:
        src = f" ({i['stats']})" if i["stats"] else ""
        # `previous` has no value of its own (each row's is its last non-null one).
        value = "" if i["strategy"] == "previous" else f" {i['value']!r}"
        parts.append(f"{i['feature']} imputed by {i['strategy']}{value}{src}")
    return "; ".join(parts) if parts else "plain value"


def changes(ref: str, served: Mapping[str, Any] | None, now: Mapping[str, Any] | None) -> list[str]:
    """What differs between the definitions ``ref`` was served with and the registry's now, in words
    (empty when nothing does)."""
    if key(served) == key(now):
        return []
    a, b = summary(ref, served), summary(ref, now)
    out = []
    if a["transform_view"] != b["transform_view"]:
        out.append(f"transform view served {_tv(a)}, registry now {_tv(b)}")
    if a["transform"] != b["transform"]:
        out.append(f"transform served {a['transform']}, registry now {b['transform']}")
    if a["artifacts"] != b["artifacts"]:
        out.append(f"statistics artifacts served {a['artifacts']}, registry now {b['artifacts']}")
    if a["imputation"] != b["imputation"] and [
        {k: v for k, v in i.items() if k != "level"} for i in a["imputation"]
    ] != [{k: v for k, v in i.items() if k != "level"} for i in b["imputation"]]:
        out.append(f"imputation served {a['imputation']}, registry now {b['imputation']}")
    # The registry keeps the latest definition of a feature view only: a view that changed is rebuilt
    # with its current definition (its TTL, say), and the report says so.
    va, vb = (served or {}).get("views", {}), (now or {}).get("views", {})
    for v in sorted(set(va) | set(vb)):
        if va.get(v) != vb.get(v):
            out.append(
                f"feature view {v} served v{va.get(v)}, registry now v{vb.get(v)} (the rebuild reads it with "
                "its current definition: the registry keeps the latest one only)"
            )
    return out or [f"definitions served {text(ref, served)!r}, registry now {text(ref, now)!r}"]


def _tv(s: Mapping[str, Any]) -> str:
    tv = s["transform_view"]
    return "none" if tv is None else f"{tv['name']} v{tv['version']}"
