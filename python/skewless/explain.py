"""Explain one value: why did the model get this number?

``store.explain("view:feature", entity, at)`` rebuilds the value of one feature for one entity at one
instant the way :mod:`skewless.skew` does, and says how: the history row that produced it (with the write
that stored it: file number, row, write time), the rows of that entity around it, the TTL decision, and,
when the served-feature log holds lookups of that entity at that instant, what was served and whether it
differs from the rebuild (each logged lookup is rebuilt as known when it ran). Without ``known_at`` and
without a logged lookup, every row written so far counts. For a window feature (an event view's
aggregate) there is no single row: ``rows`` lists the entity's events inside the window (t - window, t]
(``known`` or written later), ``row`` is None, and ``ttl_decision`` describes the window.

For a transform view output or an imputed feature, the explanation also holds ``transform_view`` (name
and version), ``transform`` (kind, input, the statistics artifact and the numbers it read, e.g. a
z-score's ``mean`` and ``stddev_samp``; a UDF's version and fingerprint), ``inputs`` (each input's value
as stored at the instant, with its TTL decision and row; a ``request:<column>`` input from ``entity`` or
else from the logged lookup), ``imputation`` (strategy, artifact, fill value, where declared, and whether
it ``applied``), ``artifacts``, and ``definitions`` ("as served": those the newest logged lookup recorded,
else "as defined now"). ``value`` is what the transform stage makes of the inputs (the rebuild of
:func:`skewless.skew.rebuild_staged`); each logged lookup is rebuilt with its own definitions. Request-time
values given in ``entity`` (``{"user_id": 7, "amount": 12.0}``) also select the logged lookups shown.

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = store.apply([u, FeatureView("v", [u], [Field("x", Float64)], ttl=dt.timedelta(days=1))])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> _ = store.write("v", {"user_id": [1], "event_timestamp": pa.array([t], pa.timestamp("us", "UTC")),
    ...                       "x": [0.5]})
    >>> e = store.explain("v:x", {"user_id": 1}, t + dt.timedelta(hours=1))
    >>> e.value, e.ttl_decision.split(":")[0]
    (0.5, 'within TTL')
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import lineage
from .errors import InvalidArgumentError, MissingColumnError
from .events import aggregation
from .normalize import INT64_MAX, INT64_MIN, entity_key, instant_us
from .offline import SEQ
from .refs import parse_ref
from .servelog import KNOWN_AT, REQUEST_ID, REQUEST_PREFIX, SERVED_AT, STATUS_SUFFIX, read_log
from .skew import (
    _choose,
    _compare,
    _Histories,
    _ints,
    _iso,
    _windows,
    known_history,
    no_history,
    previous_inputs,
    rebuild_staged,
)

if TYPE_CHECKING:
    from .store import FeatureStore

__all__ = ["Explanation", "explain"]

#: Rows of the entity shown before and after the one chosen.
CONTEXT_ROWS = 5


class Explanation:
    """The answer of :meth:`FeatureStore.explain`: ``value`` (rebuilt), ``row`` (the history row that
    produced it, or None), ``rows`` (the entity's rows around it, each marked ``known`` or not at
    ``known_at``), ``ttl_decision`` (text), ``served`` (logged lookups at that instant, each with
    ``differs``); for a transform view output or an imputed feature also ``transform_view``,
    ``transform``, ``inputs``, ``imputation``, ``artifacts``, ``definitions`` and ``notes`` (see the module
    docstring). ``to_dict()`` and ``str()`` give it whole.

    Example: ``print(store.explain("user_stats:spend", {"user_id": 7}, at))``.
    """

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        for k, v in fields.items():
            setattr(self, k, v)

    value: Any
    row: dict[str, Any] | None
    rows: list[dict[str, Any]]
    ttl_decision: str
    served: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._fields)

    def __str__(self) -> str:
        f = self._fields
        lines = [
            f"{f['feature']} for {f['entity']} at {f['at']} (as known at {f['known_at']}): {f['value']!r}",
            f"  {'rule' if f['ttl_decision'].startswith('window ') else 'TTL'}: {f['ttl_decision']}",
        ]
        if f.get("transform") is not None or f.get("imputation"):
            lines += _staged_lines(f)
        if f["row"] is not None:
            r = f["row"]
            lines.append(
                f"  from history row timestamp={r['timestamp']} created={r.get('created')} "
                f"written in file {r['file']} row {r['file_row']} at {r['written_at']}"
            )
        if f["rows"] or f.get("transform") is None:
            lines.append("  rows of this entity:")
        for r in f["rows"]:
            mark = "->" if r.get("chosen") else "  "
            known = "" if r["known"] else " (written later: not known then)"
            lines.append(f"   {mark} {r['timestamp']}  {r['value']!r}{known}")
        for s in f["served"]:
            flag = "DIFFERS" if s["differs"] else "same"
            lines.append(
                f"  served {s['value']!r} (status {s['status']}, {s['source']}, "
                f"request {s['request_id']}): {flag}"
                + (f" from rebuilt {s['rebuilt']!r}" if s["differs"] else "")
            )
            if s.get("served_with"):
                lines.append(f"    served with {s['served_with']}")
            for ch in s.get("changes", []):
                lines.append(f"    changed since: {ch}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Explanation({self._fields['feature']!r}, value={self._fields['value']!r})"


def _staged_lines(f: Mapping[str, Any]) -> list[str]:
    """The transform part of an explanation, as text."""
    lines = []
    t = f["transform"]
    if t is not None:
        tv = f["transform_view"]
        what = (
            f"udf {t['function']} v{t['version']} ({t['fingerprint']})"
            if t["kind"] == "udf"
            else f"{t['kind']}({t['input']})"
            + (f" with statistics artifact {t['stats']}" if t["stats"] else "")
            + (f" {t['params']}" if t["params"] else "")
        )
        lines.append(f"  transform ({f['definitions']}): {tv['name']} v{tv['version']}: {what}")
    for i in f["inputs"]:
        lines.append(f"  input {i['input']} = {i['value']!r} ({i['decision']})")
    for i in f["imputation"]:
        src = f" from artifact {i['stats']}" if i["stats"] else ""
        done = "filled" if i["applied"] else "not needed (the input has a value)"
        lines.append(
            f"  imputation of {i['feature']}: {i['strategy']} = {i['value']!r}{src} ({i['level']}): {done}"
        )
    for n in f["notes"]:
        lines.append(f"  note: {n}")
    return lines


def _parse(x: Any) -> Any:
    """An ISO 8601 string (as the skew report writes instants) as a datetime; anything else as given."""
    if isinstance(x, str):
        try:
            return dt.datetime.fromisoformat(x.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                f"{x!r} is not an ISO 8601 instant like 2026-01-31T00:00:00+00:00"
            ) from None
    return x


def _entity_filter(table: pa.Table, keys: Mapping[str, pa.Scalar]) -> pa.Array:
    mask = pa.array(np.ones(table.num_rows, bool))
    for k, v in keys.items():
        mask = pc.and_(mask, pc.fill_null(pc.equal(table.column(k), v), False))
    return mask


def _served(served_rows: list[dict[str, Any]], rebuilt: Callable[[int], Any]) -> list[dict[str, Any]]:
    """Each logged lookup at the instant, with the value rebuilt as known at its own ``known_at`` and
    whether what was served differs from it."""
    out = []
    for s in served_rows:
        again = rebuilt(s["known_at_us"])
        differs = bool(_compare(s.pop("_col"), again, 0.0, 0.0)["mismatch"][0])
        out.append(
            {**s, "known_at": _iso(s.pop("known_at_us")), "rebuilt": again[0].as_py(), "differs": differs}
        )
    return out


def explain(
    store: FeatureStore, feature: str, entity: Mapping[str, Any], at: Any, *, known_at: Any = None
) -> Explanation:
    """:meth:`FeatureStore.explain`; see the module docstring."""
    if lineage.needs_stage(store.registry, feature):
        return _explain_staged(store, feature, entity, at, known_at)
    return _explain_value(store, feature, entity, at, known_at, True)


def _explain_value(
    store: FeatureStore, feature: str, entity: Mapping[str, Any], at: Any, known_at: Any, with_log: bool
) -> Explanation:
    """The explanation of a value as stored (no transform, no imputation); ``with_log``: with what the
    log says was served."""
    view, feat = parse_ref(feature)
    fv = store.registry.feature_view(view)
    feat = aggregation(fv, feat).name if fv.is_event_view else fv.get_field(feat).name
    if not isinstance(entity, Mapping):
        raise InvalidArgumentError(
            f"entity must be a mapping of join key to value, e.g. {{{fv.join_keys[0]!r}: 7}}"
        )
    missing = [k for k in fv.join_keys if k not in entity]
    if missing:
        raise MissingColumnError(f"entity lacks join key(s) {missing} of view {view!r}")
    t = instant_us(_parse(at), "at")
    key_types = store.registry.key_types(fv)
    keys = {
        k: entity_key(pa.chunked_array([pa.array([entity[k]])]), kt, k)[0]
        for k, kt in zip(fv.join_keys, key_types, strict=True)
    }
    # The logged lookups of this entity at this instant, each to be rebuilt as known when it ran.
    served_rows: list[dict[str, Any]] = []
    log = None
    if with_log:
        log = read_log(os.path.join(store.path, "logs"), start=t, end=t + 1, features=[feature]).get(feature)
    if log is not None and log.num_rows:
        log = log.filter(_entity_filter(log, keys))
        for i in range(log.num_rows):
            st = log.column(feature + STATUS_SUFFIX)[i].as_py()
            served_rows.append(
                {
                    "request_id": log.column(REQUEST_ID)[i].as_py(),
                    "source": log.column("source")[i].as_py(),
                    "version": log.column("version")[i].as_py(),
                    "value": log.column(feature)[i].as_py(),
                    "status": st,
                    "known_at_us": int(pc.cast(log.column(KNOWN_AT), pa.int64())[i].as_py()),
                    "_col": log.column(feature).slice(i, 1),
                }
            )
    if known_at is not None:
        k_us = instant_us(_parse(known_at), "known_at")
    elif served_rows:
        k_us = max(s["known_at_us"] for s in served_rows)
    else:
        k_us = INT64_MAX
    if fv.is_event_view:
        return _explain_window(store, fv, feature, feat, keys, t, k_us, served_rows)
    hist = known_history(store, fv, [feat], INT64_MIN, t)
    if hist is not None:
        hist = hist.filter(_entity_filter(hist, keys))
    keys_tbl = pa.table({k: pa.array([v.as_py()], v.type) for k, v in keys.items()})

    def pick(known_us: int) -> int:
        if hist is None or hist.num_rows == 0:
            return -1
        return int(_choose(fv, hist, keys_tbl, np.array([t], np.int64), np.array([known_us], np.int64))[0])

    chosen = pick(k_us)
    row = None
    rows: list[dict[str, Any]] = []
    ttl = fv.ttl_us
    value = None
    if hist is not None and hist.num_rows:
        ts = pc.cast(hist.column(fv.timestamp_field), pa.int64()).to_numpy()
        kn = hist.column("__known__").to_numpy()
        order = np.lexsort((pc.cast(hist.column(SEQ), pa.int64()).to_numpy(), ts))
        pos = int(np.nonzero(order == chosen)[0][0]) if chosen >= 0 else len(order)
        for j in order[max(0, pos - CONTEXT_ROWS) : pos + CONTEXT_ROWS + 1].tolist():
            rows.append(_row(fv, hist, j, feat, kn[j] <= k_us, j == chosen))
        if chosen >= 0:
            row = _row(fv, hist, chosen, feat, True, True)
            value = row["value"]
        newest = [j for j in order.tolist() if kn[j] <= k_us and ts[j] <= t]
    else:
        newest = []
    if ttl is None:
        decision = "no TTL: " + (
            "the newest known row at or before the instant"
            if chosen >= 0
            else "no known row at or before the instant"
        )
    elif chosen >= 0:
        age = t - int(row["timestamp_us"])  # type: ignore[index]
        decision = f"within TTL: the row is {dt.timedelta(microseconds=age)} old, TTL {fv.ttl}"
    elif newest:
        assert hist is not None
        last = int(pc.cast(hist.column(fv.timestamp_field), pa.int64())[newest[-1]].as_py())
        decision = f"expired: the newest known row is {dt.timedelta(microseconds=t - last)} old, TTL {fv.ttl}"
    else:
        decision = "no known row at or before the instant"

    def rebuilt(known_at: int) -> pa.Array:
        own = pick(known_at)
        return (
            hist.column(feat).take(pa.array([own], pa.int64(), mask=np.array([own < 0])))
            if hist is not None and hist.num_rows
            else pa.nulls(1, fv.get_field(feat).dtype.arrow)
        )

    served = _served(served_rows, rebuilt)
    return Explanation(
        feature=feature,
        entity={k: v.as_py() for k, v in keys.items()},
        at=_iso(t),
        known_at="everything written so far" if k_us == INT64_MAX else _iso(k_us),
        value=value,
        row=row,
        rows=rows,
        ttl_decision=decision,
        served=served,
    )


#: Events of a window listed at most (the latest ones), with the full count beside them.
WINDOW_ROWS = 200


def _explain_window(
    store: FeatureStore,
    fv: Any,
    feature: str,
    feat: str,
    keys: Mapping[str, pa.Scalar],
    t: int,
    k_us: int,
    served_rows: list[dict[str, Any]],
) -> Explanation:
    """:func:`explain` for a window feature: the events inside the window, each known or not."""
    agg = aggregation(fv, feat)
    hist = known_history(store, fv, [feat], t, t)
    if hist is None:
        hist = no_history(store, fv, [feat])
    hist = hist.filter(_entity_filter(hist, keys))
    keys_tbl = pa.table({k: pa.array([v.as_py()], v.type) for k, v in keys.items()})

    def value(known_us: int) -> pa.ChunkedArray:
        return _windows(fv, [feat], hist, keys_tbl, np.array([t], np.int64), np.array([known_us], np.int64))[
            0
        ]

    ts = _ints(hist.column(fv.timestamp_field))
    kn = _ints(hist.column("__known__"))
    inside = np.nonzero((ts <= t) & (ts > t - agg.window_us))[0]
    inside = inside[np.lexsort((_ints(hist.column(SEQ))[inside], ts[inside]))]
    known = int((kn[inside] <= k_us).sum())
    rows = [
        _row(fv, hist, j, agg.column, kn[j] <= k_us, kn[j] <= k_us) for j in inside[-WINDOW_ROWS:].tolist()
    ]
    decision = (
        f"window {agg.function}({agg.column}) over {agg.window}, ({_iso(t - agg.window_us)}, {_iso(t)}]: "
        f"{inside.size} event(s) inside, {known} known then"
        + (f"; the latest {WINDOW_ROWS} listed" if inside.size > WINDOW_ROWS else "")
    )
    served = _served(served_rows, value)
    return Explanation(
        feature=feature,
        entity={k: v.as_py() for k, v in keys.items()},
        at=_iso(t),
        known_at="everything written so far" if k_us == INT64_MAX else _iso(k_us),
        value=value(k_us)[0].as_py(),
        row=None,
        rows=rows,
        ttl_decision=decision,
        served=served,
    )


def _row(fv: Any, hist: pa.Table, j: int, feat: str, known: bool, chosen: bool) -> dict[str, Any]:
    seq = int(hist.column(SEQ)[j].as_py())
    ts_us = int(pc.cast(hist.column(fv.timestamp_field), pa.int64())[j].as_py())
    kn = int(hist.column("__known__")[j].as_py())
    out = {
        "timestamp": _iso(ts_us),
        "timestamp_us": ts_us,
        "value": hist.column(feat)[j].as_py(),
        "file": seq >> 32,
        "file_row": seq & 0xFFFFFFFF,
        "written_at": None if kn == INT64_MIN else _iso(kn),
        "known": bool(known),
        "chosen": bool(chosen),
    }
    if fv.created_timestamp_field:
        c = hist.column(fv.created_timestamp_field)[j].as_py()
        out["created"] = None if c is None else c.isoformat()
    return out


def _explain_staged(
    store: FeatureStore, feature: str, entity: Mapping[str, Any], at: Any, known_at: Any
) -> Explanation:
    """:func:`explain` for a transform view output or an imputed feature: the definitions applied (transform,
    its statistics artifact and the numbers it read, the imputation), each input explained as stored, the
    value the transform stage makes of them, and each logged lookup rebuilt with its own definitions."""
    reg = store.registry
    now = lineage.served_by(reg, feature)
    if not isinstance(entity, Mapping):
        raise InvalidArgumentError("entity must be a mapping of join key (and request-time column) to value")
    key_types: dict[str, pa.DataType | None] = {}
    for fv, _ in lineage.compile_served(reg, feature, now).plan:
        key_types.update(zip(fv.join_keys, reg.key_types(fv), strict=True))
    missing = [k for k in key_types if k not in entity]
    if missing:
        raise MissingColumnError(f"entity lacks join key(s) {missing} of the views {feature!r} reads")
    t = instant_us(_parse(at), "at")
    keys = {k: entity_key(pa.chunked_array([pa.array([entity[k]])]), kt, k)[0] for k, kt in key_types.items()}
    found = read_log(os.path.join(store.path, "logs"), start=t, end=t + 1, features=[feature]).get(feature)
    log: pa.Table = pa.table({}) if found is None else found
    if log.num_rows:
        # The logged lookups of this entity, and of the request-time values given with it, if any.
        match = {k: v for k, v in keys.items() if k in log.column_names}
        for name in entity:
            col = REQUEST_PREFIX + name
            if name not in keys and col in log.column_names and entity[name] is not None:
                match[col] = pa.scalar(entity[name])
        log = log.filter(_entity_filter(log, match))
    logged = log.num_rows > 0
    if known_at is not None:
        k_us = instant_us(_parse(known_at), "known_at")
    elif logged:
        k_us = int(pc.max(pc.cast(log.column(KNOWN_AT), pa.int64())).as_py())
    else:
        k_us = INT64_MAX
    # The definitions explained: those of the newest logged lookup when it recorded them, else the
    # registry's.
    rec, defs = now, "as defined now"
    recorded = [k for k in log.column("served_by").to_pylist() if k is not None] if logged else []
    if recorded:
        rec, defs = json.loads(recorded[-1]), "as served"
    c = lineage.compile_served(reg, feature, rec)
    s = lineage.summary(feature, rec)
    request: dict[str, Any] = {}
    for name in c.request_columns:
        col = REQUEST_PREFIX + name
        if name in entity:
            request[col] = pa.array([entity[name]])
        elif logged and col in log.column_names:
            request[col] = log.column(col).slice(log.num_rows - 1, 1)
        else:
            request[col] = pa.nulls(1)
    one = pa.table(
        {
            **{k: pa.array([v.as_py()], v.type) for k, v in keys.items()},
            SERVED_AT: pa.array([t], pa.int64()),
            KNOWN_AT: pa.array([k_us], pa.int64()),
            **request,
        }
    )
    hists = _Histories(store, t, t)
    value_col, _, notes = rebuild_staged(store, feature, one, rec, hists)
    # Each input of the transform (or the imputed feature itself), as stored at the instant.
    t_spec = s["transform"]
    refs_in = [feature] if t_spec is None else ([t_spec["input"]] if "input" in t_spec else t_spec["inputs"])
    inputs: list[dict[str, Any]] = []
    raw: Explanation | None = None
    for r in refs_in:
        if r.startswith(REQUEST_PREFIX):
            v = request[r][0].as_py()
            inputs.append({"input": r, "value": v, "decision": "request-time value", "row": None})
            continue
        fv = reg.feature_view(parse_ref(r)[0])
        e = _explain_value(
            store,
            r,
            {k: entity[k] for k in fv.join_keys},
            t,
            None if k_us == INT64_MAX else k_us,
            False,
        )
        raw = raw or e
        inputs.append({"input": r, "value": e.value, "decision": e.ttl_decision, "row": e.row})
    missing_in = {i["input"] for i in inputs if i["value"] is None}
    # A `previous` fill has no value of its own: it is the feature's last non-null value as known then.
    previous = [f"{fv.name}:{f}" for fv, f in c.previous]
    filled = dict(zip(previous, previous_inputs(store, c, one, hists), strict=True))
    imputation = [
        {
            **i,
            "applied": i["feature"] in missing_in,
            **({"value": filled[i["feature"]][0].as_py()} if i["strategy"] == "previous" else {}),
        }
        for i in s["imputation"]
    ]
    # Each logged lookup, rebuilt with the definitions it was served with, as known when it ran.
    served = []
    for i in range(log.num_rows):
        row = log.slice(i, 1)
        k = row.column("served_by")[0].as_py()
        own = now if k is None else json.loads(k)
        again, _, _ = rebuild_staged(store, feature, row, own, hists)
        served.append(
            {
                "request_id": row.column(REQUEST_ID)[0].as_py(),
                "source": row.column("source")[0].as_py(),
                "version": row.column("version")[0].as_py(),
                "value": row.column(feature)[0].as_py(),
                "status": row.column(feature + STATUS_SUFFIX)[0].as_py(),
                "known_at": _iso(int(pc.cast(row.column(KNOWN_AT), pa.int64())[0].as_py())),
                "rebuilt": again[0].as_py(),
                "differs": bool(_compare(row.column(feature), again, 0.0, 0.0)["mismatch"][0]),
                "served_with": lineage.text(feature, own) + ("" if k is not None else " (not recorded)"),
                "changes": [] if k is None else lineage.changes(feature, own, now),
            }
        )
    plain = t_spec is None and raw is not None
    return Explanation(
        feature=feature,
        entity={k: v.as_py() for k, v in keys.items()},
        at=_iso(t),
        known_at="everything written so far" if k_us == INT64_MAX else _iso(k_us),
        value=value_col[0].as_py(),
        row=raw.row if plain and raw is not None else None,
        rows=raw.rows if plain and raw is not None else [],
        ttl_decision="; ".join(f"{i['input']}: {i['decision']}" for i in inputs),
        served=served,
        definitions=defs,
        transform_view=s["transform_view"],
        transform=t_spec,
        inputs=inputs,
        imputation=imputation,
        artifacts=s["artifacts"],
        notes=notes,
    )
