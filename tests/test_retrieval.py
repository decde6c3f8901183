"""get_historical_features: point-in-time training sets."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import skewless
from conftest import TS, at, stats_rows, user
from skewless import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
)
from skewless.errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    UnknownFeatureError,
)


def test_historical_basics_ttl_and_order(store):
    store.write("stats", stats_rows([1, 1, 2], [0, 1, 0], [1.0, 2.0, 3.0]))
    labels = pd.DataFrame(
        {
            "user_id": [2, 1, 1, 1, 3, 1],
            "event_timestamp": pd.to_datetime([at(1), at(0.5), at(1), at(3), at(1), at(-1)]),
            "label": [1, 0, 1, 0, 1, 1],
        }
    )
    out = store.get_historical_features(labels, ["stats:spend"])
    assert out.column_names == ["user_id", "event_timestamp", "label", "spend"]
    # ttl 2 days: the day-1 row still matches at day 3 (boundary inclusive); nothing matches before day 0.
    assert out.column("spend").to_pylist() == [3.0, 1.0, 2.0, 2.0, None, None]
    assert out.column("label").to_pylist() == [1, 0, 1, 0, 1, 1]
    far = {"user_id": [1], "event_timestamp": pa.array([at(3) + dt.timedelta(microseconds=1)], TS)}
    assert store.get_historical_features(far, ["stats:spend"]).column("spend").to_pylist() == [None]


def test_historical_errors(store):
    store.write("stats", stats_rows([1], [0], [1.0]))
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    with pytest.raises(UnknownFeatureError):
        store.get_historical_features(lab, ["stats:nope"])
    with pytest.raises(UnknownFeatureError):
        store.get_historical_features(lab, ["nope:x"])
    with pytest.raises(InvalidArgumentError):
        store.get_historical_features(lab, ["spend"])
    with pytest.raises(MissingColumnError, match="timestamp_column"):
        store.get_historical_features({"user_id": [1]}, ["stats:spend"])
    with pytest.raises(MissingColumnError, match="user_id"):
        store.get_historical_features({"event_timestamp": pa.array([at(1)], TS)}, ["stats:spend"])
    with pytest.raises(NaiveTimestampError):
        store.get_historical_features(
            {"user_id": [1], "event_timestamp": pa.array([1], pa.timestamp("us"))}, ["stats:spend"]
        )
    with pytest.raises(ColumnClashError, match="full_feature_names=True"):
        store.get_historical_features({**lab, "spend": [0.0]}, ["stats:spend"])
    out = store.get_historical_features({**lab, "spend": [0.0]}, ["stats:spend"], full_feature_names=True)
    assert out.column("stats__spend").to_pylist() == [1.0]


def test_historical_name_clash_between_views(tmp_path):
    s = FeatureStore(tmp_path)
    a = FeatureView("a", [user], [Field("x", Float64)])
    b = FeatureView("b", [user], [Field("x", Float64)])
    s.apply([user, a, b])
    for v, val in (("a", 1.0), ("b", 2.0)):
        s.write(v, {"user_id": [1], "event_timestamp": pa.array([at(0)], TS), "x": [val]})
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    with pytest.raises(ColumnClashError, match="full_feature_names=True"):
        s.get_historical_features(lab, ["a:x", "b:x"])
    out = s.get_historical_features(lab, FeatureService("svc", ["a:x", "b:x"]), full_feature_names=True)
    assert out.column_names[-2:] == ["a__x", "b__x"]
    assert out.column("b__x").to_pylist() == [2.0]


def test_historical_empty_inputs_and_empty_views(store):
    lab = {"user_id": pa.array([], pa.int64()), "event_timestamp": pa.array([], TS)}
    assert store.get_historical_features(lab, ["stats:spend"]).num_rows == 0
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    out = store.get_historical_features(lab, ["stats:spend", "stats:n"])
    assert out.column("spend").to_pylist() == [None] and out.schema.field("n").type == pa.int64()


def test_entity_df_nulls_polars_and_narrower_keys(tmp_path):
    s = FeatureStore(tmp_path)
    small = Entity("small", join_keys=["sid"], dtype=skewless.Int32)
    fv = FeatureView("v", [small], [Field("x", Float64)])
    s.apply([small, fv])
    s.write("v", {"sid": pa.array([1], pa.int32()), "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    # pandas/polars give int64 keys: values that fit the declared Int32 are accepted.
    lab = pl.DataFrame(
        {"sid": [1, None, 1, 2], "event_timestamp": [at(1), at(1), None, at(1)]},
        schema={"sid": pl.Int64, "event_timestamp": pl.Datetime("us", "UTC")},
    )
    out = s.get_historical_features(lab, ["v:x"])
    # A null key or a null time matches nothing; the rows stay.
    assert out.column("x").to_pylist() == [1.0, None, None, None]
    with pytest.raises(DtypeError):
        s.get_historical_features({"sid": [2**40], "event_timestamp": pa.array([at(1)], TS)}, ["v:x"])
