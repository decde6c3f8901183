"""The exceptions skewless raises: one hierarchy under :class:`SkewlessError`.

Each class also derives from the builtin that fits its meaning, so ``except KeyError`` keeps working
for a missing column and ``except ValueError`` for a bad argument. The Rust engine raises these same
classes (its one error enum maps onto them), and every operation that raises one has written nothing.

Example:
    >>> import skewless
    >>> from skewless.errors import SkewlessError
    >>> try:
    ...     skewless.asof_join({"t": [1]}, {"t": [1]}, on="t", direction="sideways")
    ... except SkewlessError as e:
    ...     print(type(e).__name__)
    InvalidArgumentError
"""

from __future__ import annotations

__all__ = [
    "SkewlessError",
    "SchemaError",
    "MissingColumnError",
    "DtypeError",
    "NaiveTimestampError",
    "ColumnClashError",
    "SchemaMismatch",
    "InvalidArgumentError",
    "NullKeyError",
    "UnknownFeatureError",
    "RegistryError",
    "IncompatibleChangeError",
    "StorageError",
    "MapFullError",
    "InternalError",
    "MissingValueError",
]


class SkewlessError(Exception):
    """Base class of every error skewless raises."""


class SchemaError(SkewlessError, ValueError):
    """The data does not have the columns or types the operation needs."""


class MissingColumnError(SchemaError, KeyError):
    """A column named in the call is not in the data."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DtypeError(SchemaError, TypeError):
    """A column has a type the operation does not support, or two columns that must agree do not."""


class NaiveTimestampError(DtypeError):
    """A timestamp column has no timezone, so it is not an instant. Attach one (e.g. UTC)."""


class ColumnClashError(SchemaError):
    """Two output columns would have the same name."""


class SchemaMismatch(SchemaError):
    """Data written to an existing view does not match the schema recorded by its first write."""


class InvalidArgumentError(SkewlessError, ValueError):
    """An argument is outside its domain (negative tolerance, unknown direction, ...)."""


class NullKeyError(InvalidArgumentError):
    """A key column holds a null where every row needs a key."""


class UnknownFeatureError(SkewlessError, KeyError):
    """A feature, view, entity or service reference names nothing in the registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryError(SkewlessError, ValueError):
    """A definition is invalid or the registry file cannot be read."""


class IncompatibleChangeError(RegistryError):
    """A definition change would make data already stored unreadable."""


class StorageError(SkewlessError, OSError):
    """The storage layer (files, LMDB) failed."""


class MapFullError(StorageError):
    """The online store's memory map is full and cannot grow. Open it with a larger ``map_size``."""


class MissingValueError(SkewlessError, ValueError):
    """A retrieval or reader with ``strict=True`` met a missing value that no imputation strategy fills;
    the message names the feature."""


class InternalError(SkewlessError, RuntimeError):
    """A bug in skewless: an internal invariant did not hold. Please report it."""
