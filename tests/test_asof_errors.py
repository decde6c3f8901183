"""Every bad input to asof_join raises its typed skewless.errors class and leaves the inputs unchanged."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import skewless
from skewless.errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    SkewlessError,
)

TS = pa.timestamp("us", tz="UTC")


def tables():
    left = pa.table({"k": [1, 2], "t": pa.array([10, 20], TS), "y": [0, 1]})
    right = pa.table({"k": [1, 2], "t": pa.array([5, 15], TS), "c": pa.array([1, 2], TS), "x": [0.5, 1.5]})
    return left, right


def frozen(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def raises(cls, left, right, match=None, **kw):
    snapshot = (frozen(left), frozen(right))
    with pytest.raises(cls, match=match) as info:
        skewless.asof_join(left, right, **kw)
    assert isinstance(info.value, SkewlessError)
    # A pure function: nothing about either input changed.
    assert (frozen(left), frozen(right)) == snapshot
    return info.value


@pytest.mark.parametrize("side", ["left", "right"])
def test_missing_on_column_names_the_side(side):
    left, right = tables()
    if side == "left":
        left = left.rename_columns(["k", "when", "y"])
    else:
        right = right.rename_columns(["k", "when", "c", "x"])
    err = raises(MissingColumnError, left, right, on="t", by="k")
    assert f"the {side} table" in str(err)
    assert isinstance(err, KeyError)


@pytest.mark.parametrize("side", ["left", "right"])
def test_missing_by_column_names_the_side(side):
    left, right = tables()
    if side == "left":
        left = left.drop_columns(["k"])
    else:
        right = right.drop_columns(["k"])
    err = raises(MissingColumnError, left, right, on="t", by="k")
    assert f"the {side} table" in str(err)


def test_missing_tie_breaker():
    left, right = tables()
    raises(MissingColumnError, left, right, on="t", by="k", tie_breaker="created")


@pytest.mark.parametrize("side", ["left", "right"])
def test_naive_timestamp_on_either_side(side):
    left, right = tables()
    naive = pa.timestamp("us")
    if side == "left":
        left = left.set_column(1, "t", left.column("t").cast(naive))
    else:
        right = right.set_column(1, "t", right.column("t").cast(naive))
    err = raises(NaiveTimestampError, left, right, on="t", by="k")
    assert "timezone" in str(err) and side in str(err)


def test_naive_tie_breaker():
    left, right = tables()
    right = right.set_column(2, "c", right.column("c").cast(pa.timestamp("us")))
    raises(NaiveTimestampError, left, right, on="t", by="k", tie_breaker="c")


def test_timestamp_on_against_integer_on():
    left, right = tables()
    right = right.set_column(1, "t", pa.array([5, 15]))
    raises(DtypeError, left, right, on="t", by="k", match="timestamp")


def test_signed_against_unsigned_integer_on_that_no_one_type_holds():
    # Mixed signedness compares exactly when one type holds both sides (tests/test_inputs.py); here the
    # left is negative and the right beyond int64.
    left = pa.table({"t": pa.array([-1], pa.int64())})
    right = pa.table({"t": pa.array([2**63], pa.uint64()), "x": [1]})
    raises(DtypeError, left, right, on="t", match="negative")


def test_unsupported_on_dtype():
    left = pa.table({"t": [1.0]})
    right = pa.table({"t": [1.0], "x": [1]})
    raises(DtypeError, left, right, on="t")


def test_unsupported_key_dtype():
    left, right = tables()
    left = left.set_column(0, "k", left.column("k").cast(pa.float64()))
    right = right.set_column(0, "k", right.column("k").cast(pa.float64()))
    err = raises(DtypeError, left, right, on="t", by="k")
    assert "'k'" in str(err) and "double" in str(err)


def keys_of(typ: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(typ):
        return pa.array([True, False])
    if pa.types.is_integer(typ):
        return pa.array([1, 2], typ)
    return pa.array(["1", "2"]).cast(typ)


@pytest.mark.parametrize(
    ("lt", "rt"), [(pa.int64(), pa.string()), (pa.string(), pa.binary()), (pa.int64(), pa.bool_())]
)
def test_mismatched_key_dtypes(lt, rt):
    left, right = tables()
    left = left.set_column(0, "k", keys_of(lt))
    right = right.set_column(0, "k", keys_of(rt))
    err = raises(DtypeError, left, right, on="t", by="k")
    assert "left" in str(err) and "right" in str(err)


def test_bad_tie_breaker_dtype():
    left, right = tables()
    raises(DtypeError, left, right, on="t", by="k", tie_breaker="x")


def test_bad_or_missing_sequence():
    left, right = tables()
    raises(DtypeError, left, right, match="sequence", on="t", by="k", sequence="x")
    raises(MissingColumnError, left, right, match="nope", on="t", by="k", sequence="nope")
    raises(InvalidArgumentError, left, right, on="t", by="k", sequence=3)


@pytest.mark.parametrize("tol", [dt.timedelta(seconds=-1), dt.timedelta(microseconds=-1)])
def test_negative_timedelta_tolerance(tol):
    left, right = tables()
    raises(InvalidArgumentError, left, right, on="t", by="k", tolerance=tol)


def test_negative_int_tolerance():
    left = pa.table({"t": [1]})
    right = pa.table({"t": [1], "x": [1]})
    raises(InvalidArgumentError, left, right, on="t", tolerance=-1)


def test_bad_direction_lists_the_valid_ones():
    left, right = tables()
    err = raises(InvalidArgumentError, left, right, on="t", by="k", direction="sideways")
    assert all(d in str(err) for d in ("backward", "forward", "nearest"))
    assert isinstance(err, ValueError)


def test_int_tolerance_for_timestamp_on():
    left, right = tables()
    raises(InvalidArgumentError, left, right, on="t", by="k", tolerance=5)


def test_timedelta_tolerance_for_integer_on():
    left = pa.table({"t": [1]})
    right = pa.table({"t": [1], "x": [1]})
    raises(InvalidArgumentError, left, right, on="t", tolerance=dt.timedelta(seconds=1))


@pytest.mark.parametrize("tol", [1.5, "1d", True])
def test_tolerance_of_another_type(tol):
    left = pa.table({"t": [1]})
    right = pa.table({"t": [1], "x": [1]})
    raises(InvalidArgumentError, left, right, on="t", tolerance=tol)


def test_name_clash_without_suffix():
    left, right = tables()
    right = right.rename_columns(["k", "t", "c", "y"])
    err = raises(ColumnClashError, left, right, on="t", by="k")
    assert "suffix" in str(err)


def test_name_clash_that_the_suffix_does_not_resolve():
    left = pa.table({"t": [1], "x": [1], "x_r": [2]})
    right = pa.table({"t": [1], "x": [3]})
    raises(ColumnClashError, left, right, on="t", suffix="_r")


def test_not_arrow_data():
    left, _ = tables()
    with pytest.raises(DtypeError):
        skewless.asof_join(left, [1, 2, 3], on="t")


def test_timestamps_that_overflow_the_finer_unit():
    left = pa.table({"t": pa.array([0], pa.timestamp("ns", tz="UTC"))})
    right = pa.table({"t": pa.array([10**17], pa.timestamp("s", tz="UTC")), "x": [1]})
    raises(DtypeError, left, right, on="t", match="does not fit")
