"""Reading a view's history (its Parquet files, or its ``source=``) in the stored layout: join keys in
the view's key types, timestamps in UTC microseconds, features in their dtypes.

A history the store wrote is already in that layout; a ``source=`` written by someone else goes through
the same checks as ``write`` (``normalize``). Reads prune by time with the files' statistics.

Example:
    >>> import tempfile
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> s = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = s.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
    >>> T = pa.timestamp("us", tz="UTC")
    >>> _ = s.write("v", {"user_id": [1, 2], "event_timestamp": pa.array([10, 20], T), "x": [1.0, 2.0]})
    >>> read(s.offline, s.registry, s.get_feature_view("v"), ["user_id", "x"]).to_pydict()
    {'user_id': [1, 2], 'x': [1.0, 2.0]}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from .definitions import TIMESTAMP_TYPE, FeatureView
from .normalize import INT64_MIN, conform, normalize_ts
from .offline import SEQ, OfflineStore
from .registry import Registry

__all__ = ["schema", "empty", "scan", "read", "join_low", "for_join"]


def schema(registry: Registry, fv: FeatureView) -> pa.Schema | None:
    """The stored history's Arrow schema, or None while a key's type is not known yet."""
    kt = registry.key_types(fv)
    if any(t is None for t in kt):
        return None
    fields = [pa.field(k, t) for k, t in zip(fv.join_keys, kt, strict=True)]
    fields += [pa.field(c, TIMESTAMP_TYPE) for c in fv.time_columns]
    fields += [pa.field(f.name, f.dtype.arrow) for f in fv.schema]
    return pa.schema(fields)


def empty(registry: Registry, fv: FeatureView, cols: Sequence[str]) -> pa.Table:
    """A table of no rows with the stored types of ``cols``."""
    kt = dict(zip(fv.join_keys, registry.key_types(fv), strict=True))
    types = {c: TIMESTAMP_TYPE for c in fv.time_columns}
    types.update({f.name: f.dtype.arrow for f in fv.schema})
    fields = [pa.field(c, kt.get(c) or types.get(c) or pa.int64()) for c in cols]
    return pa.schema(fields).empty_table()


def scan(
    offline: OfflineStore,
    registry: Registry,
    fv: FeatureView,
    columns: Sequence[str],
    lo_us: int | None,
    hi_us: int | None,
    hi_inclusive: bool,
    files: Sequence[str] | None = None,
    with_seq: bool = False,
    row_groups: Sequence[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of ``columns`` with ``lo_us <= timestamp`` and ``timestamp < hi_us`` (``<=`` when
    ``hi_inclusive``), plus the write sequence ``__seq__`` with ``with_seq`` (see offline.py); with
    ``row_groups``, only those row groups of ``files``."""
    return offline.scan(
        fv.name,
        fv.source,
        schema(registry, fv),
        columns,
        (fv.timestamp_field, lo_us, hi_us, hi_inclusive),
        files=files,
        with_seq=with_seq,
        row_groups=row_groups,
    )


def to_stored(registry: Registry, fv: FeatureView, t: pa.Table | None, cols: Sequence[str]) -> pa.Table:
    """Rows read from the view's files in the stored layout (a ``source=`` is checked like a write)."""
    if t is None or t.num_columns == 0:
        return empty(registry, fv, cols)
    if fv.source is None:
        return t
    out = {}
    times = set(fv.time_columns)
    for c in t.column_names:
        col = t.column(c)
        if c in times or (c in fv.feature_names and fv.get_field(c).dtype.name == "Timestamp"):
            col = normalize_ts(col, f"source {fv.source!r} column {c!r}")
        elif c in fv.feature_names:
            col = conform(col, fv.get_field(c).dtype.arrow, f"source {fv.source!r} column {c!r}")
        out[c] = col
    return pa.table(out)


def read(
    offline: OfflineStore, registry: Registry, fv: FeatureView, columns: Sequence[str] | None = None
) -> pa.Table:
    """A view's whole history (or some of its columns) in the stored layout, in write order."""
    cols = list(columns) if columns is not None else fv.stored_columns
    if not offline.files(fv.name, fv.source):
        return empty(registry, fv, cols)
    batches = list(scan(offline, registry, fv, cols, None, None, True))
    if not batches:
        return empty(registry, fv, cols)
    return to_stored(registry, fv, pa.Table.from_batches(batches), cols)


def join_low(fv: FeatureView, tmin: int) -> int | None:
    """The earliest history timestamp (UTC microseconds) a label at ``tmin`` or later can match, or
    None for no bound. Every reader of a join's history (this module, skewless.events, skewless.spark)
    uses it: an event view's horizon is its largest window (events in ``(t - w, t]``), a plain view's its
    TTL."""
    if fv.is_event_view:
        from .events import horizon_us

        ttl: int | None = horizon_us(fv)
    else:
        ttl = fv.ttl_us
    # A label near the start of time minus a long TTL is before any instant: no lower bound then.
    return None if ttl is None or tmin - ttl < INT64_MIN else tmin - ttl


def join_columns(fv: FeatureView, feats: Sequence[str]) -> list[str]:
    """The history columns a join of ``feats`` reads (every reader of a join's history uses it): keys,
    time columns and the features; for an event view, keys, timestamp and the raw columns its aggregates
    ``feats`` read."""
    if fv.is_event_view:
        from .events import history_columns

        return history_columns(fv, feats)
    return fv.tie_columns + list(feats)


def for_join(
    offline: OfflineStore,
    registry: Registry,
    fv: FeatureView,
    feats: Sequence[str],
    tmin: int | None,
    tmax: int | None,
) -> pa.Table | None:
    """The rows a label in ``[tmin, tmax]`` can match: ``[join_low, tmax]``, keys, time columns,
    ``feats`` and the write sequence ``__seq__`` (an event view: keys, timestamp and the raw columns its
    aggregates ``feats`` read); None when there are none (or no labels)."""
    if tmin is None or tmax is None:
        return None
    cols = join_columns(fv, feats)
    lo_us = join_low(fv, tmin)
    if not offline.files(fv.name, fv.source):
        return None
    batches = list(scan(offline, registry, fv, cols, lo_us, tmax, True, with_seq=True))
    if not batches:
        return None
    return to_stored(registry, fv, pa.Table.from_batches(batches), [*cols, SEQ])
