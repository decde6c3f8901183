"""Event views: feature views whose features are sliding-window aggregates of raw events.

A :class:`~skewless.FeatureView` given ``aggregations=[Aggregation(...)]`` is an event view. Its
``schema`` lists the raw event columns (its history is the raw events, append-only); its features, as
requested (``"user_txn:amount_sum_7d"``), are the aggregations' output names. The raw columns are not
features of their own. Training sets compute each aggregate as of each entity row's own timestamp
(:func:`window_features`); serving evaluates it at the request instant from the online window state
that ``FeatureStore.push`` keeps (rust/src/window/state.rs). Both run the same Rust accumulators, and
so does the skew check (:mod:`skewless.skew`), which recomputes logged values from the events known then.

Rules checked here, once, for definitions and the registry alike: at least one aggregation; each over a
column of the view's schema whose dtype the function takes (``Float64``, ``Float32``, ``Int64``,
``Int32`` or ``String``; ``sum``, ``mean`` and the variances need a number, ``count_distinct`` an integer
or a string); output names valid and distinct from each other and from the view's columns; no ``ttl``
(a window is its own horizon) and no ``created_timestamp_field`` (events are ordered by time, then by
write sequence).

Example:
    >>> from skewless import Aggregation, Entity, FeatureView, Field, Float64
    >>> txn = FeatureView("user_txn", [Entity("user")], [Field("amount", Float64)],
    ...                   aggregations=[Aggregation("amount", "sum", window="7d")])
    >>> aggregate_names(txn), output_type(txn, "amount_sum_7d")
    (['amount_sum_7d'], DataType(double))
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import DtypeError, InvalidArgumentError, UnknownFeatureError
from .window import Aggregation

if TYPE_CHECKING:
    from .definitions import FeatureView
    from .offline import OfflineStore
    from .online import OnlineStore
    from .registry import Registry

__all__ = [
    "check_aggregations",
    "aggregate_names",
    "aggregation",
    "output_type",
    "horizon_us",
    "to_spec",
    "from_spec",
    "window_features",
    "push_events",
    "push_with_history",
    "window_spec",
    "materialize_events",
]

#: Column dtypes an aggregation reads, and which functions take each.
_NUMERIC = ("Float64", "Float32", "Int64", "Int32")
_INTEGER = ("Int64", "Int32")
_ARROW = {"Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string()}
_NUMBERS_ONLY = ("sum", "mean", "var_samp", "var_pop", "stddev_samp", "stddev_pop")
#: The online store keeps an event view's window state under the view's name with this suffix
#: (rust/src/window/state.rs, ``store_name``).
STATE_SUFFIX = "__window"


def check_aggregations(
    name: str,
    aggregations: Sequence[Any],
    schema: Sequence[Any],
    columns: Sequence[str],
    ttl: Any,
    created_timestamp_field: str | None,
) -> list[Aggregation]:
    """The aggregations of event view ``name`` as a list, or a typed error saying what is wrong.

    ``schema``: the view's Fields; ``columns``: every other column name of the view (keys, timestamps).
    """
    from .definitions import MAX_NAME, _check_name

    aggs = list(aggregations)
    if not aggs or not all(isinstance(a, Aggregation) for a in aggs):
        raise InvalidArgumentError(
            f"feature view {name!r}: aggregations must be a non-empty list of skewless.Aggregation"
        )
    if ttl is not None:
        raise InvalidArgumentError(
            f"feature view {name!r} has aggregations and a ttl; a window is its own horizon (an old value "
            "ages out of it), so drop the ttl"
        )
    if created_timestamp_field is not None:
        raise InvalidArgumentError(
            f"feature view {name!r} has aggregations and a created_timestamp_field; events are ordered by "
            "time, then by write order, so drop created_timestamp_field"
        )
    # The online window state lives under "<view>__window", which must stay within a view name's length.
    if len(name) > MAX_NAME - len(STATE_SUFFIX):
        raise InvalidArgumentError(
            f"feature view {name[:20]!r}... has aggregations and a {len(name)}-character name; an event "
            f"view's name has at most {MAX_NAME - len(STATE_SUFFIX)} characters"
        )
    dtypes = {f.name: f.dtype.name for f in schema}
    for a in aggs:
        what = f"feature view {name!r}: aggregation {a.name!r}"
        _check_name(a.name, f"{what} output")
        if a.column not in dtypes:
            raise UnknownFeatureError(
                f"{what} reads column {a.column!r}, which is not in the view's schema {list(dtypes)}; add a "
                "Field for it"
            )
        d = dtypes[a.column]
        if d not in _NUMERIC and d != "String":
            raise DtypeError(
                f"{what}: column {a.column!r} is {d}; aggregations read Float64, Float32, Int64, Int32 or "
                "String columns"
            )
        if a.function in _NUMBERS_ONLY and d not in _NUMERIC:
            raise DtypeError(f"{what}: {a.function} needs a numeric column, but {a.column!r} is {d}")
        if a.function == "count_distinct" and d not in _INTEGER and d != "String":
            raise DtypeError(
                f"{what}: count_distinct counts integer or string values, but {a.column!r} is {d}"
            )
    names = [a.name for a in aggs]
    dup = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if dup:
        raise InvalidArgumentError(
            f"feature view {name!r}: aggregation output name(s) {dup} used twice; pass name= to tell them "
            "apart"
        )
    clash = sorted(set(names) & (set(dtypes) | set(columns)))
    if clash:
        raise InvalidArgumentError(
            f"feature view {name!r}: aggregation output name(s) {clash} are also column names of the view; "
            "pass name= to rename them"
        )
    return aggs


def aggregate_names(fv: FeatureView) -> list[str]:
    """The features of an event view: its aggregations' output names, in definition order."""
    return [a.name for a in fv.aggregations]


def aggregation(fv: FeatureView, name: str) -> Aggregation:
    """The aggregation of ``fv`` whose output is ``name`` (UnknownFeatureError if none)."""
    for a in fv.aggregations:
        if a.name == name:
            return a
    raise UnknownFeatureError(
        f"event view {fv.name!r} has no aggregation {name!r}; its features are {aggregate_names(fv)} (its "
        "raw columns are not features: request an aggregation of them)"
    )


def aggregate_dtype(function: str, column: str) -> str:
    """The dtype name of an aggregate of ``function`` over a column of dtype name ``column``: Int64 for
    counts and for sums of integers, the column (widened to Int64 / Float64 / String) for min, max, first
    and last, Float64 otherwise."""
    wide = "Int64" if column in _INTEGER else "Float64" if column in _NUMERIC else "String"
    if function in ("count", "count_distinct"):
        return "Int64"
    if function in ("min", "max", "first", "last"):
        return wide
    if function == "sum" and column in _INTEGER:
        return "Int64"
    return "Float64"


def output_type(fv: FeatureView, name: str) -> pa.DataType:
    """The Arrow type of an aggregation's output (:func:`aggregate_dtype`)."""
    a = aggregation(fv, name)
    return _ARROW[aggregate_dtype(a.function, fv.get_field(a.column).dtype.name)]


def window_spec(fv: FeatureView, feats: Sequence[str]) -> list[tuple[str, str, int]] | None:
    """What a serving plan evaluates for ``feats`` of ``fv``: (column, function, window_us) each, or
    None for a plain view."""
    if not fv.is_event_view:
        return None
    return [(a.column, a.function, a.window_us) for a in (aggregation(fv, f) for f in feats)]


def horizon_us(fv: FeatureView) -> int:
    """The largest window of the view (microseconds): how far back an aggregate at t reads."""
    return max(a.window_us for a in fv.aggregations)


def to_spec(aggs: Sequence[Aggregation]) -> list[dict[str, Any]]:
    """Aggregations as the registry stores them (``registry.py`` describes the format)."""
    return [
        {"column": a.column, "function": a.function, "window_us": a.window_us, "name": a.name} for a in aggs
    ]


def from_spec(specs: Sequence[Mapping[str, Any]]) -> list[Aggregation]:
    """Aggregations read back from :func:`to_spec`'s form.

    Example:
        >>> from_spec(to_spec([Aggregation("amount", "sum", "7d")]))
        [Aggregation('amount', 'sum', window='7d', name='amount_sum_7d')]
    """
    import datetime as dt

    return [
        Aggregation(s["column"], s["function"], dt.timedelta(microseconds=s["window_us"]), name=s["name"])
        for s in specs
    ]


def window_features(
    fv: FeatureView,
    left: pa.Table,
    events: pa.Table | None,
    feats: Sequence[str],
    sequence: str | None,
    by: Sequence[str] | None = None,
) -> list[pa.ChunkedArray]:
    """Each requested aggregate of ``fv`` for every row of ``left`` (join keys and the view's timestamp
    field), in row order, from ``events`` (history rows: keys, timestamp, the aggregated columns and,
    when given, the ``sequence`` column ordering events of equal time; None: no events). ``by``: the
    key columns to match on instead of the view's join keys (the skew check keys events by lookup)."""
    aggs = [aggregation(fv, f) for f in feats]
    if events is None or events.num_rows == 0 or left.num_rows == 0:
        out: list[pa.ChunkedArray] = []
        for a in aggs:
            if a.function in ("count", "count_distinct"):
                out.append(pa.chunked_array([np.zeros(left.num_rows, np.int64)], pa.int64()))
            else:
                out.append(pa.chunked_array([pa.nulls(left.num_rows, output_type(fv, a.name))]))
        return out
    # Label columns get names no event column has, so outputs never clash with them.
    res = _core.window_aggregate(
        left,
        events,
        fv.timestamp_field,
        list(fv.join_keys if by is None else by),
        sequence,
        [(a.column, a.function, a.window_us, a.name) for a in aggs],
    )
    return [_as_type(res.column(a.name), output_type(fv, a.name)) for a in aggs]


def _as_type(col: pa.ChunkedArray, want: pa.DataType) -> pa.ChunkedArray:
    # The kernel widens what it reads (int32 to int64, float32 to float64, string views to strings);
    # only a large string column comes back in its own type.
    return col if col.type == want else pc.cast(col, want)


def event_columns(fv: FeatureView) -> list[str]:
    """The raw columns the aggregations read, each once, in schema order."""
    used = {a.column for a in fv.aggregations}
    return [f.name for f in fv.schema if f.name in used]


def history_columns(fv: FeatureView, feats: Sequence[str]) -> list[str]:
    """The history columns the aggregates ``feats`` of ``fv`` read: keys, timestamp, their raw columns."""
    used = {aggregation(fv, f).column for f in feats}
    return [*fv.join_keys, fv.timestamp_field, *(c for c in event_columns(fv) if c in used)]


def push_events(
    online: OnlineStore, fv: FeatureView, table: pa.Table, seq: pa.Array, reset: bool = False
) -> int:
    """Merge events (the stored layout, their write sequence ``seq``) into the view's online window
    state, in one transaction; ``reset`` first drops the whole state (a rebuild). Returns the entities
    written."""
    from .offline import SEQ

    cols = [*fv.join_keys, fv.timestamp_field, *event_columns(fv)]
    t = table.select(cols).append_column(SEQ, seq)
    _, entities = _core.window_push(
        online._inner,
        fv.name,
        t,
        list(fv.join_keys),
        fv.timestamp_field,
        SEQ,
        event_columns(fv),
        horizon_us(fv),
        reset,
    )
    return int(entities)


def push_with_history(offline: OfflineStore, online: OnlineStore, fv: FeatureView, table: pa.Table) -> str:
    """``store.push``'s two halves at once: the view's next history file (Parquet encoding and fsyncs,
    which release the GIL) on a thread of its own, and the merge of ``table`` (the stored layout) into
    the online window state (Rust, no GIL) on this one, inside one open LMDB transaction. That
    transaction commits only once the history file and its folder are fsynced (the thread opens a
    :class:`~skewless._core.CommitGate` the merge waits at), so the rule of ``write`` holds: history
    first, durable; online after (``materialize`` repairs a process that dies between). A failed
    history file (or a damaged footer of an earlier one, checked on that thread before the file is
    written) closes the gate: the transaction aborts, nothing is written. A failed merge or commit
    removes the history file. Call under the writer lock. Returns the history file's path."""
    import _thread

    from .offline import SEQ

    # The merge is the longer half: it starts as soon as the file's number is known, and everything
    # the file alone needs (the footer check of the files already there: a stat each) runs beside it.
    path, stamped = offline.next_file(fv.name, table, check=False)
    cols = [*fv.join_keys, fv.timestamp_field, *event_columns(fv)]
    state = table.select(cols).append_column(SEQ, stamped.column(SEQ))
    gate = _core.CommitGate()
    failed: list[BaseException] = []
    done = _thread.allocate_lock()
    done.acquire()

    def write_history() -> None:
        try:
            offline.check_footers(fv.name)
            offline.write_file(path, stamped)
        except BaseException as e:  # handed to the caller's thread below
            failed.append(e)
        finally:
            try:
                # Always answered: the merge waits for it.
                if failed:
                    gate.close()
                else:
                    gate.open()
            finally:
                done.release()

    # A bare thread: threading.Thread.start waits until the new thread runs, a scheduling round (0.1 ms
    # on an idle machine, more on a busy one) on the push's critical path; the lock `done` is the join.
    _thread.start_new_thread(write_history, ())
    try:
        _core.window_push(
            online._inner,
            fv.name,
            state,
            list(fv.join_keys),
            fv.timestamp_field,
            SEQ,
            event_columns(fv),
            horizon_us(fv),
            False,
            gate,
        )
    except BaseException:
        gate.close()
        done.acquire()
        if failed:
            raise failed[0] from None
        offline.remove(path)
        raise
    done.acquire()
    return path


def materialize_events(
    offline: OfflineStore, registry: Registry, online: OnlineStore, fv: FeatureView, lo: int | None, hi: int
) -> int:
    """Bring the view's window state in line with its history rows in ``[lo, hi)``: merged into the
    state (a replay changes nothing, events being identified by their write sequence), or, with ``lo``
    None, the state rebuilt from them in one transaction. Returns the rows read."""
    from . import history
    from .normalize import normalize_rows
    from .offline import SEQ

    cols = [*fv.join_keys, fv.timestamp_field, *event_columns(fv)]
    batches = [
        b for b in history.scan(offline, registry, fv, cols, lo, hi, False, with_seq=True) if b.num_rows
    ]
    if batches:
        t = history.to_stored(registry, fv, pa.Table.from_batches(batches), [*cols, SEQ])
    else:
        t = history.empty(registry, fv, cols).append_column(SEQ, pa.array([], pa.int64()))
    seq = t.column(SEQ)
    t = t.drop_columns([SEQ])
    if fv.source is not None and t.num_rows:
        # A source is checked like a write; only the columns the state reads are needed.
        full = {
            c: t.column(c) if c in t.column_names else pa.nulls(t.num_rows, fv.get_field(c).dtype.arrow)
            for c in fv.stored_columns
        }
        t, _ = normalize_rows(fv, registry.key_types(fv), pa.table(full), f"source {fv.source!r}")
    if not batches and lo is not None:
        return 0
    push_events(online, fv, t, seq, reset=lo is None)
    return t.num_rows
