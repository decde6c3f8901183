"""Turning what users pass into Arrow: the one conversion behind ``asof_join``, ``FeatureStore.write``,
``get_historical_features`` and the online readers.

Conversion rules, version 1 (each is exact: a value is never rounded, re-zoned or guessed):

Tables (``left``/``right``, ``data``, ``entity_df``, column mappings of ``entity_rows``):

- pyarrow ``Table`` (used as it is: no copy), ``RecordBatch``, ``RecordBatchReader`` (read whole);
  sliced tables and columns of any chunking, empty chunks included;
- polars ``DataFrame`` (through the Arrow C stream: no copy), ``LazyFrame`` (collected first), and a
  named ``Series`` (a one-column table);
- pandas ``DataFrame``: its *columns*; the index is dropped whatever it holds, as ``merge_asof`` does
  with ``left_index=False`` (a name used as a column that is only an index level gets an error saying
  to call ``reset_index()``). A named pandas ``Series`` is a one-column table. Dtypes convert as
  ``pyarrow.Table.from_pandas`` does (nullable ``Int64`` ``<NA>`` -> null, ``category`` -> dictionary,
  ``datetime64[ns, tz]`` -> timestamp with that zone);
- a mapping of column name to values: lists, numpy arrays, pandas / polars Series, pyarrow arrays;
- any other object with ``__arrow_c_stream__`` or ``__arrow_c_array__`` (duckdb, nanoarrow...).

Columns where skewless needs names (``by``, ``columns``...): a str, or a list / tuple / numpy array /
pandas ``Index`` or ``Series`` / polars ``Series`` of str.

Join columns of ``asof_join`` (:func:`join_pair`), converted on both sides before the engine sees them;
the output keeps the left's own columns:

- ``on``: a date (polars / Arrow ``Date``) is the instant 00:00 UTC of that day; timestamps of any unit
  and zone compare as instants; a signed and an unsigned integer side compare exactly when one integer
  type holds every value of both (else a DtypeError says which values do not fit);
- ``by``: dictionary-encoded strings (pandas ``category``, polars ``Categorical`` / ``Enum``) are
  decoded; booleans match booleans; fixed-size binary is binary; string, large_string and string_view
  match each other; a signed and an unsigned integer side match on equal values (a negative value can
  equal no unsigned one). A null key never matches.

Example:
    >>> import pandas as pd
    >>> from skewless._arrow import as_table
    >>> as_table(pd.DataFrame({"x": [1, 2]}, index=[7, 9]), "data").column_names
    ['x']
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ColumnClashError, DtypeError, InvalidArgumentError, MissingColumnError

__all__ = [
    "as_arrow",
    "as_table",
    "is_table",
    "as_column",
    "name_list",
    "join_pair",
    "check_columns",
    "index_hint",
    "decode",
    "as_instant",
]

TABLE_FORMS = (
    "a pyarrow Table or RecordBatch, a polars DataFrame or LazyFrame, a pandas DataFrame, a named "
    "pandas or polars Series, a mapping of column name to values, or an object with __arrow_c_stream__"
)
_I64_MAX = 2**63 - 1
#: What pyarrow raises when values cannot become Arrow (ArrowInvalid and ArrowTypeError are ValueError /
#: TypeError subclasses; an int beyond 64 bits is an OverflowError).
_FAILURES = (pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError)


def _module_type(name: str, module: str) -> Any:
    # Never import pandas or polars here: if the user holds one of their objects, it is imported already.
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _is(data: Any, name: str, module: str) -> bool:
    t = _module_type(name, module)
    return t is not None and isinstance(data, t)


def as_table(data: Any, what: str) -> pa.Table:
    """``data`` (any form listed in the module docstring) as a ``pyarrow.Table``; no copy for Arrow data.
    A column name that appears twice is a :class:`~skewless.errors.ColumnClashError`.

    Example:
        >>> as_table({"a": [1, 2]}, "data").num_rows
        2
    """
    table = _read_table(data, what)
    names = table.column_names
    if len(set(names)) != len(names):
        _duplicates(names, what)
    return table


def _duplicates(names: Any, what: str) -> None:
    counts = collections.Counter(names)
    dup = sorted(str(n) for n, c in counts.items() if c > 1)
    if dup:
        raise ColumnClashError(f"{what} has column(s) {dup} more than once; drop or rename the copies")


def _read_table(data: Any, what: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        try:
            return data.read_all()
        except _FAILURES as e:
            raise DtypeError(f"{what}: reading the Arrow stream failed: {e}") from e
    if _is(data, "DataFrame", "pandas"):
        return _from_pandas(data, what)
    if _is(data, "Series", "pandas"):
        _named(data.name, what, "pandas")
        return _from_pandas(data.to_frame(), what)
    if _is(data, "LazyFrame", "polars"):
        try:
            data = data.collect()
        except Exception as e:  # polars' own errors: the user's query failed, said as ours
            raise InvalidArgumentError(f"{what}: collecting the polars LazyFrame failed: {e}") from e
    if _is(data, "Series", "polars"):
        _named(data.name, what, "polars")
        data = data.to_frame()
    if _is(data, "DataFrame", "polars") and not hasattr(data, "__arrow_c_stream__"):
        # polars 1.0 frames have no __arrow_c_stream__ (later ones do); to_arrow shares their buffers.
        try:
            return data.to_arrow()
        except _FAILURES:
            _polars_culprits(data, what)
            raise
    if isinstance(data, Mapping):
        return _from_mapping(data, what)
    if isinstance(data, (pa.Array, pa.ChunkedArray)):
        raise DtypeError(
            f"{what} is a pyarrow {type(data).__name__} (one unnamed column); pass {TABLE_FORMS}"
        )
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        try:
            return pa.table(data)
        except _FAILURES as e:
            if _is(data, "DataFrame", "polars"):
                _polars_culprits(data, what)
            raise DtypeError(f"{what} is Arrow data but not a table ({e}); pass {TABLE_FORMS}") from None
    raise DtypeError(f"{what} is a {type(data).__name__}; pass {TABLE_FORMS}")


def is_table(data: Any) -> bool:
    """Whether ``data`` is of a form :func:`as_table` reads (not whether its contents convert).

    Example:
        >>> is_table({"a": [1]}), is_table([1, 2])
        (True, False)
    """
    return (
        isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader, Mapping))
        or any(_is(data, n, m) for n, m in _FRAMES)
        or hasattr(data, "__arrow_c_stream__")
        or hasattr(data, "__arrow_c_array__")
    ) and not isinstance(data, (pa.Array, pa.ChunkedArray))


_FRAMES = (
    ("DataFrame", "pandas"),
    ("Series", "pandas"),
    ("DataFrame", "polars"),
    ("LazyFrame", "polars"),
    ("Series", "polars"),
)

#: The name the engine's online readers call (``rust/src/py/online.rs``); the same conversion.
as_arrow = as_table


def _polars_culprits(df: Any, what: str) -> None:
    """DtypeError naming the polars columns Arrow has no type for (Int128, Object...), if any."""
    bad = []
    for name in df.columns:
        try:
            pa.table(df.select(name))
        except _FAILURES:
            bad.append(f"{name!r} ({df.schema[name]})")
    if bad:
        raise DtypeError(
            f"{what}: polars column(s) {', '.join(bad)} have no Arrow type, so skewless cannot read them; "
            "cast them (e.g. Int128 to Int64 or String) or drop them"
        )


def _named(name: Any, what: str, lib: str) -> None:
    if not isinstance(name, str) or not name:
        raise DtypeError(
            f"{what} is a {lib} Series without a name, so its column has none; name it (.rename('x')) "
            "or pass a DataFrame"
        )


def _from_pandas(df: Any, what: str) -> pa.Table:
    if not df.columns.is_unique:
        _duplicates(list(df.columns), what)
    try:
        # The index is dropped (see the module docstring): the columns are what the user names.
        return pa.Table.from_pandas(df, preserve_index=False)
    except _FAILURES as e:
        raise DtypeError(f"{what}: the pandas DataFrame cannot be read as Arrow: {e}") from None


def _from_mapping(data: Mapping[Any, Any], what: str) -> pa.Table:
    cols: dict[str, pa.ChunkedArray] = {}
    for name, values in data.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"{what}: column names must be str, got {name!r}")
        cols[name] = as_column(values, f"{what} column {name!r}")
    lens = {c.length() for c in cols.values()}
    if len(lens) > 1:
        sizes = {n: c.length() for n, c in cols.items()}
        raise DtypeError(f"{what}: columns have different lengths {sizes}; every column needs one per row")
    return pa.table(cols)


def as_column(values: Any, what: str) -> pa.ChunkedArray:
    """One column of values (list, tuple, numpy array, pandas / polars Series, pyarrow array) as Arrow.

    Example:
        >>> import pandas as pd
        >>> as_column(pd.Series([1, None], dtype="Int64"), "x").to_pylist()
        [1, None]
    """
    if isinstance(values, pa.ChunkedArray):
        return values
    if isinstance(values, pa.Array):
        return pa.chunked_array([values])
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        raise DtypeError(
            f"{what} is a {type(values).__name__}; pass a sequence of values (list, numpy array, "
            "pandas or polars Series, pyarrow array)"
        )
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise DtypeError(f"{what} is a {values.ndim}-dimensional numpy array; pass one dimension")
    try:
        if type(values) is list:  # the common case first: a request's own values
            return pa.chunked_array([pa.array(values)])
        if _is(values, "Series", "pandas") or _is(values, "Index", "pandas"):
            return pa.chunked_array([pa.Array.from_pandas(values)])
        if _is(values, "Series", "polars"):
            return pa.chunked_array([values.to_arrow()])
        return pa.chunked_array([pa.array(values)])
    except _FAILURES as e:
        raise DtypeError(f"{what} cannot be read as an Arrow column: {e}") from None


def name_list(value: Any, what: str) -> list[str]:
    """A column name or a sequence of them as a list of str; anything else is InvalidArgumentError.

    Example:
        >>> name_list("user", "by"), name_list(("a", "b"), "by")
        (['user'], ['a', 'b'])
    """
    if isinstance(value, str):
        return [value]
    ok = isinstance(value, (list, tuple, np.ndarray)) or any(
        _is(value, n, m) for n, m in (("Index", "pandas"), ("Series", "pandas"), ("Series", "polars"))
    )
    names = list(value) if ok else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(
            f"{what} must be a column name (str) or a list of them (list, tuple, numpy array, pandas "
            f"Index or Series, polars Series of str); got {value!r}"
        )
    return names


def check_columns(data: Any, table: pa.Table, names: list[str], what: str) -> None:
    """MissingColumnError for the first of ``names`` not in ``table`` (built from ``data``), saying so
    when it is an index level of a pandas DataFrame (which ``as_table`` drops)."""
    for n in names:
        if n not in table.column_names:
            hint = index_hint(data, n) or "Pass the name of an existing column."
            raise MissingColumnError(f"column {n!r} is not in {what}; it has {table.column_names}. {hint}")


def index_hint(data: Any, name: str) -> str:
    """A sentence for a missing column ``name`` that is an index level of the pandas ``data``, else ""."""
    if _is(data, "DataFrame", "pandas") and name in [x for x in data.index.names if x is not None]:
        return (
            f"{name!r} is an index level of the pandas DataFrame, and skewless reads columns only (the "
            "index is dropped, as merge_asof does): call .reset_index() first."
        )
    return ""


# ---- join columns ------------------------------------------------------------------------------------


def decode(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """``col`` with dictionary encoding removed and fixed-size binary as binary (the values unchanged);
    any other column as it is.

    Example:
        >>> import pyarrow as pa
        >>> decode(pa.chunked_array([pa.array(["a", "a"]).dictionary_encode()])).type
        DataType(string)
    """
    t = col.type
    if pa.types.is_dictionary(t):
        vt = t.value_type
        if pa.types.is_string_view(vt) or pa.types.is_binary_view(vt):
            # pyarrow cannot take from view dictionaries (polars' Categorical/Enum): widen the dictionary
            # (one entry per category, not per row) to an offset layout first.
            vt = pa.large_string() if pa.types.is_string_view(vt) else pa.large_binary()
            chunks = [pa.DictionaryArray.from_arrays(c.indices, c.dictionary.cast(vt)) for c in col.chunks]
            col = pa.chunked_array(chunks, pa.dictionary(t.index_type, vt))
        col = pc.cast(col, vt)
        t = col.type
    if pa.types.is_fixed_size_binary(t):
        col = pc.cast(col, pa.binary())
    return col


def _kind(t: pa.DataType) -> str | None:
    if pa.types.is_signed_integer(t):
        return "signed"
    if pa.types.is_unsigned_integer(t):
        return "unsigned"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "bytes"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    return None


def join_pair(
    left: pa.ChunkedArray, right: pa.ChunkedArray, name: str, role: str
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """The two sides' column ``name`` (``role`` "on" or "by") in types the engine compares exactly, as
    stated in the module docstring. Columns already in such types are returned as they are (no copy).

    Example:
        >>> import pyarrow as pa
        >>> l = pa.chunked_array([pa.array(["a", "b"]).dictionary_encode()])
        >>> [c.type for c in join_pair(l, pa.chunked_array([["a"]], pa.large_string()), "k", "by")]
        [DataType(string), DataType(large_string)]
    """
    lt, rt = left.type, right.type
    if role == "by":
        left, right = decode(left), decode(right)
        kinds = {_kind(left.type), _kind(right.type)}
        accepted = "integers, booleans, strings (also dictionary-encoded) or binary"
        if None in kinds or "time" in kinds:
            bad, side = (lt, "left") if _kind(left.type) in (None, "time") else (rt, "right")
            raise DtypeError(
                f"`by` column {name!r} of the {side} is {bad}; a `by` key must be one of {accepted}. "
                "Cast it (e.g. to int64 or string) before the join"
            )
    else:
        kinds = {_kind(lt), _kind(rt)}
        accepted = "timezone-aware timestamps or dates on both sides, or integers on both sides"
        if kinds - {"time", "signed", "unsigned"}:
            raise DtypeError(
                f"`on` column {name!r} is {lt} on the left and {rt} on the right; `on` must be {accepted}"
            )
    ints = {"signed", "unsigned"}
    if len(kinds) > 1 and kinds != ints:
        raise DtypeError(
            f"`{role}` column {name!r} is {lt} on the left but {rt} on the right; both sides must be "
            f"{accepted} of the same kind. Cast one side to the other's type"
        )
    if kinds == {"time"}:
        return as_instant(left), as_instant(right)
    if kinds == {"bool"}:
        return left.cast(pa.uint8()), right.cast(pa.uint8())
    if kinds == ints:
        return _common_int(left, right, name, role)
    return left, right


def as_instant(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A date column as the instants 00:00 UTC of its days; any other column as it is.

    Example:
        >>> import datetime as dt, pyarrow as pa
        >>> as_instant(pa.chunked_array([[dt.date(1970, 1, 2)]])).to_pylist()[0].isoformat()
        '1970-01-02T00:00:00+00:00'
    """
    t = col.type
    if pa.types.is_date(t):
        # Days (date32) or milliseconds (date64) since the epoch: the instant 00:00 UTC of the day, exactly.
        return col.cast(pa.timestamp("s" if pa.types.is_date32(t) else "ms", tz="UTC"))
    return col


def _common_int(
    left: pa.ChunkedArray, right: pa.ChunkedArray, name: str, role: str
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    l_signed = pa.types.is_signed_integer(left.type)
    s, u = (left, right) if l_signed else (right, left)
    umax = pc.max(u).as_py()
    if umax is None or umax <= _I64_MAX:
        u = u.cast(pa.int64())
    else:
        smin = pc.min(s).as_py()
        if smin is None or smin >= 0:
            s = s.cast(pa.uint64())
        elif role == "by":
            # A negative key equals no unsigned one: as a null it matches nothing, which is its answer.
            s = pc.if_else(pc.less(s, 0), pa.scalar(None, s.type), s).cast(pa.uint64())
        else:
            ss, us = ("left", "right") if l_signed else ("right", "left")
            raise DtypeError(
                f"`on` column {name!r}: the {ss} ({s.type}) holds negative values ({smin}) and the {us} "
                f"({u.type}) values above {_I64_MAX} ({umax}); no integer type holds both. Cast them to "
                "a common range first"
            )
    return (s, u) if l_signed else (u, s)
