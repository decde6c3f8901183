"""The engine's transform kernels against numpy, the independent oracle: every built-in and the fill, on
random columns with nulls, NaN, infinities and empty input."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import _core
from skewless.errors import DtypeError, InvalidArgumentError

values = st.lists(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64)), min_size=0, max_size=40
)


def run(col: pa.Array, kind: str, param) -> pa.ChunkedArray:
    prog = _core.TransformProgram(1, [("out", kind, 0, param)])
    return prog.run(pa.table({"x": col}), [1], ["out"], False).column("out")


def oracle_input(xs):
    return np.array([np.nan if x is None else x for x in xs], dtype=np.float64)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b


@settings(max_examples=80, deadline=None)
@given(values, st.floats(-1e6, 1e6), st.floats(1e-6, 1e6))
def test_zscore_and_min_max_equal_numpy(xs, mean, std):
    x = oracle_input(xs)
    with np.errstate(all="ignore"):
        z = (x - mean) / std
        mm = (x - mean) / ((mean + std) - mean)
    got = run(pa.array(xs, pa.float64()), "zscore", (mean, std)).to_pylist()
    assert all(same(g, None if xs[i] is None else float(z[i])) for i, g in enumerate(got))
    if (mean + std) > mean:
        got = run(pa.array(xs, pa.float64()), "min_max_scale", (mean, mean + std)).to_pylist()
        assert all(same(g, None if xs[i] is None else float(mm[i])) for i, g in enumerate(got))


@settings(max_examples=80, deadline=None)
@given(values, st.floats(-100, 0), st.floats(0, 100))
def test_clip_log1p_bucketize_equal_numpy(xs, lo, hi):
    x = oracle_input(xs)
    got = run(pa.array(xs, pa.float64()), "clip", (lo, hi)).to_pylist()
    want = np.clip(x, lo, hi)
    assert all(same(g, None if xs[i] is None else float(want[i])) for i, g in enumerate(got))
    got = run(pa.array(xs, pa.float64()), "log1p", None).to_pylist()
    with np.errstate(all="ignore"):
        want = np.log1p(x)
    for i, g in enumerate(got):
        if xs[i] is None:
            assert g is None
        elif math.isnan(want[i]) or math.isinf(want[i]):
            assert same(g, float(want[i]))
        else:
            assert math.isclose(g, want[i], rel_tol=4e-16, abs_tol=0.0)
    bounds = sorted({lo, hi, 0.5})
    got = run(pa.array(xs, pa.float64()), "bucketize", bounds).to_pylist()
    want_b = np.searchsorted(np.array(bounds), x, side="right")
    for i, g in enumerate(got):
        assert g == (None if xs[i] is None or math.isnan(xs[i]) else int(want_b[i]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=30), st.sampled_from([[0], [1, -2, 3]]))
def test_one_hot_and_fill_of_integers(xs, cats):
    got = run(pa.array(xs, pa.int64()), "one_hot", cats).to_pylist()
    for x, g in zip(xs, got, strict=True):
        assert g == (None if x is None else [1.0 if c == x else 0.0 for c in cats])
    filled = run(pa.array(xs, pa.int64()), "fill", pa.array([7], pa.int64())).to_pylist()
    assert filled == [7 if x is None else x for x in xs]


def test_integer_inputs_read_as_float64_and_types_are_checked():
    assert run(pa.array([1, None], pa.int32()), "clip", (None, 0.5)).to_pylist() == [0.5, None]
    with pytest.raises(DtypeError):
        run(pa.array(["a"]), "log1p", None)
    with pytest.raises(InvalidArgumentError):
        _core.TransformProgram(1, [("z", "zscore", 0, (0.0, 0.0))])
    with pytest.raises(InvalidArgumentError):
        _core.TransformProgram(1, [("z", "log1p", 3, None)])


def test_a_run_keeps_its_row_count_and_an_empty_input_its_types():
    prog = _core.TransformProgram(1, [("z", "zscore", 0, (1.0, 2.0))])
    assert prog.run(pa.table({"x": pa.array([1.0, 2.0])}), [], [], False).num_rows == 2
    out = prog.run(pa.table({"x": pa.array([], pa.float64())}), [1], ["z"], True)
    assert out.num_rows == 0 and out.schema.types == [pa.float64(), pa.bool_()]
