"""The one duration parser (skewless.durations): every form exact, against independent oracles."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from skewless import Entity, FeatureView, Field, Float64
from skewless.durations import to_micros, to_timedelta
from skewless.errors import InvalidArgumentError

# Seconds per unit, written out independently of the module's table.
SECONDS = {
    "W": Fraction(604_800),
    "D": Fraction(86_400),
    "h": Fraction(3_600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 10**3),
    "us": Fraction(1, 10**6),
    "ns": Fraction(1, 10**9),
    "ps": Fraction(1, 10**12),
}
TEXT = {"w": "W", "d": "D", "h": "h", "m": "m", "s": "s", "ms": "ms", "us": "us", "ns": "ns"}


@given(st.integers(-(10**9), 10**9), st.sampled_from(sorted(SECONDS)))
def test_timedelta64_of_any_unit_is_exact_or_refused(n, unit):
    micros = n * SECONDS[unit] * 10**6
    value = np.timedelta64(n, unit)
    if micros.denominator != 1:
        with pytest.raises(InvalidArgumentError, match="whole number of microseconds"):
            to_micros(value, "x", allow_negative=True)
    else:
        assert to_micros(value, "x", allow_negative=True) == micros
        if n < 0:
            with pytest.raises(InvalidArgumentError, match="negative"):
                to_micros(value, "x")


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(TEXT))), min_size=1, max_size=4))
def test_duration_strings_sum_their_terms(terms):
    text = "".join(f"{n}{u}" for n, u in terms)
    micros = sum(n * SECONDS[TEXT[u]] for n, u in terms) * 10**6
    if micros.denominator != 1:
        with pytest.raises(InvalidArgumentError):
            to_micros(text, "x")
    else:
        assert to_micros(text, "x") == micros
        assert to_micros("-" + text, "x", allow_negative=True) == -micros


@given(st.timedeltas(min_value=dt.timedelta(0)))
def test_timedeltas_and_pandas_timedeltas(td):
    assert to_micros(td, "x") == td // dt.timedelta(microseconds=1)
    if abs(td) < dt.timedelta(days=100_000):
        assert to_micros(pd.Timedelta(td), "x") == td // dt.timedelta(microseconds=1)


def test_pandas_nanoseconds_are_not_dropped():
    assert to_micros(pd.Timedelta(microseconds=5, nanoseconds=0), "x") == 5
    with pytest.raises(InvalidArgumentError, match="microseconds"):
        to_micros(pd.Timedelta(microseconds=5, nanoseconds=1), "x")


@pytest.mark.parametrize(
    "bad",
    [
        5,
        1.5,
        True,
        None,
        "",
        "5",
        "5 parsecs",
        "1mo",
        "2y",
        "s",
        "1h 30m",
        np.timedelta64("NaT"),
        np.timedelta64(1, "M"),
        np.timedelta64(1, "Y"),
        np.timedelta64(5),
        [1],
        b"1s",
    ],
)
def test_everything_else_is_refused_with_the_accepted_forms(bad):
    with pytest.raises(InvalidArgumentError, match=r"tolerance") as info:
        to_micros(bad, "tolerance")
    assert "timedelta" in str(info.value) or "whole number" in str(info.value)


def test_calendar_units_say_why():
    with pytest.raises(InvalidArgumentError, match="fixed length"):
        to_micros("1mo", "ttl")
    with pytest.raises(InvalidArgumentError, match="calendar"):
        to_micros(np.timedelta64(1, "M"), "ttl")


def test_to_timedelta_range():
    assert to_timedelta("4w", "ttl") == dt.timedelta(weeks=4)
    with pytest.raises(InvalidArgumentError, match="longest"):
        to_timedelta(np.timedelta64(10**9, "W"), "ttl")


@pytest.mark.parametrize(
    "ttl", ["7d", "1w", np.timedelta64(7, "D"), np.timedelta64(604_800_000, "ms"), pd.Timedelta(days=7)]
)
def test_feature_view_ttl_takes_every_form(ttl):
    fv = FeatureView("v", [Entity("user")], [Field("x", Float64)], ttl=ttl)
    assert fv.ttl == dt.timedelta(days=7) and type(fv.ttl) is dt.timedelta


@pytest.mark.parametrize("ttl", ["-1d", dt.timedelta(seconds=-1), np.timedelta64(1, "ns"), "7", 7, "30 days"])
def test_feature_view_ttl_refusals(ttl):
    with pytest.raises(InvalidArgumentError, match="ttl"):
        FeatureView("v", [Entity("user")], [Field("x", Float64)], ttl=ttl)
