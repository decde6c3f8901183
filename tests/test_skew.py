"""check_skew: the chapter's skews, injected into logged vectors, are each detected and attributed to the
one feature they affect; a clean log raises nothing; a backfill written after a lookup is no false alert.

The reference features are computed from raw events by one function (``features_at``) and written as
daily snapshots; a "service" logs what it computed for a lookup with ``log_served``. The clean service
calls the same function, the buggy ones change one thing each, as the chapter's incidents did.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import skewless as sk
from skewless import errors
from skewless.skew import DEFAULT_THRESHOLDS

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)
US_DAY = 86_400_000_000
USERS = 16
DAYS = 45
FEATS = ["avg_amount_30d", "std_amount_30d", "last_amount", "z_last", "days_since_refund", "last_hour"]


def raw_events(seed=0):
    rng = np.random.default_rng(seed)
    n = 2500
    user = rng.integers(0, USERS, n)
    ts = rng.integers(0, DAYS * US_DAY, n)
    amount = np.round(rng.gamma(2.0, 20.0, n) + user, 2)
    refund = rng.random(n) < 0.03
    order = np.argsort(ts, kind="stable")
    return {"user": user[order], "ts": ts[order], "amount": amount[order], "refund": refund[order]}


def features_at(ev, u, cut, bug=None):
    """The features of user ``u`` at instant ``cut`` (microseconds since T0) from events at or before it;
    ``bug`` reproduces one of the chapter's skews."""
    seen = ev["ts"] <= cut
    mine = seen & (ev["user"] == u)
    window = 7 if bug == "window" else 30
    inw = mine & (ev["ts"] > cut - window * US_DAY)
    amounts = ev["amount"][inw]
    out = {}
    out["avg_amount_30d"] = float(amounts.mean()) if amounts.size else None
    ddof = 0 if bug == "ddof" else 1
    out["std_amount_30d"] = float(amounts.std(ddof=ddof)) if amounts.size > 1 else None
    idx = np.nonzero(mine)[0]
    last = idx[-1] if idx.size else None
    if bug == "stale" and idx.size > 1:
        last = idx[-2]
    out["last_amount"] = float(ev["amount"][last]) if last is not None else None
    pool = ev["amount"][mine] if bug == "per_user" else ev["amount"][seen]
    if last is not None and pool.size > 1:
        out["z_last"] = float((ev["amount"][last] - pool.mean()) / pool.std(ddof=1))
    else:
        out["z_last"] = None
    refunds = ev["ts"][mine & ev["refund"]]
    out["days_since_refund"] = float((cut - refunds[-1]) // US_DAY) if refunds.size else None
    if bug == "zero_impute" and out["days_since_refund"] is None:
        out["days_since_refund"] = 0.0
    shift = 5 * 3_600_000_000 if bug == "timezone" else 0
    out["last_hour"] = int(((ev["ts"][last] + shift) // 3_600_000_000) % 24) if last is not None else None
    return out


def snapshots(ev):
    """The daily snapshots of every user, as the feature pipeline writes them."""
    rows = {"user_id": [], "event_timestamp": [], **{f: [] for f in FEATS}}
    for d in range(1, DAYS + 1):
        for u in range(USERS):
            f = features_at(ev, u, d * US_DAY)
            rows["user_id"].append(u)
            rows["event_timestamp"].append(T0 + d * DAY)
            for k in FEATS:
                rows[k].append(f[k])
    table = pa.table(
        {
            "user_id": pa.array(rows["user_id"], pa.int64()),
            "event_timestamp": pa.array(rows["event_timestamp"], TS),
            **{k: pa.array(rows[k], pa.int64() if k == "last_hour" else pa.float64()) for k in FEATS},
        }
    )
    return table


def make_store(path, table):
    store = sk.FeatureStore(path)
    user = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    schema = [sk.Field(f, sk.Int64 if f == "last_hour" else sk.Float64) for f in FEATS]
    store.apply([user, sk.FeatureView("user_stats", [user], schema, ttl=dt.timedelta(days=2))])
    store.write("user_stats", table)
    return store


def lookups(seed=1, n=300):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, USERS, n)
    # Instants inside the last 20 days, anywhere within a day (the snapshot of that day's midnight serves).
    us = rng.integers((DAYS - 20) * US_DAY, DAYS * US_DAY, n)
    return users, us


def serve_like(ev, users, us, bug=None, buggy=None):
    """What a service computes per lookup: the snapshot of the lookup's day, from raw events."""
    vals = {f"user_stats:{f}": [] for f in FEATS}
    for u, t in zip(users.tolist(), us.tolist(), strict=True):
        cut = (t // US_DAY) * US_DAY
        good = features_at(ev, u, cut)
        bad = features_at(ev, u, cut, bug) if bug else good
        for f in FEATS:
            vals[f"user_stats:{f}"].append(bad[f] if f == buggy else good[f])
    return vals


def served_at(us):
    return pa.array([T0 + dt.timedelta(microseconds=int(t)) for t in us], TS)


@pytest.fixture(scope="module")
def events():
    return raw_events()


@pytest.fixture(scope="module")
def table(events):
    return snapshots(events)


@pytest.fixture
def store(tmp_path, table):
    return make_store(str(tmp_path / "s"), table)


def test_clean_service_and_the_stores_own_reader_raise_no_alert(store, events):
    users, us = lookups()
    store.log_served({"user_id": users}, serve_like(events, users, us), served_at(us), source="service")
    with store.online_reader([f"user_stats:{f}" for f in FEATS], log=True) as r:
        for u in range(USERS):
            r.get_numpy([u], as_of=T0 + (DAYS + 0.5) * DAY)
            r.get({"user_id": [u]}, as_of=T0 + (DAYS + 0.25) * DAY)
    store.flush_logs()
    report = store.check_skew()
    assert report.alerts == [], report.to_markdown()
    assert report.features["user_stats:avg_amount_30d"]["rows"] == len(users) + 2 * USERS
    assert report.features["user_stats:avg_amount_30d"]["mismatches"] == 0
    assert report.features["user_stats:last_hour"]["versions"] == {"unversioned": len(users), "1": 2 * USERS}


CHAPTER_SKEWS = [
    ("timezone", "last_hour"),
    ("window", "avg_amount_30d"),
    ("zero_impute", "days_since_refund"),
    ("stale", "last_amount"),
    ("per_user", "z_last"),
    ("ddof", "std_amount_30d"),
]


@pytest.mark.parametrize("bug,feature", CHAPTER_SKEWS)
def test_each_chapter_skew_is_detected_on_its_feature_only(store, events, bug, feature):
    users, us = lookups()
    vals = serve_like(events, users, us, bug=bug, buggy=feature)
    store.log_served({"user_id": users}, vals, served_at(us), source="legacy")
    store.flush_logs()
    report = store.check_skew()
    assert {a.feature for a in report.alerts} == {f"user_stats:{feature}"}, report.to_markdown()
    m = report.features[f"user_stats:{feature}"]
    if bug == "zero_impute":
        assert m["null_offline_only_rate"] > 0 and m["null_online_only_rate"] == 0
    else:
        assert m["mismatch_rate"] > 0.05
    worst = m["worst"][0]
    assert worst["explain"].startswith(f"store.explain('user_stats:{feature}'")
    # The worst row's values are the ones logged and rebuilt for that request.
    assert worst["online"] != worst["offline"]


def test_tolerance_and_thresholds(store, events):
    users, us = lookups(n=100)
    vals = serve_like(events, users, us)
    noisy = [None if v is None else v * (1 + 1e-9) for v in vals["user_stats:avg_amount_30d"]]
    vals["user_stats:avg_amount_30d"] = noisy
    store.log_served({"user_id": users}, vals, served_at(us))
    store.flush_logs()
    assert {a.feature for a in store.check_skew().alerts} == {"user_stats:avg_amount_30d"}
    assert store.check_skew(rtol=1e-6).alerts == []
    assert store.check_skew(thresholds={"user_stats:avg_amount_30d": {"mismatch_rate": 1.0}}).alerts == []
    assert store.check_skew(thresholds={"mismatch_rate": None, "ks_statistic": None}).alerts == []
    with pytest.raises(errors.InvalidArgumentError, match="unknown threshold"):
        store.check_skew(thresholds={"mismatch": 0.1})
    with pytest.raises(errors.InvalidArgumentError):
        store.check_skew(rtol=-1)
    with pytest.raises(errors.InvalidArgumentError):
        store.check_skew(sample=0)
    with pytest.raises(errors.UnknownFeatureError):
        store.check_skew(features=["user_stats:nope"])
    assert DEFAULT_THRESHOLDS["mismatch_rate"] == 0.001


def test_sample_and_window(store, events):
    users, us = lookups(n=200)
    store.log_served(
        {"user_id": users}, serve_like(events, users, us, "ddof", "std_amount_30d"), served_at(us)
    )
    store.flush_logs()
    r = store.check_skew(sample=50)
    assert r.features["user_stats:std_amount_30d"]["rows"] == 50
    assert {a.feature for a in r.alerts} == {"user_stats:std_amount_30d"}
    mid = T0 + dt.timedelta(microseconds=int(np.median(us)))
    assert (r.to_dict()["start"], r.to_dict()["end"]) == (None, None)
    assert store.check_skew(end=mid).to_dict()["end"] == mid.isoformat()
    a = store.check_skew(end=mid).features["user_stats:last_amount"]["rows"]
    b = store.check_skew(start=mid).features["user_stats:last_amount"]["rows"]
    assert a + b == 200
    only = store.check_skew(features=["user_stats:last_amount"])
    assert list(only.features) == ["user_stats:last_amount"]


def test_a_backfill_written_after_the_lookup_is_no_false_alert(tmp_path):
    store = sk.FeatureStore(str(tmp_path / "s"))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    store.apply([u, sk.FeatureView("v", [u], [sk.Field("x", sk.Float64)])])
    store.write("v", {"user_id": [1], "event_timestamp": pa.array([T0], TS), "x": [1.0]})
    t = T0 + 10 * DAY
    with store.online_reader(["v:x"], log=True) as r:
        assert r.get_numpy([1], as_of=t)[0].tolist() == [[1.0]]
    # A backfill for an instant before the lookup, written after it: the lookup could not have served it.
    store.write("v", {"user_id": [1], "event_timestamp": pa.array([T0 + 5 * DAY], TS), "x": [2.0]})
    labels = {"user_id": [1], "event_timestamp": pa.array([t], TS)}
    assert store.get_historical_features(labels, ["v:x"]).column("x").to_pylist() == [2.0]
    report = store.check_skew()
    assert report.alerts == [], report.to_markdown()
    assert report.features["v:x"]["rows"] == 1
    # A lookup after the backfill is checked against it.
    with store.online_reader(["v:x"], log=True) as r:
        r.get_numpy([1], as_of=t)
    assert store.check_skew().alerts == []
    store.log_served({"user_id": [1]}, {"v:x": [1.0]}, t)  # served the old value after the backfill
    store.flush_logs()
    assert [a.metric for a in store.check_skew().alerts][:1] == ["mismatch_rate"]


def test_not_yet_valid_lookups_are_not_compared(tmp_path):
    store = sk.FeatureStore(str(tmp_path / "s"))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    store.apply([u, sk.FeatureView("v", [u], [sk.Field("x", sk.Float64)])])
    store.write(
        "v", {"user_id": [1, 1], "event_timestamp": pa.array([T0, T0 + 9 * DAY], TS), "x": [1.0, 2.0]}
    )
    with store.online_reader(["v:x"], log=True) as r:
        assert r.get_numpy([1], as_of=T0 + DAY)[1].tolist() == [[int(sk.Status.NOT_YET_VALID)]]
    m = store.check_skew().features["v:x"]
    assert (m["rows"], m["not_comparable"]) == (0, 1)


def test_ttl_and_ties_in_the_rebuild_match_retrieval(tmp_path):
    store = sk.FeatureStore(str(tmp_path / "s"))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    fv = sk.FeatureView(
        "v", [u], [sk.Field("x", sk.Float64)], ttl=dt.timedelta(days=1), created_timestamp_field="created"
    )
    store.apply([u, fv])
    rng = np.random.default_rng(3)
    for _ in range(4):
        n = 40
        ts = [T0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 72, n)]
        cr = [T0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 3, n)]
        store.write(
            "v",
            {
                "user_id": pa.array(rng.integers(0, 4, n), pa.int64()),
                "event_timestamp": pa.array(ts, TS),
                "created": pa.array(cr, TS),
                "x": rng.random(n),
            },
        )
    users = rng.integers(0, 5, 200)
    when = [T0 + dt.timedelta(hours=float(h)) for h in rng.uniform(0, 100, 200)]
    labels = {"user_id": pa.array(users, pa.int64()), "event_timestamp": pa.array(when, TS)}
    truth = store.get_historical_features(labels, ["v:x"]).column("x")
    store.log_served({"user_id": users}, {"v:x": truth}, pa.array(when, TS))
    store.flush_logs()
    report = store.check_skew()
    assert report.alerts == [] and report.features["v:x"]["rows"] == 200
    # And the rebuild is not blind: one changed value is one mismatch.
    wrong = truth.to_pylist()
    i = next(i for i, v in enumerate(wrong) if v is not None)
    wrong[i] += 1
    store.prune_logs(before=T0 + 1000 * DAY)
    store.log_served({"user_id": users}, {"v:x": wrong}, pa.array(when, TS))
    store.flush_logs()
    assert store.check_skew().features["v:x"]["mismatches"] == 1


def test_report_renderings(store, events, tmp_path):
    pytest.importorskip("matplotlib")
    users, us = lookups(n=120)
    store.log_served(
        {"user_id": users}, serve_like(events, users, us, "window", "avg_amount_30d"), served_at(us)
    )
    store.flush_logs()
    report = store.check_skew()
    d = report.to_dict()
    assert d["ok"] is False and d["alerts"][0]["feature"] == "user_stats:avg_amount_30d"
    import json

    json.loads(report.to_json())
    md = report.to_markdown()
    assert "user_stats:avg_amount_30d" in md and "Worst rows" in md
    page = report.to_html(str(tmp_path / "r.html"))
    text = open(page, encoding="utf-8").read()
    assert "data:image/png;base64," in text and "store.explain(" in text
    assert "http" not in text.split("<body>", 1)[1]  # self-contained: nothing fetched
