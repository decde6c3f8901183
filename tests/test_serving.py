"""Online serving through the store: readers, TTL at read time, multi-view lookups."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pytest
from conftest import DAY, TS, at, merchant, stats_rows, user
from skewless import (
    FeatureStore,
    FeatureView,
    Field,
    Float64,
)
from skewless.errors import (
    InvalidArgumentError,
    MissingColumnError,
    UnknownFeatureError,
)


def test_online_ttl_applies_at_read_time(store):
    store.write("stats", stats_rows([1, 2], [0, 5], [1.0, 2.0]))
    r = store.get_online_features(
        ["stats:spend", "stats:n"], [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], as_of=at(2)
    )
    assert r.to_dict()["spend"] == [1.0, 2.0, None]
    r = store.get_online_features(
        ["stats:spend"], {"user_id": [1, 2, 3]}, as_of=at(2) + dt.timedelta(microseconds=1)
    )
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
