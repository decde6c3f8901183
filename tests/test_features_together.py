"""Window aggregates, transforms, imputation and the served-feature log used together: what works across
them, and what is refused with a typed error (and writes nothing) until it is built."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import skewless as sk
from conftest import T0, TS, at, snapshot, stats_rows, stats_view, user


def _txn():
    return sk.FeatureView(
        "txn",
        [user],
        schema=[sk.Field("amount", sk.Float64)],
        aggregations=[
            sk.Aggregation("amount", "sum", window="7d"),
            sk.Aggregation("amount", "count", window="1h"),
        ],
    )


@pytest.fixture
def events_store(tmp_path):
    s = sk.FeatureStore(tmp_path / "s")
    s.apply([user, _txn(), stats_view()])
    s.push(
        "txn",
        {
            "user_id": [1, 1, 2],
            "event_timestamp": pa.array([T0, T0 + dt.timedelta(hours=2), T0], TS),
            "amount": [1.0, 2.5, 5.0],
        },
    )
    s.write("stats", stats_rows([1, 2], [0, 0], [10.0, None], [1, 2]))
    return s


def test_transforms_over_window_features_agree_online_and_offline(events_store):
    s = events_store
    tv = sk.TransformView(
        "tv", transforms=[sk.log1p("txn:amount_sum_7d"), sk.clip("txn:amount_count_1h", 0, 1)]
    )
    s.apply([tv])
    feats = ["tv:amount_sum_7d_log1p", "tv:amount_count_1h_clip", "stats:spend"]
    users = [1, 2, 3]
    for t in [T0 + dt.timedelta(hours=h) for h in (0, 1, 2, 3, 24 * 7 + 1, 24 * 8)]:
        online = s.get_online_features(feats, {"user_id": users}, as_of=t).to_arrow()
        offline = s.get_historical_features(
            pa.table({"user_id": users, "event_timestamp": pa.array([t] * 3, TS)}), feats
        )
        for f in ["amount_sum_7d_log1p", "amount_count_1h_clip", "spend"]:
            assert online.column(f).to_pylist() == offline.column(f).to_pylist(), (t, f)
    # The values themselves, at one instant: a 7-day sum of 1.0 + 2.5 for user 1, one event in the hour.
    got = s.get_online_features(feats, {"user_id": [1]}, as_of=T0 + dt.timedelta(hours=2)).to_dict()
    assert got["amount_sum_7d_log1p"] == [pytest.approx(1.5040773967762742)]
    assert got["amount_count_1h_clip"] == [1.0]


def test_a_zscore_of_a_window_feature_needs_statistics_of_that_feature(events_store):
    # Statistics artifacts cover a view's stored columns; an event view stores raw events, so there is no
    # artifact of an aggregate to take a mean from, and apply refuses with a typed error.
    s = events_store
    st = s.compute_statistics("txn")
    before = snapshot(s.path)
    with pytest.raises(sk.errors.UnknownFeatureError, match="does not cover feature 'amount_sum_7d'"):
        s.apply([sk.TransformView("tz", transforms=[sk.zscore("txn:amount_sum_7d", stats=st.version)])])
    assert snapshot(s.path) == before


def test_imputation_on_an_event_view_is_refused(tmp_path):
    with pytest.raises(sk.errors.InvalidArgumentError, match="not supported yet"):
        sk.FeatureView(
            "ev",
            [user],
            schema=[sk.Field("amount", sk.Float64)],
            aggregations=[sk.Aggregation("amount", "sum", window="7d")],
            impute=[sk.Impute("amount", "constant", 0.0)],
        )


def test_a_transform_view_is_logged_and_checked(events_store):
    # log=True was refused for a transform view before the log recorded transform outputs; it now logs
    # the outputs (here of a window feature and of a plain one) and the check rebuilds them.
    s = events_store
    s.apply([sk.TransformView("tv", transforms=[sk.log1p("stats:spend"), sk.log1p("txn:amount_sum_7d")])])
    with s.online_reader(["tv:spend_log1p", "tv:amount_sum_7d_log1p"], log=True) as r:
        r.get_numpy([1, 2], as_of=at(1))
    s.get_online_features(["tv:spend_log1p"], {"user_id": [1]}, as_of=at(1), log=True)
    s.flush_logs()
    log = s.read_log()
    assert log["tv:spend_log1p"].num_rows == 3
    assert log["tv:amount_sum_7d_log1p"].column("tv:amount_sum_7d_log1p").to_pylist() == [
        pytest.approx(1.5040773967762742),
        pytest.approx(1.791759469228055),
    ]
    report = s.check_skew()
    assert report.alerts == [] and report.features["tv:amount_sum_7d_log1p"]["rows"] == 2


def test_window_features_are_logged_and_checked_with_the_plain_ones(events_store):
    s = events_store
    t = at(1)
    with s.online_reader(["txn:amount_sum_7d", "stats:spend"], log=True) as r:
        values, status = r.get_numpy({"user_id": [1, 2]}, as_of=t)
    assert values[:, 0].tolist() == [3.5, 5.0]
    log = s.read_log()["txn:amount_sum_7d"]
    assert log.column("txn:amount_sum_7d").to_pylist() == [3.5, 5.0]
    report = s.check_skew()
    assert report.alerts == []
    assert report.features["txn:amount_sum_7d"]["rows"] == 2
    assert report.features["stats:spend"]["rows"] == 2
    e = s.explain("txn:amount_sum_7d", {"user_id": 1}, t)
    assert e.value == 3.5 and [r["value"] for r in e.rows] == [1.0, 2.5]
    assert [x["value"] for x in e.served] == [3.5] and not e.served[0]["differs"]
