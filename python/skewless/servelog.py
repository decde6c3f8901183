"""The served-feature log: every vector a service was served, kept so it can be checked offline.

``store.online_reader(features, log=True)`` (and ``get_online_features(..., log=True)``) hands each answer
to the store's :class:`ServeLog`; ``store.log_served(...)`` hands it vectors a service computed some other
way. The serving call only appends the arrays it already built to a bounded in-memory queue (a full queue
drops the entry and counts it in ``dropped``: logging never blocks serving); a background thread turns the
queue into Arrow tables and writes segments. ``reader.close()``, leaving a ``with`` block,
``store.flush_logs()`` and interpreter exit flush it. After ``fork`` the child starts with an empty
queue of its own and no flusher (one starts on its first log entry): the parent's unflushed entries stay
the parent's to write.

Segment format, log format version 2. ``<store>/logs/seg-<min>-<max>-<token>-<n>.arrow``: an Arrow IPC
file, written under a hidden temp name (``.tmp-...``) in the same folder, fsynced, then renamed, so a
reader sees whole segments only and a process killed mid-flush leaves at most a temp file (which
:meth:`ServeLog.prune` removes once it is an hour old). ``<min>`` and ``<max>`` are the smallest and
largest ``served_at`` in the segment (UTC microseconds), ``<token>`` is random per process (so many
processes log into one folder), ``<n>`` counts that process's segments. One segment holds the rows of one
feature list from one source. Columns:

- ``__request_id__`` string: the caller's id, or ``<token>-<call>-<row>``;
- ``__served_at__`` timestamp[us, UTC]: the request instant the values were served for;
- ``__known_at__`` timestamp[us, UTC]: the wall clock when the lookup ran (for ``log_served``: when it
  was called). A check rebuilds a vector from the history rows written by then only;
- the entity key columns, in the stored key types;
- ``request:<column>`` per request-time input: for a reader, each column of the entity rows its
  transforms read (``"request:<column>"`` inputs); for ``log_served``, every other column of the entity
  rows, as given;
- per feature, a column named by its reference ``view:feature`` or ``transform_view:output`` (its served
  type; ``get_numpy`` logs float64 with null for a missing value) and ``<reference>@status`` int8
  (:class:`skewless.online.Status`, ``IMPUTED`` where an imputation filled it; null when ``log_served``
  was given none).

The schema's metadata ``skewless.log`` is JSON: ``{"version": 2, "source": str, "keys": [...],
"features": [...], "request": [column, ...], "versions": {view or transform view: registry version},
"served_by": {reference: <record>}}`` (``versions`` and ``served_by`` empty for ``log_served``). A
record (:mod:`skewless.lineage`) holds the transform view spec and version and the feature views'
imputation a value was served with, for each feature whose value a transform or an imputation made.

Format 1 (read as well): no ``request`` and ``served_by`` entries; a ``log_served`` segment's other
entity-row columns are named as given (read back as ``request:<column>``).

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = store.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> _ = store.write("v", {"user_id": [1], "event_timestamp": pa.array([t], pa.timestamp("us", "UTC")),
    ...                       "x": [0.5]})
    >>> with store.online_reader(["v:x"], log=True) as r:
    ...     _ = r.get_numpy([1, 2], as_of=t)
    >>> log = store.read_log()
    >>> log["v:x"].column("v:x").to_pylist(), log["v:x"].column("user_id").to_pylist()
    ([0.5, None], [1, 2])
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import as_column, as_table
from ._fs import TEMP_PREFIX, atomic_write
from .definitions import TIMESTAMP_TYPE
from .errors import InvalidArgumentError, MissingColumnError, StorageError
from .lineage import key as lineage_key
from .normalize import entity_key, instant_us, normalize_ts
from .online import Status

__all__ = [
    "LOG_FORMAT_VERSION",
    "ServeLog",
    "Sink",
    "logged_get_numpy",
    "read_log",
    "prune",
    "REQUEST_ID",
    "SERVED_AT",
    "KNOWN_AT",
    "STATUS_SUFFIX",
    "REQUEST_PREFIX",
]

LOG_FORMAT_VERSION = 2
#: Formats this version reads.
READABLE_FORMATS = (1, 2)
#: Arrow schema metadata key of a segment (see "Segment format").
META_KEY = b"skewless.log"
REQUEST_ID = "__request_id__"
SERVED_AT = "__served_at__"
KNOWN_AT = "__known_at__"
STATUS_SUFFIX = "@status"
#: Prefix of a request-time input column: ``request:<column>``.
REQUEST_PREFIX = "request:"
_PRESENT = int(Status.PRESENT)
_SEGMENT = re.compile(r"^seg-(-?\d+)-(-?\d+)-([0-9a-f]+)-(\d+)\.arrow$")
#: A temp file this old belongs to a flush that died (a flush takes milliseconds).
_STALE_TEMP_S = 3600.0
#: Default queue bound, in logged calls (each entry is one call's arrays).
DEFAULT_CAPACITY = 100_000
#: Default seconds between background flushes.
DEFAULT_INTERVAL = 1.0


class Sink:
    """What one logging caller writes: the source label, entity key names and types, the feature
    references with their types, how many of them each status column covers, and the versions.
    ``windows``: per status column, whether its served values stand whatever the status (an event view's:
    an entity with no events is NOT_FOUND with count 0; a transform stage's output: filled or computed
    values; a null is NaN). ``request``: the request-time columns to log (None: every non-key column of
    the entity rows). ``served_by``: each feature's lineage record (:mod:`skewless.lineage`)."""

    __slots__ = (
        "source",
        "keys",
        "key_types",
        "features",
        "types",
        "counts",
        "versions",
        "names",
        "windows",
        "request",
        "served_by",
    )

    def __init__(
        self,
        source: str,
        keys: Sequence[str],
        key_types: Sequence[pa.DataType | None],
        features: Sequence[str],
        types: Sequence[pa.DataType],
        counts: Sequence[int],
        versions: Mapping[str, int],
        names: Sequence[str] | None = None,
        windows: Sequence[bool] | None = None,
        request: Sequence[str] | None = (),
        served_by: Mapping[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.keys = list(keys)
        self.key_types = list(key_types)
        self.features = list(features)
        self.types = list(types)
        self.counts = list(counts)
        self.versions = dict(versions)
        # The reader's output column of each feature (``get`` answers use them).
        self.names = list(names) if names is not None else list(features)
        self.windows = np.array(windows if windows is not None else [False] * len(self.counts), bool)
        self.request = None if request is None else list(request)
        self.served_by = dict(served_by or {})


def _snapshot(rows: Any) -> Any:
    """The entity rows as they are now: the caller may reuse its list or array for the next request
    before the flusher reads it. Cheap for the forms a hot path passes (a list, an array, a dict)."""
    t = type(rows)
    if t is list:
        return tuple(rows)
    if t is np.ndarray:
        return rows.copy()
    if t is dict:
        return {
            k: (v.copy() if type(v) is np.ndarray else tuple(v) if type(v) is list else v)
            for k, v in rows.items()
        }
    return rows


def _now_us() -> int:
    return time.time_ns() // 1000


class ServeLog:
    """The served-feature log of one store folder in this process (``store.serve_log``).

    ``capacity`` bounds the queue in logged calls; ``interval`` is the seconds between background
    flushes. Counters: ``logged`` (calls queued), ``dropped`` (calls refused by a full queue),
    ``segments`` (files written), ``failed`` (calls lost to a failed flush; ``last_error`` says why).

    Example:
        >>> import tempfile
        >>> log = ServeLog(tempfile.mkdtemp())
        >>> log.flush(), log.dropped
        (0, 0)
    """

    def __init__(
        self, folder: str, *, capacity: int = DEFAULT_CAPACITY, interval: float = DEFAULT_INTERVAL
    ) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise InvalidArgumentError(f"capacity must be a positive int, got {capacity!r}")
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise InvalidArgumentError(f"interval must be a positive number of seconds, got {interval!r}")
        self.folder = folder
        self.capacity = capacity
        self.interval = float(interval)
        self.logged = 0
        self.segments = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        self._fresh()
        _LOGS.add(self)

    def _fresh(self) -> None:
        # Everything that belongs to one process: a forked child calls this again (see _after_fork).
        self.dropped = 0
        self.queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self.calls = itertools.count()
        self.token = uuid.uuid4().hex[:16]
        self._seg = itertools.count(1)
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.thread: threading.Thread | None = None

    # ---- the serving side --------------------------------------------------------------------------------

    def put(self, item: tuple[Any, ...]) -> None:
        """Queue one entry (never blocks: a full queue drops it and counts it)."""
        if self.thread is None:
            self.start()
        q = self.queue
        if len(q) >= self.capacity:
            self.dropped += 1
            return
        q.append(item)
        self.logged += 1
        if len(q) == self.capacity >> 1:
            self._wake.set()

    def start(self) -> None:
        """Start the flusher thread (done by the first entry; a daemon, flushed at exit)."""
        with self._flush_lock:
            if self.thread is None:
                self._stop = False
                th = threading.Thread(target=self._run, name="skewless-serve-log", daemon=True)
                self.thread = th
                th.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Flush what is queued and stop the flusher (a later entry starts it again)."""
        self._stop = True
        self._wake.set()
        th = self.thread
        if th is not None and th is not threading.current_thread():
            th.join(timeout=30)
        self.thread = None
        self.flush()

    # ---- the flusher -------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every queued entry now; returns the number of segments written."""
        with self._flush_lock:
            q = self.queue
            items = [q.popleft() for _ in range(len(q))]
            if not items:
                return 0
            groups: dict[int, tuple[Sink, list[tuple[Any, ...]]]] = {}
            for it in items:
                groups.setdefault(id(it[1]), (it[1], []))[1].append(it)
            written = 0
            for sink, its in groups.values():
                try:
                    table = _build(self.token, sink, its)
                    if table.num_rows:
                        self._write(sink, table)
                        written += 1
                except Exception as e:  # a flush must not kill the thread; the loss is counted
                    self.failed += len(its)
                    self.last_error = e
            self.segments += written
            return written

    def _write(self, sink: Sink, table: pa.Table) -> None:
        meta = {
            "version": LOG_FORMAT_VERSION,
            "source": sink.source,
            "keys": sink.keys,
            "features": sink.features,
            "request": [c[len(REQUEST_PREFIX) :] for c in table.column_names if c.startswith(REQUEST_PREFIX)],
            "versions": sink.versions,
            "served_by": sink.served_by,
        }
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        served = pc.cast(table.column(SERVED_AT), pa.int64())
        mm = pc.min_max(served)
        lo, hi = int(mm["min"].as_py()), int(mm["max"].as_py())
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot make the served-feature log folder {self.folder}: {e}") from e
        path = os.path.join(self.folder, f"seg-{lo}-{hi}-{self.token}-{next(self._seg):08d}.arrow")

        def fill(f: Any) -> None:
            with pa.ipc.new_file(f, table.schema) as w:
                w.write_table(table)

        atomic_write(path, fill, overwrite=False)


def _keys_of(rows: Any, sink: Sink) -> pa.Table:
    """The entity columns of one call's rows (any form the serving plan takes)."""
    if isinstance(rows, (tuple, list)) and rows and isinstance(rows[0], Mapping):
        t = pa.Table.from_pylist(list(rows))
    elif isinstance(rows, (tuple, list, np.ndarray, pa.Array, pa.ChunkedArray)) and len(sink.keys) == 1:
        t = pa.table({sink.keys[0]: as_column(rows if not isinstance(rows, tuple) else list(rows), "keys")})
    else:
        t = as_table(rows, "entity rows")
    return t


def _conform_keys(t: pa.Table, sink: Sink) -> pa.Table:
    """The key columns in the stored key types, then the request-time columns the sink logs, named
    ``request:<column>``."""
    cols = {}
    for k, kt in zip(sink.keys, sink.key_types, strict=True):
        if k not in t.column_names:
            raise MissingColumnError(f"the entity rows have no column {k!r}, a join key; add it")
        cols[k] = entity_key(t.column(k), kt, k)
    wanted = [c for c in t.column_names if c not in cols] if sink.request is None else sink.request
    for c in wanted:
        if c in t.column_names:
            cols[REQUEST_PREFIX + c] = t.column(c)
    return pa.table(cols)


def _build(token: str, sink: Sink, items: list[tuple[Any, ...]]) -> pa.Table:
    """One table of every entry of one sink, built with one conversion per column, not per entry
    (entries: see ``logged_get_numpy``, ``OnlineReader.get`` and ``log_table``)."""
    parts = []
    numpy_items = [it for it in items if it[0] == "numpy"]
    served_items = [it for it in items if it[0] == "served"]
    if numpy_items:
        values = np.concatenate([it[6] for it in numpy_items])
        status = np.concatenate([it[7] for it in numpy_items])
        keys = _conform_keys(_concat_keys([it[3] for it in numpy_items], sink), sink)
        cols = dict(zip(keys.column_names, keys.columns, strict=True))
        mask = np.repeat((status != _PRESENT) & ~sink.windows, sink.counts, axis=1) | np.isnan(values)
        for j, f in enumerate(sink.features):
            cols[f] = pa.array(values[:, j], pa.float64(), mask=mask[:, j])
        lengths = np.array([len(it[6]) for it in numpy_items])
        meta = [(it[2], it[4], it[5]) for it in numpy_items]
        parts.append(_with_meta(cols, token, meta, lengths, _status_cols(sink, status)))
    if served_items:
        # An answer of a transform stage (entries with its OnlineResponse) gives its final columns, UDF
        # outputs included, and a status per column; a plain answer its features and view statuses.
        tables, stats = [], []
        for it in served_items:
            resp = it[5] if len(it) > 5 else None
            if resp is None:
                t = it[3].table(sink.names)
                st = np.asarray(it[3].status)
            else:
                t = resp.to_arrow()
                per = resp.statuses
                st = np.column_stack([per[n] for n in sink.names]) if sink.names else np.zeros((len(t), 0))
            if len(it) > 6 and it[6]:
                for name, col in it[6].items():
                    t = t.append_column(name, col)
            tables.append(t)
            stats.append(st)
        t = pa.concat_tables(tables, promote_options="permissive")
        status = np.concatenate(stats)
        keys = _conform_keys(t, sink)
        cols = dict(zip(keys.column_names, keys.columns, strict=True))
        for f, name in zip(sink.features, sink.names, strict=True):
            cols[f] = t.column(name)
        lengths = np.array([len(it[3]) for it in served_items])
        meta = [(it[2], it[3].served_at_us, it[4]) for it in served_items]
        parts.append(_with_meta(cols, token, meta, lengths, _status_cols(sink, status)))
    parts += [it[2] for it in items if it[0] == "table"]
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def _concat_keys(rows: list[Any], sink: Sink) -> pa.Table:
    """The entity columns of many calls' rows. The hot path's forms (a sequence or array of one key's
    values, a dict of key columns) are concatenated column by column; any other form is converted per
    call."""
    if len(sink.keys) == 1 and all(type(r) is tuple or type(r) is np.ndarray for r in rows):
        k = sink.keys[0]
        if all(type(r) is np.ndarray for r in rows):
            return pa.table({k: as_column(np.concatenate(rows), k)})
        if not any(r and isinstance(r[0], Mapping) for r in rows):
            return pa.table({k: as_column(list(itertools.chain.from_iterable(rows)), k)})
    if all(type(r) is dict for r in rows) and len({tuple(r) for r in rows}) == 1:
        out = {}
        for k in rows[0]:
            vals = [r[k] for r in rows]
            if all(type(v) is np.ndarray for v in vals):
                out[k] = as_column(np.concatenate(vals), k)
            else:
                out[k] = as_column(list(itertools.chain.from_iterable(vals)), k)
        return pa.table(out)
    return pa.concat_tables([_keys_of(r, sink) for r in rows], promote_options="permissive")


def _status_cols(sink: Sink, status: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    j = 0
    for i, n in enumerate(sink.counts):
        for f in sink.features[j : j + n]:
            out[f + STATUS_SUFFIX] = np.ascontiguousarray(status[:, i])
        j += n
    return out


def _with_meta(
    cols: dict[str, Any],
    token: str,
    meta: list[tuple[int, int, int]],
    lengths: np.ndarray,
    status: dict[str, np.ndarray],
) -> pa.Table:
    """``cols`` behind the request ids, served_at and known_at of calls ``meta`` = [(call, served_at,
    known_at)] with ``lengths`` rows each, and before the status columns."""
    m = np.array(meta, dtype=np.int64).reshape(-1, 3)
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    row = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    ids = pc.binary_join_element_wise(
        pa.scalar(token),
        pa.array(np.repeat(m[:, 0], lengths)).cast(pa.string()),
        pa.array(row).cast(pa.string()),
        "-",
    )
    out: dict[str, Any] = {
        REQUEST_ID: ids,
        SERVED_AT: pa.array(np.repeat(m[:, 1], lengths)).cast(TIMESTAMP_TYPE),
        KNOWN_AT: pa.array(np.repeat(m[:, 2], lengths)).cast(TIMESTAMP_TYPE),
    }
    out.update(cols)
    for k, v in status.items():
        out[k] = pa.array(v, pa.int8())
    return pa.table(out)


def logged_get_numpy(plan: Any, log: ServeLog, sink: Sink) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``plan.get_numpy`` that also queues its inputs and outputs (the log's hot path: one engine call,
    a snapshot of the entity rows, a clock read and a queue append)."""
    get_at = plan.get_numpy_at
    calls = log.calls
    put = log.put
    snap = _snapshot
    now = time.time_ns

    def get_numpy(
        entity_rows: Any, as_of: dt.datetime | None = None, request: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        values, status, at = get_at(entity_rows, as_of, request)
        put(("numpy", sink, next(calls), snap(entity_rows), at, now() // 1000, values, status))
        return values, status

    return get_numpy


def log_table(
    log: ServeLog,
    sink: Sink,
    entity_rows: Any,
    values: Any,
    served_at: Any,
    *,
    request_ids: Any = None,
    statuses: Mapping[str, Any] | None = None,
) -> int:
    """Check and queue vectors computed elsewhere (``FeatureStore.log_served``); returns the rows."""
    ents = _conform_keys(as_table(entity_rows, "entity_rows"), sink)
    vals = as_table(values, "values")
    n = ents.num_rows
    if vals.num_rows != n:
        raise InvalidArgumentError(f"values has {vals.num_rows} rows, entity_rows has {n}; give one per row")
    known = _now_us()
    if isinstance(served_at, (dt.datetime, int, np.integer)):
        at = pa.array(np.full(n, instant_us(served_at, "served_at"), dtype=np.int64)).cast(TIMESTAMP_TYPE)
    else:
        at = normalize_ts(as_column(served_at, "served_at"), "served_at")
        if len(at) != n:
            raise InvalidArgumentError(
                f"served_at has {len(at)} values, entity_rows has {n}; give one or one per row"
            )
        if at.null_count:
            raise InvalidArgumentError("served_at has nulls; every logged vector needs its instant")
    if request_ids is None:
        call = next(log.calls)
        ids: Any = pc.binary_join_element_wise(
            pa.scalar(f"{log.token}-{call}"), pa.array(np.arange(n, dtype=np.int64)).cast(pa.string()), "-"
        )
    else:
        ids = pc.cast(as_column(request_ids, "request_ids"), pa.string())
        if len(ids) != n:
            raise InvalidArgumentError(f"request_ids has {len(ids)} values, entity_rows has {n}")
    cols: dict[str, Any] = {
        REQUEST_ID: ids,
        SERVED_AT: at,
        KNOWN_AT: pa.array(np.full(n, known, dtype=np.int64)).cast(TIMESTAMP_TYPE),
    }
    cols.update(zip(ents.column_names, ents.columns, strict=True))
    statuses = dict(statuses or {})
    unknown = [s for s in statuses if s not in sink.features]
    if unknown:
        raise InvalidArgumentError(f"statuses names {unknown}, which are not among the logged values")
    for f, t in zip(sink.features, sink.types, strict=True):
        col = vals.column(f)
        if col.type != t:
            try:
                col = col.cast(t)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise InvalidArgumentError(
                    f"values column {f!r} ({col.type}) does not convert to {t}: {e}"
                ) from None
        cols[f] = col
        st = statuses.get(f)
        cols[f + STATUS_SUFFIX] = (
            pa.nulls(n, pa.int8()) if st is None else pc.cast(as_column(st, f), pa.int8())
        )
    table = pa.table(cols)
    log.put(("table", sink, table))
    return n


# ---- reading and pruning ---------------------------------------------------------------------------------


def segments(folder: str) -> list[tuple[int, int, str]]:
    """(smallest served_at, largest served_at, path) of every whole segment in ``folder``."""
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        m = _SEGMENT.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), os.path.join(folder, name)))
    return out


def _read_segment(path: str) -> tuple[dict[str, Any], pa.Table]:
    try:
        with pa.memory_map(path) as src:
            t = pa.ipc.open_file(src).read_all()
        meta = json.loads((t.schema.metadata or {})[META_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError) as e:
        raise StorageError(
            f"served-feature log segment {path} is damaged ({e}); move it out of the logs folder"
        ) from None
    if meta.get("version") not in READABLE_FORMATS:
        raise StorageError(
            f"{path} is served-feature log format {meta.get('version')!r}; this skewless reads "
            f"versions {list(READABLE_FORMATS)}. Upgrade skewless"
        )
    if meta["version"] == 1:
        # Format 1 named a log_served segment's other entity-row columns as given.
        own = {REQUEST_ID, SERVED_AT, KNOWN_AT, *meta["keys"]}
        own.update(meta["features"])
        own.update(f + STATUS_SUFFIX for f in meta["features"])
        extra = [c for c in t.column_names if c not in own]
        t = t.rename_columns([REQUEST_PREFIX + c if c in extra else c for c in t.column_names])
        meta["request"] = extra
    return meta, t


def _repeat_str(value: str | None, n: int) -> pa.Array:
    """``value`` ``n`` times as a dictionary-encoded string column (one copy of the text)."""
    if value is None:
        return pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int32()), pa.array([], pa.string()))
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value], pa.string()))


def read_log(
    folder: str,
    *,
    start: int | None = None,
    end: int | None = None,
    features: Sequence[str] | None = None,
    source: str | None = None,
) -> dict[str, pa.Table]:
    """Per feature reference, every logged row with ``start <= served_at < end`` (UTC microseconds,
    None: open): request id, served_at, known_at, ``source``, ``version`` (of the feature's view or
    transform view; null for ``log_served``), ``served_by`` (the lineage record as canonical JSON,
    dictionary-encoded; null for a plain value or ``log_served``), the segment's key columns (as logged),
    its ``request:<column>`` inputs, the value (column named by the reference) and its status."""
    wanted = None if features is None else set(features)
    per: dict[str, list[pa.Table]] = {}
    for lo, hi, path in segments(folder):
        if (start is not None and hi < start) or (end is not None and lo >= end):
            continue
        meta, t = _read_segment(path)
        if source is not None and meta["source"] != source:
            continue
        if start is not None or end is not None:
            s = pc.cast(t.column(SERVED_AT), pa.int64())
            keep = None
            if start is not None:
                keep = pc.greater_equal(s, start)
            if end is not None:
                e = pc.less(s, end)
                keep = e if keep is None else pc.and_(keep, e)
            t = t.filter(keep)
        n = t.num_rows
        for f in meta["features"]:
            if wanted is not None and f not in wanted:
                continue
            view = f.split(":", 1)[0]
            version = meta["versions"].get(view)
            cols: dict[str, Any] = {
                REQUEST_ID: t.column(REQUEST_ID),
                SERVED_AT: t.column(SERVED_AT),
                KNOWN_AT: t.column(KNOWN_AT),
                "source": pa.repeat(pa.scalar(meta["source"], pa.string()), n),
                "version": pa.nulls(n, pa.int64()) if version is None else pa.array(np.full(n, version)),
            }
            cols["served_by"] = _repeat_str(lineage_key(meta.get("served_by", {}).get(f)), n)
            for k in meta["keys"]:
                cols[k] = t.column(k)
            for c in meta["request"]:
                cols[REQUEST_PREFIX + c] = t.column(REQUEST_PREFIX + c)
            cols[f] = t.column(f)
            cols[f + STATUS_SUFFIX] = t.column(f + STATUS_SUFFIX)
            per.setdefault(f, []).append(pa.table(cols))
    return {f: pa.concat_tables(ts, promote_options="permissive") for f, ts in per.items()}


def prune(folder: str, before: int) -> int:
    """Remove every segment whose rows were all served before ``before`` (UTC microseconds), and temp
    files of flushes that died; returns the number of segments removed."""
    removed = 0
    for _, hi, path in segments(folder):
        if hi < before:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed += 1
    if os.path.isdir(folder):
        cutoff = time.time() - _STALE_TEMP_S
        for e in os.scandir(folder):
            if e.name.startswith(TEMP_PREFIX) and e.is_file() and e.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
    return removed


# ---- process lifecycle -----------------------------------------------------------------------------------

_LOGS: weakref.WeakSet[ServeLog] = weakref.WeakSet()


def _after_fork() -> None:
    # The child has a copy of the parent's queue (the parent writes those entries) and of its locks,
    # possibly held by a flusher thread that does not exist here: start over.
    for log in list(_LOGS):
        log._fresh()


def _at_exit() -> None:
    for log in list(_LOGS):
        with contextlib.suppress(Exception):
            log.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_at_exit)
