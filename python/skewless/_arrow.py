"""Turning what users pass (pyarrow, polars, pandas, mappings, Arrow PyCapsule producers) into Arrow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from .errors import ColumnClashError, DtypeError


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
    table = obj if isinstance(obj, pa.Table) else pa.table(obj)
    names = table.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ColumnClashError(f"{what} has column(s) {dup} more than once; drop or rename the copies")
    return table


def _is_pandas(data: Any) -> bool:
    mod = type(data).__module__  # "pandas" since pandas 3, "pandas.core.frame" before
    return (mod == "pandas" or mod.startswith("pandas.")) and type(data).__name__ == "DataFrame"


def _from_pandas(df: Any) -> pa.Table:
    # The index is dropped: a feature store's columns are explicit; a RangeIndex carries nothing.
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise ColumnClashError(f"the DataFrame has column(s) {dup} more than once; drop or rename the copies")
    return pa.Table.from_pandas(df, preserve_index=False)
