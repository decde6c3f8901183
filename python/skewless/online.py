"""The online store: the latest feature values per entity, in-process, memory-mapped (LMDB).

A latency-critical service opens the store in its own process and reads feature vectors in
microseconds, without a network hop, while a materializer or stream writer in another process updates
it. Any number of processes may open one path; one writes at a time (LMDB's model), the others read.

Rules (tested):

- A key's stored row is replaced only by a row with a strictly later ``(timestamp, created_timestamp)``
  pair; a missing created timestamp ranks below any present one. Within one write the same rule picks
  the winner, and on full equality the last row in input order wins. An equal pair never replaces a
  stored row, so late, out-of-order rows never roll a value back.
- One transaction per ``write``: all rows or none. Bad input (unsupported dtypes, missing columns, null
  keys or timestamps, naive timestamps, a schema other than the view's first) raises a typed error from
  :mod:`skewless.errors` before anything is written.
- The first write of a view records its schema: key columns (integers, strings, binary) and value
  columns (integers, floats, bool, string, binary, timezone-aware timestamps, fixed-size lists of floats).
- Never a value from the future: the store keeps the latest value per key only, so a stored value whose
  event timestamp is after the request instant ``as_of`` (default: now) is never served; it reads as
  null with status ``NOT_YET_VALID`` (the point-in-time join at that instant would not see it either),
  with or without a TTL.
- A row is *expired* when its event timestamp is older than ``as_of - ttl`` (the boundary itself is
  present: the same rule as the point-in-time join). Expired and missing rows read as null / NaN.
  ``Reader.get`` returns a ``status`` column of int8 codes (``status_column=`` renames it, for a view
  with a column of that name) and ``Reader.get_numpy`` an int8 array of the same codes:
  :class:`Status` (0 present, 1 not found, 2 expired, 3 not yet valid). A null lookup key is not found;
  a key that does not fit the view's key type raises :class:`skewless.errors.DtypeError`.
- The map grows by itself (doubling) when full; when it cannot (``max_map_size`` or the address space),
  :class:`skewless.errors.MapFullError` is raised and nothing is written.

Processes and threads: handles on one path in one process share one LMDB environment, and any number of
threads may share a store or a reader. A store or reader opened before ``os.fork()`` (gunicorn
``--preload``, multiprocessing's fork start method) reopens the environment in the child on its first use
there, since LMDB forbids using an environment across fork; the one exception is a fork while another
thread of the parent was inside a read or write on the store, after which the child's handles raise
:class:`skewless.errors.StorageError` (fork before using the store from threads, or open it after the
fork). Reader slots of processes that died are reclaimed when a process opens the store. Keep the store
on a local file system, and never edit its files by hand.

Example:
    >>> import tempfile, datetime as dt, pyarrow as pa
    >>> from skewless.online import OnlineStore, Status
    >>> store = OnlineStore(tempfile.mkdtemp())
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> data = pa.table({"id": [1, 2], "ts": [t, t], "x": [0.5, 1.5]})
    >>> store.write("user", data, keys="id", timestamp="ts")
    WriteResult(rows_written=2, rows_skipped=0)
    >>> values, status = store.reader("user").get_numpy([2, 3])
    >>> float(values[0, 0]), Status(status[1]).name
    (1.5, 'NOT_FOUND')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, NamedTuple

import pyarrow as pa

from . import _core
from ._arrow import as_arrow

__all__ = ["OnlineStore", "Reader", "WriteResult", "Status"]

Reader = _core.Reader
"""A prepared reader of one view (see :meth:`OnlineStore.reader`); ``get`` and ``get_numpy``."""


_CODES = dict(_core.STATUS_CODES)


class Status(IntEnum):
    """Per-key lookup status, as returned in ``Reader.get``'s ``status`` column and ``get_numpy``'s array.
    The codes are the engine's (``skewless._core.STATUS_CODES``), defined once there.

    Example:
        >>> Status(2).name, Status.NOT_YET_VALID.value
        ('EXPIRED', 3)
    """

    PRESENT = _CODES["PRESENT"]
    NOT_FOUND = _CODES["NOT_FOUND"]
    EXPIRED = _CODES["EXPIRED"]
    NOT_YET_VALID = _CODES["NOT_YET_VALID"]
    #: A missing value (any of the above, or a stored null) filled by its imputation strategy
    #: (:mod:`skewless.transforms`); set by a serving plan, never by a plain reader.
    IMPUTED = _CODES["IMPUTED"]


class WriteResult(NamedTuple):
    """What one ``write`` did: rows stored, and rows skipped (stale, or beaten by a later row of the batch).

    Example:
        >>> WriteResult(3, 1).rows_written
        3
    """

    rows_written: int
    rows_skipped: int


class OnlineStore:
    """An LMDB-backed online store at ``path`` (a folder, created if missing).

    ``map_size`` is the initial size in bytes of the memory map (default 1 GiB of address space; the file
    grows only with the data). The map doubles when full, up to ``max_map_size`` (default: no limit).
    Handles on one path in one process share one LMDB environment: the first handle's sizes apply.

    Example:
        >>> import tempfile
        >>> store = OnlineStore(tempfile.mkdtemp(), map_size=1 << 20)
        >>> store.views()
        []
    """

    __slots__ = ("_inner",)

    def __init__(
        self, path: str | os.PathLike[str], *, map_size: int | None = None, max_map_size: int | None = None
    ) -> None:
        self._inner = _core.OnlineStore(os.fspath(path), map_size=map_size, max_map_size=max_map_size)

    def write(
        self,
        view: str,
        data: Any,
        *,
        keys: str | Sequence[str],
        timestamp: str,
        created_timestamp: str | None = None,
        also: Sequence[tuple[str, Any]] = (),
    ) -> WriteResult:
        """Upsert the rows of ``data`` (pyarrow, polars, pandas, a mapping) into ``view``, in one transaction.

        Every column other than the keys and timestamps is a value column. ``also``: more ``(view, data)``
        with the same key and timestamp columns, upserted in the same transaction (all land or none); the
        result counts ``view``'s rows.

        Example:
            >>> import datetime as dt, tempfile
            >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
            >>> s = OnlineStore(tempfile.mkdtemp())
            >>> s.write("v", {"k": ["a", "a"], "ts": [t, t], "x": [1.0, 2.0]}, keys="k", timestamp="ts")
            WriteResult(rows_written=1, rows_skipped=1)
        """
        key_list = [keys] if isinstance(keys, str) else list(keys)
        written, skipped = self._inner.write(
            view,
            as_arrow(data, "data"),
            keys=key_list,
            timestamp=timestamp,
            created_timestamp=created_timestamp,
            also=[(v, as_arrow(d, "data")) for v, d in also],
        )
        return WriteResult(written, skipped)

    def reader(self, view: str, columns: Sequence[str] | None = None) -> Reader:
        """A prepared :class:`Reader` of ``view`` (all value columns, or ``columns`` in that order).

        Example:
            >>> r = store.reader("user", columns=["x"])  # doctest: +SKIP
            >>> r.get([1]).column("x").to_pylist()  # doctest: +SKIP
            [0.5]
        """
        return self._inner.reader(view, None if columns is None else list(columns))

    def views(self) -> list[str]:
        """Names of the views written so far, sorted.

        Example:
            >>> store.views()  # doctest: +SKIP
            ['user']
        """
        return list(self._inner.views())

    def schema(self, view: str) -> pa.Schema | None:
        """The recorded Arrow schema of ``view`` (key columns, then value columns), or None if never written.

        Example:
            >>> store.schema("user").names  # doctest: +SKIP
            ['id', 'x']
        """
        return self._inner.schema(view)

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died; returns how many were freed.

        Example:
            >>> store.clear_stale_readers()  # doctest: +SKIP
            0
        """
        return int(self._inner.clear_stale_readers())

    def verify(self) -> dict[str, int]:
        """Check LMDB's own pages of the store, as opening it does; returns what was checked.

        LMDB keeps no checksums on its B-tree pages, and a damaged one can crash a reading process
        instead of raising. Opening a store walks every page first and refuses a damaged store with
        :class:`skewless.errors.StorageError` (the fix it names: delete the online folder and run
        ``materialize``, which rebuilds it from the history). Call this to check again a store that has
        been open for long, e.g. from a health check: damage that appears while a process has the
        store open is only caught by the next check. It reads every page (about as long as reading
        the data file once) and never blocks writers.

        Example:
            >>> store.verify()["entries"] >= 1  # doctest: +SKIP
            True
        """
        branch, leaf, overflow, entries = self._inner.verify()
        return {"branch_pages": branch, "leaf_pages": leaf, "overflow_pages": overflow, "entries": entries}

    @property
    def stale_readers_cleared(self) -> int:
        """Reader slots of dead processes freed when this process opened the store."""
        return int(self._inner.stale_readers_cleared)

    @property
    def map_size(self) -> int:
        """The current size of the memory map in bytes."""
        return int(self._inner.map_size)

    @property
    def path(self) -> str:
        """The store's folder (canonical path)."""
        return str(self._inner.path)

    def __repr__(self) -> str:
        return f"OnlineStore({self.path!r})"
