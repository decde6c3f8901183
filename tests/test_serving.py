"""Online serving through the store: readers, TTL at read time, multi-view lookups."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pytest
from conftest import DAY, TS, at, merchant, snapshot, stats_rows, stats_view, user
from skewless import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
    Int32,
)
from skewless.errors import (
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    UnknownFeatureError,
)


def test_online_ttl_applies_at_read_time(store):
    store.write("stats", stats_rows([1, 2], [0, 5], [1.0, 2.0]))
    r = store.get_online_features(
        ["stats:spend", "stats:n"], [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], as_of=at(2)
    )
    # User 2's value is from day 5: not served at day 2 (issue 7 §7: never a value from the future).
    assert r.to_dict()["spend"] == [1.0, None, None]
    assert list(r.statuses["spend"]) == [0, 3, 1]
    r = store.get_online_features(
        ["stats:spend"], {"user_id": [1, 2, 3]}, as_of=at(2) + dt.timedelta(microseconds=1)
    )
    assert r.to_dict()["spend"] == [None, None, None]
    assert list(r.statuses["spend"]) == [2, 3, 1]
    r = store.get_online_features(["stats:spend"], {"user_id": [1, 2, 3]}, as_of=at(5))
    assert r.to_dict()["spend"] == [None, 2.0, None]
    assert list(r.statuses["spend"]) == [2, 0, 1]
    np.testing.assert_array_equal(r.to_numpy()[:, 0], [np.nan, 2.0, np.nan])
    assert list(r.to_pandas().columns) == ["user_id", "spend"]
    # Default as_of is now: day-0 rows in 2026 are long expired with a 2-day TTL... unless now is near.
    now = dt.datetime.now(dt.timezone.utc)
    r = store.get_online_features(["stats:spend"], {"user_id": [1]})
    assert r.to_dict()["spend"] == ([None] if now > at(2) else [1.0])


def test_online_reader_multi_view_numpy(tmp_path):
    s = FeatureStore(tmp_path)
    a = FeatureView("a", [user], [Field("x", Float64), Field("y", Float64)])
    m = FeatureView("m", [merchant], [Field("risk", Float64)], ttl=DAY)
    s.apply([user, merchant, a, m])
    s.write(
        "a",
        {"user_id": [1, 2], "event_timestamp": pa.array([at(0)] * 2, TS), "x": [1.0, 2.0], "y": [None, 4.0]},
    )
    s.write("m", {"merchant_id": [10], "event_timestamp": pa.array([at(0)], TS), "risk": [0.5]})
    r = s.online_reader(["a:y", "m:risk", "a:x"])
    assert r.views == ["a", "m"] and r.feature_names == ["y", "x", "risk"]
    vals, st = r.get_numpy({"user_id": [1, 2, 3], "merchant_id": [10, 10, 11]}, as_of=at(0.5))
    np.testing.assert_array_equal(vals, [[np.nan, 1.0, 0.5], [4.0, 2.0, 0.5], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(st, [[0, 0], [0, 0], [1, 1]])
    one = s.online_reader(["a:x"])
    v, st = one.get_numpy([2, 1], as_of=at(0))
    np.testing.assert_array_equal(v[:, 0], [2.0, 1.0])
    assert st.shape == (2, 1)
    with pytest.raises(MissingColumnError):
        r.get({"user_id": [1]})
    with pytest.raises(UnknownFeatureError):
        s.online_reader(["a:zz"])


def test_online_reader_refuses_offline_only_views(tmp_path):
    s = FeatureStore(tmp_path)
    v = FeatureView("off", [user], [Field("x", Float64)], online=False)
    s.apply([user, v])
    s.write("off", {"user_id": [1], "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    assert not os.path.exists(os.path.join(s.path, "online")) or "off" not in s._online().views()
    with pytest.raises(InvalidArgumentError, match="online=False"):
        s.online_reader(["off:x"])


def test_a_response_says_when_it_was_served_and_from_which_definitions(store):
    store.write("stats", stats_rows([1], [0], [1.0]))
    r = store.online_reader(["stats:spend"])
    resp = r.get({"user_id": [1, 2]}, as_of=at(1))
    assert resp.served_at == at(1) and resp.served_at.tzinfo is not None
    assert dict(resp.versions) == {"stats": 1}
    assert resp.status.tolist() == [[0], [1]]
    before = dt.datetime.now(dt.timezone.utc)
    resp = r.get({"user_id": [1]})
    assert before <= resp.served_at <= dt.datetime.now(dt.timezone.utc)
    # A new definition version is served by a new reader, which reports it.
    store.apply([stats_view(description="changed")])
    assert dict(store.get_online_features(["stats:spend"], {"user_id": [1]}).versions) == {"stats": 2}


def test_get_keeps_nulls_and_nans_apart(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, FeatureView("a", [user], [Field("x", Float64)])])
    s.write("a", {"user_id": [1, 2], "event_timestamp": pa.array([at(0)] * 2, TS), "x": [None, float("nan")]})
    resp = s.online_reader(["a:x"]).get({"user_id": [1, 2]}, as_of=at(1))
    x = resp.to_arrow().column("x")
    assert x.is_null().to_pylist() == [True, False]
    assert np.isnan(x[1].as_py())


def test_a_view_without_online_data_is_served_once_written(tmp_path):
    s = FeatureStore(tmp_path)
    a = FeatureView("a", [user], [Field("x", Float64)])
    m = FeatureView("m", [merchant], [Field("risk", Float64)])
    s.apply([user, merchant, a, m])
    r = s.online_reader(["a:x", "m:risk"])
    rows = {"user_id": [1], "merchant_id": [10]}
    v, st = r.get_numpy(rows, as_of=at(1))
    assert np.isnan(v).all() and st.tolist() == [[1, 1]]
    assert r.get(rows, as_of=at(1)).to_dict() == {
        "user_id": [1],
        "merchant_id": [10],
        "x": [None],
        "risk": [None],
    }
    s.write("m", {"merchant_id": [10], "event_timestamp": pa.array([at(0)], TS), "risk": [0.5]})
    v, st = r.get_numpy(rows, as_of=at(1))
    assert st.tolist() == [[1, 0]] and v[0, 1] == 0.5


@pytest.mark.parametrize(
    "key",
    [2**40, -(2**40), 2**70, "7", 1.0, 1.5, True, b"7"],
)
def test_a_key_that_does_not_fit_the_key_type_is_a_dtype_error(tmp_path, key):
    s = FeatureStore(tmp_path)
    e = Entity("e", join_keys=["id"], dtype=Int32)
    s.apply([e, FeatureView("v", [e], [Field("x", Float64)])])
    s.write("v", {"id": pa.array([7], pa.int32()), "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    before = snapshot(s.path)
    r = s.online_reader(["v:x"])
    with pytest.raises(DtypeError):
        r.get_numpy({"id": [key]}, as_of=at(1))
    with pytest.raises(DtypeError):
        r.get({"id": [key]}, as_of=at(1))
    with pytest.raises(DtypeError):
        s._online().reader("v").get_numpy([key], as_of=at(1))
    with pytest.raises(DtypeError):
        s._online().reader("v").get([key], as_of=at(1))
    assert snapshot(s.path) == before
    # In range, every integer form finds the key.
    for k in ([7], np.array([7], np.int64), np.array([7], np.uint8), pa.array([7], pa.int64())):
        assert r.get_numpy({"id": k}, as_of=at(1))[0].tolist() == [[1.0]]


def test_keys_given_as_arrow_or_frames_are_checked_too(tmp_path):
    s = FeatureStore(tmp_path)
    e = Entity("e", join_keys=["id"], dtype=Int32)
    s.apply([e, FeatureView("v", [e], [Field("x", Float64)])])
    s.write("v", {"id": pa.array([7], pa.int32()), "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    r = s.online_reader(["v:x"])
    for bad in (
        pa.table({"id": pa.array([2**40], pa.int64())}),
        {"id": pa.array([2**40])},
        {"id": np.array([2**40])},
        {"id": pa.array(["7"])},
        {"id": np.array([7.0])},
    ):
        with pytest.raises(DtypeError):
            r.get_numpy(bad, as_of=at(1))
    assert r.get_numpy(pa.table({"id": pa.array([7, None], pa.int64())}), as_of=at(1))[1].tolist() == [
        [0],
        [1],
    ]
