"""Turning what users pass (pyarrow, polars, pandas, mappings, Arrow PyCapsule producers) into Arrow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from .errors import DtypeError


def as_arrow(data: Any, what: str) -> Any:
    """Return ``data`` as an object the engine reads through the Arrow C stream interface.

    Arrow producers (pyarrow, polars, anything with ``__arrow_c_stream__``) pass through untouched, so the
    engine reads their buffers without a copy. pandas frames and mappings of columns are converted once.
    """
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__"):
        if _is_pandas(data):
            return _from_pandas(data)
        return data
    if _is_pandas(data):
        return _from_pandas(data)
    if _is_polars(data):
        # polars 1.0 frames have no __arrow_c_stream__ (later ones do); to_arrow shares their buffers.
        return data.to_arrow()
    if isinstance(data, Mapping):
        try:
            return pa.table(dict(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise DtypeError(f"{what}: could not build an Arrow table from the mapping: {e}") from None
    raise DtypeError(
        f"{what} is a {type(data).__name__}; pass a pyarrow Table or RecordBatch, a polars or pandas "
        "DataFrame, a mapping of column name to values, or an object with __arrow_c_stream__"
    )


def as_table(data: Any, what: str) -> pa.Table:
    """Like :func:`as_arrow`, but always a ``pyarrow.Table`` (zero-copy for Arrow producers)."""
    obj = as_arrow(data, what)
    return obj if isinstance(obj, pa.Table) else pa.table(obj)


def _is_pandas(data: Any) -> bool:
    mod = type(data).__module__
    return mod.startswith("pandas.") and type(data).__name__ == "DataFrame"


def _is_polars(data: Any) -> bool:
    mod = type(data).__module__
    return mod.startswith("polars.") and type(data).__name__ == "DataFrame" and hasattr(data, "to_arrow")


def _from_pandas(df: Any) -> pa.Table:
    # The index is dropped: a feature store's columns are explicit; a RangeIndex carries nothing.
    return pa.Table.from_pandas(df, preserve_index=False)
