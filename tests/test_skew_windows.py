"""check_skew and explain over window features (event views): each logged lookup rebuilt from the events
of its key inside the window and written by its known_at, with the serving kernel, against a brute-force
oracle; the store's own served values raise no alert, a late backfill raises none, a legacy path serving
the wrong window is caught on that feature only."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import skewless as sk
from conftest import T0, TS, at, user
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless.definitions import TIMESTAMP_TYPE
from skewless.offline import SEQ
from skewless.skew import _windows

S = 1_000_000  # one second in microseconds

AGGS = [
    sk.Aggregation("x", "sum", window="3s"),
    sk.Aggregation("x", "count", window="2s"),
    sk.Aggregation("x", "max", window="5s"),
    sk.Aggregation("x", "last", window="1s"),
]

events_st = st.lists(
    st.tuples(
        st.integers(0, 3),  # key
        st.integers(0, 12),  # timestamp, seconds
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),  # value
        st.integers(0, 30),  # written at
    ),
    max_size=40,
)
lookups_st = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 14), st.integers(0, 35)), min_size=1, max_size=30
)


def oracle(events, lookups):
    out = {a.name: [] for a in AGGS}
    for key, t, known in lookups:
        for a in AGGS:
            w = a.window_us // S
            inside = [
                (ts, seq, x)
                for seq, (k, ts, x, kn) in enumerate(events)
                if k == key and t - w < ts <= t and kn <= known
            ]
            if a.function == "count":
                out[a.name].append(len(inside))
            elif not inside:
                out[a.name].append(None)
            elif a.function == "sum":
                out[a.name].append(math.fsum(x for _, _, x in inside))
            elif a.function == "max":
                out[a.name].append(max(x for _, _, x in inside))
            else:
                out[a.name].append(max(inside)[2])
    return out


@settings(max_examples=150, deadline=None)
@given(events=events_st, lookups=lookups_st)
def test_window_rebuild_matches_the_oracle(events, lookups):
    fv = sk.FeatureView("ev", [user], [sk.Field("x", sk.Float64)], aggregations=AGGS)
    hist = pa.table(
        {
            "user_id": pa.array([e[0] for e in events], pa.int64()),
            "event_timestamp": pa.array([e[1] * S for e in events], pa.int64()).cast(TIMESTAMP_TYPE),
            "x": pa.array([e[2] for e in events], pa.float64()),
            SEQ: pa.array(range(len(events)), pa.int64()),
            "__known__": pa.array([e[3] for e in events], pa.int64()),
        }
    )
    keys = pa.table({"user_id": pa.array([k for k, _, _ in lookups], pa.int64())})
    t = np.array([x * S for _, x, _ in lookups], np.int64)
    known = np.array([k for _, _, k in lookups], np.int64)
    names = [a.name for a in AGGS]
    got = _windows(fv, names, hist, keys, t, known)
    want = oracle(events, lookups)
    for name, col in zip(names, got, strict=True):
        assert col.to_pylist() == want[name], name


def _txn():
    return sk.FeatureView(
        "txn",
        [user],
        schema=[sk.Field("amount", sk.Float64)],
        aggregations=[
            sk.Aggregation("amount", "sum", window="7d"),
            sk.Aggregation("amount", "mean", window="7d"),
            sk.Aggregation("amount", "count", window="1h"),
        ],
    )


FEATS = ["txn:amount_sum_7d", "txn:amount_mean_7d", "txn:amount_count_1h"]


def _store(tmp_path, serve=False):
    """A store with 30 days of events of 5 users pushed five days at a time; with ``serve``, user 1..6 are
    served (and logged) after each push at instants the online window state can answer."""
    s = sk.FeatureStore(tmp_path / "s")
    s.apply([user, _txn()])
    rng = np.random.default_rng(7)
    reader = s.online_reader(FEATS, log=True) if serve else None
    for day in range(0, 30, 5):
        n = 60
        secs = np.sort(rng.integers(day * 86400, (day + 5) * 86400, n))
        # Amounts that do not add up exactly in floating point.
        s.push(
            "txn",
            {
                "user_id": rng.integers(1, 6, n),
                "event_timestamp": pa.array([T0 + dt.timedelta(seconds=int(x)) for x in secs], TS),
                "amount": rng.random(n) * 100 + 0.1,
            },
        )
        if reader is not None:
            for h in (0.5, 7.25, 30):
                reader.get_numpy({"user_id": [1, 2, 3, 4, 5, 6]}, as_of=at(day + 5 + h / 24))
    if reader is not None:
        reader.close()
    return s


def test_served_window_values_rebuild_bit_for_bit(tmp_path):
    s = _store(tmp_path, serve=True)
    report = s.check_skew()
    assert report.ok, report.alerts
    for f in FEATS:
        assert report.features[f]["rows"] > 60
        assert report.features[f]["mismatches"] == 0
        assert report.features[f]["max_abs_diff"] in (0.0, None)


def test_a_late_event_written_after_serving_raises_no_false_alert(tmp_path):
    s = _store(tmp_path)
    served = s.get_online_features(FEATS, {"user_id": [1]}, as_of=at(31), log=True).to_dict()
    s.flush_logs()
    # A backfill: an event inside every window of that lookup, written after it was served.
    late = {
        "user_id": [1],
        "event_timestamp": pa.array([at(31) - dt.timedelta(minutes=5)], TS),
        "amount": [1000.0],
    }
    s.push("txn", late)
    now = s.get_historical_features(
        pa.table({"user_id": [1], "event_timestamp": pa.array([at(31)], TS)}), FEATS
    )
    assert now.column("amount_sum_7d")[0].as_py() != served["amount_sum_7d"][0]
    report = s.check_skew()
    assert report.ok, report.alerts
    assert report.features["txn:amount_sum_7d"]["rows"] == 1
    e = s.explain("txn:amount_sum_7d", {"user_id": 1}, at(31))
    assert [x["differs"] for x in e.served] == [False]
    assert e.served[0]["rebuilt"] == served["amount_sum_7d"][0]
    # Without a known_at, explain counts every event written so far; the late one is listed, not known
    # when the lookup ran.
    late = [r for r in e.rows if r["value"] == 1000.0]
    assert len(late) == 1 and not late[0]["known"]
    everything = s.explain(
        "txn:amount_sum_7d", {"user_id": 1}, at(31), known_at=dt.datetime.now(dt.timezone.utc)
    )
    assert everything.value == now.column("amount_sum_7d")[0].as_py()


def test_a_legacy_path_serving_the_wrong_window_is_caught_on_that_feature_only(tmp_path):
    s = _store(tmp_path)
    users = [1, 2, 3, 4, 5]
    instants = [at(d) for d in (12, 20, 30.5)]
    for t in instants:
        ents = pa.table({"user_id": users, "event_timestamp": pa.array([t] * 5, TS)})
        right = s.get_historical_features(ents, FEATS)
        # The legacy path sums 30 days where the definition says 7; its hourly count is right.
        wrong = sk.window_aggregate(
            ents,
            _raw(s),
            on="event_timestamp",
            by="user_id",
            aggregations=[sk.Aggregation("amount", "sum", window="30d")],
        )
        s.log_served(
            {"user_id": users},
            {
                "txn:amount_sum_7d": wrong.column("amount_sum_30d").to_pylist(),
                "txn:amount_count_1h": right.column("amount_count_1h").to_pylist(),
            },
            t,
            source="legacy",
        )
    s.flush_logs()
    report = s.check_skew()
    assert {a.feature for a in report.alerts} == {"txn:amount_sum_7d"}
    assert report.features["txn:amount_sum_7d"]["mismatch_rate"] > 0.5
    assert report.features["txn:amount_count_1h"]["mismatches"] == 0
    bad = report.features["txn:amount_sum_7d"]["worst"][0]
    assert bad["history_row"] is None
    e = s.explain("txn:amount_sum_7d", bad["entity"], bad["served_at"])
    assert [x["differs"] for x in e.served] == [True]
    assert e.ttl_decision.startswith("window sum(amount) over 7 days")
    assert all(r["known"] for r in e.rows)
    assert "rule: window" in str(e)


def _raw(s):
    from skewless import history

    return history.read(s.offline, s.registry, s.get_feature_view("txn"))


def test_a_window_feature_of_a_view_with_no_events_yet_rebuilds_as_the_empty_window(tmp_path):
    s = sk.FeatureStore(tmp_path / "s")
    s.apply([user, _txn()])
    s.log_served(
        {"user_id": [1, 2]}, {"txn:amount_count_1h": [0, 3], "txn:amount_sum_7d": [None, None]}, at(1)
    )
    s.flush_logs()
    report = s.check_skew()
    assert report.features["txn:amount_count_1h"]["mismatches"] == 1
    assert report.features["txn:amount_sum_7d"]["mismatches"] == 0
    e = s.explain("txn:amount_count_1h", {"user_id": 2}, at(1))
    assert e.value == 0 and e.rows == [] and [x["differs"] for x in e.served] == [True]


def test_the_log_records_what_get_numpy_served_for_an_entity_with_no_events(tmp_path):
    # An entity with no events is NOT_FOUND with the empty window's values: count 0 is served and must be
    # logged as 0, not null (the log used to mask every non-PRESENT status).
    s = _store(tmp_path)
    with s.online_reader(FEATS, log=True) as r:
        values, status = r.get_numpy({"user_id": [6]}, as_of=at(31))
    assert values[0].tolist()[2] == 0.0
    log = s.read_log()
    assert log["txn:amount_count_1h"].column("txn:amount_count_1h").to_pylist() == [0.0]
    assert log["txn:amount_sum_7d"].column("txn:amount_sum_7d").to_pylist() == [None]
    assert s.check_skew().ok
