"""The staging folder through which :func:`skewless.spark.get_historical_features` moves rows between
its Spark tasks: files on the store's shared mount instead of Spark's shuffle.

Why: moving the packed rows through Spark (the JVM copying each packed value out of Python, writing it
to its shuffle files, reading it back and copying it into Python again) was about half of the CPU time
of a call. The store already sits on a mount every executor reads (the tasks read its history files), so
the tasks write their packed rows to files there, Spark carries only where each group's slices are (a
few small rows per task), and each group's task memory-maps its slices.

Layout (version 1). A call's folder, ``<staging root>/<call id>/`` (the call id: UTC time and a random
part, so calls never share a folder), holds:

- one *pack file* per writing task attempt, ``s<source>-p<partition>-a<attempt>-<random>.arrow``: the
  concatenation of Arrow IPC streams, one stream per (group, slice of the task's rows), uncompressed so
  that a reader maps it and reads it without a copy (:data:`PACK_OPTIONS`);
- ``index.arrow``: an Arrow IPC file, one row per stream: ``group`` (int32), ``part`` (int32, which input
  of the group: -1 the entity rows, n the n-th view), ``file`` (string, a pack file's name), ``offset``
  and ``length`` (int64, bytes), sorted by group; written by the driver from what the tasks reported.

Atomicity. A writer writes under a hidden temporary name and renames the file when it is complete, and
reports its streams only after the rename: a retried or speculative attempt writes a file of its own
(the attempt number and a random part are in the name) and only the attempt whose result Spark kept is
in the index; the others' files are never read and go with the folder. No fsync: a reader runs only
after the writing job finished, when the files are closed (on NFS, closing flushes them to the server),
and a reader checks each slice against the file's size, so a file lost with a machine reads as a
:class:`~skewless.errors.StorageError`, never as wrong rows.

Lifetime. The staging jobs run when ``get_historical_features`` is called; the returned DataFrame only
reads the folder, so it can be evaluated any number of times, and a failed reading task is simply run
again. The folder is removed when the driver process exits (``atexit``), when a :func:`staging_scope`
around the call ends, or by :func:`clear_staging`; a driver that died without exiting leaves its folders
behind, which ``clear_staging(..., older_than=...)`` removes. Evaluating a result after its folder was
removed raises :class:`~skewless.errors.StorageError`.

Example:
    >>> import tempfile, pyarrow as pa
    >>> root = tempfile.mkdtemp()
    >>> with staging_scope():
    ...     call = new_call(root)
    ...     with pack_file(call, "s0-p0-a0") as (f, name):
    ...         _ = f.write(b"abcde")
    ...     bytes(Packs(call).read(name, 3, 2))
    b'de'
    >>> os.path.exists(call)
    False
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from .errors import InvalidArgumentError, StorageError

__all__ = ["DEFAULT_FOLDER", "staging_scope", "clear_staging"]

#: The staging root's default name, in the store's folder (hidden; the history lives under ``offline/``).
DEFAULT_FOLDER = ".skewless-staging"
INDEX = "index.arrow"
#: Uncompressed: a reader maps the file and reads the streams in place (LZ4 saved bytes through Spark's
#: copies; here it only adds a compression and a decompression pass, and random floats barely shrink).
PACK_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)
INDEX_SCHEMA = pa.schema(
    [
        ("group", pa.int32()),
        ("part", pa.int32()),
        ("file", pa.string()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
    ]
)

_lock = threading.Lock()
#: This process's live call folders; each open staging_scope's list of the calls made inside it.
_live: set[str] = set()
_scopes: list[list[str]] = []
_atexit_installed = False


def root_of(store_root: str, staging: str | os.PathLike[str] | None) -> str:
    """The staging root of a store (``staging`` or the store's hidden default), refused inside the
    history folder, where the store's own readers would meet it."""
    root = (
        os.path.abspath(os.fspath(staging))
        if staging is not None
        else os.path.join(store_root, DEFAULT_FOLDER)
    )
    offline = os.path.join(os.path.abspath(store_root), "offline")
    if os.path.commonpath([root, offline]) == offline:
        raise InvalidArgumentError(
            f"staging folder {root} is inside the store's history folder {offline}; point staging= elsewhere "
            "(the default is the store's hidden .skewless-staging folder)"
        )
    return root


def new_call(root: str) -> str:
    """A new, empty call folder under ``root``, removed with this process (see "Lifetime")."""
    global _atexit_installed
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = os.path.join(root, f"{stamp}-{uuid.uuid4().hex[:12]}")
    try:
        os.makedirs(path)
        probe = os.path.join(path, ".probe")
        with open(probe, "wb") as f:
            f.write(b"")
        os.remove(probe)
    except OSError as e:
        raise StorageError(
            f"cannot write the Spark staging folder {root} ({e}); point staging= at a folder on a mount "
            "every executor can read and write"
        ) from None
    with _lock:
        _live.add(path)
        for scope in _scopes:
            scope.append(path)
        if not _atexit_installed:
            atexit.register(_remove_all)
            _atexit_installed = True
    return path


def remove_call(path: str) -> None:
    """Removes a call folder (and the staging root, if that leaves it empty)."""
    with _lock:
        _live.discard(path)
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:  # other calls' folders are there, or it is gone already
        pass


def _remove_all() -> None:
    with _lock:
        live = list(_live)
    for p in live:
        remove_call(p)


@contextmanager
def pack_file(call: str, stem: str) -> Iterator[tuple[pa.NativeFile, str]]:
    """A new pack file of ``call`` to write into (``stem`` and a random part make its name): (the
    open file, its name). Written under a temporary name and renamed when the block ends without
    an error; on an error nothing is left."""
    name = f"{stem}-{uuid.uuid4().hex[:8]}.arrow"
    tmp = os.path.join(call, f".{name}.tmp")
    try:
        f = pa.OSFile(tmp, "wb")
    except OSError as e:
        raise StorageError(f"cannot write to the Spark staging folder {call} ({e})") from None
    try:
        with f:
            yield f, name
        os.replace(tmp, os.path.join(call, name))
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(f"cannot write to the Spark staging folder {call} ({e})") from None
        raise


def write_index(call: str, index: pa.Table) -> None:
    """The call's index (``INDEX_SCHEMA``, sorted by group), written by the driver."""
    tmp = os.path.join(call, f".{INDEX}.tmp")
    try:
        with pa.OSFile(tmp, "wb") as f, pa.ipc.new_file(f, INDEX_SCHEMA) as w:
            w.write_table(index.cast(INDEX_SCHEMA))
        os.replace(tmp, os.path.join(call, INDEX))
    except OSError as e:
        raise StorageError(f"cannot write to the Spark staging folder {call} ({e})") from None


def _gone(call: str) -> StorageError:
    return StorageError(
        f"the Spark staging folder {call} of this result was removed (staging_scope ended, clear_staging, "
        "or the driver that made it exited); call skewless.spark.get_historical_features again"
    )


def read_index(call: str) -> pa.Table:
    """The call's index (see the module docstring)."""
    try:
        with pa.memory_map(os.path.join(call, INDEX)) as f:
            return pa.ipc.open_file(f).read_all()
    except FileNotFoundError:
        raise _gone(call) from None
    except (OSError, pa.ArrowInvalid) as e:
        raise StorageError(f"the Spark staging index of {call} is damaged ({e}); call again") from None


class Packs:
    """A task's reader of a call's pack files: each file mapped once, slices read in place."""

    def __init__(self, call: str) -> None:
        self.call = call
        self.files: dict[str, pa.Buffer] = {}

    def read(self, name: str, offset: int, length: int) -> pa.Buffer:
        """Bytes ``[offset, offset + length)`` of a pack file, memory-mapped (no copy: a slice of the
        whole file's mapping; ``read_at`` would copy them into a ``bytes``, which cost about a fifth
        of a result task at size M)."""
        whole = self.files.get(name)
        path = os.path.join(self.call, name)
        if whole is None:
            try:
                with pa.memory_map(path) as f:
                    whole = self.files[name] = f.read_buffer()
            except FileNotFoundError:
                raise _gone(self.call) from None
            except OSError as e:
                raise StorageError(f"cannot read the Spark staging file {path} ({e})") from None
        if whole.size < offset + length:
            raise StorageError(
                f"the Spark staging file {path} is shorter than written ({whole.size} < {offset + length} "
                "bytes); call again"
            )
        return whole.slice(offset, length)


@contextmanager
def staging_scope() -> Iterator[None]:
    """Removes, when the block ends, the staging folders of the Spark calls made while it is open (by
    any thread of the process): the results of those calls can be evaluated only inside the block.

    Example::

        with skewless.spark.staging_scope():
            train = skewless.spark.get_historical_features(spark, "/mnt/store", labels, ["v:x"])
            train.write.parquet("/mnt/train.parquet")
        # the staged copies are gone; `train` can no longer be evaluated
    """
    mine: list[str] = []
    with _lock:
        _scopes.append(mine)
    try:
        yield
    finally:
        with _lock:
            _scopes.remove(mine)
        for p in mine:
            remove_call(p)


def clear_staging(
    store_path: str | os.PathLike[str],
    *,
    staging: str | os.PathLike[str] | None = None,
    older_than: _dt.timedelta | None = None,
) -> int:
    """Removes staging folders of :func:`skewless.spark.get_historical_features` calls and returns how
    many: with ``older_than=None``, those this process made (their results can no longer be evaluated);
    with a ``timedelta``, every call folder under the staging root not modified for that long, whoever
    made it (the leftovers of drivers that died without exiting; a running call's folder is recent).

    Example:
        >>> import tempfile
        >>> store = tempfile.mkdtemp()
        >>> call = new_call(os.path.join(store, DEFAULT_FOLDER))
        >>> clear_staging(store)
        1
        >>> clear_staging(store, older_than=_dt.timedelta(days=1))
        0
    """
    root = root_of(os.path.abspath(os.fspath(store_path)), staging)
    if older_than is None:
        with _lock:
            mine = [p for p in _live if os.path.dirname(p) == root]
        for p in mine:
            remove_call(p)
        return len(mine)
    if not isinstance(older_than, _dt.timedelta):
        raise InvalidArgumentError(f"older_than must be a datetime.timedelta or None, got {older_than!r}")
    cutoff = time.time() - older_than.total_seconds()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    removed = 0
    for e in entries:
        if e.is_dir(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < cutoff:
            remove_call(e.path)
            removed += 1
    return removed
