"""sk.Canary: serves the old answer, tallies how the new one differs, never lets the new one fail."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import skewless.canary as canary_mod
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import Canary
from skewless.errors import InvalidArgumentError


def test_serves_old_and_counts_mismatches_against_numpy():
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(50, 8))
    c = Canary("f", old=lambda a: a * 2.0, new=lambda a: a * 2.0 + np.where(a > 1.0, 1e-3, 0.0), rtol=1e-6)
    outs = [c(x) for x in xs]
    assert all(np.array_equal(o, x * 2.0) for o, x in zip(outs, xs, strict=True))
    r = c.report()
    diff = np.where(xs > 1.0, 1e-3, 0.0)
    want_bad = int((diff > 1e-6 * np.abs(xs * 2.0)).sum())
    assert (r["calls"], r["values"], r["mismatches"]) == (50, 400, want_bad)
    assert r["mismatch_rate"] == want_bad / 400
    assert r["max_abs_diff"] == pytest.approx(1e-3)
    assert r["mean_abs_diff"] == pytest.approx(diff.mean())
    assert r["median_abs_diff"] == pytest.approx(np.median(diff))
    assert r["old_seconds_mean"] > 0 and r["new_seconds_mean"] > 0
    assert not c.ok


def test_the_basket_size_incident_is_attributed_to_its_feature():
    # Legacy: a lifetime average; the definition: the average of the last 30 days. Other features agree.
    def legacy(history):
        return {"avg_basket": float(np.mean(history)), "n_orders": len(history)}

    def defined(history):
        return {"avg_basket": float(np.mean(history[-30:])), "n_orders": len(history)}

    c = Canary("user_features", old=legacy, new=defined)
    rng = np.random.default_rng(0)
    for n in rng.integers(5, 60, 100):
        c(list(rng.gamma(2.0, 20.0, n)))
    feats = c.report()["features"]
    assert feats["n_orders"]["mismatches"] == 0
    assert feats["avg_basket"]["mismatches"] > 0
    assert feats["avg_basket"]["mismatch_rate"] == feats["avg_basket"]["mismatches"] / 100


def test_new_failures_and_nulls_are_counted_never_raised():
    def bad(x):
        raise ZeroDivisionError("boom")

    c = Canary("x", old=lambda x: x + 1, new=bad)
    assert c(1) == 2
    r = c.report()
    assert r["new_errors"] == 1 and "ZeroDivisionError" in r["last_new_error"] and not c.ok
    n = Canary(
        "n",
        old=lambda: [1.0, None, float("nan"), float("inf")],
        new=lambda: [1.0, 2.0, float("nan"), float("inf")],
    )
    n()
    r = n.report()
    assert (r["null_disagreements"], r["mismatches"]) == (1, 0)
    with pytest.raises(KeyError):  # an error in the old path is the caller's: it propagates
        Canary("o", old=lambda: {}["k"], new=lambda: 1)()


@pytest.mark.parametrize(
    "make",
    [
        lambda v: pa.array(v),
        lambda v: pa.chunked_array([v[:1], v[1:]]),
        lambda v: pd.Series(v, dtype="Float64"),
        lambda v: pl.Series(v),
        lambda v: np.array([np.nan if x is None else x for x in v]),
    ],
)
def test_array_kinds(make):
    c = Canary("k", old=lambda: make([1.0, None, 3.0]), new=lambda: make([1.0, None, 3.5]))
    c()
    r = c.report()
    assert r["values"] == 3 and r["mismatches"] == 1 and r["max_abs_diff"] == 0.5


def test_strings_compare_by_equality_and_lengths_must_match():
    c = Canary("s", old=lambda: ["a", "b"], new=lambda: ["a", "c"])
    c()
    assert c.report()["mismatches"] == 1 and c.report()["max_abs_diff"] is None
    d = Canary("len", old=lambda: [1.0, 2.0], new=lambda: [1.0])
    d()
    assert d.report()["mismatches"] == 2


def test_median_sample_stays_bounded(monkeypatch):
    monkeypatch.setattr(canary_mod, "SAMPLE", 1000)
    c = Canary("big", old=lambda a: a, new=lambda a: a + np.abs(np.sin(a)), rtol=0.0)
    xs = np.arange(20_000, dtype=float)
    for part in np.array_split(xs, 20):
        c(part)
    t = c._all
    assert len(t.sample) == 1000 and t.seen == 20_000
    assert c.report()["median_abs_diff"] == pytest.approx(np.median(np.abs(np.sin(xs))), abs=0.05)


def test_threads_share_one_canary():
    c = Canary("t", old=lambda x: x, new=lambda x: x)
    threads = [threading.Thread(target=lambda: [c(i) for i in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.report()["calls"] == 2000 and c.ok


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20), st.floats(0, 1))
def test_identical_answers_always_agree(xs, rtol):
    c = Canary("same", old=lambda: list(xs), new=lambda: list(xs), rtol=rtol)
    c()
    assert c.ok


@pytest.mark.parametrize(
    "kw",
    [dict(name=""), dict(old=3), dict(rtol=-1.0), dict(atol="0"), dict(rtol=True)],
)
def test_bad_arguments(kw):
    args = dict(name="c", old=lambda: 1, new=lambda: 1) | kw
    with pytest.raises(InvalidArgumentError):
        Canary(**args)
