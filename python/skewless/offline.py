"""The offline store: each feature view's history as Parquet files, the system of record.

Layout: ``<store>/offline/<view>/part-<seq>.parquet`` with ``seq`` a zero-padded number that grows with
every write, so file names record the order of writes across reopens. Files are written under a hidden
temp name (``.tmp-...``, which dataset discovery skips), fsynced, then renamed: a crash never leaves a
partial file visible. A view with ``source=`` reads its history from that path or glob (files in sorted
path order count as written in that order) and is never written to.

Tie order. The as-of join breaks a full tie (same key, timestamp and created timestamp) by input order:
the last row wins. The online store keeps, within one write, the last row of a tie, and never lets a
later write replace an equal (timestamp, created) pair. To give both the same winner, the history is
read newest file first, rows within a file in order: the last row of a tie is then the last one of the
earliest write holding it, which is what the online store holds. ``compact`` keeps that order, and
``materialize`` replays files oldest first, one online write per file (or per tie-free chunk of a sorted
file), which reproduces it.

File names, version 1. ``part-<seq>.parquet`` is a write; ``part-<seq>.compact.parquet`` is written by
``compact`` and replaces every file with a smaller ``seq``: a listing that holds one ignores those, so
the files a reader sees are always one whole history, before or after any compaction (including one
that died before removing the files it replaced; the next ``compact`` removes them).

Integrity, history format version 2. Every page of a file the store writes carries a CRC-32 (Parquet's
page checksum) and every read verifies it; files of version 1 (no checksums) and ``source=`` files
written without them still read, unverified. A page that fails its checksum, a footer that cannot be
parsed, or any other decoding failure is a :class:`StorageError` naming the file, never data: no
retrieval, materialization or compaction goes on past it (compaction would otherwise launder the
damage into a fresh, checksummed file). The footer has no checksum of its own, so each file also records
its columns and row count in its key-value metadata (``skewless.layout``: JSON ``{"crc": CRC-32 of
body, "body": "{\"columns\": [[name, arrow type], ...], \"rows\": n}"}``), and every read checks the
footer against it: a flipped bit in a column name, a type or a row count is reported like a bad page.
Not covered: a flip inside the footer's column statistics (min/max), which can make a time-filtered
read skip a row group. ``append`` first checks the footer of every live file (once per file identity
per process; footers are small), so a write refuses to extend a history whose files it cannot open; a
flipped bit inside a page is found by the next read of that page.

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
    >>> [p[-12:] for p in off.files("v", None)]  # newest first: the join's read order
    ['0002.parquet', '0001.parquet']
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ._fs import atomic_write, fsync_dir
from .definitions import _check_name
from .errors import MissingColumnError, NaiveTimestampError, SkewlessError, StorageError

__all__ = ["OfflineStore"]

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
#: Key-value metadata of a history file (format 2): its columns (name, Arrow type) and row count as
#: written, under a CRC-32. The footer itself has no checksum: this record is how a flipped bit in its
#: schema or row counts is caught (see "Integrity").
LAYOUT_KEY = b"skewless.layout"
#: Every read verifies page checksums where a file has them (see "Integrity").
_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
)
#: Decoding failures of a Parquet file (pyarrow raises OSError for a bad checksum, ArrowInvalid and
#: others for a damaged footer or page header).
_DECODE_ERRORS = (OSError, pa.ArrowException)


class OfflineStore:
    """Parquet histories under ``<root>/<view>/``. A relative ``source=`` path is taken relative to
    ``sources_base`` (default: the parent of ``root``, the store's folder), never to the current
    directory, so a store reads the same data from wherever it is opened."""

    def __init__(self, root: str, sources_base: str | None = None) -> None:
        self.root = root
        self.sources_base = os.path.dirname(os.path.abspath(root)) if sources_base is None else sources_base
        # Files whose footer parsed, by identity (a file is never rewritten in place, so a new identity
        # means a new file).
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

    def _parts(self, view: str) -> list[tuple[int, str]]:
        """The live history files: from the newest compacted file on (see "File names")."""
        parts = self._all_parts(view)
        base = max((seq for seq, compacted, _ in parts if compacted), default=0)
        return [(seq, p) for seq, _, p in parts if seq >= base]

    def files(self, view: str, source: str | None) -> list[str]:
        """The history files of a view in the join's read order: newest write first (for ``source``:
        reverse sorted path order)."""
        if source is None:
            return [p for _, p in reversed(self._parts(view))]
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
        return sorted(found, reverse=True)

    def has_data(self, view: str) -> bool:
        return bool(self._parts(view))

    def append(self, view: str, table: pa.Table) -> str:
        """Add ``table`` as one new history file, atomically; returns its path."""
        d = self.folder(view)
        os.makedirs(d, exist_ok=True)
        parts = self._parts(view)
        self._check_footers(view, [p for _, p in parts])
        seq = (parts[-1][0] + 1) if parts else 1
        final = os.path.join(d, f"part-{seq:012d}.parquet")
        _write_parquet(table, final)
        return final

    def _check_footers(self, view: str, paths: Sequence[str]) -> None:
        """Refuse to append behind a file whose footer cannot be parsed (see "Integrity")."""
        for p in paths:
            st = os.stat(p)
            ident = (p, st.st_ino, st.st_size, st.st_mtime_ns)
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
        return self._snapshot(view, source, files)[1]

    def _snapshot(
        self, view: str, source: str | None, files: Sequence[str] | None
    ) -> tuple[list[str], list[pa.NativeFile]]:
        """:meth:`open_files`, with the paths that were opened."""
        for _ in range(SNAPSHOT_TRIES):
            paths = self.files(view, source) if files is None else list(files)
            opened: list[pa.NativeFile] = []
            try:
                for p in paths:
                    opened.append(pa.OSFile(p))
                return paths, opened
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
    ) -> tuple[list[str], ds.Dataset | None]:
        """The history as a dataset over open handles, with the paths they were opened from."""
        paths, opened = self._snapshot(view, source, files)
        if not opened:
            return paths, None
        # The dataset reads through the open handles only (they close with it), never by path again.
        frags = [_FORMAT.make_fragment(f) for f in opened]
        for p, frag in zip(paths, frags, strict=True):
            try:
                why = _layout_problem(frag.metadata)
            except _DECODE_ERRORS as e:
                raise corrupt(view, [p], e) from None
            if why:
                raise corrupt(view, [p], why)
        # Our own files carry exactly the view's schema; a source's we take as found (from its newest
        # file, as dataset discovery would) and normalize later.
        if schema is None or source is not None:
            try:
                schema = frags[0].physical_schema
            except _DECODE_ERRORS as e:
                raise corrupt(view, paths[:1], e) from None
        return paths, ds.FileSystemDataset(frags, schema, _FORMAT)

    def scan(
        self,
        view: str,
        source: str | None,
        schema: pa.Schema | None,
        columns: Sequence[str],
        time_range: tuple[str, int | None, int | None, bool] | None = None,
        batch_size: int = 1 << 20,
        files: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream only ``columns`` of the rows in ``time_range`` = (timestamp column, low in UTC
        microseconds inclusive or None, high or None, whether high is inclusive); Parquet row-group
        statistics prune the rest. Batches come in file order (``files``, default :meth:`files`). A file
        that fails to decode raises :class:`StorageError` naming it (see "Integrity")."""
        paths, d = self.dataset(view, source, schema, files)
        if d is None:
            return iter(())
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
        # to_batches keeps fragment and row order, which the tie rule needs.
        return _guarded(
            view, paths, lambda: d.to_batches(columns=list(columns), filter=filt, batch_size=batch_size)
        )

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
        paths, opened = self._snapshot(view, source, None)
        rows = 0
        try:
            for p, f in zip(paths, opened, strict=True):
                try:
                    rows += pq.ParquetFile(f).metadata.num_rows
                except _DECODE_ERRORS as e:
                    raise corrupt(view, [p], e) from None
        finally:
            for f in opened:
                f.close()
        return len(paths), rows

    def compact(self, view: str, sort_keys: Sequence[tuple[str, str]]) -> int:
        """Rewrite the history as one file sorted by ``sort_keys``; returns the row count.

        The sort is stable over the read order, so among rows equal on every key the one the join and
        the online store pick stays last. The sorted file takes the next sequence number and the
        ``.compact`` name, which supersedes the older files at once (see "File names"); they are removed
        once it is durable. Readers holding them open finish their read undisturbed.
        """
        parts = self._parts(view)
        if not parts:
            return 0
        # Newest file first (the read order), then a stable sort: full ties keep their winner last.
        paths = [p for _, p in reversed(parts)]
        for p in paths:
            try:
                why = _layout_problem(pq.read_metadata(p))
            except _DECODE_ERRORS as e:
                raise corrupt(view, [p], e, "nothing was compacted") from None
            if why:
                raise corrupt(view, [p], why, "nothing was compacted")
        try:
            table = ds.dataset(paths, format=_FORMAT).to_table()
        except _DECODE_ERRORS as e:
            raise corrupt(view, paths, e, "nothing was compacted") from None
        idx = pc.sort_indices(table, sort_keys=list(sort_keys))
        table = table.take(idx)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SORTED_KEY: b"1"})
        seq = parts[-1][0] + 1
        final = os.path.join(self.folder(view), f"part-{seq:012d}.compact.parquet")
        _write_parquet(table, final)
        for old, _, p in self._all_parts(view):
            if old < seq:
                os.unlink(p)
        fsync_dir(self.folder(view))
        return table.num_rows


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
    return None


def _write_parquet(table: pa.Table, final: str) -> None:
    layout = json.dumps(
        {
            "crc": zlib.crc32(_layout_body(table.schema, table.num_rows).encode()),
            "body": _layout_body(table.schema, table.num_rows),
        }
    )
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), LAYOUT_KEY: layout.encode()})
    atomic_write(
        final,
        lambda f: pq.write_table(
            table, f, row_group_size=ROW_GROUP, compression="snappy", write_page_checksum=True
        ),
        overwrite=False,
    )


def _verifies(path: str) -> bool:
    """Whether every page of ``path`` decodes and passes its checksum (row group by row group)."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except _DECODE_ERRORS:
        return False
    return True


def corrupt(view: str, paths: Sequence[str], e: BaseException, done: str = "") -> StorageError:
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
