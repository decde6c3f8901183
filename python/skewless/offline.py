"""The offline store: each feature view's history as Parquet files, the system of record.

Layout: ``<store>/offline/<view>/part-<seq>.parquet`` with ``seq`` a zero-padded number that grows with
every write, so file names record the order of writes across reopens. Files are written under a hidden
temp name (``.tmp-...``, which dataset discovery skips), fsynced, then renamed: a crash never leaves a
partial file visible. A view with ``source=`` reads its history from that path or glob (files in sorted
path order count as written in that order) and is never written to.

Write sequence: history format, version 2. Every file written by ``append`` or ``compact`` holds, after
the view's columns, an int64 column ``__seq__``: each row's write sequence, ``(file number << 32) | row``,
the number of the ``part-`` file the row was first written to and its 0-based row within that write.
``compact`` carries every row's ``__seq__`` over unchanged, so a row's sequence never changes once written,
whatever files it later moves between or how they are named or listed. The files' Parquet metadata say
``skewless.format = 2``. Version 1 files (no ``__seq__``, from before) and ``source=`` files without the
column get it derived on read by the same formula: the file number is the part number (for a source, the
file's 1-based rank in sorted path order), the row its position in the file. File numbers stay below
2**31 and one write below 2**32 rows; more is an error, never a wrap.

Tie order. The history has one total order, independent of file order, listing order and row order:
(timestamp, created timestamp, write sequence). Among rows with equal key, timestamp and created
timestamp (a full tie) the earliest write wins (the smallest file number) and, within that write, its
last row (the largest row number). That is the online store's rule, which keeps its value layout free of
a sequence: within one write the last row of a tie wins, and a later write never replaces a stored
equal (timestamp, created) pair, so a replay of older rows (``materialize`` run again) can never roll a
value sideways. Retrieval gives the join [`tie_rank`] of the sequence (larger wins) as its ``sequence=``;
``compact`` sorts each tie so that its winner comes last, and ``materialize`` replays files in write order
(by their smallest sequence), one online write per file (or per tie-free chunk of a sorted file): all
three pick the same row. One case stays apart: a write whose process died between its history file and
its online write, then a later write with a full tie against one of its rows; the online store holds
the later row and ``materialize`` cannot replace it with an equal pair (that needs the sequence in the
online value, which its layout does not carry).

Write time: history format, version 3. Every file ``append`` writes also holds an int64 column
``__written_at__`` (after ``__seq__``): the UTC microseconds at which the write began, one value for all
of its rows (read under the writer lock, before the file is written; the online half of the write lands
a few milliseconds later). ``compact`` carries it over like ``__seq__``. The files' metadata say
``skewless.format = 3``. Files of versions 1 and 2 and ``source=`` files have no write time: a scan
whose schema asks for the column gets null (unknown) for their rows. The skew check
(:mod:`skewless.skew`) uses it to rebuild a served vector as known at the instant it was served: a
backfill written after a lookup cannot have been served by it.

Integrity (part of history format version 2). Every page of a file the store writes carries a CRC-32
(Parquet's page checksum) and every read verifies it; files without checksums (version 1, and
``source=`` files written without them) still read, unverified. The footer has no checksum of its own,
so each file also records its columns and row count in its key-value metadata (``skewless.layout``:
JSON ``{"crc": CRC-32 of body, "body": "{\"columns\": [[name, arrow type], ...], \"rows\": n}"}``),
and every read checks the footer against it. A page that fails its checksum, a footer that disagrees
with its layout record or cannot be parsed, or any other decoding failure is a :class:`StorageError`
naming the file, never data: no retrieval, materialization or compaction goes on past it (compaction
would otherwise launder the damage into a fresh, checksummed file). The footer's column statistics
(min/max) decide which row groups a time-filtered read skips and the order ``materialize`` replays
files in, so each file also records the bounds those come from (``skewless.bounds``, a key of its own
so that builds which do not know it still read the file: JSON ``{"crc": CRC-32 of body, "body":
"{\"rows\": [rows per row group], \"columns\": {name: [[min, max] or null per row group]}}"}"``, for
every timestamp column stored in ms, us or ns and for ``__seq__``, as the int64 values the statistics
hold), and every read checks the statistics against it. Files without the record (written before it,
and ``source=`` files) have their statistics trusted as they are. ``append`` first checks the footer
of every live file (once per file identity per process; footers are small), so a write refuses to
extend a history whose files it cannot open; a flipped bit inside a page is found by the next read of
that page.

File names, version 1. ``part-<seq>.parquet`` is a write; ``part-<seq>.compact.parquet`` is written by
``compact`` and replaces every file with a smaller ``seq``: a listing that holds one ignores those, so
the files a reader sees are always one whole history, before or after any compaction (including one
that died before removing the files it replaced; the next ``compact`` removes them).

Reads under a concurrent ``compact`` (another process; readers never take the store's writer lock).
A read lists the live files, then opens every one of them and reads only through those handles: an
unlinked file stays readable through an open handle, so once all are open the read is a fixed snapshot
whatever ``compact`` does next. The only race left is a compaction finishing between the listing and
the opening; a file that vanished then is a ``FileNotFoundError``, on which the read lists again (the
new listing holds the compacted file) and retries.

Example:
    >>> import tempfile
    >>> import pyarrow as pa
    >>> from skewless.offline import OfflineStore
    >>> off = OfflineStore(tempfile.mkdtemp())
    >>> _ = off.append("v", pa.table({"x": [1, 2]}))
    >>> _ = off.append("v", pa.table({"x": [3]}))
    >>> [p[-12:] for p in off.files("v", None)]  # in write order
    ['0001.parquet', '0002.parquet']
    >>> t = pa.Table.from_batches(off.scan("v", None, None, ["x"], with_seq=True))
    >>> [(s >> 32, s & 0xFFFFFFFF) for s in t.column("__seq__").to_pylist()]  # (file, row)
    [(1, 0), (1, 1), (2, 0)]
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ._fs import atomic_write, fsync_dir
from .definitions import _check_name
from .errors import (
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    SkewlessError,
    StorageError,
)

__all__ = ["SEQ", "WRITTEN", "OfflineStore", "tie_rank"]

_PART = re.compile(r"^part-(\d{12})(\.compact)?\.parquet$")
#: Listing-then-opening attempts before a read gives up (each retry needs a compaction to finish in
#: the short gap between the two; see the module docstring).
SNAPSHOT_TRIES = 50
#: Row groups small enough that a time filter prunes most of a file, large enough to scan fast.
#: Snappy: on the M workload it decoded faster than zstd or no compression (0.47 s vs 0.56 s and 0.75 s
#: for a one-view training set), and feature values are mostly incompressible floats anyway.
ROW_GROUP = 1 << 17
#: Parquet key-value metadata marking a file written by ``compact``.
SORTED_KEY = b"skewless.sorted"
#: The write-sequence column (see "Write sequence" above).
SEQ = "__seq__"
#: The write-time column (see "Write time" above).
WRITTEN = "__written_at__"
#: Parquet key-value metadata: the history format version of a file written here.
FORMAT_KEY = b"skewless.format"
FORMAT_VERSION = 3
#: Key-value metadata of a history file: its columns and row count under a CRC-32 (see "Integrity").
LAYOUT_KEY = b"skewless.layout"
#: Key-value metadata of a history file: the row-group bounds its statistics must show (see "Integrity").
BOUNDS_KEY = b"skewless.bounds"
#: Every read verifies page checksums where a file has them (see "Integrity").
_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
)
#: Decoding failures of a Parquet file (pyarrow raises OSError for a bad checksum, ArrowInvalid and
#: others for a damaged footer or page header).
_DECODE_ERRORS = (OSError, pa.ArrowException)
#: File numbers stay below this, so ``number << 32`` is a non-negative int64.
MAX_FILES = 1 << 31
#: Rows of one write stay below this (the row field of a sequence).
MAX_ROWS = 1 << 32
_FILE_BITS = (MAX_FILES - 1) << 32


def tie_rank(seq: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Write sequences as ranks where larger wins a full tie: the earliest file, then its last row.

    The file bits are inverted (``f`` becomes ``2**31 - 1 - f``), the row bits kept; both stay int64.

    Example:
        >>> import pyarrow as pa
        >>> seq = pa.array([(1 << 32) | 0, (1 << 32) | 5, (2 << 32) | 9])
        >>> r = tie_rank(seq).to_pylist()
        >>> r[1] > r[0] > r[2]  # file 1 beats file 2; in file 1 the later row wins
        True
    """
    return pc.bit_wise_xor(seq, pa.scalar(_FILE_BITS, pa.int64()))


def _with_seq(table: pa.Table, number: int) -> pa.Table:
    """``table`` with the ``__seq__`` of a write to file ``number`` appended."""
    if not 0 < number < MAX_FILES:
        raise StorageError(
            f"history file number {number} is out of the sequence range (1 to {MAX_FILES - 1}); this "
            "history cannot take more writes"
        )
    if table.num_rows >= MAX_ROWS:
        raise InvalidArgumentError(
            f"one write holds {table.num_rows} rows; at most {MAX_ROWS - 1} fit one history file. Split it"
        )
    return table.append_column(pa.field(SEQ, pa.int64()), _sequence(number, table.num_rows))


def _sequence(number: int, rows: int) -> pa.Array:
    return pa.array(np.arange(rows, dtype=np.int64) + (number << 32))


class OfflineStore:
    """Parquet histories under ``<root>/<view>/``. A relative ``source=`` path is taken relative to
    ``sources_base`` (default: the parent of ``root``, the store's folder), never to the current
    directory, so a store reads the same data from wherever it is opened."""

    def __init__(self, root: str, sources_base: str | None = None) -> None:
        self.root = root
        self.sources_base = os.path.dirname(os.path.abspath(root)) if sources_base is None else sources_base
        # Files whose footer checked out, by identity (a file is never rewritten in place, so a new
        # identity means a new file).
        self._footers_ok: set[tuple[str, int, int, int]] = set()

    def folder(self, view: str) -> str:
        # Every path under root is built here, from a name that cannot leave root (no separators, no
        # dots: the registry refuses other names on load, and this check holds even without it).
        _check_name(view, "feature view")
        return os.path.join(self.root, view)

    def source_path(self, source: str) -> str:
        """``source`` as an absolute path: relative ones are relative to the store's folder."""
        return os.path.join(self.sources_base, os.path.expanduser(source))

    def _all_parts(self, view: str) -> list[tuple[int, bool, str]]:
        """Every history file of a view, superseded or not: (seq, written by compact, path), by seq."""
        d = self.folder(view)
        if not os.path.isdir(d):
            return []
        out = []
        for name in os.listdir(d):
            m = _PART.match(name)
            if m:
                out.append((int(m.group(1)), m.group(2) is not None, os.path.join(d, name)))
        return sorted(out)

    def _last_number(self, view: str) -> int:
        """The number of the view's newest history file (0 when none): the last of :meth:`_parts`, from
        one listing matched in C (no per-file Python work: a push learns it on its critical path)."""
        try:
            names = os.listdir(self.folder(view))
        except FileNotFoundError:
            return 0
        # Numbers have a fixed width, so the greatest name is the greatest number.
        m = _PART.match(max(filter(_PART.match, names), default=""))
        return int(m.group(1)) if m else 0

    def _parts(self, view: str) -> list[tuple[int, str]]:
        """The live history files: from the newest compacted file on (see "File names")."""
        parts = self._all_parts(view)
        base = max((seq for seq, compacted, _ in parts if compacted), default=0)
        return [(seq, p) for seq, _, p in parts if seq >= base]

    def files(self, view: str, source: str | None) -> list[str]:
        """The history files of a view, oldest write first (for ``source``: sorted path order)."""
        return [p for _, p in self.numbered_files(view, source)]

    def numbered_files(self, view: str, source: str | None) -> list[tuple[int, str]]:
        """(file number, path) of every history file, by number: the part number, or for ``source`` the
        1-based rank in sorted path order. A file without ``__seq__`` derives it from this number."""
        if source is None:
            return self._parts(view)
        source = self.source_path(source)
        if os.path.isdir(source):
            found = [
                os.path.join(dp, f)
                for dp, _, fs in os.walk(source)
                for f in fs
                if f.endswith(".parquet") and not f.startswith((".", "_"))
            ]
        elif any(c in source for c in "*?["):
            found = glob.glob(source, recursive=True)
        else:
            found = [source] if os.path.exists(source) else []
        if not found:
            # Reading nothing would give a training set of nulls and an online store with nothing in it,
            # with no sign of why: a source that names no data is a mistake to report.
            raise StorageError(
                f"feature view {view!r}: source {source!r} matches no Parquet file; write the data there "
                "first, or fix source= (a relative path is relative to the store's folder)"
            )
        return list(enumerate(sorted(found), 1))

    def has_data(self, view: str) -> bool:
        return bool(self._parts(view))

    def append(self, view: str, table: pa.Table) -> str:
        """Add ``table`` as one new history file, atomically; returns its path."""
        final, stamped = self.next_file(view, table)
        self.write_file(final, stamped)
        return final

    def next_file(self, view: str, table: pa.Table, *, check: bool = True) -> tuple[str, pa.Table]:
        """The first half of :meth:`append`: the path of the view's next history file, and ``table`` as
        it will be stored there (with ``__seq__`` and ``__written_at__``); nothing is written yet. Call
        under the writer lock, then :meth:`write_file`. ``check=False`` leaves the footer check of the
        files already there to the caller (:meth:`check_footers`, before :meth:`write_file`)."""
        d = self.folder(view)
        os.makedirs(d, exist_ok=True)
        if check:
            parts = self._parts(view)
            self._check_footers(view, [p for _, p in parts])
            seq = (parts[-1][0] + 1) if parts else 1
        else:
            seq = self._last_number(view) + 1
        table = _with_seq(table, seq)
        table = table.append_column(
            pa.field(WRITTEN, pa.int64()), pa.array(np.full(table.num_rows, time.time_ns() // 1000))
        )
        return os.path.join(d, f"part-{seq:012d}.parquet"), table

    def write_file(self, final: str, stamped: pa.Table) -> None:
        """The second half of :meth:`append`: the file durable at ``final`` (fsynced, folder fsynced)."""
        _write_parquet(stamped, final)
        # Written here from a checked layout: the next append need not read its footer back (it still
        # does if the file changes since).
        self._footers_ok.add(_identity(final))

    def check_footers(self, view: str) -> None:
        """Refuse (StorageError) to append behind a live history file of ``view`` whose footer is
        damaged; what :meth:`next_file` checks unless told not to."""
        self._check_footers(view, [p for _, p in self._parts(view)])

    def _check_footers(self, view: str, paths: Sequence[str]) -> None:
        """Refuse to append behind a file whose footer is damaged (see "Integrity")."""
        for p in paths:
            ident = _identity(p)
            if ident in self._footers_ok:
                continue
            try:
                why = _layout_problem(pq.read_metadata(p))
            except _DECODE_ERRORS as e:
                raise corrupt(view, [p], e, "nothing was written") from None
            if why:
                raise corrupt(view, [p], why, "nothing was written")
            self._footers_ok.add(ident)

    def remove(self, path: str) -> None:
        """Undo an :meth:`append` (the online half of a write failed)."""
        os.unlink(path)
        fsync_dir(os.path.dirname(path))

    def open_files(
        self, view: str, source: str | None, files: Sequence[str] | None = None
    ) -> list[pa.NativeFile]:
        """Open the history files (``files``, default :meth:`files`), in that order: a snapshot that a
        concurrent ``compact`` cannot change (see the module docstring). The caller closes them."""
        return [f for _, f in self._open(view, source, files)]

    def _open(
        self, view: str, source: str | None, files: Sequence[str] | None
    ) -> list[tuple[str, pa.NativeFile]]:
        for _ in range(SNAPSHOT_TRIES):
            paths = self.files(view, source) if files is None else list(files)
            opened: list[pa.NativeFile] = []
            try:
                for p in paths:
                    opened.append(pa.OSFile(p))
                return list(zip(paths, opened, strict=True))
            except FileNotFoundError:
                for f in opened:
                    f.close()
                if files is not None:
                    raise
            except OSError as e:
                for f in opened:
                    f.close()
                if e.errno != errno.EMFILE:
                    raise
                raise StorageError(
                    f"the history of {view!r} has {len(paths)} files, more than this process may hold open; "
                    f"run compact on it (or raise the open-file limit, ulimit -n)"
                ) from e
        raise StorageError(
            f"the history of {view!r} kept changing while it was being opened ({SNAPSHOT_TRIES} tries); is "
            "something compacting it in a loop?"
        )

    def dataset(
        self, view: str, source: str | None, schema: pa.Schema | None, files: Sequence[str] | None = None
    ) -> ds.Dataset | None:
        return self._dataset(view, source, schema, files)[0]

    def _dataset(
        self, view: str, source: str | None, schema: pa.Schema | None, files: Sequence[str] | None
    ) -> tuple[ds.FileSystemDataset | None, list[str]]:
        """The dataset over the opened files, and their paths (fragment i is path i)."""
        opened = self._open(view, source, files)
        if not opened:
            return None, []
        fmt = _FORMAT
        # The dataset reads through the open handles only (they close with it), never by path again.
        frags = [fmt.make_fragment(f) for _, f in opened]
        for (p, _), frag in zip(opened, frags, strict=True):
            try:
                why = _layout_problem(frag.metadata)
            except _DECODE_ERRORS as e:
                raise corrupt(view, [p], e) from None
            if why:
                raise corrupt(view, [p], why)
        # Our own files carry exactly the view's schema; a source's we take as found (from its newest
        # file, as dataset discovery would) and normalize later.
        if schema is None or source is not None:
            schema = frags[-1].physical_schema
        return ds.FileSystemDataset(frags, schema, fmt), [p for p, _ in opened]

    def scan(
        self,
        view: str,
        source: str | None,
        schema: pa.Schema | None,
        columns: Sequence[str],
        time_range: tuple[str, int | None, int | None, bool] | None = None,
        batch_size: int = 1 << 20,
        files: Sequence[str] | None = None,
        with_seq: bool = False,
        row_groups: Sequence[int] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream only ``columns`` of the rows in ``time_range`` = (timestamp column, low in UTC
        microseconds inclusive or None, high or None, whether high is inclusive); Parquet row-group
        statistics prune the rest. Batches come in file order (``files``, default :meth:`files`).
        ``with_seq`` adds the ``__seq__`` column, read or derived (see "Write sequence"). A file that
        fails to decode raises :class:`StorageError` naming it (see "Integrity"). ``row_groups``: only
        these row groups of each file (a part of one file, as ``skewless.spark`` reads it)."""
        d, paths = self._dataset(view, source, schema, files)
        if d is None:
            return iter(())
        if row_groups is not None:
            part = [f.subset(row_group_ids=list(row_groups)) for f in d.get_fragments()]
            d = ds.FileSystemDataset(part, d.schema, d.format)
        filt = None
        if time_range is not None:
            name, lo, hi, hi_incl = time_range
            if name not in d.schema.names:
                raise MissingColumnError(f"the history of {view!r} has no column {name!r}")
            t = d.schema.field(name).type
            if not pa.types.is_timestamp(t) or t.tz is None:
                raise NaiveTimestampError(
                    f"history column {name!r} of {view!r} is {t}, not a timezone-aware timestamp; rewrite it "
                    "with a zone (e.g. UTC)"
                )
            f = ds.field(name)

            def bound(us: int) -> pa.Scalar:
                # Compare in the file's own unit and zone so statistics still prune row groups.
                return pc.cast(pa.scalar(us, pa.timestamp("us", tz="UTC")), t, safe=False)

            if lo is not None:
                filt = f >= bound(lo)
            if hi is not None:
                h = (f <= bound(hi)) if hi_incl else (f < bound(hi))
                filt = h if filt is None else filt & h
        have = set(d.schema.names)  # a set: a view may have thousands of columns
        missing = [c for c in columns if c not in have]
        if missing:
            raise MissingColumnError(f"the history of {view!r} has no column(s) {missing}")
        if not with_seq:
            return _guarded(
                view,
                paths,
                lambda: d.to_batches(
                    columns=list(columns), filter=filt, batch_size=batch_size, use_threads=True
                ),
            )
        return _guarded(
            view, paths, lambda: self._scan_with_seq(view, source, d, paths, list(columns), filt, batch_size)
        )

    def _scan_with_seq(
        self,
        view: str,
        source: str | None,
        d: ds.FileSystemDataset,
        paths: list[str],
        columns: list[str],
        filt: ds.Expression | None,
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        number = {p: n for n, p in self.numbered_files(view, source)}
        frags = list(d.get_fragments())
        stored = [f for f in frags if SEQ in f.physical_schema.names]
        schema = d.schema if SEQ in d.schema.names else d.schema.append(pa.field(SEQ, pa.int64()))
        cols = [*columns, SEQ]
        if stored:
            # Version 2 files: the sequence is a column like any other (threads, statistics, filter).
            sub = ds.FileSystemDataset(stored, schema, d.format)
            yield from sub.to_batches(columns=cols, filter=filt, batch_size=batch_size, use_threads=True)
        for frag, path in zip(frags, paths, strict=True):
            if SEQ in frag.physical_schema.names:
                continue
            if path not in number:
                raise StorageError(f"{path} is no longer a history file of {view!r}; read again")
            yield from _derived_seq_batches(frag, number[path], schema, columns, filt)

    def write_order(self, view: str, source: str | None) -> list[str]:
        """The history files in the order their rows were written (by each file's smallest sequence,
        from Parquet statistics or the file number): the order ``materialize`` replays them in."""

        def first(item: tuple[int, str]) -> int:
            n, path = item
            try:
                meta = pq.read_metadata(path)
            except _DECODE_ERRORS as e:
                raise corrupt(view, [path], e) from None
            names = meta.schema.names
            if SEQ not in names or meta.num_rows == 0:
                return n << 32
            j = names.index(SEQ)
            mins = [meta.row_group(i).column(j).statistics for i in range(meta.num_row_groups)]
            if any(s is None or not s.has_min_max for s in mins):
                return int(pc.min(pq.read_table(path, columns=[SEQ]).column(SEQ)).as_py())
            return min(int(s.min) for s in mins)

        return [p for _, p in sorted((first(x), x[1]) for x in self.numbered_files(view, source))]

    @staticmethod
    def is_sorted(path: str) -> bool:
        """Whether ``compact`` wrote this file (sorted by key and time: ties are adjacent)."""
        try:
            meta = pq.read_schema(path).metadata or {}
        except _DECODE_ERRORS as e:
            raise corrupt(os.path.basename(os.path.dirname(path)), [path], e) from None
        return meta.get(SORTED_KEY) == b"1"

    def row_count(self, view: str, source: str | None) -> tuple[int, int]:
        """(files, rows) of the history, from the footers alone."""
        opened = self._open(view, source, None)
        rows = 0
        try:
            for p, f in opened:
                try:
                    rows += pq.ParquetFile(f).metadata.num_rows
                except _DECODE_ERRORS as e:
                    raise corrupt(view, [p], e) from None
        finally:
            for _, f in opened:
                f.close()
        return len(opened), rows

    def compact(self, view: str, sort_keys: Sequence[tuple[str, str]]) -> int:
        """Rewrite the history as one file sorted by ``sort_keys``; returns the row count.

        Every row keeps its ``__seq__`` (read or derived), and rows equal on every key are ordered by
        :func:`tie_rank`, so the row the join and the online store pick comes last in its tie. The sorted
        file takes the next file number and the ``.compact`` name, which supersedes the older files at
        once (see "File names"); they are removed once it is durable. Readers holding them open finish
        their read undisturbed.
        """
        parts = self._parts(view)
        if not parts:
            return 0
        try:
            names = [c for c in pq.read_schema(parts[-1][1]).names if c != SEQ]
            batches = list(self.scan(view, None, None, names, with_seq=True))
        except _DECODE_ERRORS as e:
            raise corrupt(view, [parts[-1][1]], e, "nothing was compacted") from None
        except StorageError as e:
            raise StorageError(f"{e} (nothing was compacted)") from None
        table = pa.Table.from_batches(batches) if batches else None
        if table is None or table.num_rows == 0:
            return 0
        rank = "__tie_rank__"
        table = table.append_column(rank, tie_rank(table.column(SEQ)))
        idx = pc.sort_indices(table, sort_keys=[*sort_keys, (rank, "ascending")])
        table = table.take(idx).drop_columns([rank])
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SORTED_KEY: b"1"})
        seq = parts[-1][0] + 1
        final = os.path.join(self.folder(view), f"part-{seq:012d}.compact.parquet")
        _write_parquet(table, final)
        for old, _, p in self._all_parts(view):
            if old < seq:
                os.unlink(p)
        fsync_dir(self.folder(view))
        return table.num_rows


# pyarrow before 26 writes a fixed-size list column that has null rows into Parquet in a form its own
# reader then rejects ("Expected all lists to be of size=N"), and some of those versions refuse to write
# it at all. Written, such a file would make the view's whole history unreadable.
_NULL_FIXED_LISTS_ROUND_TRIP = int(pa.__version__.split(".")[0]) >= 26


def _check_round_trips(table: pa.Table) -> None:
    if _NULL_FIXED_LISTS_ROUND_TRIP:
        return
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_fixed_size_list(field.type) and column.null_count:
            raise DtypeError(
                f"column {field.name!r} ({field.type}) has {column.null_count} null row(s), which pyarrow "
                f"{pa.__version__} cannot store in Parquet and read back; nothing was written. Upgrade "
                "pyarrow to 26 or later, or replace the null rows with lists of NaN"
            )


def _derived_seq_batches(
    frag: ds.ParquetFileFragment,
    number: int,
    schema: pa.Schema,
    columns: list[str],
    filt: ds.Expression | None,
) -> Iterator[pa.RecordBatch]:
    """The rows of a file without ``__seq__`` that pass ``filt``, with the sequence derived from the file
    number and each row's position. Statistics still prune row groups; a kept row group is read whole
    (its positions are needed) and filtered after. ``frag`` may hold only some of the file's row
    groups: positions count every row group of the file."""
    md = frag.metadata
    starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
    kept = frag if filt is None else frag.subset(filter=filt, schema=schema)
    for rg in kept.row_groups:
        piece = frag.subset(row_group_ids=[rg.id])
        t = piece.to_table(columns=columns, schema=schema)
        seq = np.arange(t.num_rows, dtype=np.int64) + ((number << 32) + int(starts[rg.id]))
        t = t.append_column(pa.field(SEQ, pa.int64()), pa.array(seq))
        if filt is not None:
            t = t.filter(filt)
        yield from t.to_batches()


def _identity(path: str) -> tuple[str, int, int, int]:
    """A file's identity for the footer check: a file changed in place gets a new one."""
    st = os.stat(path)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


def _type_name(t: pa.DataType) -> str:
    # A list's item field is named differently after a Parquet round trip: only its type counts.
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{_type_name(t.value_type)}>[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)


def _layout_body(schema: pa.Schema, rows: int) -> str:
    cols = [[f.name, _type_name(f.type)] for f in schema]
    return json.dumps({"columns": cols, "rows": rows}, separators=(",", ":"))


def _layout_problem(md: pq.FileMetaData) -> str | None:
    """Why a file's footer disagrees with the layout it recorded when written, or None (also for files
    that record none: history format 1, and ``source=`` files)."""
    raw = (md.metadata or {}).get(LAYOUT_KEY)
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
        body = rec["body"]
        ok = zlib.crc32(body.encode()) == rec["crc"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "its layout record (skewless.layout) is damaged"
    if not ok:
        return "its layout record (skewless.layout) fails its checksum"
    rows = sum(md.row_group(i).num_rows for i in range(md.num_row_groups))
    if _layout_body(md.schema.to_arrow_schema(), rows) != body or md.num_rows != rows:
        return (
            f"its footer (columns, types or row counts) differs from the layout it was written with: {body}"
        )
    return _bounds_problem(md)


def _bounded(field: pa.Field) -> bool:
    """Whether a column's statistics are recorded in the bounds: the ones reads prune or order by (a
    timestamp stored in its own unit, which Parquet keeps for ms, us and ns; the write sequence)."""
    t = field.type
    return field.name == SEQ or (pa.types.is_timestamp(t) and t.unit != "s")


def _bounds_body(table: pa.Table) -> str:
    """The bounds of ``table`` written with row groups of ``ROW_GROUP`` rows, as pyarrow splits it."""
    starts = range(0, table.num_rows, ROW_GROUP) if table.num_rows else [0]
    counts = [min(ROW_GROUP, table.num_rows - s) for s in starts]
    cols: dict[str, list[list[int] | None]] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if not _bounded(field):
            continue
        ints = column.cast(pa.int64()) if pa.types.is_timestamp(field.type) else column
        out: list[list[int] | None] = []
        for s, n in zip(starts, counts, strict=True):
            mm = pc.min_max(ints.slice(s, n))
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            out.append(None if lo is None else [lo, hi])
        cols[field.name] = out
    return json.dumps({"rows": counts, "columns": cols}, separators=(",", ":"))


def _bounds_problem(md: pq.FileMetaData) -> str | None:
    """Why a file's row-group statistics differ from the bounds it recorded, or None (also when it
    recorded none)."""
    raw = (md.metadata or {}).get(BOUNDS_KEY)
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
        body = rec["body"]
        if zlib.crc32(body.encode()) != rec["crc"]:
            return "its bounds record (skewless.bounds) fails its checksum"
        bounds = json.loads(body)
        counts, cols = bounds["rows"], bounds["columns"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "its bounds record (skewless.bounds) is damaged"
    if [md.row_group(i).num_rows for i in range(md.num_row_groups)] != counts:
        return "its row groups differ from the bounds it was written with"
    leaf = {md.schema.column(k).path: k for k in range(md.num_columns)}
    for name, per_group in cols.items():
        k = leaf.get(name)
        if k is None:
            return f"its column {name!r} is missing from the footer"
        for i, want in enumerate(per_group):
            st = md.row_group(i).column(k).statistics
            got = [st.min_raw, st.max_raw] if st is not None and st.has_min_max else None
            if got != want:
                return (
                    f"the statistics of column {name!r} in row group {i} ({got}) differ from the bounds it "
                    f"was written with ({want})"
                )
    return None


def _verifies(path: str) -> bool:
    """Whether every page of ``path`` decodes and passes its checksum (row group by row group)."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        if _layout_problem(pf.metadata):
            return False
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except _DECODE_ERRORS:
        return False
    return True


def corrupt(view: str, paths: Sequence[str], e: object, done: str = "") -> StorageError:
    """The error for a history that failed to decode: names the damaged file(s) among ``paths``."""
    bad = [p for p in paths if not _verifies(p)] if len(paths) > 1 else list(paths)
    named = bad or list(paths)
    which = named[0] if len(named) == 1 else f"one of {named}"
    return StorageError(
        f"the history of {view!r} is damaged: {which} failed to decode ({e}){'; ' + done if done else ''}. "
        "Restore the file from a backup, or move it out of the folder (its rows are then lost) and "
        "run materialize to bring the online store in line"
    )


def _guarded(
    view: str, paths: Sequence[str], batches: Callable[[], Iterator[pa.RecordBatch]]
) -> Iterator[pa.RecordBatch]:
    """``batches()``, with a decoding failure turned into :func:`corrupt`'s StorageError."""
    try:
        yield from batches()
    except SkewlessError:
        raise
    except _DECODE_ERRORS as e:
        raise corrupt(view, paths, e) from None


def _write_parquet(table: pa.Table, final: str) -> None:
    _check_round_trips(table)
    body = _layout_body(table.schema, table.num_rows)
    layout = json.dumps({"crc": zlib.crc32(body.encode()), "body": body}).encode()
    body = _bounds_body(table)
    bounds = json.dumps({"crc": zlib.crc32(body.encode()), "body": body}).encode()
    table = table.replace_schema_metadata(
        {
            **(table.schema.metadata or {}),
            FORMAT_KEY: str(FORMAT_VERSION).encode(),
            LAYOUT_KEY: layout,
            BOUNDS_KEY: bounds,
        }
    )
    # The sequence is unique per row, so a dictionary never pays: plain dictionary-then-fallback pages
    # decoded 8x slower than delta encoding (40 ms vs 5 ms per million rows, sorted or shuffled).
    # Floating-point and timestamp columns hold mostly distinct values (amounts, event times): their
    # dictionary pages cost half the encoding time of a 10k-row push (2.1 against 1.1 ms for keys,
    # time, amount, sequence and write time) and read no faster than plain pages, so they are plain.
    # Everything else (keys, strings, the write time: one value per file) keeps its dictionary.
    plain = {f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type)}
    enc: dict[str, object] = {
        "use_dictionary": [c for c in table.column_names if c != SEQ and c not in plain]
    }
    if SEQ in table.column_names:
        enc["column_encoding"] = {SEQ: "DELTA_BINARY_PACKED"}
    atomic_write(
        final,
        lambda f: pq.write_table(
            table, f, row_group_size=ROW_GROUP, compression="snappy", write_page_checksum=True, **enc
        ),
        overwrite=False,
    )
