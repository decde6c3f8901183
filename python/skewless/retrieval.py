"""Historical retrieval: point-in-time correct training sets.

For each entity row (keys k, time t) and each view, the value is the view's row for k with the greatest
timestamp <= t and >= t - ttl, null when there is none. Ties: the latest created timestamp; among full
ties the earliest write, and within it its last row (the online store's rule, so both agree), decided by
the history's write sequence ``__seq__`` (offline.py, "Tie order"), never by the order rows are read in.

:func:`retrieve` is the I/O-free core: entity rows and each view's history rows in, the training set out.
The store reads the history (:func:`get_historical_features`); a distributed engine can call
``retrieve`` on a partition with history it read itself.
Imputation and transforms (:mod:`skewless.transforms`) run after the join, in
:func:`get_historical_features` (``retrieve`` joins plain features only); their engine program works per
row, so it may run on each partition's output alike.

Example:
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureView, Field, Float64
    >>> fv = FeatureView("v", [Entity("user")], [Field("x", Float64)])
    >>> T = pa.timestamp("us", tz="UTC")
    >>> labels = pa.table({"user_id": [1, 1], "event_timestamp": pa.array([15, 25], T)})
    >>> hist = pa.table({"user_id": [1, 1], "event_timestamp": pa.array([10, 20], T), "x": [1.0, 2.0]})
    >>> retrieve(labels, {"v": hist}, [(fv, ["x"])]).column("x").to_pylist()
    [1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from . import history, transforms
from ._arrow import as_table, index_hint
from .asof import asof_join
from .definitions import FeatureService
from .errors import ColumnClashError, MissingColumnError
from .events import window_features
from .normalize import column_name, entity_key, flag, normalize_ts
from .offline import SEQ, tie_rank
from .refs import Plan, output_names, resolve

if TYPE_CHECKING:
    from .store import FeatureStore

__all__ = ["retrieve", "get_historical_features"]


class _Request(NamedTuple):
    """A checked request: the entity rows' instants, output names, and each view's left side."""

    t: pa.ChunkedArray
    names: dict[tuple[str, str], str]
    lefts: list[pa.Table]


def _check(
    entity_df: pa.Table,
    views: Plan,
    key_types: Mapping[str, Sequence[pa.DataType | None]] | None,
    full_feature_names: bool,
    timestamp_column: str,
) -> _Request:
    # Everything about the request is checked here, before any history is read or joined.
    if timestamp_column not in entity_df.column_names:
        raise MissingColumnError(
            f"entity_df has no column {timestamp_column!r}; pass timestamp_column= naming its event time"
        )
    t = normalize_ts(entity_df.column(timestamp_column), f"entity_df column {timestamp_column!r}")
    names = output_names(views, full_feature_names, entity_df.column_names)
    lefts = []
    for fv, _ in views:
        kts = (key_types or {}).get(fv.name) or [None] * len(fv.join_keys)
        left_cols: dict[str, Any] = {}
        for k, kt in zip(fv.join_keys, kts, strict=True):
            if k not in entity_df.column_names:
                raise MissingColumnError(
                    f"entity_df has no column {k!r}, a join key of view {fv.name!r}; add it"
                )
            left_cols[k] = entity_key(entity_df.column(k), kt, k)
        left_cols[fv.timestamp_field] = t
        lefts.append(pa.table(left_cols))
    return _Request(t, names, lefts)


def _join(
    entity_df: pa.Table, req: _Request, views: Plan, histories: Mapping[str, pa.Table | None]
) -> pa.Table:
    # Columns are collected and the table built once: appending one by one copies the column list each
    # time, quadratic in a view of thousands of features.
    names = list(entity_df.column_names)
    cols: list[Any] = list(entity_df.columns)
    for (fv, feats), left in zip(views, req.lefts, strict=True):
        right = histories.get(fv.name)
        if fv.is_event_view:
            seq = SEQ if right is not None and SEQ in right.column_names else None
            for f, col in zip(feats, window_features(fv, left, right, feats, seq), strict=True):
                names.append(req.names[(fv.name, f)])
                cols.append(col)
            continue
        if right is None or right.num_rows == 0 or left.num_rows == 0:
            dtypes = {f.name: f.dtype.arrow for f in fv.schema}
            for f in feats:
                names.append(req.names[(fv.name, f)])
                cols.append(pa.nulls(left.num_rows, dtypes[f]))
            continue
        sequence = None
        if SEQ in right.column_names:
            # The sequence as the join's rank (larger wins), in place: no extra column to gather.
            sequence = "__tie_rank__"
            i = right.schema.get_field_index(SEQ)
            right = right.set_column(i, sequence, tie_rank(right.column(i)))
        joined = asof_join(
            left,
            right,
            on=fv.timestamp_field,
            by=fv.join_keys,
            tolerance=fv.ttl,
            tie_breaker=fv.created_timestamp_field,
            sequence=sequence,
        )
        for f in feats:
            names.append(req.names[(fv.name, f)])
            cols.append(joined.column(f))
    return pa.Table.from_arrays(cols, names=names)


def retrieve(
    entity_df: pa.Table,
    histories: Mapping[str, pa.Table | None],
    views: Plan,
    *,
    key_types: Mapping[str, Sequence[pa.DataType | None]] | None = None,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
) -> pa.Table:
    """``entity_df``'s rows, in order, then each view's requested features as of each row's time.

    ``histories[view]``: the view's history rows in the stored layout (keys, time columns, at least the
    requested features), or None when it has none. With their write sequence column ``__seq__`` (as
    :meth:`OfflineStore.scan` reads it) full ties are decided by it and row order does not matter;
    without it, the last of a full tie in the given order wins. An event view's history holds its raw
    events (keys, timestamp, the aggregated columns; ``__seq__`` orders events of equal time for
    ``first``/``last``, without it input order does), from which each aggregate is computed as of each
    row's time (``skewless.events``). ``key_types[view]``: the view's key types, to which entity keys are
    converted (None: take the history's).
    """
    req = _check(entity_df, views, key_types, full_feature_names, timestamp_column)
    return _join(entity_df, req, views, histories)


def _previous(
    left: pa.Table,
    compiled: transforms.Compiled,
    histories: Mapping[str, pa.Table | None],
    key_types: Mapping[str, Sequence[pa.DataType | None]],
    timestamp_column: str,
) -> list[Any]:
    """The ``previous`` strategy's inputs (``compiled.previous``): each feature's last non-null value as
    of each row, the same join as the feature's own (TTL, tie order) over the rows where it is not null
    (a NaN is a value)."""
    out = []
    for fv, f in compiled.previous:
        part = [(fv, [f])]
        req = _check(left, part, key_types, True, timestamp_column)
        hist = histories.get(fv.name)
        if hist is not None:
            hist = hist.filter(pc.is_valid(hist.column(f)))
        out.append(_join(left, req, part, {fv.name: hist}).column(left.num_columns))
    return out


def get_historical_features(
    store: FeatureStore,
    entity_df: Any,
    features: Sequence[str] | FeatureService,
    *,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
    imputed_flags: bool = False,
    strict: bool = False,
) -> pa.Table:
    """:meth:`FeatureStore.get_historical_features`: resolve, check the request, read each view's
    history in the time range the rows need, then join as :func:`retrieve` does; then imputation and
    transforms (:mod:`skewless.transforms`), when the request has any."""
    full_feature_names = flag(full_feature_names, "full_feature_names")
    imputed_flags = flag(imputed_flags, "imputed_flags")
    strict = flag(strict, "strict")
    column_name(timestamp_column, "timestamp_column")
    compiled = transforms.compile_request(store.registry, features, full_feature_names)
    plan = compiled.plan if compiled is not None else resolve(store.registry, features)
    left = as_table(entity_df, "entity_df")
    for c in [timestamp_column] + [k for fv, _ in plan for k in fv.join_keys]:
        if c not in left.column_names and index_hint(entity_df, c):
            raise MissingColumnError(f"entity_df has no column {c!r}. {index_hint(entity_df, c)}")
    key_types = {fv.name: store.registry.key_types(fv) for fv, _ in plan}
    # A compiled request joins under internal full names (its outputs are named after the transforms).
    req = _check(left, plan, key_types, full_feature_names or compiled is not None, timestamp_column)
    request_cols = transforms.request_table(compiled, left) if compiled is not None else []
    mm = pc.min_max(req.t)
    tmin, tmax = mm["min"].value, mm["max"].value
    histories = {
        fv.name: history.for_join(store.offline, store.registry, fv, feats, tmin, tmax) for fv, feats in plan
    }
    joined = _join(left, req, plan, histories)
    if compiled is None:
        if strict:
            transforms.check_strict(
                zip(joined.column_names[left.num_columns :], joined.columns[left.num_columns :], strict=True)
            )
        return joined
    stage_in = pa.Table.from_arrays(
        joined.columns[left.num_columns :]
        + _previous(left, compiled, histories, key_types, timestamp_column)
        + request_cols,
        names=[f"c{i}" for i in range(compiled.n_features + len(request_cols))],
    )
    stage = compiled.program.run(stage_in, compiled.select, compiled.names, imputed_flags)
    out = transforms.finish(compiled, stage, imputed_flags)
    if strict:
        transforms.check_strict(out)
    clash = [n for n, _ in out if n in left.column_names]
    if clash:
        raise ColumnClashError(
            f"output column(s) {clash} clash with columns of entity_df; rename those columns"
        )
    return pa.Table.from_arrays(
        list(left.columns) + [c for _, c in out], names=list(left.column_names) + [n for n, _ in out]
    )
