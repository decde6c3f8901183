"""The registry: every definition of a store, versioned, in one JSON file ``<store>/registry.json``.

File format, version 1 (the one place it is described)::

    {
      "format": "skewless-registry",
      "version": 1,
      "entities":         {"<name>": {"version": <int >= 1>, "spec": <Entity.to_spec()>}},
      "feature_views":    {"<name>": {"version": <int >= 1>, "spec": <FeatureView.to_spec()>}},
      "feature_services": {"<name>": {"version": <int >= 1>, "spec": <FeatureService.to_spec()>}},
      "transform_views":  {"<name>": {"version": <int >= 1>, "spec": <see skewless.transforms>}},
      "state": {
        "key_dtypes":   {"<entity>": ["Int64", ...]},   # key dtypes fixed by the first write, per join key
        "materialized": {"<view>": <int, UTC microseconds>}  # end of the last materialize_incremental
      },
      "statistics": {"<view>": {"<n>": {               # statistics artifacts, numbered 1, 2, ... per view
        "version": <n>, "view_version": <int>, "created_at_us": <int>,
        "start_us": <int or null>, "end_us": <int or null>, "rows": <int>,
        "features": {"<feature>": {"count": ..., "null_count": ..., ...}}   # see statistics.py
      }}}
    }

``transform_views`` is optional like ``statistics``; a feature view's spec has an ``impute`` list only
when it declares imputation (``[{"feature", "strategy", "stats", "value"}]``, the value read from the
artifact at apply, or null for ``previous``, see :mod:`skewless.imputation`).
A feature view's spec has ``"aggregations": [{"column", "function", "window_us", "name"}, ...]`` when it
is an event view (``skewless.events``), and no such key otherwise (so plain views read as before).
``statistics`` is optional (a registry written before artifacts existed has none); an artifact, once
written, is never changed or renumbered. Non-finite numbers in it are written as JSON's NaN/Infinity.

Dtypes are written as ``Int64``, ``Float32``, ``Array(Float32,8)`` ...; a TTL as whole microseconds
(``ttl_us``, null for none). A definition's ``version`` starts at 1 and grows by one each time ``apply``
changes its spec; applying an identical definition keeps it. The file is replaced atomically (temp file,
fsync, rename, fsync of the folder), so a reader sees the old registry or the new one, never a mix.

Example:
    >>> import tempfile, os
    >>> from skewless.registry import Registry
    >>> d = tempfile.mkdtemp()
    >>> r = Registry.create(os.path.join(d, "registry.json"))
    >>> r.data["version"]
    1
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import pyarrow as pa

from ._fs import atomic_write
from .definitions import Entity, FeatureService, FeatureView, _check_name, dtype_from_name
from .errors import (
    IncompatibleChangeError,
    InvalidArgumentError,
    RegistryError,
    SkewlessError,
    UnknownFeatureError,
)
from .events import check_aggregations
from .transforms import TransformView, resolve_transform_view, resolve_view_spec

T = TypeVar("T")

__all__ = ["Registry", "FORMAT", "VERSION"]

FORMAT = "skewless-registry"
VERSION = 1

Definition = Entity | FeatureView | FeatureService | TransformView


def _empty() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "entities": {},
        "feature_views": {},
        "feature_services": {},
        "state": {"key_dtypes": {}, "materialized": {}},
        "statistics": {},
        "transform_views": {},
    }


def _check_names(path: str, data: dict[str, Any]) -> None:
    """Every definition is filed under its own, valid name; state refers to valid names only.

    Names become folder names (``offline/<view>``): a hand-edited or crafted file must not lead the store
    to touch paths outside its folder, so a key like ``"../x"`` is refused here, before any use.
    """

    def bad(what: str) -> RegistryError:
        return RegistryError(
            f"{path} is malformed: {what}; restore registry.json or apply the definitions again"
        )

    for kind in ("entities", "feature_views", "feature_services", "transform_views"):
        section = data.get(kind)
        if not isinstance(section, dict):
            raise bad(f"{kind!r} is not an object")
        for name, entry in section.items():
            try:
                _check_name(name, kind[:-1].replace("_", " "))
            except InvalidArgumentError as e:
                raise bad(str(e)) from None
            spec = entry.get("spec") if isinstance(entry, dict) else None
            if not isinstance(spec, dict) or spec.get("name") != name:
                raise bad(f"the {kind[:-1].replace('_', ' ')} filed under {name!r} is not named {name!r}")
    state = data.get("state")
    if not isinstance(state, dict) or not all(
        isinstance(state.get(k), dict) for k in ("key_dtypes", "materialized")
    ):
        raise bad('"state" lacks its "key_dtypes" and "materialized" objects')
    for k in ("key_dtypes", "materialized"):
        for name in state[k]:
            try:
                _check_name(name, f"state {k!r} entry")
            except InvalidArgumentError as e:
                raise bad(str(e)) from None
    for name, types in state["key_dtypes"].items():
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise bad(f"the key dtypes recorded for {name!r} are not a list of dtype names")
    for name, until in state["materialized"].items():
        if not isinstance(until, int) or isinstance(until, bool) or not -(1 << 63) <= until < 1 << 63:
            raise bad(f"the materialized instant recorded for {name!r} is not 64-bit microseconds")


class Registry:
    """The parsed registry file. Mutations go through :meth:`apply` / :meth:`update_state` and are saved
    atomically; a failed validation leaves the file and this object unchanged."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._cache: dict[str, FeatureView] = {}

    @classmethod
    def create(cls, path: str) -> Registry:
        r = cls(path, _empty())
        r.save()
        return r

    @classmethod
    def load(cls, path: str) -> Registry:
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            raise RegistryError(
                f"no registry at {path}; run `skewless init` or FeatureStore(path) first"
            ) from None
        except (OSError, ValueError) as e:
            raise RegistryError(f"cannot read the registry {path}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RegistryError(f'{path} is not a skewless registry (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise RegistryError(
                f"{path} has registry format version {data.get('version')}; this skewless reads version "
                f"{VERSION}: upgrade skewless"
            )
        data.setdefault("transform_views", {})
        _check_names(path, data)
        data.setdefault("statistics", {})
        return cls(path, data)

    def save(self) -> None:
        data = json.dumps(self.data, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self.path, lambda f: f.write(data), overwrite=True)
        self._cache.clear()

    # ---- reading -------------------------------------------------------------------------------------

    def _spec(self, kind: str, name: str, what: str, hint: str = "") -> dict[str, Any]:
        _check_name_type(name, what)
        try:
            spec: dict[str, Any] = self.data[kind][name]["spec"]
        except KeyError:
            raise UnknownFeatureError(
                f"no {what} {name!r} in the registry; known: {sorted(self.data[kind])}{hint}"
            ) from None
        return spec

    @staticmethod
    def _build(build: Callable[[], T], what: str, name: str) -> T:
        """Runs ``build`` (a ``from_spec``), turning a malformed entry into a RegistryError."""
        try:
            return build()
        except SkewlessError:
            raise
        except (LookupError, TypeError, ValueError, ArithmeticError, AttributeError) as e:
            raise RegistryError(
                f"the registry's {what} {name!r} is malformed ({e!r}); restore registry.json or apply the "
                "definition again"
            ) from None

    def entity(self, name: str) -> Entity:
        spec = self._spec("entities", name, "entity")
        return self._build(lambda: Entity.from_spec(spec), "entity", name)

    def feature_view(self, name: str) -> FeatureView:
        _check_name_type(name, "feature view")
        fv = self._cache.get(name)
        if fv is not None:
            return fv
        spec = self._spec("feature_views", name, "feature view", "; apply its definition first")
        ents = self._build(lambda: {e: self.entity(e) for e in spec["entities"]}, "feature view", name)
        fv = self._build(lambda: FeatureView.from_spec(spec, ents), "feature view", name)
        self._cache[name] = fv
        return fv

    def feature_service(self, name: str) -> FeatureService:
        spec = self._spec("feature_services", name, "feature service")
        return self._build(lambda: FeatureService.from_spec(spec), "feature service", name)

    def version(self, kind: str, name: str) -> int:
        return int(self.data[kind][name]["version"])

    def names(self, kind: str) -> list[str]:
        return sorted(self.data[kind])

    def key_dtypes(self, entity: str) -> list[Any] | None:
        """Declared key dtypes of an entity, else those fixed by its first write, else None."""
        e = self.entity(entity)
        kd = e.key_dtypes()
        if kd is not None:
            return kd
        rec = self.data["state"]["key_dtypes"].get(entity)
        return None if rec is None else [dtype_from_name(x) for x in rec]

    def key_types(self, fv: FeatureView) -> list[pa.DataType | None]:
        """The Arrow type of each of the view's join keys; None for a key whose type is not yet known
        (an entity that declares no dtype, before the first write fixes it)."""
        out: list[pa.DataType | None] = []
        for e in fv.entities:
            kd = self.key_dtypes(e.name)
            out.extend([None] * len(e.join_keys) if kd is None else [d.arrow for d in kd])
        return out

    def statistics_versions(self, view: str) -> list[int]:
        """The numbers of the view's statistics artifacts, oldest first."""
        return sorted(int(v) for v in self.data["statistics"].get(view, {}))

    def statistics(self, view: str, version: int | None = None) -> dict[str, Any]:
        """One statistics artifact of ``view`` (the newest when ``version`` is None), as stored."""
        versions = self.statistics_versions(view)
        if not versions:
            raise UnknownFeatureError(
                f"view {view!r} has no statistics artifact; run store.compute_statistics({view!r}) first"
            )
        v = versions[-1] if version is None else version
        if v not in versions:
            raise UnknownFeatureError(f"view {view!r} has no statistics version {v!r}; it has {versions}")
        return copy.deepcopy(self.data["statistics"][view][str(v)])

    def materialized_until(self, view: str) -> int | None:
        """Where the last ``materialize_incremental`` of ``view`` ended (UTC microseconds), if any."""
        v = self.data["state"]["materialized"].get(view)
        return None if v is None else int(v)

    # ---- writing -------------------------------------------------------------------------------------

    def _update_state(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``fn`` to a copy of the state section and save it."""
        new = copy.deepcopy(self.data)
        fn(new["state"])
        self._commit(new)

    def fix_key_dtypes(self, fixes: Mapping[str, list[str]]) -> None:
        """Record the key dtypes a first write fixed (``{entity: ["Int64", ...]}``); an entity whose
        dtypes are already recorded keeps them."""

        def fix(state: dict[str, Any]) -> None:
            for e, types in fixes.items():
                state["key_dtypes"].setdefault(e, list(types))

        self._update_state(fix)

    def forget_key_dtypes(self, fixes: Mapping[str, list[str]]) -> None:
        """Undo :meth:`fix_key_dtypes` (the write that fixed them failed before any row landed)."""

        def forget(state: dict[str, Any]) -> None:
            for e, types in fixes.items():
                if state["key_dtypes"].get(e) == list(types):
                    del state["key_dtypes"][e]

        self._update_state(forget)

    def add_statistics(self, view: str, record: Mapping[str, Any]) -> int:
        """Store ``record`` as the view's next statistics artifact; returns its number."""
        new = copy.deepcopy(self.data)
        arts = new["statistics"].setdefault(view, {})
        version = max((int(v) for v in arts), default=0) + 1
        arts[str(version)] = {**copy.deepcopy(dict(record)), "version": version}
        self._commit(new)
        return version

    def mark_materialized(self, view: str, until_us: int) -> None:
        """Record that ``view`` is materialized up to ``until_us`` (exclusive)."""

        def mark(state: dict[str, Any]) -> None:
            state["materialized"][view] = until_us

        self._update_state(mark)

    def _commit(self, new: dict[str, Any]) -> None:
        """Make ``new`` the registry, on disk and here; on a failed save, keep the old one in both."""
        old, self.data = self.data, new
        try:
            self.save()
        except BaseException:
            self.data = old
            raise

    def apply(self, objects: Iterable[Definition], has_data: Callable[[str], bool]) -> dict[str, list[str]]:
        """Validate ``objects`` together with what is registered, then save them in one atomic write.

        ``has_data(view)`` says whether a view holds stored data; changes that would make it unreadable
        are refused with :class:`IncompatibleChangeError`. Returns the names created / updated / unchanged.
        """
        objs = list(objects)
        new = copy.deepcopy(self.data)
        report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
        kinds = {
            Entity: "entities",
            FeatureView: "feature_views",
            FeatureService: "feature_services",
            TransformView: "transform_views",
        }
        seen: set[tuple[str, str]] = set()
        for o in objs:
            kind = kinds.get(type(o))
            if kind is None:
                raise RegistryError(
                    f"cannot apply {o!r}: only Entity, FeatureView, TransformView and FeatureService"
                )
            if (kind, o.name) in seen:
                raise RegistryError(f"{kind[:-1].replace('_', ' ')} {o.name!r} is defined twice in one apply")
            seen.add((kind, o.name))
        # Entities first: views refer to them (and transform views to views, services to both).
        rank = ["entities", "feature_views", "transform_views", "feature_services"]
        order = sorted(objs, key=lambda o: rank.index(kinds[type(o)]))
        for o in order:
            kind = kinds[type(o)]
            spec = o.to_spec()
            if isinstance(o, FeatureView):
                self._check_view(o, new, has_data)
                if o.name in new["transform_views"]:
                    raise RegistryError(
                        f"feature view {o.name!r} has the name of a transform view; rename one of them"
                    )
                spec = resolve_view_spec(spec, new, o)
            if isinstance(o, TransformView):
                spec = resolve_transform_view(o, new)
            if isinstance(o, Entity):
                self._check_entity(o, new, has_data)
            if isinstance(o, FeatureService):
                self._check_service(o, new)
            cur = new[kind].get(o.name)
            if cur is None:
                new[kind][o.name] = {"version": 1, "spec": spec}
                report["created"].append(o.name)
            elif cur["spec"] == spec:
                report["unchanged"].append(o.name)
            else:
                new[kind][o.name] = {"version": int(cur["version"]) + 1, "spec": spec}
                report["updated"].append(o.name)
        self._commit(new)
        return report

    def _views_of(self, data: Mapping[str, Any], entity: str) -> list[str]:
        return [n for n, v in data["feature_views"].items() if entity in v["spec"]["entities"]]

    def _check_entity(self, e: Entity, data: dict[str, Any], has_data: Callable[[str], bool]) -> None:
        cur = data["entities"].get(e.name)
        if cur is None:
            return
        old = cur["spec"]
        stored = [v for v in self._views_of(data, e.name) if has_data(v)]
        if not stored:
            return
        new = e.to_spec()
        fixed = old["dtype"] or data["state"]["key_dtypes"].get(e.name)
        if old["join_keys"] != new["join_keys"]:
            raise IncompatibleChangeError(
                f"entity {e.name!r}: changing join keys {old['join_keys']} -> {new['join_keys']} would make "
                f"the data of view(s) {stored} unreadable; define a new entity (and new views) under "
                "another name"
            )
        if new["dtype"] is not None and fixed is not None and new["dtype"] != fixed:
            raise IncompatibleChangeError(
                f"entity {e.name!r}: key dtype {fixed} -> {new['dtype']} does not match data already "
                f"stored in view(s) {stored}; keep {fixed}, or define a new entity and views under "
                "other names"
            )

    def _check_view(self, fv: FeatureView, data: dict[str, Any], has_data: Callable[[str], bool]) -> None:
        if fv.aggregations:
            # Again here: an Aggregation is mutable, and what lands in the registry must hold.
            check_aggregations(
                fv.name,
                fv.aggregations,
                fv.schema,
                fv.tie_columns,
                fv.ttl,
                fv.created_timestamp_field,
            )
        for e in fv.entities:
            reg = data["entities"].get(e.name)
            if reg is None:
                raise RegistryError(
                    f"feature view {fv.name!r} uses entity {e.name!r}, which is not registered; apply it too"
                )
            if reg["spec"] != e.to_spec():
                raise RegistryError(
                    f"feature view {fv.name!r} uses entity {e.name!r} with a definition that differs from "
                    "the registered one; apply the same Entity object"
                )
        cur = data["feature_views"].get(fv.name)
        if cur is None or not has_data(fv.name):
            return
        old, new = cur["spec"], fv.to_spec()
        what = f"; to change it, write to a new view (e.g. '{fv.name}_v2') or delete its stored data first"
        for k in ("entities", "timestamp_field", "created_timestamp_field", "source"):
            if old[k] != new[k]:
                raise IncompatibleChangeError(
                    f"feature view {fv.name!r} holds data: changing {k} {old[k]!r} -> {new[k]!r} would make "
                    "it unreadable" + what
                )
        odt = {f["name"]: f["dtype"] for f in old["schema"]}
        ndt = {f["name"]: f["dtype"] for f in new["schema"]}
        for n, d in ndt.items():
            if n in odt and odt[n] != d:
                raise IncompatibleChangeError(
                    f"feature view {fv.name!r} holds data: feature {n!r} is stored as {odt[n]}, not {d}"
                    + what
                )
        if list(odt) != list(ndt) and new["online"] and has_data("online:" + fv.name):
            # The online store fixes a view's value layout at its first write; history files stay
            # readable (a missing column reads as null), online rows would not.
            raise IncompatibleChangeError(
                f"feature view {fv.name!r} holds online data: changing its feature list {list(odt)} -> "
                f"{list(ndt)} changes the layout of its online rows" + what
            )

    def _check_service(self, fs: FeatureService, data: dict[str, Any]) -> None:
        for ref in fs.features:
            view, feat = ref.split(":")
            v = data["feature_views"].get(view)
            tv = data["transform_views"].get(view)
            if v is None and tv is not None:
                outs = [
                    o
                    for t in tv["spec"]["transforms"]
                    for o in ([t["output"]] if t["kind"] != "udf" else [f["name"] for f in t["outputs"]])
                ]
                if feat != "*" and feat not in outs:
                    raise UnknownFeatureError(
                        f"feature service {fs.name!r} refers to {ref!r}, but transform view {view!r} has no "
                        f"output {feat!r}"
                    )
                continue
            if v is None:
                raise UnknownFeatureError(
                    f"feature service {fs.name!r} refers to {ref!r}, but there is no feature view {view!r}"
                )
            served = v["spec"].get("aggregations") or v["spec"]["schema"]
            if feat != "*" and feat not in [f["name"] for f in served]:
                raise UnknownFeatureError(
                    f"feature service {fs.name!r} refers to {ref!r}, but view {view!r} has no feature "
                    f"{feat!r}"
                )


def _check_name_type(name: Any, what: str) -> None:
    # Names are looked up in dicts: anything but a str is a caller's mistake, said as such.
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a {what} name must be a str, got {name!r} ({type(name).__name__})")
