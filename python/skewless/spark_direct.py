"""Entity rows read by the Spark tasks themselves, when the entity DataFrame is a bare Parquet scan.

Why: in :func:`skewless.spark.get_historical_features` the entity rows reach the Python tasks through
Spark: the JVM reads the Parquet file, turns its rows into Arrow and sends them to the Python worker,
which waits. At size M (1M label rows) that was a whole Spark job of its own, about 0.6 s of which the
Python side idled, and the JVM's conversion took about 0.5 CPU s. When ``entity_df`` is exactly
``spark.read.parquet(...)`` of files every task can open at the same path, a task reads them with
pyarrow instead, into the Arrow types Spark would have handed it; and the footers give the rows' time
span before any row is read, so the entity rows and the histories are staged in one Spark job.

When it applies (:func:`scan_of`; anything else goes through Spark as before, with the same answer):
classic pyspark (not Spark Connect); the DataFrame's analyzed plan is a single Parquet file relation
(no projection, filter, join or added column; no partition columns from folder names, no bucketing;
no reader option but the path); its files are local paths (``file:`` URIs); every file has every
column, in the type Spark hands the tasks, or a timestamp of the same zone-awareness in milliseconds
(cast exactly to microseconds); and no file carries Spark's marks of legacy (pre-3.0) calendar values,
which Spark would rebase.

Example:
    >>> import tempfile, os, pyarrow as pa, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.parquet")
    >>> t = pa.table({"k": [1, 2], "ts": pa.array([5, 9], pa.timestamp("us", tz="UTC"))})
    >>> pq.write_table(t, path)
    >>> scan = DirectScan([path], t.schema)
    >>> scan.rows, scan.span("ts")
    (2, (5, 9))
    >>> [b.num_rows for b in scan.reader()(0)]
    [2]
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: Rows of entity rows read at a time (whole row groups), as a history part (``skewless.spark``).
SPLIT_ROWS = 1 << 20
_DAY_US = 86_400_000_000
#: Microseconds per unit of a Parquet timestamp's logical type (nanoseconds: Spark refuses them).
_UNIT_US = {"milliseconds": 1000, "microseconds": 1}
#: Footer keys Spark writes into files whose dates and timestamps it would rebase when reading.
_LEGACY_KEYS = (b"org.apache.spark.legacyDateTime", b"org.apache.spark.legacyINT96")


def row_group_parts(
    files: list[str],
    metas: list[pq.FileMetaData],
    limit: int,
    tag: Callable[[pq.FileMetaData, int], Any] = lambda md, g: None,
) -> list[list[tuple[str, list[int], Any]]]:
    """Row groups of Parquet files (in file order) cut into parts a task reads one at a time: a part
    closes once it holds ``limit`` rows or more, so every part but the last holds at least ``limit``
    (whole small files together, a large one cut between row groups). A part is a list of runs
    (path, row groups, tag): consecutive row groups of one file with an equal ``tag(meta, group)``.
    Used for the entity rows here and for the histories in :mod:`skewless.spark`."""
    parts: list[list[tuple[str, list[int], Any]]] = []
    current: list[tuple[str, list[int], Any]] = []
    rows = 0
    for path, md in zip(files, metas, strict=True):
        for g in range(md.num_row_groups):
            t = tag(md, g)
            if current and current[-1][0] == path and current[-1][2] == t:
                current[-1][1].append(g)
            else:
                current.append((path, [g], t))
            rows += md.row_group(g).num_rows
            if rows >= limit:
                parts.append(current)
                current, rows = [], 0
    if current:
        parts.append(current)
    return parts


class DirectScan:
    """Local Parquet files read as Spark would hand their rows to a task (``schema``: Spark's Arrow
    schema of the DataFrame): their footers, their row groups cut into parts of about ``SPLIT_ROWS``
    rows, and the time span of a column from the footers' statistics."""

    def __init__(
        self, files: list[str], schema: pa.Schema, metas: list[pq.FileMetaData] | None = None
    ) -> None:
        self.files, self.schema = files, schema
        self.metas = metas if metas is not None else [pq.read_metadata(p) for p in files]
        self.rows = sum(m.num_rows for m in self.metas)

    def splits(self) -> list[list[tuple[str, list[int]]]]:
        """The parts a task reads one at a time: lists of (path, row groups)."""
        parts = row_group_parts(self.files, self.metas, SPLIT_ROWS)
        return [[(path, groups) for path, groups, _ in part] for part in parts]

    def split_rows(self) -> list[int]:
        """The rows of each part of :meth:`splits`."""
        where = {p: md for p, md in zip(self.files, self.metas, strict=True)}
        return [sum(where[p].row_group(g).num_rows for p, gs in part for g in gs) for part in self.splits()]

    def reader(self) -> Any:
        """What a task runs to read part ``i`` of :meth:`splits`: its batches in ``schema``'s types."""
        splits, schema = self.splits(), self.schema

        def read(i: int) -> Iterator[pa.RecordBatch]:
            for path, groups in splits[i]:
                t = pq.ParquetFile(path).read_row_groups(groups, columns=schema.names)
                yield from t.select(schema.names).cast(schema).to_batches()

        return read

    def span(self, column: str) -> tuple[int, int] | None:
        """The least and greatest value of ``column`` over every non-null row, as ``skewless.spark``
        compares times (timestamps and dates as UTC microseconds, integers as they are), from the
        footers' statistics; None when they cannot tell (a row group without them, or no value)."""
        lo: int | None = None
        hi: int | None = None
        for md in self.metas:
            try:
                j = md.schema.names.index(column)
            except ValueError:
                return None
            scale = _scale(md.schema.column(j))
            if scale is None:
                return None
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                st = rg.column(j).statistics
                if rg.num_rows == 0 or (
                    st is not None and st.has_null_count and st.null_count == rg.num_rows
                ):
                    continue  # no value here
                if st is None or not st.has_min_max:
                    return None
                a, b = int(st.min_raw) * scale, int(st.max_raw) * scale
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        if lo is None or hi is None:
            return None
        return lo, hi


def _scale(column: Any) -> int | None:
    """Microseconds per stored unit of a time column (1 for an integer), or None: not one of those."""
    logical = column.logical_type.type
    if logical == "TIMESTAMP" and column.physical_type == "INT64":
        return _UNIT_US.get(json.loads(column.logical_type.to_json()).get("timeUnit"))
    if logical == "DATE":
        return _DAY_US
    if column.physical_type in ("INT32", "INT64") and logical in ("NONE", "INT"):
        if logical == "INT" and not json.loads(column.logical_type.to_json()).get("isSigned", True):
            return None
        return 1
    return None


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column (as pyarrow reads it) casts exactly into Spark's type for it."""
    if have.equals(want):
        return True
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        # Spark reads milliseconds as microseconds; a zone name differs only in the label.
        return have.unit in ("ms", "us") and want.unit == "us" and (have.tz is None) == (want.tz is None)
    return (pa.types.is_string(have) or pa.types.is_large_string(have)) and (
        pa.types.is_string(want) or pa.types.is_large_string(want)
    )


def _local_path(uri: str) -> str | None:
    u = urllib.parse.urlparse(uri)
    if u.scheme not in ("file", ""):
        return None
    return urllib.parse.unquote(u.path)


def scan_of(df: Any, schema: pa.Schema) -> DirectScan | None:
    """A :class:`DirectScan` of ``df``'s files when ``df`` is a bare scan of local Parquet files that
    the tasks can read as Spark would (module docstring, "When it applies"), else None. ``schema``:
    Spark's Arrow schema of ``df``."""
    try:
        jdf = df._jdf  # classic pyspark only: Spark Connect has no JVM plan here
        plan = jdf.queryExecution().analyzed()
        if plan.getClass().getSimpleName() != "LogicalRelation" or plan.isStreaming():
            return None
        rel = plan.relation()
        if rel.getClass().getSimpleName() != "HadoopFsRelation":
            return None
        if rel.fileFormat().getClass().getSimpleName() != "ParquetFileFormat":
            return None
        if not rel.partitionSchema().isEmpty() or rel.bucketSpec().isDefined():
            return None
        keys = rel.options().keysIterator()
        while keys.hasNext():
            if str(keys.next()).lower() not in ("path", "paths"):
                return None
        uris = list(df.inputFiles())
    except Exception:  # any surprise in the JVM's objects: Spark reads the rows, as before
        return None
    files = [_local_path(u) for u in uris]
    if not files or any(p is None or not os.path.isfile(p) for p in files):
        return None
    paths = [p for p in files if p is not None]
    try:
        metas = [pq.read_metadata(p) for p in paths]
    except (OSError, pa.ArrowException):
        return None  # Spark's own read reports the file
    for md in metas:
        kv = md.metadata or {}
        if any(k in kv for k in _LEGACY_KEYS) or _old_spark(kv.get(b"org.apache.spark.version")):
            return None
        have = md.schema.to_arrow_schema()
        for f in schema:
            if have.get_field_index(f.name) < 0 or not _same_type(have.field(f.name).type, f.type):
                return None
    return DirectScan(paths, schema, metas)


def _old_spark(version: bytes | None) -> bool:
    """Whether a file was written by Spark before 3.0 (its calendar: Spark rebases such values)."""
    if version is None:
        return False
    try:
        return int(version.decode().split(".")[0]) < 3
    except (ValueError, UnicodeDecodeError):
        return True
