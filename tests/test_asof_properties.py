"""asof_join against an independent brute-force oracle (hypothesis), and against pandas.merge_asof."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import skewless
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TPS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
ZONES = ["UTC", "Europe/Tallinn", "America/New_York", "+05:30"]
KEY_TYPES = {
    "int64": (pa.int64(), pa.int64()),
    "int32/int64": (pa.int32(), pa.int64()),
    "uint64": (pa.uint64(), pa.uint64()),
    "string": (pa.string(), pa.string()),
    "string/large_string": (pa.string(), pa.large_string()),
    "binary/large_binary": (pa.binary(), pa.large_binary()),
}
KEY_VALUES = [0, 1, 2]


def key_array(vals, typ):
    if pa.types.is_integer(typ):
        return pa.array(vals, typ)
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return pa.array([None if v is None else b"k%d" % v for v in vals], typ)
    return pa.array([None if v is None else f"k{v}" for v in vals], typ)


def chunked(table: pa.Table, cuts: list[int]) -> pa.Table:
    """The same rows split into several record batches (as Parquet readers return them)."""
    n = table.num_rows
    bounds = sorted({0, n, *[c % (n + 1) for c in cuts]})
    pieces = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    if not pieces:
        return table
    return pa.Table.from_batches([b for p in pieces for b in p.to_batches()], schema=table.schema)


def oracle(left, right, n_keys, direction, allow_exact, tolerance_ok, tie, seq=False):
    """Index of the matching right row per left row (None: no match), straight from the definition.

    left/right rows: (key tuple, time in a common unit); right rows also carry a tie value and a
    sequence value.
    """
    out = []
    for lkey, t in left:
        if t is None or any(k is None for k in lkey):
            out.append(None)
            continue
        cands = [
            (i, rt, rtie, rseq)
            for i, (rkey, rt, rtie, rseq) in enumerate(right)
            if rt is not None and all(k is not None for k in rkey) and rkey == lkey
        ]

        def winner(time, cands=cands):
            same = [c for c in cands if c[1] == time]
            # Greatest tie-breaker (null lowest), then greatest sequence (null lowest), then last in
            # input order.
            return max(
                same,
                key=lambda c: (
                    (c[2] is not None, c[2] or 0) if tie else (0, 0),
                    (c[3] is not None, c[3] or 0) if seq else (0, 0),
                    c[0],
                ),
            )

        back = [c for c in cands if (c[1] <= t if allow_exact else c[1] < t)]
        fwd = [c for c in cands if (c[1] >= t if allow_exact else c[1] > t)]
        b = winner(max(c[1] for c in back)) if back else None
        f = winner(min(c[1] for c in fwd)) if fwd else None
        if direction == "backward":
            hit = b
        elif direction == "forward":
            hit = f
        else:
            hit = b if f is None or (b is not None and t - b[1] <= f[1] - t) else f
        if hit is not None and not tolerance_ok(abs(hit[1] - t)):
            hit = None
        out.append(None if hit is None else hit[0])
    return out


maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731


@st.composite
def cases(draw):
    n_keys = draw(st.integers(0, 2))
    key_type = draw(st.sampled_from(sorted(KEY_TYPES)))
    on_kind = draw(st.sampled_from(["int64", "uint64", "timestamp"]))
    units = (draw(st.sampled_from(list(TPS))), draw(st.sampled_from(list(TPS))))
    zones = (draw(st.sampled_from(ZONES)), draw(st.sampled_from(ZONES)))
    n_right = draw(st.integers(0, 25))
    n_left = draw(st.integers(0, 15))
    key = st.lists(maybe(st.sampled_from(KEY_VALUES)), min_size=n_keys, max_size=n_keys)
    time = maybe(st.integers(0, 12))
    right = [
        (tuple(draw(key)), draw(time), draw(maybe(st.integers(0, 3))), draw(maybe(st.integers(-2, 2))))
        for _ in range(n_right)
    ]
    left = [(tuple(draw(key)), draw(time)) for _ in range(n_left)]
    return {
        "n_keys": n_keys,
        "key_type": key_type,
        "on_kind": on_kind,
        "units": units,
        "zones": zones,
        "right": right,
        "left": left,
        "direction": draw(st.sampled_from(["backward", "forward", "nearest"])),
        "allow_exact": draw(st.booleans()),
        "tolerance": draw(maybe(st.integers(0, 6))),
        "tie": draw(st.booleans()),
        "seq": draw(st.booleans()),
        "sort_right": draw(st.booleans()),
        "cuts": (
            draw(st.lists(st.integers(0, 40), max_size=3)),
            draw(st.lists(st.integers(0, 40), max_size=3)),
        ),
    }


def build(case):
    """pyarrow tables for a case, plus oracle rows with times in a common (finest) unit."""
    right = list(case["right"])
    if case["sort_right"]:
        right.sort(key=lambda r: (tuple((k is None, k or 0) for k in r[0]), r[1] is None, r[1] or 0))
    lt, rt = KEY_TYPES[case["key_type"]]
    if case["on_kind"] == "timestamp":
        ul, ur = case["units"]
        fine = max(TPS[ul], TPS[ur])
        # Times are drawn in ticks of each side's own unit; the oracle compares them in the finer unit.
        on_l = pa.array([r[1] for r in case["left"]], pa.timestamp(ul, tz=case["zones"][0]))
        on_r = pa.array([r[1] for r in right], pa.timestamp(ur, tz=case["zones"][1]))
        lscale, rscale = fine // TPS[ul], fine // TPS[ur]
        tol = None if case["tolerance"] is None else dt.timedelta(milliseconds=case["tolerance"] * 250)
        # Exact: |d| / fine seconds <= tol seconds.
        tol_ok = (lambda d: True) if tol is None else (lambda d: d * 1_000 <= case["tolerance"] * 250 * fine)
    else:
        typ = pa.int64() if case["on_kind"] == "int64" else pa.uint64()
        base = 0 if case["on_kind"] == "int64" else 2**63  # unsigned values above the int64 range
        on_l = pa.array([None if r[1] is None else r[1] + base for r in case["left"]], typ)
        on_r = pa.array([None if r[1] is None else r[1] + base for r in right], typ)
        lscale = rscale = 1
        tol = case["tolerance"]
        tol_ok = (lambda d: True) if tol is None else (lambda d: d <= tol)
    lcols = {f"k{j}": key_array([r[0][j] for r in case["left"]], lt) for j in range(case["n_keys"])}
    rcols = {f"k{j}": key_array([r[0][j] for r in right], rt) for j in range(case["n_keys"])}
    left = pa.table({**lcols, "t": on_l, "row": pa.array(range(len(case["left"])), pa.int64())})
    rcols.update(
        t=on_r,
        tie=pa.array([r[2] for r in right], pa.int32()),
        seq=pa.array([r[3] for r in right], pa.int64()),
        idx=pa.array(range(len(right)), pa.int64()),
        val=pa.array([None if i % 3 == 0 else i * 0.5 for i in range(len(right))], pa.float64()),
    )
    right_t = pa.table(rcols)
    left_rows = [(r[0], None if r[1] is None else r[1] * lscale) for r in case["left"]]
    right_rows = [(r[0], None if r[1] is None else r[1] * rscale, r[2], r[3]) for r in right]
    return left, right_t, left_rows, right_rows, tol, tol_ok


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_the_brute_force_oracle(case):
    left, right, left_rows, right_rows, tol, tol_ok = build(case)
    left_in, right_in = chunked(left, case["cuts"][0]), chunked(right, case["cuts"][1])
    out = skewless.asof_join(
        left_in,
        right_in,
        on="t",
        by=[f"k{j}" for j in range(case["n_keys"])] or None,
        direction=case["direction"],
        tolerance=tol,
        allow_exact_matches=case["allow_exact"],
        tie_breaker="tie" if case["tie"] else None,
        sequence="seq" if case["seq"] else None,
    )
    expect = oracle(
        left_rows,
        right_rows,
        case["n_keys"],
        case["direction"],
        case["allow_exact"],
        tol_ok,
        case["tie"],
        case["seq"],
    )
    assert out.column_names == [*left.column_names, "tie", "seq", "idx", "val"]
    assert out.num_rows == left.num_rows
    assert out.select(left.column_names).equals(left)  # left rows kept, in order, untouched
    assert out.column("idx").to_pylist() == expect
    vals = right.column("val").to_pylist()
    assert out.column("val").to_pylist() == [None if e is None else vals[e] for e in expect]


def test_sorted_and_unsorted_right_give_the_same_result():
    rng = np.random.default_rng(3)
    n = 300_000  # large enough for the two-pass index build (the sorted copy takes the one-pass path)
    right = pa.table(
        {
            "k": rng.integers(0, 500, n),
            "t": pa.array(rng.integers(0, 10_000, n), pa.timestamp("us", tz="UTC")),
            "c": rng.integers(0, 5, n),
            "v": np.arange(n),
        }
    )
    left = pa.table(
        {
            "k": rng.integers(0, 600, 5000),
            "t": pa.array(rng.integers(0, 11_000, 5000), pa.timestamp("us", tz="UTC")),
        }
    )
    sorted_right = right.sort_by([("k", "ascending"), ("t", "ascending"), ("c", "ascending")])
    for direction in ("backward", "forward", "nearest"):
        kw = dict(
            on="t", by="k", direction=direction, tie_breaker="c", tolerance=dt.timedelta(microseconds=50)
        )
        a = skewless.asof_join(left, right, **kw)
        b = skewless.asof_join(left, sorted_right, **kw)
        # Equal (k, t, c) rows may differ in v between the two orders; compare the ranking columns.
        assert a.select(["k", "t", "c"]).equals(b.select(["k", "t", "c"]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60)), max_size=40, unique=True),
    st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 65)), max_size=25),
    st.sampled_from(["backward", "forward", "nearest"]),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_agrees_with_pandas_merge_asof_on_unique_times(rrows, lrows, direction, allow_exact, tol):
    # pandas and skewless differ only on ties (pandas' forward takes the first of equal times), so each
    # key's right times are unique here. Both prefer the earlier row at equal distance under "nearest".
    t0 = 1_709_251_200  # 2024-03-01 in seconds

    def times(secs):
        return pd.to_datetime(pd.Series(secs, dtype="int64") + t0, unit="s", utc=True).astype(
            "datetime64[us, UTC]"
        )

    right = pd.DataFrame(
        {
            "k": pd.array([r[0] for r in rrows], "int64"),
            "t": times([r[1] * 2 for r in rrows]),
            "v": np.arange(len(rrows), dtype="float64"),
        }
    )
    left = pd.DataFrame(
        {
            "k": pd.array([r[0] for r in lrows], "int64"),
            "t": times([r[1] for r in lrows]),
            "row": np.arange(len(lrows)),
        }
    )
    tolerance = None if tol is None else dt.timedelta(seconds=tol)
    got = skewless.asof_join(
        left, right, on="t", by="k", direction=direction, allow_exact_matches=allow_exact, tolerance=tolerance
    ).to_pandas()
    expect = pd.merge_asof(
        left.sort_values("t"),
        right.sort_values("t"),
        on="t",
        by="k",
        direction=direction,
        allow_exact_matches=allow_exact,
        tolerance=None if tol is None else pd.Timedelta(seconds=tol),
    ).sort_values("row")
    got_v = got["v"].to_numpy()
    exp_v = expect["v"].to_numpy()
    np.testing.assert_array_equal(got_v, exp_v)


def test_nearest_prefers_the_earlier_row_on_equal_distance():
    right = pa.table({"t": [10, 20], "v": ["early", "late"]})
    left = pa.table({"t": [15]})
    assert skewless.asof_join(left, right, on="t", direction="nearest").column("v").to_pylist() == ["early"]


def test_forward_ties_take_the_greatest_tie_breaker_then_the_last_row():
    right = pa.table({"t": [5, 5, 5, 5], "c": [2, None, 2, 1], "v": ["a", "b", "c", "d"]})
    left = pa.table({"t": [0, 5, 6]})
    for direction in ("backward", "forward", "nearest"):
        out = skewless.asof_join(left, right, on="t", direction=direction, tie_breaker="c")
        expect = {"backward": [None, "c", "c"], "forward": ["c", "c", None], "nearest": ["c", "c", "c"]}
        assert out.column("v").to_pylist() == expect[direction]
        out = skewless.asof_join(left, right, on="t", direction=direction)
        assert out.column("v").to_pylist() == [x and "d" for x in expect[direction]]


def test_polars_and_pandas_inputs_and_zero_copy_left():
    ts = pa.timestamp("ns", tz="UTC")
    left = pl.DataFrame(
        {
            "user": ["a", "b", "a"],
            "t": pl.Series([100, 100, 5], dtype=pl.Datetime("ns", "UTC")),
            "y": [1, 0, 1],
        }
    )
    right = pd.DataFrame(
        {
            "user": ["a", "a", "b"],
            "t": pd.to_datetime([10, 90, 200], unit="ns", utc=True),
            "x": [0.1, 0.9, 2.0],
        }
    )
    out = skewless.asof_join(left, right, on="t", by="user")
    assert out.column("x").to_pylist() == [0.9, None, None]
    assert out.schema.field("t").type == ts
    # The left's buffers are reused, not copied.
    left_pa = pa.table({"t": pa.array(np.arange(1000), pa.int64())})
    out = skewless.asof_join(left_pa, pa.table({"t": [3], "x": [1]}), on="t")
    assert out.column("t").chunk(0).buffers()[1].address == left_pa.column("t").chunk(0).buffers()[1].address


def test_mappings_record_batches_and_capsule_producers():
    class Producer:
        def __init__(self, t):
            self.t = t

        def __arrow_c_stream__(self, requested_schema=None):
            return self.t.__arrow_c_stream__(requested_schema)

    right = pa.table({"t": [1, 3], "x": ["p", "q"]})
    out = skewless.asof_join({"t": [2, 4]}, Producer(right), on="t")
    assert out.column("x").to_pylist() == ["p", "q"]
    out = skewless.asof_join(pa.record_batch({"t": [0, 3]}), right.to_batches()[0], on="t")
    assert out.column("x").to_pylist() == [None, "q"]


def test_empty_and_one_row_tables_and_suffix():
    ts = pa.timestamp("ms", tz="UTC")
    empty_r = pa.table(
        {"k": pa.array([], pa.string()), "t": pa.array([], ts), "x": pa.array([], pa.float64())}
    )
    one_l = pa.table({"k": ["a"], "t": pa.array([5], ts), "x": [1.0]})
    out = skewless.asof_join(one_l, empty_r, on="t", by="k", suffix="_r")
    assert out.column_names == ["k", "t", "x", "x_r"]
    assert out.column("x_r").to_pylist() == [None]
    out = skewless.asof_join(one_l.slice(0, 0), one_l, on="t", by="k", suffix="_r")
    assert out.num_rows == 0 and out.column_names == ["k", "t", "x", "x_r"]
    out = skewless.asof_join(one_l, one_l, on="t", by="k", suffix="_r")
    assert out.column("x_r").to_pylist() == [1.0]


def test_large_integer_ranges_and_sparse_keys_use_the_hash_path():
    big = 2**62
    right = pa.table({"k": [big, -big, 7], "t": [1, 1, 1], "v": [1, 2, 3]})
    left = pa.table({"k": [-big, 7, big, 8], "t": [2, 2, 0, 2]})
    assert skewless.asof_join(left, right, on="t", by="k").column("v").to_pylist() == [2, 3, None, None]


def test_tolerance_microsecond_boundary_with_nanosecond_times():
    ns = pa.timestamp("ns", tz="UTC")
    right = pa.table({"t": pa.array([1_000], ns), "v": [1]})
    left = pa.table({"t": pa.array([2_000, 2_001], ns)})
    out = skewless.asof_join(left, right, on="t", tolerance=dt.timedelta(microseconds=1))
    assert out.column("v").to_pylist() == [1, None]


@pytest.mark.filterwarnings("ignore:Sortedness of columns cannot be checked")
@pytest.mark.parametrize("right_chunks", [1, 4])
def test_larger_random_join_matches_polars(right_chunks):
    rng = np.random.default_rng(11)
    n, m = 400_000, 20_000  # the random right takes the two-pass index build
    ts = pa.timestamp("us", tz="UTC")
    right = pa.table(
        {
            "e": rng.integers(0, 2_000, n),
            "t": pa.array(rng.choice(10**9, n, replace=False), ts),
            "f": rng.standard_normal(n),
        }
    )
    left = pa.table({"e": rng.integers(0, 2_100, m), "t": pa.array(rng.integers(0, 10**9, m), ts)})
    right = chunked(right, [n // 4 * i for i in range(1, right_chunks)])
    got = skewless.asof_join(left, right, on="t", by="e", tolerance=dt.timedelta(seconds=100))
    lp = pl.from_arrow(left).with_row_index("row").sort("t")
    rp = pl.from_arrow(right).sort("t")
    exp = lp.join_asof(rp, on="t", by="e", strategy="backward", tolerance="100s").sort("row")
    np.testing.assert_array_equal(got.column("f").to_numpy(zero_copy_only=False), exp["f"].to_numpy())


def test_composite_key_of_a_string_and_an_integer_column():
    right = pa.table(
        {"s": ["a", "a", "b", None], "n": [1, 2, 1, 1], "t": [1, 1, 1, 1], "v": [10, 20, 30, 40]}
    )
    left = pa.table({"s": ["a", "a", "b", "b", None], "n": [2, 1, 1, 2, 1], "t": [5, 5, 5, 5, 5]})
    out = skewless.asof_join(left, right, on="t", by=["s", "n"])
    assert out.column("v").to_pylist() == [20, 10, 30, None, None]


@pytest.mark.parametrize("typ", [pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint32()])
def test_narrow_integer_on_columns(typ):
    right = pa.table({"t": pa.array([1, 4, 9], typ), "v": [1, 4, 9]})
    left = pa.table({"t": pa.array([0, 4, 8, 100], typ)})
    out = skewless.asof_join(left, right, on="t", tolerance=3)
    assert out.column("v").to_pylist() == [None, 4, None, None]
    out = skewless.asof_join(left, right, on="t", direction="nearest")
    assert out.column("v").to_pylist() == [1, 4, 9, 9]


def test_tables_with_no_batches_at_all():
    schema = pa.schema([("t", pa.int64()), ("x", pa.float64())])
    nothing = pa.Table.from_batches([], schema=schema)
    out = skewless.asof_join(nothing, pa.table({"t": [1], "y": [2]}), on="t")
    assert out.num_rows == 0 and out.column_names == ["t", "x", "y"]
    out = skewless.asof_join(pa.table({"t": [1, 2]}), nothing, on="t")
    assert out.column("x").to_pylist() == [None, None]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 1)), max_size=30),
    st.randoms(use_true_random=False),
)
def test_a_unique_sequence_makes_the_answer_independent_of_right_row_order(rows, rnd):
    """Full ties on (key, time, tie_breaker) everywhere; a sequence unique per row decides them, so
    every permutation of the right rows gives the same matches."""
    seqs = list(range(len(rows)))
    rnd.shuffle(seqs)
    right = pa.table(
        {
            "k": [r[0] for r in rows],
            "t": [r[1] for r in rows],
            "c": [r[2] for r in rows],
            "s": seqs,
            "id": list(range(len(rows))),
        },
        schema=pa.schema([(c, pa.int64()) for c in ("k", "t", "c", "s", "id")]),
    )
    left = pa.table({"k": [0, 1, 2, 0, 1, 2], "t": [0, 2, 4, 5, 3, 1]})
    kw = dict(on="t", by="k", tie_breaker="c", sequence="s")
    first = skewless.asof_join(left, right, **kw).column("id").to_pylist()
    order = list(range(len(rows)))
    rnd.shuffle(order)
    again = skewless.asof_join(left, right.take(pa.array(order, pa.int64())), **kw).column("id").to_pylist()
    assert again == first
