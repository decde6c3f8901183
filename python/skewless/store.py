"""The feature store: one folder holding definitions, the Parquet history and the LMDB online store.

``write`` feeds both halves from one call; ``get_historical_features`` builds training sets with the
as-of join engine; ``materialize`` brings the online store in line with the history; and
``get_online_features`` / ``online_reader`` serve the latest values, with each view's TTL applied at read
time, so the value served at instant t is the value a training set reconstructs for t.

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> user = Entity("user", join_keys=["user_id"], dtype=Int64)
    >>> fv = FeatureView("stats", entities=[user], schema=[Field("spend", Float64)], ttl=dt.timedelta(days=7))
    >>> _ = store.apply([user, fv])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> T = pa.timestamp("us", tz="UTC")
    >>> _ = store.write("stats", {"user_id": [1], "event_timestamp": pa.array([t], T),
    ...                           "spend": [9.5]})
    >>> store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=t).to_dict()["spend"]
    [9.5, None]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import as_table
from .definitions import (
    TIMESTAMP_TYPE,
    Entity,
    FeatureService,
    FeatureView,
    dtype_from_arrow,
)
from .errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    NullKeyError,
    SchemaMismatch,
    UnknownFeatureError,
)
from .offline import OfflineStore
from .registry import Registry, RegistryError

__all__ = ["FeatureStore", "OnlineResponse", "OnlineReader", "WriteSummary"]

_US = dt.timedelta(microseconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: Rows per online write of a sorted (compacted) file during materialize: large enough to amortize
#: the commit, small enough to bound memory.
MATERIALIZE_BATCH = 1 << 20
#: ``skewless.online.Status.NOT_FOUND`` (kept here so serving does not import the online module early).
_NOT_FOUND = 1
#: The engine's status column in online lookups: no feature or key can take this name (definitions
#: refuse double underscores), so a feature may be called ``status``.
_STATUS = "__status__"


class WriteSummary(NamedTuple):
    """What ``FeatureStore.write`` did: rows appended to the history, rows that replaced an online value,
    rows the online store skipped as older than what it holds."""

    rows: int
    online_written: int
    online_skipped: int


# ---- small conversions ---------------------------------------------------------------------------------


def _instant_us(x: Any, what: str) -> int:
    """A timezone-aware datetime (or integer UTC microseconds) as UTC microseconds."""
    if isinstance(x, dt.datetime):
        if x.tzinfo is None or x.utcoffset() is None:
            raise NaiveTimestampError(
                f"{what} {x!r} has no timezone; pass an aware datetime, e.g. "
                "datetime(..., tzinfo=datetime.timezone.utc)"
            )
        return (x - _EPOCH) // _US
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return int(x)
    raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, not {type(x).__name__}")


def _ts_scalar(us: int) -> pa.Scalar:
    return pa.scalar(us, TIMESTAMP_TYPE)


def _normalize_ts(col: pa.ChunkedArray | pa.Array, what: str) -> pa.ChunkedArray:
    t = col.type
    if not pa.types.is_timestamp(t):
        raise DtypeError(f"{what} is {t}, not a timestamp; give it a timezone-aware timestamp type")
    if t.tz is None:
        raise NaiveTimestampError(
            f"{what} is a timestamp without timezone ({t}); it is not an instant. Attach the zone it was "
            "recorded in, e.g. pc.assume_timezone(col, 'UTC') or pandas .dt.tz_localize('UTC')"
        )
    if t == TIMESTAMP_TYPE:
        return col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col])
    # A zone is display metadata over UTC values; only the unit changes the numbers. Sub-microsecond
    # digits are floored, as the engine's `time::to_micros` does (a plain cast would truncate toward
    # zero and move instants before 1970 a microsecond later).
    if t.unit == "ns":
        col = pc.floor_temporal(col, unit="microsecond")
    out = pc.cast(col, TIMESTAMP_TYPE)
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])


_INT_WIDEN = {
    pa.int32(): (pa.int8(), pa.int16(), pa.uint8(), pa.uint16()),
    pa.int64(): (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16(), pa.uint32()),
}


def _conform(col: pa.ChunkedArray, want: pa.DataType, what: str) -> pa.ChunkedArray:
    """``col`` as type ``want`` when that loses nothing, else DtypeError."""
    t = col.type
    if t == want:
        return col
    ok = (
        (want == pa.string() and pa.types.is_large_string(t))
        or (want == pa.binary() and pa.types.is_large_binary(t))
        or t in _INT_WIDEN.get(want, ())
        or (want == pa.float64() and t == pa.float32())
        or (
            pa.types.is_fixed_size_list(want)
            and (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and t.value_type == want.value_type
        )
    )
    if not ok:
        raise DtypeError(f"{what} is {t}, expected {want}; cast it before writing (or change the definition)")
    try:
        return pc.cast(col, want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DtypeError(f"{what}: cannot store {t} as {want}: {e}") from None


def _stamp(path: str) -> tuple[int, int]:
    # Every save renames a new file into place, so the inode changes even within one mtime tick.
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _entity_key(col: pa.ChunkedArray, want: pa.DataType | None, name: str) -> pa.ChunkedArray:
    """An entity_df key column as the view's key type. Integers narrower than what pandas and polars
    produce (int64) are accepted when every value fits; a value that does not is a DtypeError."""
    if want is None or col.type == want:
        return col
    if pa.types.is_integer(col.type) and pa.types.is_integer(want):
        try:
            return pc.cast(col, want)
        except pa.ArrowInvalid:
            raise DtypeError(
                f"entity_df join key {name!r} holds values that do not fit the key type {want}"
            ) from None
    return _conform(col, want, f"entity_df join key {name!r}")


def _feature_ref(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise InvalidArgumentError(f"feature reference {ref!r} is not of the form 'view:feature'")
    view, feat = ref.split(":")
    return view, feat


# ---- the store ------------------------------------------------------------------------------------------


class FeatureStore:
    """A feature store in the folder ``path`` (created with an empty registry when it does not exist).

    Example:
        >>> import tempfile
        >>> from skewless import FeatureStore
        >>> FeatureStore(tempfile.mkdtemp()).list_feature_views()
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = os.fspath(path)
        reg = os.path.join(self.path, "registry.json")
        if not os.path.exists(reg):
            if not create:
                raise RegistryError(f"no feature store at {self.path}: run `skewless init` there first")
            os.makedirs(self.path, exist_ok=True)
            with self._lock():
                if not os.path.exists(reg):
                    Registry.create(reg)
        self.registry = Registry.load(reg)
        self._reg_stamp = _stamp(reg)
        self.offline = OfflineStore(os.path.join(self.path, "offline"))
        self._online_store: Any = None
        self._readers: dict[Any, OnlineReader] = {}

    # ---- registry ---------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        # Another process (the CLI, a materializer) may have applied definitions since we loaded.
        reg = self.registry.path
        m = _stamp(reg)
        if m != self._reg_stamp:
            self.registry = Registry.load(reg)
            self._reg_stamp = m
            self._readers.clear()

    def _has_data(self, name: str) -> bool:
        if name.startswith("online:"):
            view = name[len("online:") :]
            return os.path.isdir(self._online_path()) and view in self._online().views()
        return self.offline.has_data(name) or self._has_data("online:" + name)

    def apply(self, objects: Iterable[Entity | FeatureView | FeatureService]) -> dict[str, list[str]]:
        """Validate and persist definitions in ``registry.json``; each changed one gets version + 1.

        A change that would make stored data unreadable (a feature's dtype, the keys, the feature list of
        a view with online data...) raises :class:`~skewless.errors.IncompatibleChangeError` and changes
        nothing. Returns the names created, updated and unchanged.

        Example:
            >>> import tempfile
            >>> from skewless import Entity, FeatureStore
            >>> FeatureStore(tempfile.mkdtemp()).apply([Entity("user")])["created"]
            ['user']
        """
        objs = list(objects)
        with self._lock():
            self._refresh()
            out = self.registry.apply(objs, self._has_data)
            self._reg_stamp = _stamp(self.registry.path)
            self._readers.clear()
        return out

    def list_entities(self) -> list[Entity]:
        self._refresh()
        return [self.registry.entity(n) for n in self.registry.names("entities")]

    def list_feature_views(self) -> list[FeatureView]:
        """Every registered feature view, by name."""
        self._refresh()
        return [self.registry.feature_view(n) for n in self.registry.names("feature_views")]

    def list_feature_services(self) -> list[FeatureService]:
        self._refresh()
        return [self.registry.feature_service(n) for n in self.registry.names("feature_services")]

    def get_entity(self, name: str) -> Entity:
        self._refresh()
        return self.registry.entity(name)

    def get_feature_view(self, name: str) -> FeatureView:
        """The registered view ``name`` (UnknownFeatureError if none)."""
        self._refresh()
        return self.registry.feature_view(name)

    def get_feature_service(self, name: str) -> FeatureService:
        self._refresh()
        return self.registry.feature_service(name)

    def version(self, name: str, kind: str = "feature_views") -> int:
        """The registry version of a definition (1 when first applied)."""
        self._refresh()
        try:
            return self.registry.version(kind, name)
        except KeyError:
            raise UnknownFeatureError(f"no {kind} entry {name!r}") from None

    # ---- plumbing -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # One writer at a time per store folder, across processes (LMDB serializes its own writes; this
        # keeps history file numbering and the registry consistent).
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _online_path(self) -> str:
        return os.path.join(self.path, "online")

    def _online(self) -> Any:
        if self._online_store is None:
            from .online import OnlineStore

            self._online_store = OnlineStore(self._online_path())
        return self._online_store

    def _key_types(self, fv: FeatureView) -> list[pa.DataType | None]:
        out: list[pa.DataType | None] = []
        for e in fv.entities:
            kd = self.registry.key_dtypes(e.name)
            out.extend([None] * len(e.join_keys) if kd is None else [d.arrow for d in kd])
        return out

    def _history_schema(self, fv: FeatureView) -> pa.Schema | None:
        kt = self._key_types(fv)
        if any(t is None for t in kt):
            return None
        fields = [pa.field(k, t) for k, t in zip(fv.join_keys, kt, strict=False)]
        fields.append(pa.field(fv.timestamp_field, TIMESTAMP_TYPE))
        if fv.created_timestamp_field:
            fields.append(pa.field(fv.created_timestamp_field, TIMESTAMP_TYPE))
        fields += [pa.field(f.name, f.dtype.arrow) for f in fv.schema]
        return pa.schema(fields)

    def _normalize(
        self, fv: FeatureView, table: pa.Table, what: str
    ) -> tuple[pa.Table, dict[str, list[str]]]:
        """Check ``table`` against the view and return it in the stored layout (keys, ts, created,
        features; timestamps in UTC microseconds), plus key dtypes this write would fix."""
        have = set(table.column_names)
        need = fv.join_keys + [fv.timestamp_field]
        need += [fv.created_timestamp_field] if fv.created_timestamp_field else []
        need += fv.feature_names
        missing = [c for c in need if c not in have]
        if missing:
            raise MissingColumnError(f"{what} lacks column(s) {missing} of view {fv.name!r}; it needs {need}")
        extra = [c for c in table.column_names if c not in need]
        if extra:
            raise SchemaMismatch(
                f"{what} has column(s) {extra} that view {fv.name!r} does not define; drop them, or add "
                "Fields for them to the view"
            )
        cols: dict[str, pa.ChunkedArray] = {}
        fixes: dict[str, list[str]] = {}
        kt = self._key_types(fv)
        i = 0
        for e in fv.entities:
            new_types: list[str] = []
            for k in e.join_keys:
                c = table.column(k)
                if c.null_count:
                    raise NullKeyError(
                        f"{what}: join key {k!r} has {c.null_count} null(s); every row needs a key"
                    )
                want = kt[i]
                if want is None:
                    d = dtype_from_arrow(c.type)
                    if d is None or d.name not in ("Int32", "Int64", "String", "Bytes"):
                        raise DtypeError(
                            f"{what}: join key {k!r} is {c.type}; keys must be int32, int64, string or binary"
                        )
                    want = d.arrow
                    new_types.append(d.to_json())
                cols[k] = _conform(c, want, f"{what}: join key {k!r}")
                i += 1
            if new_types:
                fixes[e.name] = new_types
        for tf in [fv.timestamp_field] + ([fv.created_timestamp_field] if fv.created_timestamp_field else []):
            c = _normalize_ts(table.column(tf), f"{what}: column {tf!r}")
            if c.null_count:
                raise InvalidArgumentError(f"{what}: timestamp column {tf!r} has {c.null_count} null(s)")
            cols[tf] = c
        for f in fv.schema:
            c = table.column(f.name)
            if f.dtype.name == "Timestamp":
                cols[f.name] = _normalize_ts(c, f"{what}: feature {f.name!r}")
            else:
                cols[f.name] = _conform(c, f.dtype.arrow, f"{what}: feature {f.name!r}")
        return pa.table(cols), fixes

    # ---- writing ------------------------------------------------------------------------------------------

    def write(self, view: str, data: Any) -> WriteSummary:
        """Append ``data`` to the view's history and upsert the online store, as one operation.

        ``data`` (pyarrow, polars, pandas, a mapping of columns) holds the join keys, the timestamp
        field(s) and every feature of the view, nothing else. Everything is validated first; a bad input
        raises a typed error and writes nothing. If the online write fails, the history file just added
        is removed, so the store is as before. Should the process die between the two, ``materialize``
        brings the online store back in line.

        Example:
            >>> import tempfile, datetime as dt
            >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
            >>> s = FeatureStore(tempfile.mkdtemp())
            >>> u = Entity("user")
            >>> _ = s.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
            >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
            >>> import pandas as pd
            >>> s.write("v", pd.DataFrame({"user_id": [1], "event_timestamp": [t], "x": [0.5]}))
            WriteSummary(rows=1, online_written=1, online_skipped=0)
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        if fv.source is not None:
            raise InvalidArgumentError(
                f"feature view {view!r} reads its history from source={fv.source!r}; append to that data and "
                "run materialize instead of write"
            )
        table, fixes = self._normalize(fv, as_table(data, f"data for {view!r}"), f"data for {view!r}")
        if table.num_rows == 0:
            return WriteSummary(0, 0, 0)
        with self._lock():
            self._refresh()
            # Another process may have fixed the key types meanwhile: check against them.
            if fixes and any(self.registry.key_dtypes(e) is not None for e in fixes):
                table, fixes = self._normalize(fv, table, f"data for {view!r}")
            path = self.offline.append(view, table)
            written, skipped = table.num_rows, 0
            if fv.online:
                try:
                    res = self._online().write(
                        view,
                        table,
                        keys=fv.join_keys,
                        timestamp=fv.timestamp_field,
                        created_timestamp=fv.created_timestamp_field,
                    )
                except BaseException:
                    self.offline.remove(path)
                    raise
                written, skipped = int(res.rows_written), int(res.rows_skipped)
            if fixes:

                def fix(state: dict[str, Any]) -> None:
                    for e, types in fixes.items():
                        state["key_dtypes"].setdefault(e, types)

                self.registry.update_state(fix)
                self._reg_stamp = _stamp(self.registry.path)
                self._readers.clear()
        return WriteSummary(table.num_rows, written, skipped)

    def compact(self, view: str) -> int:
        """Rewrite a view's history as one file sorted by (join keys, timestamp, created timestamp).

        Point-in-time joins over a compacted history skip their sort; ``write`` keeps appending after it.
        Returns the number of rows. Example: ``store.compact("user_stats")``.
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        if fv.source is not None:
            raise InvalidArgumentError(
                f"feature view {view!r} reads source={fv.source!r}; skewless does not rewrite it"
            )
        keys = [(k, "ascending") for k in fv.join_keys] + [(fv.timestamp_field, "ascending")]
        if fv.created_timestamp_field:
            keys.append((fv.created_timestamp_field, "ascending"))
        with self._lock():
            return self.offline.compact(view, keys)

    # ---- reading history ---------------------------------------------------------------------------------

    def _scan(
        self,
        fv: FeatureView,
        columns: Sequence[str],
        lo_us: int | None,
        hi_us: int | None,
        hi_inclusive: bool,
        files: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        return self.offline.scan(
            fv.name,
            fv.source,
            self._history_schema(fv),
            columns,
            (fv.timestamp_field, lo_us, hi_us, hi_inclusive),
            files=files,
        )

    def read_history(self, view: str, columns: Sequence[str] | None = None) -> pa.Table:
        """A view's whole history (or some of its columns), timestamps normalized, in write order.

        Example: ``store.read_history("user_stats", ["user_id", "spend"])``.
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        cols = list(columns) if columns is not None else self._stored_columns(fv)
        if not self.offline.files(view, fv.source):
            return self._empty(fv, cols)
        batches = list(self._scan(fv, cols, None, None, True))
        if not batches:
            return self._empty(fv, cols)
        return self._to_stored(fv, pa.Table.from_batches(batches), cols)

    def _stored_columns(self, fv: FeatureView) -> list[str]:
        cols = fv.join_keys + [fv.timestamp_field]
        cols += [fv.created_timestamp_field] if fv.created_timestamp_field else []
        return cols + fv.feature_names

    def _empty(self, fv: FeatureView, cols: Sequence[str]) -> pa.Table:
        kt = dict(zip(fv.join_keys, self._key_types(fv), strict=False))
        types = {fv.timestamp_field: TIMESTAMP_TYPE, **{f.name: f.dtype.arrow for f in fv.schema}}
        if fv.created_timestamp_field:
            types[fv.created_timestamp_field] = TIMESTAMP_TYPE
        fields = [pa.field(c, kt.get(c) or types.get(c) or pa.int64()) for c in cols]
        return pa.schema(fields).empty_table()

    def _to_stored(self, fv: FeatureView, t: pa.Table | None, cols: Sequence[str]) -> pa.Table:
        if t is None or t.num_columns == 0:
            return self._empty(fv, cols)
        if fv.source is None:
            return t
        # A source written by someone else: same checks and normalization as write.
        out = {}
        for c in t.column_names:
            col = t.column(c)
            if c in (fv.timestamp_field, fv.created_timestamp_field) or (
                c in fv.feature_names and fv.get_field(c).dtype.name == "Timestamp"
            ):
                col = _normalize_ts(col, f"source {fv.source!r} column {c!r}")
            elif c in fv.feature_names:
                col = _conform(col, fv.get_field(c).dtype.arrow, f"source {fv.source!r} column {c!r}")
            out[c] = col
        return pa.table(out)

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | FeatureService,
        *,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
    ) -> pa.Table:
        """A point-in-time correct training set: ``entity_df``'s rows, in order, then the features.

        For each row (keys k, time t) and each view, the value is the view's row for k with the greatest
        timestamp <= t and >= t - ttl, null when there is none. Ties: the latest created timestamp; among
        full ties the earliest write, and within it its last row (the online store's rule, so both
        agree). Rows sharing a key and time are all kept; duplicates stay duplicates. Each view reads only
        its keys, timestamps and the requested features, in the time range the rows need.

        Example:
            >>> import tempfile, datetime as dt
            >>> import pyarrow as pa
            >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
            >>> s = FeatureStore(tempfile.mkdtemp())
            >>> u = Entity("user")
            >>> _ = s.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
            >>> T = pa.timestamp("us", tz="UTC")
            >>> hist = {"user_id": [1, 1], "event_timestamp": pa.array([10, 20], T), "x": [1.0, 2.0]}
            >>> _ = s.write("v", hist)
            >>> labels = {"user_id": [1, 1, 2], "event_timestamp": pa.array([15, 25, 25], T)}
            >>> s.get_historical_features(labels, ["v:x"]).column("x").to_pylist()
            [1.0, 2.0, None]
        """
        from . import asof_join

        self._refresh()
        plan = self._plan(features)
        left_all = as_table(entity_df, "entity_df")
        if timestamp_column not in left_all.column_names:
            raise MissingColumnError(
                f"entity_df has no column {timestamp_column!r}; pass timestamp_column= naming its event time"
            )
        t = _normalize_ts(left_all.column(timestamp_column), f"entity_df column {timestamp_column!r}")
        names = self._output_names(plan, full_feature_names, left_all.column_names)
        mm = pc.min_max(t)
        tmin: int | None = mm["min"].value
        tmax: int | None = mm["max"].value
        lefts = []
        # Check every view's keys before reading any history.
        for fv, _ in plan:
            left_cols: dict[str, Any] = {}
            for k, kt in zip(fv.join_keys, self._key_types(fv), strict=True):
                if k not in left_all.column_names:
                    raise MissingColumnError(
                        f"entity_df has no column {k!r}, a join key of view {fv.name!r}; add it"
                    )
                left_cols[k] = _entity_key(left_all.column(k), kt, k)
            left_cols[fv.timestamp_field] = t
            lefts.append(pa.table(left_cols))
        out = left_all
        for (fv, feats), left in zip(plan, lefts, strict=True):
            right = self._history_for_join(fv, feats, tmin, tmax)
            if right is None or right.num_rows == 0 or tmin is None:
                for f in feats:
                    out = out.append_column(
                        names[(fv.name, f)], pa.nulls(left.num_rows, fv.get_field(f).dtype.arrow)
                    )
                continue
            joined = asof_join(
                left,
                right,
                on=fv.timestamp_field,
                by=fv.join_keys,
                tolerance=fv.ttl,
                tie_breaker=fv.created_timestamp_field,
            )
            for f in feats:
                out = out.append_column(names[(fv.name, f)], joined.column(f))
        return out

    def _history_for_join(
        self, fv: FeatureView, feats: Sequence[str], tmin: int | None, tmax: int | None
    ) -> pa.Table | None:
        if tmin is None or tmax is None:
            return None
        cols = fv.join_keys + [fv.timestamp_field]
        cols += [fv.created_timestamp_field] if fv.created_timestamp_field else []
        cols += list(feats)
        # Only rows a label can match: [min(t) - ttl, max(t)]; Parquet statistics prune the rest.
        lo_us = None if fv.ttl is None else tmin - fv.ttl // _US
        hi_us = tmax
        if not self.offline.files(fv.name, fv.source):
            return None
        batches = list(self._scan(fv, cols, lo_us, hi_us, True))
        if not batches:
            return None
        return self._to_stored(fv, pa.Table.from_batches(batches), cols)

    def _plan(self, features: Sequence[str] | FeatureService) -> list[tuple[FeatureView, list[str]]]:
        refs = features.features if isinstance(features, FeatureService) else features
        if isinstance(refs, str):
            raise InvalidArgumentError(
                "features must be a list of 'view:feature' strings or a FeatureService"
            )
        plan: dict[str, list[str]] = {}
        for ref in refs:
            view, feat = _feature_ref(ref)
            fv = self.registry.feature_view(view)
            wanted = fv.feature_names if feat == "*" else [fv.get_field(feat).name]
            lst = plan.setdefault(view, [])
            lst.extend(w for w in wanted if w not in lst)
        if not plan:
            raise InvalidArgumentError("no features requested")
        return [(self.registry.feature_view(v), fs) for v, fs in plan.items()]

    @staticmethod
    def _output_names(
        plan: Sequence[tuple[FeatureView, Sequence[str]]], full: bool, taken: Sequence[str]
    ) -> dict[tuple[str, str], str]:
        names: dict[tuple[str, str], str] = {}
        seen: dict[str, str] = {c: "entity_df" for c in taken}
        for fv, feats in plan:
            for f in feats:
                n = f"{fv.name}__{f}" if full else f
                if n in seen:
                    hint = "" if full else "; pass full_feature_names=True to name columns view__feature"
                    raise ColumnClashError(
                        f"output column {n!r} of view {fv.name!r} clashes with one from {seen[n]}" + hint
                    )
                seen[n] = f"view {fv.name!r}"
                names[(fv.name, f)] = n
        return names

    # ---- materialize ---------------------------------------------------------------------------------------

    def materialize(
        self, start: dt.datetime | None, end: dt.datetime, views: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Copy history rows with ``start <= timestamp < end`` (start inclusive, end exclusive; start None:
        from the beginning) into the online store, for every online view (or ``views``).

        The online store keeps the latest (timestamp, created) value per key, so rows older than what it
        holds change nothing; running it twice is harmless. Returns rows read per view. A progress line is
        drawn on stderr when it is a terminal.

        Example: ``store.materialize(None, datetime.now(timezone.utc))``.
        """
        self._refresh()
        lo = None if start is None else _instant_us(start, "start")
        hi = _instant_us(end, "end")
        if lo is not None and lo > hi:
            raise InvalidArgumentError(f"materialize: start {start} is after end {end}")
        names = list(views) if views is not None else self.registry.names("feature_views")
        fvs = [self.registry.feature_view(n) for n in names]
        done: dict[str, int] = {}
        with self._lock():
            for fv in fvs:
                if not fv.online:
                    if views is not None:
                        raise InvalidArgumentError(f"feature view {fv.name!r} has online=False")
                    continue
                done[fv.name] = self._materialize_view(fv, lo, hi)
        return done

    def _materialize_view(self, fv: FeatureView, lo: int | None, hi: int) -> int:
        files = self.offline.files(fv.name, fv.source)
        if not files:
            return 0
        cols = self._stored_columns(fv)
        bar = _Progress(f"materialize {fv.name}") if sys.stderr.isatty() else None
        online = self._online()
        n = 0
        # Oldest file first, one online write per file: the online store's tie rule (last row within a
        # write, first write across writes) then picks what the join picks (see offline.py).
        for path in reversed(files):
            batches = [b for b in self._scan(fv, cols, lo, hi, False, files=[path]) if b.num_rows]
            if not batches:
                continue
            t = self._to_stored(fv, pa.Table.from_batches(batches), cols)
            if fv.source is not None:
                t, _ = self._normalize(fv, t, f"source {fv.source!r}")
            chunks = _tie_free_chunks(t, fv) if self.offline.is_sorted(path) else [t]
            for c in chunks:
                online.write(
                    fv.name,
                    c,
                    keys=fv.join_keys,
                    timestamp=fv.timestamp_field,
                    created_timestamp=fv.created_timestamp_field,
                )
                n += c.num_rows
                if bar:
                    bar.update(n)
        if bar:
            bar.close(n)
        return n

    def materialize_incremental(self, end: dt.datetime, views: Sequence[str] | None = None) -> dict[str, int]:
        """Materialize each online view from where its last incremental run ended (the whole history the
        first time) up to ``end`` (exclusive), and record ``end`` per view in the registry.

        Example: ``store.materialize_incremental(datetime.now(timezone.utc))``.
        """
        self._refresh()
        hi = _instant_us(end, "end")
        names = list(views) if views is not None else self.registry.names("feature_views")
        done: dict[str, int] = {}
        with self._lock():
            for name in names:
                fv = self.registry.feature_view(name)
                if not fv.online:
                    continue
                lo = self.registry.data["state"]["materialized"].get(name)
                if lo is not None and lo >= hi:
                    done[name] = 0
                    continue
                done[name] = self._materialize_view(fv, lo, hi)

                def mark(state: dict[str, Any], name: str = name) -> None:
                    state["materialized"][name] = hi

                self.registry.update_state(mark)
            self._reg_stamp = _stamp(self.registry.path)
        return done

    # ---- serving ------------------------------------------------------------------------------------------

    def online_reader(
        self, features: Sequence[str] | FeatureService, *, full_feature_names: bool = False
    ) -> OnlineReader:
        """Prepare a lookup of ``features`` once (one LMDB reader per view used), to call many times.

        A view with no online data yet (nothing written or materialized) answers NOT_FOUND (null); the
        reader starts serving it as soon as any process writes it, with no extra cost per call after that.

        Example: ``r = store.online_reader(["user_stats:spend"]); r.get_numpy({"user_id": [1, 2]})``.
        """
        self._refresh()
        plan = self._plan(features)
        for fv, _ in plan:
            if not fv.online:
                raise InvalidArgumentError(f"feature view {fv.name!r} has online=False; it is not served")
        names = self._output_names(plan, full_feature_names, [])
        return OnlineReader(self, plan, names, features)

    def get_online_features(
        self,
        features: Sequence[str] | FeatureService,
        entity_rows: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
        *,
        full_feature_names: bool = False,
        as_of: dt.datetime | None = None,
    ) -> OnlineResponse:
        """The latest value of each feature for each entity row, with each view's TTL applied at
        ``as_of`` (default: now): an expired value is null with status EXPIRED.

        ``entity_rows``: a mapping of join key to values, or a list of dicts as in Feast.

        Example: ``store.get_online_features(["user_stats:spend"], [{"user_id": 1}]).to_dict()``.
        """
        self._refresh()
        key = (
            tuple(features.features) if isinstance(features, FeatureService) else tuple(features),
            full_feature_names,
        )
        r = self._readers.get(key)
        if r is None:
            r = self.online_reader(features, full_feature_names=full_feature_names)
            self._readers[key] = r
        return r.get(entity_rows, as_of=as_of)


def _tie_free_chunks(t: pa.Table, fv: FeatureView) -> list[pa.Table]:
    """Split a table sorted by (keys, ts, created) into chunks of about MATERIALIZE_BATCH rows, never
    between two rows of one full tie (they must meet in one online write, where the last one wins)."""
    tie_cols = fv.join_keys + [fv.timestamp_field]
    tie_cols += [fv.created_timestamp_field] if fv.created_timestamp_field else []
    out, start, n = [], 0, t.num_rows
    while n - start > MATERIALIZE_BATCH:
        cut = start + MATERIALIZE_BATCH
        # Ties are adjacent in a sorted file and rare: step over the few rows equal to the one before.
        while cut < n and all(t.column(c)[cut] == t.column(c)[cut - 1] for c in tie_cols):
            cut += 1
        out.append(t.slice(start, cut - start))
        start = cut
    out.append(t.slice(start))
    return out


def _rows_to_columns(entity_rows: Any, keys: Sequence[str]) -> dict[str, list[Any]]:
    if isinstance(entity_rows, Mapping):
        cols = {k: list(v) for k, v in entity_rows.items()}
    elif isinstance(entity_rows, pa.Table):
        cols = {k: entity_rows.column(k).to_pylist() for k in entity_rows.column_names}
    else:
        rows = list(entity_rows)
        cols = {k: [r.get(k) if isinstance(r, Mapping) else None for r in rows] for k in keys}
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise InvalidArgumentError(
                "entity_rows must be a mapping of join key to values or a list of dicts"
            )
    for k in keys:
        if k not in cols:
            raise MissingColumnError(f"entity_rows has no join key {k!r}; it needs {list(keys)}")
    lens = {len(cols[k]) for k in keys}
    if len(lens) > 1:
        raise InvalidArgumentError(f"entity_rows: join key columns have different lengths {sorted(lens)}")
    return cols


class OnlineReader:
    """A prepared online lookup (from :meth:`FeatureStore.online_reader`): one engine reader per view.

    ``get`` returns an :class:`OnlineResponse`; ``get_numpy`` is the hot path: ``(values, status)`` with
    values float64 ``[n, features]`` (null as NaN) and status int8 ``[n, views]`` (0 present, 1 not
    found, 2 expired), views in the order of ``self.views``.
    """

    def __init__(
        self,
        store: FeatureStore,
        plan: Sequence[tuple[FeatureView, Sequence[str]]],
        names: Mapping[tuple[str, str], str],
        features: Any,
    ) -> None:
        self._online = store._online()
        self.views = [fv.name for fv, _ in plan]
        self.feature_names = [names[(fv.name, f)] for fv, fs in plan for f in fs]
        self.join_keys: list[str] = []
        for fv, _ in plan:
            self.join_keys.extend(k for k in fv.join_keys if k not in self.join_keys)
        # A view may have no online data yet (a service started before the first write or materialize):
        # its part has no engine reader and answers NOT_FOUND until one appears.
        self._parts: list[tuple[FeatureView, list[str], Any, dt.timedelta | None]] = [
            (fv, list(fs), None, fv.ttl) for fv, fs in plan
        ]
        self._resolve()

    def _resolve(self) -> None:
        """Open an engine reader for each view that has gained online data (from this process or
        another). Called per lookup only while some view has none, so it costs nothing afterwards."""
        for i, (fv, fs, r, ttl) in enumerate(self._parts):
            if r is None and self._online.schema(fv.name) is not None:
                self._parts[i] = (fv, fs, self._online.reader(fv.name, columns=fs), ttl)
        self._pending = any(p[2] is None for p in self._parts)
        ready = len(self._parts) == 1 and not self._pending
        self._single = self._parts[0] if ready else None
        self._single_key = (
            self._single[0].join_keys[0] if self._single and len(self._single[0].join_keys) == 1 else None
        )

    def _keys_arg(self, fv: FeatureView, cols: Mapping[str, Sequence[Any]]) -> Any:
        if len(fv.join_keys) == 1:
            return cols[fv.join_keys[0]]
        return {k: cols[k] for k in fv.join_keys}

    def get_numpy(
        self, entity_rows: Any, *, as_of: dt.datetime | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature values as float64 ``[n, features]`` and statuses int8 ``[n, views]``.

        ``entity_rows``: a mapping of join key to values; when every view has the same single join key,
        a plain sequence of key values is accepted too (the fastest call).
        """
        if self._pending:
            self._resolve()
        s = self._single
        if s is not None:
            if self._single_key is not None:
                keys = entity_rows.get(self._single_key) if isinstance(entity_rows, Mapping) else entity_rows
                if keys is None:
                    raise MissingColumnError(f"entity_rows has no join key {self._single_key!r}")
            else:
                keys = self._keys_arg(s[0], _rows_to_columns(entity_rows, self.join_keys))
            vals, st = s[2].get_numpy(keys, as_of=as_of, ttl=s[3])
            return vals, st.reshape(-1, 1)
        if isinstance(entity_rows, Mapping) or len(self.join_keys) > 1:
            cols = _rows_to_columns(entity_rows, self.join_keys)
        else:
            cols = {self.join_keys[0]: list(entity_rows)}
        n = len(cols[self.join_keys[0]])
        vs, sts = [], []
        for fv, fs, r, ttl in self._parts:
            if r is None:
                for f in fs:
                    t = fv.get_field(f).dtype.arrow
                    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                        raise DtypeError(
                            f"get_numpy returns float64, but feature {f!r} of view {fv.name!r} is {t}; "
                            "use get(), or a reader of numeric features only"
                        )
                vs.append(np.full((n, len(fs)), np.nan))
                sts.append(np.full(n, _NOT_FOUND, np.int8))
                continue
            v, st = r.get_numpy(self._keys_arg(fv, cols), as_of=as_of, ttl=ttl)
            vs.append(v)
            sts.append(st)
        return np.hstack(vs), np.column_stack(sts)

    def get(self, entity_rows: Any, *, as_of: dt.datetime | None = None) -> OnlineResponse:
        """The entity columns then the features, as an :class:`OnlineResponse`."""
        if self._pending:
            self._resolve()
        cols = _rows_to_columns(entity_rows, self.join_keys)
        out: dict[str, Any] = {k: cols[k] for k in self.join_keys}
        statuses: dict[str, np.ndarray] = {}
        it = iter(self.feature_names)
        n = len(cols[self.join_keys[0]])
        for fv, fs, r, ttl in self._parts:
            if r is None:
                missing = np.full(n, _NOT_FOUND, np.int8)
                for f in fs:
                    name = next(it)
                    out[name] = pa.nulls(n, fv.get_field(f).dtype.arrow)
                    statuses[name] = missing
                continue
            t = r.get(self._keys_arg(fv, cols), as_of=as_of, ttl=ttl, status_column=_STATUS)
            # The engine already reads missing and expired rows as null; the status says which.
            st = t.column(_STATUS).to_numpy()
            for f in fs:
                name = next(it)
                out[name] = t.column(f)
                statuses[name] = st
        return OnlineResponse(pa.table(out), self.feature_names, statuses)


class OnlineResponse:
    """The answer of an online lookup: entity columns and features, plus a status per value
    (``statuses[feature]``: int8 array, 0 present, 1 not found, 2 expired).

    Example: ``resp.to_dict()``, ``resp.to_pandas()``, ``resp.to_numpy()``, ``resp.to_arrow()``.
    """

    def __init__(
        self, table: pa.Table, feature_names: Sequence[str], statuses: Mapping[str, np.ndarray]
    ) -> None:
        self._table = table
        self.feature_names = list(feature_names)
        self.statuses = dict(statuses)

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_dict(self) -> dict[str, list[Any]]:
        return self._table.to_pydict()

    def to_pandas(self) -> Any:
        return self._table.to_pandas()

    def to_numpy(self) -> np.ndarray:
        """The features as float64 ``[n, features]`` (null as NaN); numeric features only."""
        cols = []
        for f in self.feature_names:
            c = self._table.column(f)
            if not (
                pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type)
            ):
                raise DtypeError(f"feature {f!r} is {c.type}; to_numpy needs numeric features, use to_arrow")
            cols.append(pc.fill_null(pc.cast(c, pa.float64()), np.nan).to_numpy())
        n = self._table.num_rows
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"OnlineResponse({self._table.num_rows} rows, features={self.feature_names})"


class _Progress:
    """A one-line progress display for terminals (no dependency)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.perf_counter()

    def update(self, n: int) -> None:
        dt_ = time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.label}: {n:,} rows ({n / max(dt_, 1e-9):,.0f} rows/s)")
        sys.stderr.flush()

    def close(self, n: int) -> None:
        self.update(n)
        sys.stderr.write("\n")
