"""skewless.window_aggregate: sliding-window aggregates against DuckDB SQL, order independence bit for
bit, and every bad argument as a typed error."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import skewless
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Aggregation, window_aggregate
from skewless.errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    SkewlessError,
)
from skewless.window import FUNCTIONS

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000

# DuckDB's name for each function over the events inside the window (nulls skipped as in SQL).
SQL = {
    "sum": "sum(e.x)",
    "count": "count(e.x)",
    "mean": "avg(e.x)",
    "min": "min(e.x)",
    "max": "max(e.x)",
    "first": "arg_min(e.x, e.ord) FILTER (WHERE e.x IS NOT NULL)",
    "last": "arg_max(e.x, e.ord) FILTER (WHERE e.x IS NOT NULL)",
    "var_samp": "var_samp(e.x)",
    "var_pop": "var_pop(e.x)",
    "stddev_samp": "stddev_samp(e.x)",
    "stddev_pop": "stddev_pop(e.x)",
    "count_distinct": "count(DISTINCT e.x)",
}


def oracle(labels: pa.Table, events: pa.Table, aggs: list[Aggregation]) -> dict[str, list]:
    """Each aggregate by a join of labels to events on ts > t - w AND ts <= t, grouped per label row."""
    ev = events.to_pandas()
    ev["ord"] = np.lexsort((np.arange(len(ev)), ev["seq"].to_numpy(), ev["t"].to_numpy()))
    # lexsort gives the permutation; rank = inverse permutation.
    rank = np.empty(len(ev), np.int64)
    rank[ev["ord"].to_numpy()] = np.arange(len(ev))
    ev["ord"] = rank
    lab = labels.to_pandas()
    lab["rid"] = np.arange(len(lab))
    con = duckdb.connect()
    con.register("ev", ev)
    con.register("lab", lab)
    out: dict[str, list] = {}
    for a in aggs:
        q = (
            f"SELECT l.rid, {SQL[a.function]} AS v FROM lab l LEFT JOIN ev e ON e.k = l.k "
            f"AND e.t > l.t - to_microseconds({a.window_us}::BIGINT) AND e.t <= l.t "
            "GROUP BY l.rid ORDER BY l.rid"
        )
        vals = [r[1] for r in con.execute(q).fetchall()]
        out[a.name] = [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
    return out


@st.composite
def streams(draw, ints: bool = False):
    n = draw(st.integers(0, 40))
    keys = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    # Bursts and ties: times on a coarse grid.
    times = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    if ints:
        vals = draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=n, max_size=n))
    else:
        # Multiples of 1/4 of moderate size: every order of summation is exact, so SQL agrees exactly.
        vals = draw(
            st.lists(
                st.one_of(st.none(), st.integers(-4000, 4000).map(lambda v: v / 4)), min_size=n, max_size=n
            )
        )
    seq = draw(st.permutations(list(range(n))))
    m = draw(st.integers(0, 20))
    lkeys = draw(st.lists(st.integers(0, 4), min_size=m, max_size=m))
    ltimes = draw(st.lists(st.integers(-10, 80), min_size=m, max_size=m))
    events = pa.table(
        {
            "k": pa.array(keys, pa.int64()),
            "t": pa.array([t * SEC for t in times], TS),
            "x": pa.array(vals, pa.int64() if ints else pa.float64()),
            "seq": pa.array(seq, pa.int64()),
        }
    )
    labels = pa.table({"k": pa.array(lkeys, pa.int64()), "t": pa.array([t * SEC for t in ltimes], TS)})
    return labels, events


def aggs_for(functions, windows=("1s", "5s", "30s", "90s")):
    return [Aggregation("x", f, w) for f in functions for w in windows]


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_float_aggregates_match_duckdb(data):
    labels, events = data
    aggs = aggs_for([f for f in FUNCTIONS if f != "count_distinct"])
    got = window_aggregate(labels, events, on="t", by="k", aggregations=aggs, sequence="seq")
    want = oracle(labels, events, aggs)
    exact = {"sum", "count", "mean", "min", "max", "first", "last"}
    for a in aggs:
        g = got.column(a.name).to_pylist()
        if a.function in exact:
            assert g == want[a.name], a.name
        else:
            assert all(_close(x, y) for x, y in zip(g, want[a.name], strict=True)), (a.name, g, want[a.name])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(ints=True))
def test_integer_aggregates_match_duckdb(data):
    labels, events = data
    aggs = aggs_for(["sum", "count", "count_distinct", "min", "max", "first", "last", "mean", "var_pop"])
    got = window_aggregate(labels, events, on="t", by="k", aggregations=aggs, sequence="seq")
    want = oracle(labels, events, aggs)
    for a in aggs:
        g = got.column(a.name).to_pylist()
        assert all(_close(x, y) for x, y in zip(g, want[a.name], strict=True)), (a.name, g, want[a.name])
    assert got.schema.field(aggs[0].name).type == pa.int64()


finite_or_not = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e300, max_value=1e300),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_values_do_not_depend_on_order_or_on_the_other_labels(data, draw):
    """The invariant the online path relies on: one label alone (as serving evaluates one entity at one
    instant) gets the bits it gets among all labels, and shuffling the events changes no bit."""
    labels, events = data
    n = events.num_rows
    xs = draw.draw(st.lists(finite_or_not, min_size=n, max_size=n))
    events = events.set_column(2, "x", pa.array(xs, pa.float64()))
    aggs = aggs_for([f for f in FUNCTIONS if f != "count_distinct"], windows=("5s", "90s"))
    full = window_aggregate(labels, events, on="t", by="k", aggregations=aggs, sequence="seq")
    perm = np.random.default_rng(n).permutation(n)
    shuffled = window_aggregate(labels, events.take(perm), on="t", by="k", aggregations=aggs, sequence="seq")

    def bits(t: pa.Table, name: str) -> list:
        c = t.column(name)
        if pa.types.is_floating(c.type):
            arr = c.to_numpy(zero_copy_only=False)
            valid = c.is_valid().to_numpy(zero_copy_only=False)
            return [int(v) if ok else None for v, ok in zip(arr.view(np.uint64), valid, strict=True)]
        return c.to_pylist()

    for a in aggs:
        assert bits(full, a.name) == bits(shuffled, a.name), a.name
    for i in range(labels.num_rows):
        one = window_aggregate(labels.slice(i, 1), events, on="t", by="k", aggregations=aggs, sequence="seq")
        for a in aggs:
            assert bits(one, a.name) == bits(full, a.name)[i : i + 1], (a.name, i)


def test_window_bounds_are_open_below_closed_above():
    events = pa.table({"k": [1, 1, 1], "t": pa.array([0, 10 * SEC, 20 * SEC], TS), "x": [1.0, 2.0, 4.0]})
    labels = pa.table({"k": [1, 1, 1, 2], "t": pa.array([20 * SEC, 20 * SEC - 1, -1, 20 * SEC], TS)})
    out = window_aggregate(
        labels,
        events,
        on="t",
        by="k",
        aggregations=[Aggregation("x", "sum", "10s"), Aggregation("x", "count", "10s")],
    )
    # (10 s, 20 s]: the event at exactly 10 s has left; one microsecond earlier it is still in.
    assert out.column("x_sum_10s").to_pylist() == [4.0, 2.0, None, None]
    assert out.column("x_count_10s").to_pylist() == [1, 1, 0, 0]


def test_names_units_inputs_and_label_order():
    aggs = [
        Aggregation("amount", "sum", window=dt.timedelta(days=7)),
        Aggregation("amount", "count", window="1h"),
        Aggregation("amount", "mean", window="30d", name="avg_amount_30d"),
        Aggregation("amount", "stddev_samp", window="4w"),
        Aggregation("amount", "max", window="90s"),
    ]
    assert [a.name for a in aggs] == [
        "amount_sum_7d",
        "amount_count_1h",
        "avg_amount_30d",
        "amount_stddev_samp_28d",
        "amount_max_90s",
    ]
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    events = pd.DataFrame(
        {"user": [1, 1, 2], "ts": [t0, t0 + pd.Timedelta("30min"), t0], "amount": [1.0, 3.0, 5.0]},
        index=[10, 11, 12],
    )
    # From datetime, not pd.Timestamp: polars 1.0 drops the zone of pd.Timestamp values (a naive column).
    t1 = (t0 + pd.Timedelta("1h")).to_pydatetime()
    labels = pl.DataFrame({"user": [2, 1], "ts": [t1, t1]})
    labels = labels.with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    out = window_aggregate(labels, events, on="ts", by="user", aggregations=aggs)
    assert out.column_names == ["user", "ts"] + [a.name for a in aggs]
    assert out.column("amount_sum_7d").to_pylist() == [5.0, 4.0]
    assert out.column("amount_count_1h").to_pylist() == [0, 1]  # (t - 1h, t]: the events at t0 left
    assert out.column("amount_max_90s").to_pylist() == [None, None]


@pytest.mark.parametrize(
    "make, err",
    [
        (lambda: Aggregation("x", "median", "1h"), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", "0s"), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", dt.timedelta(seconds=-5)), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", "401d"), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", "7 days"), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", 7), InvalidArgumentError),
        (lambda: Aggregation("x", "sum", dt.timedelta(microseconds=999_999)), InvalidArgumentError),
    ],
)
def test_bad_definitions(make, err):
    with pytest.raises(err):
        make()


def test_bad_inputs_are_typed_errors():
    events = pa.table({"k": [1], "t": pa.array([0], TS), "s": ["a"], "x": [1.0]})
    labels = pa.table({"k": [1], "t": pa.array([0], TS)})
    run = lambda aggs, **kw: window_aggregate(labels, events, on="t", by="k", aggregations=aggs, **kw)  # noqa: E731
    with pytest.raises(DtypeError):
        run([Aggregation("s", "sum", "1h")])  # sum of a string
    with pytest.raises(DtypeError):
        run([Aggregation("x", "count_distinct", "1h")])  # distinct floats are not counted
    with pytest.raises(MissingColumnError):
        run([Aggregation("nope", "sum", "1h")])
    with pytest.raises(ColumnClashError):
        run([Aggregation("x", "sum", "1h", name="k")])
    with pytest.raises(InvalidArgumentError):
        run([])
    with pytest.raises(InvalidArgumentError):
        run(["x_sum_1h"])
    naive = pa.table({"k": [1], "t": pa.array([0], pa.timestamp("us"))})
    with pytest.raises(SkewlessError):
        window_aggregate(naive, events, on="t", by="k", aggregations=[Aggregation("x", "sum", "1h")])
    assert skewless.window_aggregate is window_aggregate
