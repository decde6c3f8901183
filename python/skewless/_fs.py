"""Durable file replacement, shared by the registry and the Parquet history."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

from .errors import StorageError

#: Name prefix of the temp files ``atomic_write`` makes (hidden, and skipped by dataset discovery).
TEMP_PREFIX = ".tmp-"


def fsync_dir(folder: str) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, fill: Callable[[BinaryIO], object], *, overwrite: bool) -> None:
    """Write ``path`` through ``fill`` so that readers see no file (or the old one) or the whole new one.

    The data goes to a hidden temp file (``.tmp-...``) in the same folder, is fsynced, renamed into place
    and the folder fsynced. With ``overwrite=False`` an existing ``path`` is an error, not replaced. On any
    failure the temp file is removed; an OS failure is a :class:`StorageError`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}{os.path.splitext(path)[1]}")
    try:
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and os.path.exists(path):
            raise StorageError(f"{path} appeared while writing; is another process writing this store?")
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, StorageError):
            raise StorageError(f"could not write {path}: {e}") from e
        raise
    fsync_dir(folder)
