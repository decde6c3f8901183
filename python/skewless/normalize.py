"""Input normalization for the store: what users pass, checked against a view and brought to the stored
layout (join keys in the view's key types, timestamps as UTC microseconds, features in their dtypes).

Every path that takes rows from a user (``write``, the entity rows of a training set, a ``source=``
file written by someone else) goes through these functions, so a value is converted one way only.

Example:
    >>> import datetime as dt
    >>> instant_us(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc), "as_of")
    1000000
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import as_instant, decode
from .definitions import KEY_DTYPES, MICROSECOND, TIMESTAMP_TYPE, FeatureView, dtype_from_arrow
from .errors import (
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    NullKeyError,
    SchemaMismatch,
)

__all__ = ["instant_us", "normalize_ts", "conform", "entity_key", "normalize_rows", "flag", "column_name"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def instant_us(x: Any, what: str) -> int:
    """A timezone-aware datetime (or integer UTC microseconds) as UTC microseconds."""
    if isinstance(x, dt.datetime):
        if x.tzinfo is None or x.utcoffset() is None:
            raise NaiveTimestampError(
                f"{what} {x!r} has no timezone; pass an aware datetime, e.g. "
                "datetime(..., tzinfo=datetime.timezone.utc)"
            )
        return (x - _EPOCH) // MICROSECOND
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        if not INT64_MIN <= int(x) <= INT64_MAX:
            raise InvalidArgumentError(
                f"{what} {x} is outside the range of UTC microseconds (64-bit); pass an aware datetime"
            )
        return int(x)
    raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, not {type(x).__name__}")


def flag(value: Any, what: str) -> bool:
    """A True/False argument (Python or numpy bool); anything else is InvalidArgumentError, so that a
    string like "no" is never taken as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def column_name(value: Any, what: str) -> str:
    """A column-name argument: a str, else InvalidArgumentError."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a column name (str), got {value!r}")
    return value


def normalize_ts(col: pa.ChunkedArray | pa.Array, what: str) -> pa.ChunkedArray:
    """A timezone-aware timestamp column as UTC microseconds (``TIMESTAMP_TYPE``); a date column is the
    instants 00:00 UTC of its days."""
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col])
    col = as_instant(col)
    t = col.type
    if not pa.types.is_timestamp(t):
        raise DtypeError(f"{what} is {t}, not a timestamp; give it a timezone-aware timestamp type")
    if t.tz is None:
        raise NaiveTimestampError(
            f"{what} is a timestamp without timezone ({t}); it is not an instant. Attach the zone it was "
            "recorded in, e.g. pc.assume_timezone(col, 'UTC') or pandas .dt.tz_localize('UTC')"
        )
    if t == TIMESTAMP_TYPE:
        return col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col])
    # A zone is display metadata over UTC values; only the unit changes the numbers. Sub-microsecond
    # digits are floored, as the engine's `time::to_micros` does (a plain cast would truncate toward
    # zero and move instants before 1970 a microsecond later).
    try:
        if t.unit == "ns":
            col = pc.floor_temporal(col, unit="microsecond")
        out = pc.cast(col, TIMESTAMP_TYPE)
    except pa.ArrowInvalid as e:
        raise DtypeError(
            f"{what} holds instants that do not fit in UTC microseconds (64-bit, about 292,000 years around "
            f"1970): {e}"
        ) from None
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])


_INT_WIDEN = {
    pa.int32(): (pa.int8(), pa.int16(), pa.uint8(), pa.uint16()),
    pa.int64(): (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16(), pa.uint32()),
}


def conform(col: pa.ChunkedArray, want: pa.DataType, what: str) -> pa.ChunkedArray:
    """``col`` as type ``want`` when that loses nothing, else DtypeError. Dictionary-encoded columns
    (pandas ``category``, polars ``Categorical``/``Enum``) are decoded; every string layout (large,
    view) is a string, every binary layout (large, view, fixed-size) a binary."""
    col = decode(col)
    t = col.type
    if t == want:
        return col
    ok = (
        (want == pa.string() and (pa.types.is_large_string(t) or pa.types.is_string_view(t)))
        or (want == pa.binary() and (pa.types.is_large_binary(t) or pa.types.is_binary_view(t)))
        or t in _INT_WIDEN.get(want, ())
        or (want == pa.float64() and t == pa.float32())
        or (
            pa.types.is_fixed_size_list(want)
            and (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and t.value_type == want.value_type
        )
    )
    if not ok:
        raise DtypeError(f"{what} is {t}, expected {want}; cast it before writing (or change the definition)")
    try:
        return pc.cast(col, want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DtypeError(f"{what}: cannot store {t} as {want}: {e}") from None


def _bool_key(col: pa.ChunkedArray, want: pa.DataType | None) -> pa.ChunkedArray:
    # A boolean key of an integer-keyed entity is its 0/1 value (as numpy and pandas count it).
    if want is not None and pa.types.is_boolean(col.type) and pa.types.is_integer(want):
        return pc.cast(col, want)
    return col


def entity_key(col: pa.ChunkedArray, want: pa.DataType | None, name: str) -> pa.ChunkedArray:
    """An entity_df key column as the view's key type. Integers narrower than what pandas and polars
    produce (int64) are accepted when every value fits; a value that does not is a DtypeError. Booleans
    are 0/1 for an integer key; dictionary-encoded and other string/binary layouts are decoded."""
    if want is None or col.type == want:
        return col
    col = _bool_key(decode(col), want)
    if pa.types.is_integer(col.type) and pa.types.is_integer(want):
        try:
            return pc.cast(col, want)
        except pa.ArrowInvalid:
            raise DtypeError(
                f"entity_df join key {name!r} holds values that do not fit the key type {want}"
            ) from None
    return conform(col, want, f"entity_df join key {name!r}")


def normalize_rows(
    fv: FeatureView, key_types: list[pa.DataType | None], table: pa.Table, what: str
) -> tuple[pa.Table, dict[str, list[str]]]:
    """Check ``table`` against the view and return it in the stored layout (keys, time columns,
    features; timestamps in UTC microseconds), plus the key dtypes this write would fix
    (``{entity: [dtype name, ...]}``) for keys whose type ``key_types`` does not know yet."""
    have = set(table.column_names)
    need = fv.stored_columns
    missing = [c for c in need if c not in have]
    if missing:
        raise MissingColumnError(f"{what} lacks column(s) {missing} of view {fv.name!r}; it needs {need}")
    wanted = set(need)  # a set: a view may have thousands of features
    extra = [c for c in table.column_names if c not in wanted]
    if extra:
        raise SchemaMismatch(
            f"{what} has column(s) {extra} that view {fv.name!r} does not define; drop them, or add "
            "Fields for them to the view"
        )
    cols: dict[str, pa.ChunkedArray] = {}
    fixes: dict[str, list[str]] = {}
    i = 0
    for e in fv.entities:
        new_types: list[str] = []
        for k in e.join_keys:
            c = table.column(k)
            if c.null_count:
                raise NullKeyError(
                    f"{what}: join key {k!r} has {c.null_count} null(s); every row needs a key"
                )
            want = key_types[i]
            c = _bool_key(decode(c), want)
            if want is None:
                d = dtype_from_arrow(c.type)
                if d is None or d.name not in KEY_DTYPES:
                    raise DtypeError(
                        f"{what}: join key {k!r} is {c.type}; keys must be integers (int32, int64), strings "
                        "or binary; cast it (e.g. booleans to int64) or declare the entity's dtype"
                    )
                want = d.arrow
                new_types.append(d.to_json())
            cols[k] = conform(c, want, f"{what}: join key {k!r}")
            i += 1
        if new_types:
            fixes[e.name] = new_types
    for tf in fv.time_columns:
        c = normalize_ts(table.column(tf), f"{what}: column {tf!r}")
        if c.null_count:
            raise InvalidArgumentError(f"{what}: timestamp column {tf!r} has {c.null_count} null(s)")
        cols[tf] = c
    for f in fv.schema:
        c = table.column(f.name)
        if f.dtype.name == "Timestamp":
            cols[f.name] = normalize_ts(c, f"{what}: feature {f.name!r}")
        else:
            c = conform(c, f.dtype.arrow, f"{what}: feature {f.name!r}")
            if f.dtype.name == "Array":
                _no_null_elements(c, f"{what}: feature {f.name!r}")
            cols[f.name] = c
    return pa.table(cols), fixes


def _no_null_elements(col: pa.ChunkedArray, what: str) -> None:
    """Refuse a null element inside a non-null array. Online, an array is stored whole, with no
    per-element validity, so the element would be served as NaN while history (and training sets) keep
    it null; refusing it keeps both paths equal. A whole null array is fine (the engine checks the same)."""
    inner = pc.list_flatten(col)
    if inner.null_count:
        rows = pc.list_parent_indices(col).filter(pc.is_null(inner))
        raise InvalidArgumentError(
            f"{what} has {inner.null_count} null element(s) inside arrays (first at row {rows[0]}); arrays "
            "are stored whole, without per-element nulls. Fill the elements (e.g. with NaN) or make the "
            "whole array null"
        )
