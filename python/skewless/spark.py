"""Scale-out on Apache Spark: the same Rust kernels, run on buckets of keys inside Spark tasks.

Nothing is re-implemented in Spark SQL (a second implementation is the logical skew this project
removes). Spark only moves rows: each row gets a group number, the bucket of its join keys
(:func:`skewless._core.key_buckets`, one hash for both sides, computed in the tasks), and every group's
rows go as Arrow tables through the local code, :func:`skewless.asof_join` or
:func:`skewless.retrieval.retrieve`. Every row of a key lands in one bucket, so each bucket's answer is
the local answer for its keys.

Data movement. Spark's per-row machinery (turning rows into its own format, shuffling and sorting them
one by one, turning them into Arrow again for Python) cost more than the join itself. So the tasks move
rows packed: each task cuts its rows by group and writes each group's rows as one Arrow IPC stream.
:func:`get_historical_features` writes these streams to files in a staging folder on the store's mount
(:mod:`skewless.spark_staging`: layout, atomic writes, lifetime): two Spark jobs at the call, one whose
tasks pack the entity rows and report where each group's streams are, with their rows and time span (so
the entity rows are read once), then one that packs the histories, read in that time span (one job for
both when the entity rows are a bare Parquet scan the tasks read themselves and whose footers give the
span: :mod:`skewless.spark_direct`; rows the tasks read themselves are staged by an RDD job under
classic pyspark, :func:`_run_tasks`); the returned DataFrame's tasks map each group's streams in place
and run the retrieval, group after group (groups dealt to fewer tasks by their rows: :func:`_task_count`,
:func:`_read_staged`). Spark then
moves only those small index rows: moving the packed bytes through its shuffle (out of Python, into
shuffle files, back into Python) was about half of a call's CPU time. :func:`asof_join` has no store
folder: its streams (LZ4-compressed) travel as binary values (the ``_PACKED`` layout below, version 1)
in a plain repartition placed so that each group has its own partition (no sort). The entity rows and
every view that shares their join keys travel together (one pass per set of join keys). A view's
history is not read by Spark's Parquet reader: the tasks read the store's files with the local reader
(whole row groups, about a million rows at a time; the time range, write sequence, page checksums and
``source=`` checks as locally).

Skewed keys. A key with more than ``skew_rows`` left rows (entity rows) is split by time: its left rows are
cut at approximate quantiles of their time into sub-buckets of about ``skew_rows`` rows, each its own group
(a task of its own in :func:`asof_join`; in :func:`get_historical_features` the heaviest groups go to
different tasks first). Each of the key's right rows goes to the sub-bucket of its own time; besides, for a
plain join a sub-bucket receives the rows at the latest time of the nearest earlier sub-bucket that has
right rows (all of them: a tie of timestamps is decided inside the kernel), for ``backward`` and
``nearest``, and those at the earliest time of the nearest later one, for ``forward`` and ``nearest`` (one
more pass over the right side finds them). For an event view (window aggregates), an event also goes to
every later sub-bucket whose first label's windows reach back to it (the view's largest window), so a hot
entity's events are copied about once more per window-length at each cut, not sent whole to one task. Either
way every row a result can come from is in the sub-bucket, so split and unsplit runs agree exactly. Finding
hot keys costs one aggregation over the left (in :func:`get_historical_features` only when a bucket of the
staged entity rows has more than ``skew_rows`` rows: a key's rows are never more than its bucket's; then the
entity rows are staged again, split); ``skew_rows=None`` skips it (every key then stays whole in one bucket,
whatever its size). The right side is not counted: a key with few left rows but a huge history stays whole.

Order. A Spark DataFrame has no row order of its own; results come bucket by bucket.
:func:`get_historical_features` leaves them so by default (``keep_order=False``: compare and join
them by your own columns, as any Spark result after a shuffle), or sorts them back into
``entity_df``'s order (``keep_order=True``: one more global sort, which at a million rows costs about
as much as the join).

Threads. In each task the Rust kernels run on ``spark.task.cpus`` threads (:mod:`skewless.threads`), not
on every core of the executor's machine, which the other tasks beside it share.

Errors. Arguments and the request are checked on the driver, before any Spark job, by running the local
code on empty tables of the inputs' schemas: the same :mod:`skewless.errors` exceptions as locally. An
error that depends on values (a key value that does not fit the view's key type, a damaged history
file) is raised in a task; the Spark action that ran it raises the same :mod:`skewless.errors` class
with the same message on the driver (classic pyspark: the first call of this module wraps pyspark's
conversion of JVM errors, which changes only errors that carry a task's skewless error; under Spark
Connect nothing is converted: the error stays Spark's own, its message holding the skewless error).

Example (needs pyspark and Java; see the README, "Running on Spark")::

    from pyspark.sql import SparkSession
    import skewless.spark
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    labels = spark.read.parquet("labels.parquet")
    train = skewless.spark.get_historical_features(spark, "my_store", labels, ["user_stats:spend"])
    train.write.parquet("train.parquet")
"""

from __future__ import annotations

import base64
import datetime as _dt
import heapq
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import errors, history, spark_direct, spark_staging
from ._core import key_buckets, partition_rows
from .asof import asof_join as _local_asof_join
from .definitions import FeatureService, FeatureView
from .errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    RegistryError,
    SkewlessError,
)
from .events import horizon_us
from .normalize import INT64_MAX, INT64_MIN, column_name, flag
from .offline import SEQ, OfflineStore, corrupt
from .refs import resolve
from .registry import Registry
from .retrieval import retrieve
from .spark_staging import clear_staging, staging_scope
from .threads import num_threads, set_num_threads

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "asof_join",
    "get_historical_features",
    "staging_scope",
    "clear_staging",
    "DEFAULT_SKEW_ROWS",
]

#: The bucket (co-group) number of a row. Reserved: an input with a column of this name is refused.
BUCKET = "__skewless_bucket__"
#: The entity row's position, carried through get_historical_features to restore the order.
ROW = "__skewless_row__"
_ON = "__skewless_on__"
_PART = "__skewless_part__"
_BLOB = "__skewless_blob__"
_DEST = "__skewless_dest__"
_RESERVED = (BUCKET, ROW, _ON, _PART, _BLOB, _DEST)
#: A packed row, layout version 1: the value Spark partitions by (:func:`_placer`), a group number,
#: which input of the group it holds (``_LEFT``, or the index of a view of the pass), and an Arrow IPC
#: stream of that input's rows of the group (see the module docstring, "Data movement").
_PACKED = f"{_DEST} int, {BUCKET} int, {_PART} int, {_BLOB} binary"
_LEFT = -1
#: A staging task's index rows as Spark's schema: :data:`skewless.spark_staging.INDEX_SCHEMA`, then
#: the stream's rows and its rows' least and greatest time (:func:`_stage`; not in the index file).
_STAGED = "group int, part int, file string, offset long, length long, rows long, lo long, hi long"
_STAGED_SCHEMA = pa.schema(
    [
        *spark_staging.INDEX_SCHEMA,
        pa.field("rows", pa.int64()),
        pa.field("lo", pa.int64()),
        pa.field("hi", pa.int64()),
    ]
)


def _staged_type() -> Any:
    """``_STAGED`` as Spark's schema object (a DDL string is parsed by the JVM at every use)."""
    global _STAGED_TYPE
    if _STAGED_TYPE is None:
        _STAGED_TYPE = _spark().from_arrow_schema(_STAGED_SCHEMA)
    return _STAGED_TYPE


_STAGED_TYPE: Any = None
#: How a task's skewless error travels to the driver inside Spark's error text (see "Errors").
_ERROR_MARK = "skewless-error:"
_ERROR_END = ":skewless-error-end"
_PACKED_SCHEMA = pa.schema(
    [(_DEST, pa.int32()), (BUCKET, pa.int32()), (_PART, pa.int32()), (_BLOB, pa.binary())]
)
#: Rows packed at a time in a task (one IPC stream per group of each such slice), and at most so many
#: bytes: a packed batch's binary column has 32-bit offsets (Spark's binary type).
_PACK_ROWS = 1 << 20
_PACK_BYTES = 1 << 28
#: Room for an IPC stream's schema and batch headers, per group, when sizing a pack's buffer.
_IPC_SLACK = 1 << 14
#: The streams are LZ4-compressed: fewer bytes through Spark's per-value copies and its shuffle saved
#: about 9% of the CPU time at size M, more than compressing costs.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)
#: Rows of history read at a time (whole row groups): a task reads one or more such parts.
_SPLIT_ROWS = spark_direct.SPLIT_ROWS
#: At most so many tasks per core of the session in a staging job over the histories and in the
#: result's job, unless the work is large (``_TASK_ROWS``): each Python task costs Spark 30-40 ms of CPU
#: time (the worker's setup, the command sent and unpickled), which at size M in ``local[2]`` was a fifth
#: of a call. Beyond this, a task runs several history parts or groups one after another (memory stays
#: that of one); two per core lets a core that finishes early take another task.
_TASKS_PER_CORE = 2
#: Rows (entity and history) a task gets at most however few cores the session has now (a cluster that
#: adds executors as it goes starts with few): about a second of a task's work, against which the
#: per-task cost is small.
_TASK_ROWS = 1 << 22

#: Default ``skew_rows``: a key with more left rows than this is split by time into sub-buckets.
DEFAULT_SKEW_ROWS = 1 << 20
#: percentile_approx's accuracy for the split points (relative rank error 1/accuracy).
_QUANTILE_ACCURACY = 10_000
_DAY_US = 86_400_000_000


def _spark() -> Any:
    try:
        import pyspark.sql.functions as functions
        import pyspark.sql.types as types
        from pyspark.sql.pandas.types import from_arrow_schema, from_arrow_type, to_arrow_schema
    except ImportError as e:  # pragma: no cover - the extra is installed wherever this runs in CI
        raise ImportError(
            f"skewless.spark needs pyspark ({e}); install it with `pip install 'skewless[spark]'` and a Java "
            "runtime (17 or later) for Spark"
        ) from None

    class _Mod:
        F = functions
        T = types

    _Mod.from_arrow_type = staticmethod(from_arrow_type)  # type: ignore[attr-defined]
    _Mod.to_arrow_schema = staticmethod(to_arrow_schema)  # type: ignore[attr-defined]
    _Mod.from_arrow_schema = staticmethod(from_arrow_schema)  # type: ignore[attr-defined]
    return _Mod


def _arrow_schema(df: DataFrame | Any) -> pa.Schema:
    """The Arrow schema Spark hands a task for ``df`` (or a Spark schema; timestamps as UTC instants)."""
    schema = df if isinstance(df, _spark().T.StructType) else df.schema
    return _spark().to_arrow_schema(schema, timezone="UTC")


def _spark_type(t: pa.DataType, what: str) -> Any:
    if pa.types.is_fixed_size_list(t):
        t = pa.list_(t.value_type)
    try:
        return _spark().from_arrow_type(t, prefer_timestamp_ntz=False)
    except Exception as e:  # pyspark raises its own error classes for unsupported types
        raise DtypeError(f"{what} is {t}, which Spark has no type for ({e})") from None


def _size_threads() -> None:
    """In a task: run the kernels on the task's cores (``spark.task.cpus``), not on every core."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    want = tc.cpus() if tc is not None else None
    if want and num_threads() != want:
        set_num_threads(want)


def _typed(fn: Any) -> Any:
    """``fn`` (a task's function over an iterator of batches) with a skewless error it raises
    encoded in the message Spark carries to the driver, where :func:`_install_typed_errors` raises
    it again as its own class."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            yield from fn(batches)
        except SkewlessError as e:
            message = str(e.args[0]) if e.args else str(e)
            blob = base64.b64encode(json.dumps([type(e).__name__, message]).encode()).decode()
            raise RuntimeError(f"{_ERROR_MARK}{blob}{_ERROR_END}") from None

    return run


def _typed_error(text: str) -> SkewlessError | None:
    """The skewless error a task encoded (:func:`_typed`) in an error's ``text``, or None."""
    m = re.search(re.escape(_ERROR_MARK) + r"([A-Za-z0-9+/=]+)" + re.escape(_ERROR_END), text)
    if m is None:
        return None
    try:
        name, message = json.loads(base64.b64decode(m.group(1)))
    except (ValueError, TypeError):
        return None
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SkewlessError)):
        return None
    return cls(message)


def _install_typed_errors() -> None:
    """Makes a failed Spark action raise the skewless error a task raised (its class and message),
    not pyspark's ``PythonException`` that carries it: pyspark converts every JVM error through
    ``pyspark.errors.exceptions.captured.convert_exception``, which this wraps once per process (only
    errors holding a task's encoded skewless error change)."""
    from pyspark.errors.exceptions import captured

    original = captured.convert_exception
    if getattr(original, "_skewless", False):
        return

    def convert(e: Any) -> Any:
        converted = original(e)
        try:
            typed = _typed_error(str(converted))
        except Exception:  # never hide Spark's own error behind a failure of ours
            typed = None
        return converted if typed is None else typed

    convert._skewless = True  # type: ignore[attr-defined]
    captured.convert_exception = convert


def _check_free(df: DataFrame | Sequence[str], what: str) -> None:
    taken = [c for c in (df if isinstance(df, Sequence) else df.columns) if c in _RESERVED]
    if taken:
        raise ColumnClashError(f"{what} has column(s) {taken}, reserved by skewless.spark; rename them")


def _buckets(spark: SparkSession, buckets: Any) -> int:
    if buckets is None:
        return max(1, int(spark.conf.get("spark.sql.shuffle.partitions") or 200))
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise InvalidArgumentError(f"buckets must be a positive int (or None), got {buckets!r}")
    return buckets


def _skew_rows(skew_rows: Any) -> int | None:
    if skew_rows is None:
        return None
    if not isinstance(skew_rows, int) or isinstance(skew_rows, bool) or skew_rows < 1:
        raise InvalidArgumentError(
            f"skew_rows must be a positive int (or None: never split), got {skew_rows!r}"
        )
    return skew_rows


def _key(df: DataFrame, name: str) -> Column:
    """A key column in the form both sides hash alike: integers and booleans as bigint (the kernel
    compares int32 with int64, and booleans with integer keys as 0/1), the rest as it is."""
    S = _spark()
    t = df.schema[name].dataType
    if isinstance(t, (S.T.IntegralType, S.T.BooleanType)):
        return S.F.col(name).cast("long")
    return S.F.col(name)


def _micros(df: DataFrame, name: str) -> Column:
    """A time column as a number, in the same unit on both sides: timestamps and dates as UTC
    microseconds (a date is its 00:00 UTC, as locally), integers as they are."""
    S = _spark()
    t = df.schema[name].dataType
    c = S.F.col(name)
    if isinstance(t, S.T.DateType):
        return S.F.unix_date(c).cast("long") * _DAY_US
    if isinstance(t, (S.T.TimestampType, S.T.TimestampNTZType)):
        return S.F.unix_micros(c)
    return c.cast("long")


class _Assign:
    """How one side's rows get their group number ``BUCKET`` (see the module docstring, "Skewed
    keys"): the bucket of their key (:func:`skewless._core.key_buckets`, the same function on both
    sides, in every task), or for a hot key one of its time sub-buckets, numbered from ``n`` on. A row
    with a null key matches nothing: the right side drops it, the left spreads it by position. ``links``
    (right side): (key, time, group) copies of the boundary rows a hot key's sub-bucket needs."""

    def __init__(
        self,
        keys: Sequence[str],
        on: str,
        n: int,
        hot: dict[tuple[Any, ...], tuple[int, list[int]]] | None,
        drop_null_keys: bool,
        links: Sequence[tuple[tuple[Any, ...], int, int]] = (),
        reach: int | None = None,
    ) -> None:
        self.keys, self.on, self.n = list(keys), on, n
        self.hot = sorted((hot or {}).items(), key=lambda kv: str(kv[0]))
        self.drop, self.links, self.reach = drop_null_keys, list(links), reach

    def __call__(self, t: pa.Table) -> tuple[pa.Table, np.ndarray]:
        b = key_buckets(t.select(self.keys), self.n)
        if b.null_count:
            if self.drop:
                t = t.filter(b.is_valid())
                b = b.drop_null()
            else:
                spread = pa.array(np.arange(len(b), dtype=np.int32) % self.n)
                b = pc.if_else(b.is_valid(), b, spread)
        groups = b.to_numpy(zero_copy_only=False).astype(np.int64)
        if not self.hot:
            return t, groups
        on = _micros_np(t.column(self.on))
        extra, extra_groups = [], []
        for k, (off, bounds) in self.hot:
            m = _key_mask(t, self.keys, k)
            if not m.any():
                continue
            b = np.asarray(bounds, np.int64)
            first = np.searchsorted(b, on[m], side="right")
            groups[m] = self.n + off + first
            if self.reach is not None:
                # An event view's row also goes to every later sub-bucket whose labels' windows reach
                # back to it: those starting at or before its time + the view's largest window.
                idx = np.flatnonzero(m)
                last = np.searchsorted(
                    b, np.minimum(on[m], INT64_MAX - self.reach) + self.reach, side="right"
                )
                more = np.maximum(last - first, 0)
                if more.any():
                    rows = np.repeat(idx, more)
                    step = np.arange(len(rows)) - np.repeat(np.cumsum(more) - more, more) + 1
                    extra.append(t.take(pa.array(rows)))
                    extra_groups.append(self.n + off + np.repeat(first, more) + step)
        for k, src, dst in self.links:
            idx = np.flatnonzero(_key_mask(t, self.keys, k) & (on == src))
            if len(idx):
                extra.append(t.take(pa.array(idx)))
                extra_groups.append(np.full(len(idx), dst, np.int64))
        if extra:
            t = pa.concat_tables([t, *extra])
            groups = np.concatenate([groups, *extra_groups])
        return t, groups


def _micros_np(col: pa.ChunkedArray) -> np.ndarray:
    """A time column as int64 numbers, as :func:`_micros` computes them in Spark (UTC microseconds for
    timestamps and dates, integers as they are); a null reads as the smallest int64 (sub-bucket 0, as
    Spark's comparison with null, and never equal to a boundary time)."""
    t = col.type
    if pa.types.is_timestamp(t):
        if t.unit != "us":
            col = pc.cast(col, pa.timestamp("us", tz=t.tz), safe=False)
        col = col.cast(pa.int64())
    elif pa.types.is_date(t):
        col = pc.multiply(col.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), _DAY_US)
    else:
        col = col.cast(pa.int64())
    return pc.fill_null(col, INT64_MIN).to_numpy()


def _key_mask(t: pa.Table, keys: Sequence[str], values: tuple[Any, ...]) -> np.ndarray:
    """Which rows of ``t`` have the key ``values`` (as Spark collected them: integers and booleans
    as numbers)."""
    m = np.ones(t.num_rows, dtype=bool)
    for k, v in zip(keys, values, strict=True):
        c = t.column(k)
        if pa.types.is_boolean(c.type):
            c = c.cast(pa.int64())
        m &= pc.fill_null(pc.equal(c, v), False).to_numpy(zero_copy_only=False)
    return m


def _murmur3_int(v: np.ndarray) -> np.ndarray:
    """Spark's ``hash`` of int values (Murmur3 x86_32, seed 42), what ``repartition(n, col)`` places a
    row by: ``pmod(hash(col), n)``. A test holds it equal to Spark's own."""
    with np.errstate(over="ignore"):
        k = v.astype(np.uint32) * np.uint32(0xCC9E2D51)
        k = (k << np.uint32(15)) | (k >> np.uint32(17))
        k = k * np.uint32(0x1B873593)
        h = np.uint32(42) ^ k
        h = (h << np.uint32(13)) | (h >> np.uint32(19))
        h = h * np.uint32(5) + np.uint32(0xE6546B64)
        h ^= np.uint32(4)
        h ^= h >> np.uint32(16)
        h = h * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h.astype(np.int32)


def _placer(n: int) -> np.ndarray:
    """For each of ``n`` groups, an int that ``repartition(n, col)`` puts in the partition of the
    group's own number: one group per partition, so the tasks get equal shares of buckets (hashing
    the group numbers themselves would leave some partitions with two or three groups and some
    empty). Were Spark to place rows differently, each group would still land whole in one partition:
    only the balance would suffer."""
    found = np.full(n, -1, np.int64)
    start, step = 0, max(64, 8 * n)
    while (found < 0).any():
        cand = np.arange(start, start + step, dtype=np.int64)
        part = _murmur3_int(cand).astype(np.int64) % n
        for p, c in zip(part[::-1], cand[::-1], strict=True):  # the smallest candidate wins
            found[p] = c
        start += step
        if start > 1 << 30:  # pragma: no cover - every partition is reached long before
            break
    return found.astype(np.int32)


def _cut(
    batches: Iterator[pa.RecordBatch], assign: _Assign
) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]]:
    """Rows cut by group, about ``_PACK_ROWS`` at a time: for each such slice, its rows ordered by
    group, and the groups it holds with where each one's rows start and end."""
    pending: list[pa.RecordBatch] = []
    rows = 0

    def flush() -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]]:
        t, groups = assign(pa.Table.from_batches(pending))
        if not t.num_rows:
            return
        # One pass in Rust (a stable counting sort, the chunks never concatenated): a numpy argsort
        # and pyarrow's take cost about a third of a history staging task.
        n = int(groups.max()) + 1
        t, counts = partition_rows(t, np.ascontiguousarray(groups, np.int32), n)
        first = np.flatnonzero(counts)
        ends = np.cumsum(counts, dtype=np.int64)[first]
        yield t, first, ends - counts[first].astype(np.int64), ends

    size = 0
    for b in batches:
        if b.num_rows:
            pending.append(b)
            rows += b.num_rows
            size += b.nbytes
        if rows >= _PACK_ROWS or size >= _PACK_BYTES:
            yield from flush()
            pending, rows, size = [], 0, 0
    if pending:
        yield from flush()


def _write_streams(
    sink: Any, t: pa.Table, starts: np.ndarray, ends: np.ndarray, options: pa.ipc.IpcWriteOptions
) -> list[int]:
    """One Arrow IPC stream per group (rows ``starts[i]`` to ``ends[i]`` of ``t``) into ``sink``: where
    each stream starts and, last, where the last one ends."""
    offsets = [sink.tell()]
    for a, b in zip(starts, ends, strict=True):
        with pa.ipc.new_stream(sink, t.schema, options=options) as w:
            w.write_table(t.slice(int(a), int(b - a)))
        offsets.append(sink.tell())
    return offsets


def _pack(
    batches: Iterator[pa.RecordBatch], assign: _Assign, part: int, placer: np.ndarray
) -> Iterator[pa.RecordBatch]:
    """Rows into packed rows (``PACKED``): per group, one Arrow IPC stream of its rows in a binary
    column, so Spark shuffles and sorts a few large values instead of every row (see the module
    docstring, "Data movement")."""
    _size_threads()
    for t, first, starts, ends in _cut(batches, assign):
        n = len(first)
        # One buffer of the right size up front: a growing stream copies itself at every doubling,
        # which cost 3x the writing itself.
        room = pa.allocate_buffer(t.nbytes + n * (_IPC_SLACK + 256 * t.num_columns))
        try:
            offsets = _write_streams(pa.FixedSizeBufferWriter(room), t, starts, ends, _IPC_OPTIONS)
            data = room.slice(0, offsets[-1])
        except (pa.ArrowException, OSError):  # the estimate was short: a growing stream then
            sink = pa.BufferOutputStream()
            offsets = _write_streams(sink, t, starts, ends, _IPC_OPTIONS)
            data = sink.getvalue()
        blobs = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.array(offsets, pa.int32()).buffers()[1], data]
        )
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(placer[first]),
                pa.array(first, pa.int32()),
                pa.array(np.full(n, part, np.int32)),
                blobs,
            ],
            names=[_DEST, BUCKET, _PART, _BLOB],
        )


def _unpacker(packed: pa.Table) -> Any:
    """``unpack(part, schema)``: the rows of ``part`` in a group's packed rows (``schema``'s empty
    table when it has none)."""

    def unpack(part: int, schema: pa.Schema) -> pa.Table:
        tables = [
            pa.ipc.open_stream(blob.as_buffer()).read_all()
            for p, blob in zip(packed.column(_PART).to_pylist(), packed.column(_BLOB), strict=True)
            if p == part
        ]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    return unpack


def _stage(
    batches: Iterator[pa.RecordBatch], assign: _Assign, part: int, call: str, span: str | None = None
) -> Iterator[pa.RecordBatch]:
    """A staging task: its rows packed by group into one pack file of the call's staging folder
    (:mod:`skewless.spark_staging`), streams written straight to the file, then one index row per
    stream (``_STAGED``): where it is, its rows, and with ``span`` (a time column) the least and
    greatest time of its rows (as :func:`_micros`; both null when every time is null)."""
    from pyspark import TaskContext

    _size_threads()  # the partitioning kernel runs in the task's share of the cores
    tc = TaskContext.get()
    stem = f"s{part + 1}" + (f"-p{tc.partitionId()}-a{tc.attemptNumber()}" if tc is not None else "")
    found: list[tuple[np.ndarray, list[int], np.ndarray, np.ndarray, np.ndarray]] = []
    with spark_staging.pack_file(call, stem) as (sink, name):
        for t, first, starts, ends in _cut(batches, assign):
            offsets = _write_streams(sink, t, starts, ends, spark_staging.PACK_OPTIONS)
            lo = hi = np.zeros(len(first), np.int64)
            if span is not None:
                col = t.column(span)
                times = _micros_np(col)
                valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
                lo = np.minimum.reduceat(np.where(valid, times, INT64_MAX), starts)
                hi = np.maximum.reduceat(np.where(valid, times, INT64_MIN), starts)
            found.append((first, offsets, ends - starts, lo, hi))
    if not found:
        return
    group = np.concatenate([f[0] for f in found]).astype(np.int32)
    offset = np.concatenate([np.asarray(f[1][:-1], np.int64) for f in found])
    length = np.concatenate([np.diff(np.asarray(f[1], np.int64)) for f in found])
    rows, lo, hi = (np.concatenate([f[i] for f in found]).astype(np.int64) for i in (2, 3, 4))
    none = lo > hi  # no valid time in the stream
    yield pa.RecordBatch.from_arrays(
        [
            pa.array(group),
            pa.array(np.full(len(group), part, np.int32)),
            pa.array([name] * len(group)),
            pa.array(offset),
            pa.array(length),
            pa.array(rows),
            pa.array(lo, mask=none if span is not None else np.ones(len(lo), bool)),
            pa.array(hi, mask=none if span is not None else np.ones(len(hi), bool)),
        ],
        schema=_STAGED_SCHEMA,
    )


class _Source:
    """One side's rows as Spark tasks see them: a DataFrame's Arrow batches, or rows the tasks read
    themselves (a view's history from its Parquet files, or entity rows: :mod:`skewless.spark_direct`):
    ``read(i)`` yields part ``i``'s batches, ``rows[i]`` its rows (about), ``df`` a range of the part
    numbers."""

    def __init__(
        self, df: DataFrame | None, read: Any = None, rows: Sequence[int] = (), spark: Any = None
    ) -> None:
        self._df, self.read, self.rows, self.spark = df, read, list(rows), spark

    @property
    def df(self) -> DataFrame:
        """The side's DataFrame; for parts the tasks read, built on first use (a JVM round trip)."""
        if self._df is None:
            n = len(self.rows)
            self._df = self.spark.range(0, n, 1, _task_count(self.spark, n, sum(self.rows)))
        return self._df

    def map(self, fn: Any, schema: str) -> DataFrame:
        """``fn`` (an iterator of the side's batches -> an iterator of batches) in the side's tasks."""
        read = self.read
        if read is None:
            return self.df.mapInArrow(_typed(fn), schema)

        def run(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return fn(b for batch in ids for i in batch.column(0).to_pylist() for b in read(i))

        return self.df.mapInArrow(_typed(run), schema)


def _packed(source: _Source, assign: _Assign, part: int, placer: np.ndarray) -> DataFrame:
    return source.map(lambda it: _pack(it, assign, part, placer), _PACKED)


def _n_groups(n: int, hot: dict[tuple[Any, ...], tuple[int, list[int]]] | None) -> int:
    """How many groups: ``n`` buckets and every sub-bucket of the hot keys."""
    return n + sum(len(bounds) + 1 for _, bounds in (hot or {}).values())


def _join_groups(packed: list[DataFrame], run: Any, out_schema: Any, n_groups: int) -> DataFrame:
    """Every group's packed rows (both sides) in one task, through ``run`` (a group's packed rows ->
    its result table), one group at a time. A repartition, not a co-group: Spark sorts nothing."""
    placed = reduce(lambda a, b: a.unionByName(b), packed).repartition(n_groups, _DEST)

    def groups(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        t = pa.Table.from_batches(list(batches), schema=_PACKED_SCHEMA)
        if not t.num_rows:
            return
        g = t.column(BUCKET).to_numpy()
        order = np.argsort(g, kind="stable")
        g = g[order]
        cuts = np.flatnonzero(np.diff(g)) + 1
        for idx in np.split(order, cuts):
            yield from run(_unpacker(t.take(pa.array(idx)))).to_batches()

    return placed.mapInArrow(_typed(groups), out_schema)


def _task_count(spark: SparkSession, items: int, rows: int) -> int:
    """How many tasks run ``items`` units of work (history parts, groups) of ``rows`` rows in all: one
    each, but no more than ``_TASKS_PER_CORE`` per core of the session (``defaultParallelism``; none
    known under Spark Connect) or than it takes to give no task more than ``_TASK_ROWS`` rows, whichever
    is more."""
    try:
        cores = int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        cores = 0
    return max(1, min(items, max(_TASKS_PER_CORE * cores, -(-rows // _TASK_ROWS))))


def _balance(weights: np.ndarray, tasks: int) -> list[list[int]]:
    """Items (by index) dealt to ``tasks`` lists of about equal total weight: the heaviest first, each to
    the lightest list so far (items of equal weight in index order, so the deal is deterministic).

    Example:
        >>> _balance(np.array([5, 1, 4, 2, 3]), 2)
        [[0, 3, 1], [2, 4]]
    """
    heap = [(0, t) for t in range(tasks)]
    out: list[list[int]] = [[] for _ in range(tasks)]
    for i in np.argsort(-np.asarray(weights), kind="stable").tolist():
        load, t = heapq.heappop(heap)
        out[t].append(i)
        heapq.heappush(heap, (load + int(weights[i]), t))
    return out


def _stage_job(call: str, staged: list[tuple[_Source, _Assign, int]], span: str | None = None) -> pa.Table:
    """One Spark job whose tasks write the ``staged`` sides' rows packed by group to the call's
    staging folder (:mod:`skewless.spark_staging`): the index rows they report (``_STAGED``, with
    ``span`` the entity rows' times (column) of :func:`_stage`). The sides the tasks read themselves
    run in one job of their own (:func:`_staged_reads`), each DataFrame side in one ``mapInArrow`` of
    its own (all of them one job)."""
    jobs = [
        src.map(
            lambda it, a=assign, p=part, c=(span if part == _LEFT else None): _stage(it, a, p, call, c),
            _STAGED,
        )
        for src, assign, part in staged
        if src.read is None
    ]
    reads = [(src, assign, part) for src, assign, part in staged if src.read is not None]
    found = [_staged_reads(call, reads, span)] if reads else []
    if jobs:
        found.append(reduce(lambda a, b: a.unionByName(b), jobs).toArrow().cast(_STAGED_SCHEMA))
    return pa.concat_tables(found)


def _staged_reads(call: str, staged: list[tuple[_Source, _Assign, int]], span: str | None) -> pa.Table:
    """The parts of every side the tasks read themselves, dealt by their rows (:func:`_balance`) to
    :func:`_task_count`'s tasks of one job (:func:`_run_tasks`): each task stages its parts of each side
    into one pack file per side (:func:`_stage`). One Python function for all sides: building each costs
    the driver about 0.1 s (pickling, the JVM's UDF), and one deal balances the tasks over all. The
    index rows the tasks report."""
    src0 = staged[0][0]
    assert src0.spark is not None
    units = [(k, i) for k, (src, _, _) in enumerate(staged) for i in range(len(src.rows))]
    weights = np.asarray([staged[k][0].rows[i] for k, i in units], np.int64)
    tasks = _task_count(src0.spark, len(units), int(weights.sum()))
    deal = [sorted(units[j] for j in d) for d in _balance(weights, tasks)]
    sides = [(src.read, assign, part) for src, assign, part in staged]

    def run(task: int) -> Iterator[pa.RecordBatch]:
        mine = deal[task]
        for k in sorted({k for k, _ in mine}):
            read, assign, part = sides[k]
            parts = [i for kk, i in mine if kk == k]
            rows = (b for i in parts for b in read(i))
            yield from _stage(rows, assign, part, call, span if part == _LEFT else None)

    return _run_tasks(src0.spark, tasks, run)


def _run_tasks(spark: SparkSession, tasks: int, run: Any) -> pa.Table:
    """``run`` (a task number -> an iterator of ``_STAGED`` batches) in ``tasks`` Spark tasks of one
    job, their batches collected on the driver as one table.

    Classic pyspark runs it as an RDD job (``parallelize(...).mapPartitions``, each task's batches
    returned as one Arrow IPC stream): no query for Catalyst to plan and no conversion of the rows by
    the JVM. At size M that halved the JVM's CPU time of a staging job (0.44-0.80 s to 0.19-0.42 s
    from the second call on; 2.35 s to 1.25 s for the first), most of it the JIT compiling the code
    paths a DataFrame job takes. Spark Connect has no RDDs: there it is ``range(...).mapInArrow(...)``
    collected with ``toArrow``."""
    try:
        sc = spark.sparkContext
    except Exception:  # Spark Connect has no SparkContext
        sc = None
    if sc is None:

        def frames(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in ids:
                for task in batch.column(0).to_pylist():
                    yield from run(task)

        out = spark.range(0, tasks, 1, tasks).mapInArrow(_typed(frames), _staged_type()).toArrow()
        return out.cast(_STAGED_SCHEMA)

    def streams(ids: Iterator[int]) -> Iterator[bytes]:
        for task in ids:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, _STAGED_SCHEMA) as w:
                for b in run(task):
                    w.write_batch(b)
            yield sink.getvalue().to_pybytes()

    # A task's skewless error reaches the driver typed as for DataFrames: pyspark converts an RDD
    # action's errors through the same function (:func:`_install_typed_errors`).
    got = sc.parallelize(range(tasks), tasks).mapPartitions(_typed(streams)).collect()
    return pa.concat_tables([_STAGED_SCHEMA.empty_table(), *(pa.ipc.open_stream(b).read_all() for b in got)])


def _read_staged(
    spark: SparkSession, call: str, staged: pa.Table, run: Any, out_schema: Any, n_groups: int
) -> DataFrame:
    """A DataFrame whose tasks read each group's streams in place (where the index rows ``staged``
    say) and run ``run`` on them, one group at a time: the index is written to the call's folder, Spark
    moves nothing but task numbers. Groups are dealt by their rows (:func:`_balance`) to
    :func:`_task_count`'s tasks."""
    index = staged.select(spark_staging.INDEX_SCHEMA.names).sort_by(
        [("group", "ascending"), ("part", "ascending")]
    )
    spark_staging.write_index(call, index)
    bounds = np.searchsorted(index.column("group").to_numpy(), np.arange(n_groups + 1), side="left").tolist()
    # A group without entity rows has no result rows: no task reads it. The others are dealt to the
    # tasks by their rows (both sides), so a hot key's sub-buckets spread over them.
    group = staged.column("group").to_numpy()
    rows = staged.column("rows").to_numpy()
    left = np.bincount(group[staged.column("part").to_numpy() == _LEFT], minlength=n_groups)
    weights = np.bincount(group, weights=rows, minlength=n_groups)
    live = np.flatnonzero(left)
    tasks = _task_count(spark, len(live), int(weights[live].sum()))
    deal = [[int(live[i]) for i in d] for d in _balance(weights[live], tasks)]

    def groups(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        idx = spark_staging.read_index(call)
        packs = spark_staging.Packs(call)
        for b in batches:
            for g in (g for task in b.column(0).to_pylist() for g in deal[task]):
                rows = idx.slice(bounds[g], bounds[g + 1] - bounds[g])

                def unpack(part: int, schema: pa.Schema, rows: pa.Table = rows) -> pa.Table:
                    tables = [
                        pa.ipc.open_stream(packs.read(f, o, n)).read_all()
                        for p, f, o, n in zip(
                            rows.column("part").to_pylist(),
                            rows.column("file").to_pylist(),
                            rows.column("offset").to_pylist(),
                            rows.column("length").to_pylist(),
                            strict=True,
                        )
                        if p == part
                    ]
                    return pa.concat_tables(tables) if tables else schema.empty_table()

                yield from run(unpack).to_batches()

    return spark.range(0, len(deal), 1, max(1, len(deal))).mapInArrow(_typed(groups), out_schema)


def _links(
    source: _Source,
    keys: Sequence[str],
    on: str,
    hot: dict[tuple[Any, ...], tuple[int, list[int]]],
    n: int,
    direction: str,
) -> list[tuple[tuple[Any, ...], int, int]]:
    """The (key, time, group) copies a hot key's sub-buckets need beyond their own time range: the
    latest tie of the nearest earlier sub-bucket with right rows (backward, nearest), the earliest tie
    of the nearest later one (forward, nearest). One pass over the right side finds each sub-bucket's
    earliest and latest time."""
    order = sorted(hot.items(), key=lambda kv: str(kv[0]))

    def ends(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for b in batches:
            t = pa.Table.from_batches([b])
            times = _micros_np(t.column(on))
            valid = ~np.asarray(pc.is_null(t.column(on)).to_numpy(zero_copy_only=False), bool)
            for i, (k, (_, bounds)) in enumerate(order):
                m = _key_mask(t, keys, k) & valid
                if not m.any():
                    continue
                ts = times[m]
                subs = np.searchsorted(np.asarray(bounds, np.int64), ts, side="right")
                for sub in np.unique(subs):
                    sel = ts[subs == sub]
                    lo, hi = int(sel.min()), int(sel.max())
                    old = out.get((i, int(sub)))
                    out[(i, int(sub))] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        if out:
            items = sorted(out.items())
            yield pa.RecordBatch.from_pydict(
                {
                    "k": [i for (i, _), _ in items],
                    "sub": [s for (_, s), _ in items],
                    "lo": [v[0] for _, v in items],
                    "hi": [v[1] for _, v in items],
                },
                schema=pa.schema(
                    [("k", pa.int32()), ("sub", pa.int32()), ("lo", pa.int64()), ("hi", pa.int64())]
                ),
            )

    filled: dict[int, dict[int, tuple[int, int]]] = {}
    for r in source.map(ends, "k int, sub int, lo long, hi long").collect():
        got = filled.setdefault(r["k"], {})
        old = got.get(r["sub"])
        got[r["sub"]] = (r["lo"], r["hi"]) if old is None else (min(old[0], r["lo"]), max(old[1], r["hi"]))
    links = []
    for i, (k, (off, bounds)) in enumerate(order):
        subs = filled.get(i, {})
        have = sorted(subs)
        for j in range(len(bounds) + 1):
            if direction in ("backward", "nearest"):
                before = [s for s in have if s < j]
                if before:
                    links.append((k, subs[before[-1]][1], n + off + j))
            if direction in ("forward", "nearest"):
                after = [s for s in have if s > j]
                if after:
                    links.append((k, subs[after[0]][0], n + off + j))
    return links


def _hot(left: DataFrame, keys: Sequence[str], on: str, skew_rows: int | None) -> Any:
    """{key: (first sub-bucket, split points)} of ``left``'s keys with more than ``skew_rows`` rows,
    or None."""
    kn = [f"__skewless_k{i}__" for i in range(len(keys))]
    lk = left.select(
        *[_key(left, k).alias(n) for k, n in zip(keys, kn, strict=True)], _micros(left, on).alias(_ON)
    )
    return _hot_keys(lk, kn, skew_rows)


def split_points(quantiles: list[int], parts: int) -> list[int]:
    """The times that cut a hot key's rows into about ``parts`` sub-buckets of equal size, from its
    quantiles at ``i / g`` for ``i`` in ``1..g-1`` (``g`` = ``len(quantiles) + 1``; ``parts`` <= ``g``):
    the quantiles nearest to ``i / parts``, without repeats. A sub-bucket holds the times from one
    split point (inclusive) to the next, so equal times are never cut apart.

    Example:
        >>> split_points([10, 20, 30, 40, 50, 60, 70], 4)
        [20, 40, 60]
        >>> split_points([5, 5, 5], 4)  # one time holds most rows: it cannot be cut
        [5]
    """
    if not quantiles:
        return []
    grid = len(quantiles) + 1
    return sorted({quantiles[min(grid - 2, round(i * grid / parts) - 1)] for i in range(1, parts)})


def _hot_keys(
    lk: DataFrame, kn: list[str], skew_rows: int | None
) -> dict[tuple[Any, ...], tuple[int, list[int]]] | None:
    """{key: (its first sub-bucket number, its split points)} for every key with more than
    ``skew_rows`` left rows, or None when there is none."""
    if skew_rows is None:
        return None
    F = _spark().F
    has_key = reduce(lambda a, b: a & b, [F.col(n).isNotNull() for n in kn])
    counts = lk.where(has_key).groupBy(*kn).count().where(F.col("count") > skew_rows).collect()
    if not counts:
        return None
    parts = {tuple(r[n] for n in kn): math.ceil(r["count"] / skew_rows) for r in counts}
    grid = max(parts.values())
    fractions = [i / grid for i in range(1, grid)]  # every key's quantiles on one grid: one aggregation
    table = lk.sparkSession.createDataFrame([k for k in parts], lk.select(*kn).schema)
    qs = (
        lk.join(F.broadcast(table), kn, "inner")
        .groupBy(*kn)
        .agg(F.percentile_approx(_ON, fractions, _QUANTILE_ACCURACY).alias("q"))
        .collect()
    )
    out: dict[tuple[Any, ...], tuple[int, list[int]]] = {}
    off = 0
    for r in sorted(qs, key=lambda r: str([r[n] for n in kn])):
        k = tuple(r[n] for n in kn)
        bounds = split_points([v for v in (r["q"] or []) if v is not None], parts[k])
        out[k] = (off, bounds)
        off += len(bounds) + 1
    return out


def asof_join(
    left: DataFrame,
    right: DataFrame,
    *,
    on: str,
    by: str | Sequence[str],
    direction: str = "backward",
    tolerance: _dt.timedelta | int | str | None = None,
    allow_exact_matches: bool = True,
    tie_breaker: str | None = None,
    sequence: str | None = None,
    suffix: str | None = None,
    buckets: int | None = None,
    skew_rows: int | None = DEFAULT_SKEW_ROWS,
) -> DataFrame:
    """:func:`skewless.asof_join` on Spark DataFrames: the same arguments and the same rows (in bucket
    order: see the module docstring), computed by the same kernel on buckets of ``by`` keys.

    ``buckets``: how many hash buckets the keys are spread over (default: ``spark.sql.shuffle.partitions``);
    each is one call of the kernel and must fit a task's memory (both sides' rows of its keys).
    ``skew_rows``: a key with more left rows than this is split by time (module docstring, "Skewed
    keys"); None never splits. ``by`` is required: it is what spreads the work. Among full ties (key,
    ``on``, ``tie_breaker``) the greatest ``sequence`` wins; without a ``sequence`` the winner of such a
    tie depends on the order rows reach the task, which Spark does not fix.

    Example::

        out = skewless.spark.asof_join(labels_df, features_df, on="ts", by="user",
                                       tolerance="30d", tie_breaker="created")
    """
    S = _spark()
    _install_typed_errors()
    by_list = [by] if isinstance(by, str) else list(by)
    if not by_list:
        raise InvalidArgumentError("by must name at least one key column: the buckets are hashes of it")
    _check_free(left, "the left DataFrame")
    _check_free(right, "the right DataFrame")
    spark = left.sparkSession
    nb = _buckets(spark, buckets)
    skew = _skew_rows(skew_rows)
    kwargs: dict[str, Any] = dict(
        on=on,
        by=by_list,
        direction=direction,
        tolerance=tolerance,
        allow_exact_matches=allow_exact_matches,
        tie_breaker=tie_breaker,
        sequence=sequence,
        suffix=suffix,
    )
    # The local join on empty tables of both schemas: every argument and type is checked here, with the
    # local errors, and it names the output columns.
    la, ra = _arrow_schema(left), _arrow_schema(right)
    probe = _local_asof_join(la.empty_table(), ra.empty_table(), **kwargs)
    dropped = {on, *by_list}
    right_fields = [f for f in right.schema.fields if f.name not in dropped]
    fields = list(left.schema.fields) + [
        S.T.StructField(name, f.dataType, True)
        for name, f in zip(probe.column_names[len(left.columns) :], right_fields, strict=True)
    ]
    out_schema = S.T.StructType(fields)
    target = S.to_arrow_schema(out_schema, timezone="UTC")

    def run(unpack: Any) -> pa.Table:
        _size_threads()
        out = _local_asof_join(unpack(_LEFT, la), unpack(0, ra), **kwargs)
        return out.cast(target)

    hot = _hot(left, by_list, on, skew)
    rsrc = _Source(right)
    links = _links(rsrc, by_list, on, hot, nb, direction) if hot else []
    n = _n_groups(nb, hot)
    placer = _placer(n)
    lp = _packed(_Source(left), _Assign(by_list, on, nb, hot, False), _LEFT, placer)
    rp = _packed(rsrc, _Assign(by_list, on, nb, hot, True, links), 0, placer)
    return _join_groups([lp, rp], run, out_schema, n)


def _history_splits(
    offline: OfflineStore, fv: FeatureView, cols: list[str], lo: int | None = None, hi: int | None = None
) -> list[list[tuple[str, list[int], bool]]]:
    """The view's history files cut into the parts a task reads one at a time: lists of (path, row groups,
    whether they need the time filter) of about ``_SPLIT_ROWS`` rows (whole small files together, a large
    file's row groups apart). A row group whose footer statistics put every time in ``[lo, hi]`` (UTC
    microseconds, None: unbounded) is read without the row filter, which cost about a fifth of a task's
    read and drops nothing there. Checked here, on the driver, as the local read checks them:
    footers, the timestamp's type, the columns."""
    numbered = offline.numbered_files(fv.name, fv.source)
    metas = []
    for _, p in numbered:
        try:
            metas.append(pq.read_metadata(p))
        except (OSError, pa.ArrowException) as e:
            raise corrupt(fv.name, [p], e) from None
    if not metas:
        return []
    # As the local read: the newest file's types (a store's own files all have the view's schema).
    newest = metas[-1].schema.to_arrow_schema()
    ts = fv.timestamp_field
    if ts in newest.names:
        t = newest.field(ts).type
        if not pa.types.is_timestamp(t) or t.tz is None:
            raise NaiveTimestampError(
                f"history column {ts!r} of {fv.name!r} is {t}, not a timezone-aware timestamp; rewrite it "
                "with a zone (e.g. UTC)"
            )
    missing = [c for c in cols if c not in newest.names]
    if missing:
        raise MissingColumnError(f"the history of {fv.name!r} has no column(s) {missing}")
    paths = [os.path.abspath(p) for _, p in numbered]
    return spark_direct.row_group_parts(
        paths, metas, _SPLIT_ROWS, lambda md, g: not _times_within(md, g, ts, lo, hi)
    )


#: Microseconds per unit of a Parquet timestamp, by its logical type's unit (nanoseconds: see below).
_PARQUET_UNIT_US = {"milliseconds": 1000, "microseconds": 1}


def _times_within(md: pq.FileMetaData, g: int, ts: str, lo: int | None, hi: int | None) -> bool:
    """Whether row group ``g``'s footer statistics show every row's time (column ``ts``) non-null and in
    ``[lo, hi]`` (UTC microseconds; None: unbounded), so the time filter would keep every row. False
    when the statistics cannot tell."""
    try:
        j = md.schema.names.index(ts)
        column = md.schema.column(j)
        unit = json.loads(column.logical_type.to_json()).get("timeUnit")
        st = md.row_group(g).column(j).statistics
    except (ValueError, IndexError, TypeError, AttributeError):
        return False
    if st is None or not st.has_min_max or not st.has_null_count or st.null_count:
        return False
    if column.physical_type != "INT64" or column.logical_type.type != "TIMESTAMP":
        return False
    least, most = st.min_raw, st.max_raw
    # Compared exactly, in integers: the filter compares in the file's unit, each bound cast to it.
    if unit in _PARQUET_UNIT_US:
        least, most = least * _PARQUET_UNIT_US[unit], most * _PARQUET_UNIT_US[unit]
        low, high = lo, hi
    elif unit == "nanoseconds":
        low, high = (None if lo is None else lo * 1000), (None if hi is None else hi * 1000)
    else:
        return False
    return (low is None or least >= low) and (high is None or most <= high)


def _history_reader(
    root: str, registry: Registry, fv: FeatureView, cols: list[str], lo: int | None, hi: int, splits: list
) -> Any:
    """What a task runs to read split ``i`` of a view's history: :func:`history.scan`, the local read
    (time range, write sequence read or derived), on those row groups, in the stored layout."""

    def read(i: int) -> Iterator[pa.RecordBatch]:
        offline = OfflineStore(os.path.join(root, "offline"))
        for path, groups, bounded in splits[i]:
            a, b = (lo, hi) if bounded else (None, None)
            batches = list(
                history.scan(
                    offline, registry, fv, cols, a, b, True, files=[path], with_seq=True, row_groups=groups
                )
            )
            if batches:
                yield from history.to_stored(
                    registry, fv, pa.Table.from_batches(batches), [*cols, SEQ]
                ).to_batches()

    return read


def get_historical_features(
    spark: SparkSession,
    store_path: str | os.PathLike[str],
    entity_df: DataFrame,
    features: Sequence[str] | FeatureService,
    *,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
    buckets: int | None = None,
    skew_rows: int | None = DEFAULT_SKEW_ROWS,
    keep_order: bool = False,
    staging: str | os.PathLike[str] | None = None,
) -> DataFrame:
    """:meth:`FeatureStore.get_historical_features` on Spark: ``entity_df`` (a Spark DataFrame) with
    the features as of each row's time, the same values as the local call, computed by
    :func:`skewless.retrieval.retrieve` on buckets of each view's keys.

    Each view's history is read by the Spark tasks from the store's Parquet files (``store_path`` must
    be a folder the driver lists and every executor reads at the same path: a shared mount), only the
    rows in the time range the entity rows need, with each row's write sequence, by the local reading
    code: TTL, ties (created timestamp, then write sequence, never file order) and the output types are
    the local ones. The views that share join keys are joined in one pass over the entity rows.

    ``keep_order``: False (the default) leaves the rows in bucket order, like any Spark result after a
    shuffle: compare or join them by your own columns (an id, the keys and time). True sorts them back
    into ``entity_df``'s order (as ``monotonically_increasing_id`` numbers it), one more global sort,
    which costs about as much as the join itself. ``buckets`` and ``skew_rows`` as in :func:`asof_join`.

    ``staging``: the folder through which the tasks exchange rows (default: ``.skewless-staging`` in the
    store's folder; any folder the driver and every executor can write at the same path, not inside the
    store's ``offline/``). The staging job runs now; the returned DataFrame reads its files, which stay
    until the driver exits, a :func:`staging_scope` around the call ends, or :func:`clear_staging`
    (:mod:`skewless.spark_staging`, "Lifetime"). A folder that cannot be written raises
    :class:`~skewless.errors.StorageError`.

    Example::

        with skewless.spark.staging_scope():
            train = skewless.spark.get_historical_features(spark, "/mnt/store", labels_df,
                                                           ["user_stats:spend", "user_stats:visits"])
            train.write.parquet("/mnt/train.parquet")
    """
    S = _spark()
    F = S.F
    _install_typed_errors()
    full_feature_names = flag(full_feature_names, "full_feature_names")
    keep_order = flag(keep_order, "keep_order")
    column_name(timestamp_column, "timestamp_column")
    nb = _buckets(spark, buckets)
    skew = _skew_rows(skew_rows)
    # Spark's schema once: each look at a DataFrame's columns or schema is a round trip to the JVM.
    entity_schema = entity_df.schema
    entity_cols = list(entity_schema.names)
    _check_free(entity_cols, "entity_df")
    root = os.path.abspath(os.fspath(store_path))
    reg_path = os.path.join(root, "registry.json")
    if not os.path.exists(reg_path):
        raise RegistryError(f"no feature store at {root}: run `skewless init` there first")
    if staging is not None and not isinstance(staging, (str, os.PathLike)):
        raise InvalidArgumentError(f"staging must be a folder path or None, got {staging!r}")
    stage_root = spark_staging.root_of(root, staging)
    registry = Registry.load(reg_path)
    offline = OfflineStore(os.path.join(root, "offline"))
    plan = resolve(registry, features)
    key_types = {fv.name: registry.key_types(fv) for fv, _ in plan}
    # The local retrieval on an empty table of entity_df's schema checks the whole request (columns,
    # key types, time type, output names) with the local errors, before any Spark job.
    probe = retrieve(
        _arrow_schema(entity_schema).empty_table(),
        {},
        plan,
        key_types=key_types,
        full_feature_names=full_feature_names,
        timestamp_column=timestamp_column,
    )
    n_entity = len(entity_cols)
    names_of: dict[str, list[str]] = {}
    i = n_entity
    for fv, feats in plan:
        names_of[fv.name] = probe.column_names[i : i + len(feats)]
        i += len(feats)

    df = entity_df.withColumn(ROW, F.monotonically_increasing_id()) if keep_order else entity_df
    df_schema = df.schema if keep_order else entity_schema
    # One pass over the entity rows per set of join keys; an event view's keys are never split by time
    # (module docstring, "Skewed keys"), so event views go in passes of their own.
    passes: dict[tuple[tuple[str, ...], bool], list[tuple[FeatureView, list[str]]]] = {}
    for fv, feats in plan:
        passes.setdefault((tuple(fv.join_keys), fv.is_event_view), []).append((fv, feats))
    for (keys, is_event), part in passes.items():
        new = [
            S.T.StructField(n, _spark_type(probe.schema.field(n).type, f"feature {fv.name}:{f}"), True)
            for fv, feats in part
            for n, f in zip(names_of[fv.name], feats, strict=True)
        ]
        left_schema = _arrow_schema(df_schema)
        staged = _stage_pass(
            spark,
            stage_root,
            root,
            registry,
            offline,
            df,
            left_schema,
            part,
            keys,
            is_event,
            timestamp_column,
            nb,
            skew,
        )
        if staged is None:
            df = df.withColumns({f.name: F.lit(None).cast(f.dataType) for f in new})
            df_schema = S.T.StructType(list(df_schema.fields) + new)
            continue
        call, index, n_groups, sides = staged
        out_schema = S.T.StructType(list(df_schema.fields) + new)
        target = S.to_arrow_schema(out_schema, timezone="UTC")
        stored = [(fv, feats, history.empty(registry, fv, [*cols, SEQ]).schema) for fv, feats, cols in sides]
        run = _retrieve_task(
            registry, part, stored, key_types, full_feature_names, timestamp_column, left_schema, target
        )
        try:
            df = _read_staged(spark, call, index, run, out_schema, n_groups)
            df_schema = out_schema
        except BaseException:
            spark_staging.remove_call(call)
            raise
    cols_out = [*entity_cols, *[n for fv, _ in plan for n in names_of[fv.name]]]
    if keep_order:
        return df.orderBy(ROW).select(*cols_out)
    return df if list(df_schema.names) == cols_out else df.select(*cols_out)


def _stage_pass(
    spark: SparkSession,
    stage_root: str,
    root: str,
    registry: Registry,
    offline: OfflineStore,
    df: DataFrame,
    left_schema: pa.Schema,
    part: list[tuple[FeatureView, list[str]]],
    keys: tuple[str, ...],
    is_event: bool,
    timestamp_column: str,
    nb: int,
    skew: int | None,
) -> tuple[str, pa.Table, int, list[tuple[FeatureView, list[str], list[str]]]] | None:
    """Stages one pass's rows in a new call folder: the entity rows first, in a job whose index rows
    also give their time span and each bucket's rows (the entity rows are read once: no separate job
    for their time span, and no hot-key aggregation unless a bucket has more than ``skew`` rows, since
    a key's rows are never more than its bucket's), then the views' histories, read only in the time
    range those rows need. A hot key found so restages the entity rows split by time (in a new call
    folder, the first one removed). Returns (the call folder, its index rows, the number of groups,
    the staged views with their columns), or None (the call folder removed) when no view has history
    in the entity rows' time range or no entity row has a time. On an error nothing is left.

    An ``entity_df`` that is a bare scan of local Parquet files is read by the tasks themselves
    (:mod:`skewless.spark_direct`), and when its footers give its time span and no key can be hot,
    its rows and the histories are staged in one job (:func:`_stage_together`)."""
    direct = spark_direct.scan_of(df, left_schema)
    if direct is not None:
        together = _stage_together(
            spark,
            stage_root,
            root,
            registry,
            offline,
            direct,
            part,
            keys,
            is_event,
            timestamp_column,
            nb,
            skew,
        )
        if together is not _AGAIN:
            return together  # type: ignore[return-value]
    left_src = _direct_source(spark, direct) if direct is not None else _Source(df)
    call = spark_staging.new_call(stage_root)
    try:
        index = _stage_job(
            call, [(left_src, _Assign(keys, timestamp_column, nb, None, False), _LEFT)], timestamp_column
        )
        hot = None
        if skew is not None and index.num_rows:
            per_bucket = np.bincount(
                index.column("group").to_numpy(), weights=index.column("rows").to_numpy()
            )
            if per_bucket.max() > skew:
                hot = _hot(df, list(keys), timestamp_column, skew)
        if hot:
            spark_staging.remove_call(call)
            call = spark_staging.new_call(stage_root)
            assign = _Assign(keys, timestamp_column, nb, hot, False)
            index = _stage_job(call, [(left_src, assign, _LEFT)], timestamp_column)
        lo_us, hi_us = pc.min(index.column("lo")).as_py(), pc.max(index.column("hi")).as_py()
        staged, sides = (
            _histories(spark, root, registry, offline, part, keys, is_event, lo_us, hi_us, nb, hot)
            if lo_us is not None
            else ([], [])
        )
        if not sides:
            spark_staging.remove_call(call)
            return None
        index = pa.concat_tables([index, _stage_job(call, staged)])
        return call, index, _n_groups(nb, hot), sides
    except BaseException:
        spark_staging.remove_call(call)
        raise


#: :func:`_stage_together`'s answer when the footers' span or row count did not hold: stage as usual.
_AGAIN = object()


def _direct_source(spark: SparkSession, direct: spark_direct.DirectScan) -> _Source:
    """The entity rows read from their Parquet files by the tasks (:mod:`skewless.spark_direct`)."""
    return _Source(None, direct.reader(), direct.split_rows(), spark)


def _stage_together(
    spark: SparkSession,
    stage_root: str,
    root: str,
    registry: Registry,
    offline: OfflineStore,
    direct: spark_direct.DirectScan,
    part: list[tuple[FeatureView, list[str]]],
    keys: tuple[str, ...],
    is_event: bool,
    timestamp_column: str,
    nb: int,
    skew: int | None,
) -> Any:
    """The entity rows and the histories staged in one Spark job, the histories read in the entity
    rows' time span as the Parquet footers give it, when no key can be hot (no more entity rows than
    ``skew``, or ``skew`` None): :func:`_stage_pass`'s answer, or ``_AGAIN`` (nothing left staged)
    when the footers cannot give the span, or the rows the tasks staged do not bear the footers out
    (their span outside it, or a bucket over ``skew``): then the entity rows are staged first, as for
    any DataFrame."""
    span = direct.span(timestamp_column)
    if span is None or (skew is not None and direct.rows > skew):
        return _AGAIN
    lo_us, hi_us = span
    staged, sides = _histories(spark, root, registry, offline, part, keys, is_event, lo_us, hi_us, nb, None)
    if not sides:
        return _AGAIN  # rare: the usual way checks the span against the rows themselves
    call = spark_staging.new_call(stage_root)
    try:
        left = (_direct_source(spark, direct), _Assign(keys, timestamp_column, nb, None, False), _LEFT)
        index = _stage_job(call, [left, *staged], timestamp_column)
        mine = index.filter(pc.equal(index.column("part"), _LEFT))
        low, high = pc.min(mine.column("lo")).as_py(), pc.max(mine.column("hi")).as_py()
        held = low is not None and lo_us <= low and high <= hi_us
        if held and skew is not None and mine.num_rows:
            held = bool(
                np.bincount(mine.column("group").to_numpy(), weights=mine.column("rows").to_numpy()).max()
                <= skew
            )
        if not held:
            spark_staging.remove_call(call)
            return _AGAIN
        return call, index, _n_groups(nb, None), sides
    except BaseException:
        spark_staging.remove_call(call)
        raise


def _histories(
    spark: SparkSession,
    root: str,
    registry: Registry,
    offline: OfflineStore,
    part: list[tuple[FeatureView, list[str]]],
    keys: tuple[str, ...],
    is_event: bool,
    lo_us: int,
    hi_us: int,
    nb: int,
    hot: dict[tuple[Any, ...], tuple[int, list[int]]] | None,
) -> tuple[list[tuple[_Source, _Assign, int]], list[tuple[FeatureView, list[str], list[str]]]]:
    """The views' histories as staging sources, each read in the time range entity rows in
    ``[lo_us, hi_us]`` need, and the staged views with their columns (views without rows there left
    out)."""
    sides: list[tuple[FeatureView, list[str], list[str]]] = []
    staged: list[tuple[_Source, _Assign, int]] = []
    for fv, feats in part:
        cols = history.join_columns(fv, feats)
        low = history.join_low(fv, lo_us)
        splits = _history_splits(offline, fv, cols, low, hi_us)
        if not splits:
            continue
        read = _history_reader(root, registry, fv, cols, low, hi_us, splits)
        # Every part but the last holds at least _SPLIT_ROWS rows (_history_splits).
        src = _Source(None, read, [_SPLIT_ROWS] * len(splits), spark)
        if is_event:
            assign = _Assign(keys, fv.timestamp_field, nb, hot, True, reach=horizon_us(fv))
        else:
            links = _links(src, list(keys), fv.timestamp_field, hot, nb, "backward") if hot else []
            assign = _Assign(keys, fv.timestamp_field, nb, hot, True, links)
        staged.append((src, assign, len(sides)))
        sides.append((fv, feats, cols))
    return staged, sides


def _retrieve_task(
    registry: Registry,
    part: list[tuple[FeatureView, list[str]]],
    stored: list[tuple[FeatureView, list[str], pa.Schema]],
    key_types: dict[str, list[pa.DataType | None]],
    full_feature_names: bool,
    timestamp_column: str,
    left_schema: pa.Schema,
    target: pa.Schema,
) -> Any:
    """What a task runs on one bucket: the local retrieval of its entity rows from the views of one
    pass (their histories' rows of the bucket's keys, in the stored layout)."""

    def run(unpack: Any) -> pa.Table:
        _size_threads()
        hists: dict[str, pa.Table | None] = {fv.name: None for fv, _ in part}
        for n, (fv, _, schema) in enumerate(stored):
            hists[fv.name] = unpack(n, schema)
        out = retrieve(
            unpack(_LEFT, left_schema),
            hists,
            part,
            key_types=key_types,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
        )
        return out.cast(target)

    return run
