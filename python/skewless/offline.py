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
import os
import re
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ._fs import atomic_write, fsync_dir
from .definitions import _check_name
from .errors import MissingColumnError, NaiveTimestampError, StorageError

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


class OfflineStore:
    """Parquet histories under ``<root>/<view>/``. A relative ``source=`` path is taken relative to
    ``sources_base`` (default: the parent of ``root``, the store's folder), never to the current
    directory, so a store reads the same data from wherever it is opened."""

    def __init__(self, root: str, sources_base: str | None = None) -> None:
        self.root = root
        self.sources_base = os.path.dirname(os.path.abspath(root)) if sources_base is None else sources_base

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
        seq = (parts[-1][0] + 1) if parts else 1
        final = os.path.join(d, f"part-{seq:012d}.parquet")
        _write_parquet(table, final)
        return final

    def remove(self, path: str) -> None:
        """Undo an :meth:`append` (the online half of a write failed)."""
        os.unlink(path)
        fsync_dir(os.path.dirname(path))

    def open_files(
        self, view: str, source: str | None, files: Sequence[str] | None = None
    ) -> list[pa.NativeFile]:
        """Open the history files (``files``, default :meth:`files`), in that order: a snapshot that a
        concurrent ``compact`` cannot change (see the module docstring). The caller closes them."""
        for _ in range(SNAPSHOT_TRIES):
            paths = self.files(view, source) if files is None else list(files)
            opened: list[pa.NativeFile] = []
            try:
                for p in paths:
                    opened.append(pa.OSFile(p))
                return opened
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
        opened = self.open_files(view, source, files)
        if not opened:
            return None
        fmt = ds.ParquetFileFormat()
        # The dataset reads through the open handles only (they close with it), never by path again.
        frags = [fmt.make_fragment(f) for f in opened]
        # Our own files carry exactly the view's schema; a source's we take as found (from its newest
        # file, as dataset discovery would) and normalize later.
        if schema is None or source is not None:
            schema = frags[0].physical_schema
        return ds.FileSystemDataset(frags, schema, fmt)

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
        statistics prune the rest. Batches come in file order (``files``, default :meth:`files`)."""
        d = self.dataset(view, source, schema, files)
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
        missing = [c for c in columns if c not in d.schema.names]
        if missing:
            raise MissingColumnError(f"the history of {view!r} has no column(s) {missing}")
        # to_batches keeps fragment and row order, which the tie rule needs.
        return iter(d.to_batches(columns=list(columns), filter=filt, batch_size=batch_size, use_threads=True))

    @staticmethod
    def is_sorted(path: str) -> bool:
        """Whether ``compact`` wrote this file (sorted by key and time: ties are adjacent)."""
        meta = pq.read_schema(path).metadata or {}
        return meta.get(SORTED_KEY) == b"1"

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
        table = ds.dataset([p for _, p in reversed(parts)], format="parquet").to_table()
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


def _write_parquet(table: pa.Table, final: str) -> None:
    atomic_write(
        final,
        lambda f: pq.write_table(table, f, row_group_size=ROW_GROUP, compression="snappy"),
        overwrite=False,
    )
