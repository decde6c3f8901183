"""Every public argument is checked at the boundary: a value of the wrong kind raises a
skewless.errors exception (naming the argument) or the call succeeds, never another exception type,
for asof_join, FeatureStore.write, get_historical_features and the online readers."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import skewless
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureService, FeatureStore, FeatureView, Field, Float64
from skewless.errors import InvalidArgumentError, MissingColumnError, SkewlessError

T = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")


class Opaque:
    """An object of no kind skewless knows."""


# Values of every kind a caller might pass by mistake: scalars, containers, frames, arrays, times.
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()), max_size=3),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.lists(st.integers(), max_size=2), max_size=2),
    st.sampled_from(
        [
            Opaque(),
            object,
            set(),
            frozenset({"k"}),
            b"k",
            bytearray(b"k"),
            np.int64(3),
            np.float32(0.5),
            np.bool_(True),
            np.array([1, 2]),
            np.array([["k"]]),
            np.timedelta64(1, "s"),
            np.timedelta64(3, "ns"),
            np.timedelta64("NaT"),
            np.datetime64("2026-01-01"),
            dt.timedelta(seconds=-1),
            dt.timedelta(days=1),
            T,
            dt.datetime(2026, 1, 1),
            dt.date(2026, 1, 1),
            pd.Timestamp("2026-01-01"),
            pd.Timedelta(1, "ns"),
            pd.NA,
            pd.NaT,
            pd.Series([1, 2]),
            pd.Series(["k"], name="k"),
            pd.DataFrame({"a": [1]}),
            pd.DataFrame(),
            pd.Index(["k"]),
            pl.Series("k", [1]),
            pl.DataFrame({"a": [1]}),
            pl.DataFrame({"a": [1]}).lazy(),
            pa.array([1]),
            pa.chunked_array([[1]]),
            pa.table({"a": [1]}),
            pa.scalar(1),
            float("inf"),
            "",
            "k",
            "t",
            "backward",
            "1d",
            "-1s",
            "view:x",
            ["view:x"],
            [{"user_id": 1}],
            [{"nope": 1}],
            [(1,)],
            {"user_id": [1]},
            {"user_id": "abc"},
            {"user_id": [None]},
            {"user_id": pd.Series([1, None], dtype="Int64")},
            {"user_id": pl.Series([1, 2])},
        ]
    ),
)


def outcome(call):
    """Run ``call``: success, or a SkewlessError; any other exception fails the test."""
    try:
        call()
    except SkewlessError:
        return "error"
    return "ok"


# ---- asof_join ---------------------------------------------------------------------------------------------

LEFT = pa.table({"k": [1, 2], "t": pa.array([10, 20], TS), "y": [0, 1]})
RIGHT = pa.table({"k": [1, 2], "t": pa.array([5, 15], TS), "c": pa.array([1, 2], TS), "x": [0.5, 1.5]})
ASOF = {
    "left": LEFT,
    "right": RIGHT,
    "on": "t",
    "by": "k",
    "direction": "backward",
    "tolerance": None,
    "allow_exact_matches": True,
    "tie_breaker": None,
    "suffix": None,
}


def test_the_baseline_call_succeeds():
    assert skewless.asof_join(**ASOF).num_rows == 2


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(ASOF)), WRONG)
def test_asof_join_arguments(name, value):
    outcome(lambda: skewless.asof_join(**{**ASOF, name: value}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("allow_exact_matches", "no"),
        ("allow_exact_matches", 1),
        ("on", ["t"]),
        ("by", 5),
        ("by", ["k", 5]),
        ("direction", ["backward"]),
        ("tolerance", 1.5),
        ("tie_breaker", 3),
        ("suffix", b"_r"),
    ],
)
def test_a_wrong_asof_argument_is_named(name, value):
    with pytest.raises(InvalidArgumentError, match=name):
        skewless.asof_join(**{**ASOF, name: value})


# ---- the store ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = FeatureStore(tmp_path_factory.mktemp("args"))
    user = Entity("user")
    view = FeatureView("view", [user], [Field("x", Float64)], ttl=dt.timedelta(days=1))
    s.apply([user, view, FeatureService("svc", ["view:x"])])
    s.write("view", {"user_id": [1, 2], "event_timestamp": pa.array([T, T], TS), "x": [0.5, 1.5]})
    return s


def history_files(store):
    root = os.path.join(store.path, "offline")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(st.sampled_from(["view", "data"]), WRONG)
def test_write_arguments(store, name, value):
    args = {"view": "view", "data": {"user_id": [3], "event_timestamp": pa.array([T], TS), "x": [2.5]}}
    before = history_files(store)
    if outcome(lambda: store.write(**{**args, name: value})) == "error":
        assert history_files(store) == before  # nothing written


HIST = {
    "entity_df": {"user_id": [1, 2], "event_timestamp": pa.array([T, T], TS)},
    "features": ["view:x"],
    "full_feature_names": False,
    "timestamp_column": "event_timestamp",
}


@SETTINGS
@given(st.sampled_from(sorted(HIST)), WRONG)
def test_get_historical_features_arguments(store, name, value):
    outcome(lambda: store.get_historical_features(**{**HIST, name: value}))


ONLINE = {"features": ["view:x"], "entity_rows": {"user_id": [1, 5]}, "full_feature_names": False, "as_of": T}


@SETTINGS
@given(st.sampled_from(sorted(ONLINE)), WRONG)
def test_get_online_features_arguments(store, name, value):
    outcome(lambda: store.get_online_features(**{**ONLINE, name: value}))


@SETTINGS
@given(st.sampled_from(["features", "full_feature_names", "entity_rows", "as_of"]), WRONG)
def test_online_reader_arguments(store, name, value):
    def call():
        reader = store.online_reader(
            value if name == "features" else ["view:x"],
            full_feature_names=value if name == "full_feature_names" else False,
        )
        rows = value if name == "entity_rows" else {"user_id": [1, 5]}
        as_of = value if name == "as_of" else T
        reader.get(rows, as_of=as_of)
        reader.get_numpy(rows, as_of=as_of)

    outcome(call)


def test_the_store_baselines_succeed(store):
    assert store.get_historical_features(**HIST).column("x").to_pylist() == [0.5, 1.5]
    assert store.get_online_features(**ONLINE).to_dict()["x"] == [0.5, None]
    assert store.get_online_features(**{**ONLINE, "features": FeatureService("svc", ["view:x"])}).to_dict()


def test_a_wrong_store_argument_is_named(store):
    cases = [
        (lambda: store.write(5, {}), "feature view name"),
        (lambda: store.get_historical_features(HIST["entity_df"], 5), "features"),
        (
            lambda: store.get_historical_features(HIST["entity_df"], ["view:x"], full_feature_names="no"),
            "full_",
        ),
        (
            lambda: store.get_historical_features(HIST["entity_df"], ["view:x"], timestamp_column=5),
            "timestamp_",
        ),
        (lambda: store.get_online_features("view:x", {"user_id": [1]}), "features"),
        (lambda: store.get_online_features(["view:x"], 5), "entity_rows"),
        (lambda: store.online_reader(["view:x"], full_feature_names=1), "full_feature_names"),
    ]
    for call, name in cases:
        with pytest.raises(InvalidArgumentError, match=name):
            call()
    # A Series of references is a list of references.
    got = store.get_historical_features(HIST["entity_df"], pd.Series(["view:x"]))
    assert got.column("x").to_pylist() == [0.5, 1.5]


def test_history_and_materialize_arguments(store):
    with pytest.raises(MissingColumnError, match="nope"):
        store.read_history("view", ["x", "nope"])
    with pytest.raises(InvalidArgumentError, match="columns"):
        store.read_history("view", 5)
    assert store.read_history("view", ("x",)).column_names == ["x"]
    for bad in (5, [5], "view:x"):
        with pytest.raises(SkewlessError):
            store.materialize(None, T, views=bad)
    with pytest.raises(InvalidArgumentError, match="views"):
        store.materialize_incremental(T, views=3)
    with pytest.raises(InvalidArgumentError):
        store.materialize("yesterday", T)
