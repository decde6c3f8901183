"""store.explain: the row and write behind a value, the TTL decision, and what the log says was served."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest
import skewless as sk
from skewless import errors

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def store(tmp_path):
    s = sk.FeatureStore(str(tmp_path / "s"))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    s.apply([u, sk.FeatureView("v", [u], [sk.Field("x", sk.Float64)], ttl=dt.timedelta(days=2))])
    s.write("v", {"user_id": [1, 2], "event_timestamp": pa.array([T0, T0], TS), "x": [1.0, 5.0]})
    s.write("v", {"user_id": [1], "event_timestamp": pa.array([T0 + 3 * DAY], TS), "x": [2.0]})
    return s


def test_the_row_the_write_and_the_ttl(store):
    e = store.explain("v:x", {"user_id": 1}, T0 + 4 * DAY)
    assert e.value == 2.0
    assert (e.row["file"], e.row["file_row"]) == (2, 0)
    assert e.row["written_at"] is not None
    assert e.ttl_decision.startswith("within TTL")
    assert [r["value"] for r in e.rows] == [1.0, 2.0] and [r["chosen"] for r in e.rows] == [False, True]
    assert e.served == []
    late = store.explain("v:x", {"user_id": 1}, T0 + 2.5 * DAY)
    assert late.value is None and late.ttl_decision.startswith("expired")
    none = store.explain("v:x", {"user_id": 9}, T0)
    assert none.value is None and none.ttl_decision == "no known row at or before the instant"
    assert "v:x for {'user_id': 1}" in str(e)
    assert e.to_dict()["value"] == 2.0


def test_what_was_served_and_whether_it_differs(store):
    at = T0 + 4 * DAY
    store.log_served({"user_id": [1, 1, 2]}, {"v:x": [2.0, 7.0, 5.0]}, at, source="legacy")
    store.flush_logs()
    e = store.explain("v:x", {"user_id": 1}, at)
    assert sorted((s["value"], s["differs"]) for s in e.served) == [(2.0, False), (7.0, True)]
    assert all(s["rebuilt"] == 2.0 and s["source"] == "legacy" for s in e.served)
    assert "DIFFERS" in str(e)


def test_as_known_when_served(store):
    # A lookup logged now, then a backfill for an earlier instant: the lookup's own rebuild ignores it.
    at = T0 + 4 * DAY
    store.log_served({"user_id": [1]}, {"v:x": [2.0]}, at)
    store.flush_logs()
    store.write("v", {"user_id": [1], "event_timestamp": pa.array([T0 + 3.5 * DAY], TS), "x": [3.0]})
    e = store.explain("v:x", {"user_id": 1}, at)
    assert [s["differs"] for s in e.served] == [False]
    assert e.value == 2.0  # as known when the logged lookup ran
    assert any(not r["known"] and r["value"] == 3.0 for r in e.rows)
    assert store.explain("v:x", {"user_id": 1}, at, known_at=dt.datetime.now(UTC)).value == 3.0


def test_the_reports_worst_rows_call_explain(store):
    at = T0 + 4 * DAY
    store.log_served({"user_id": [1, 2]}, {"v:x": [2.0, 6.0]}, at)
    store.flush_logs()
    report = store.check_skew()
    (row,) = report.features["v:x"]["worst"]
    e = eval(row["explain"], {"store": store})  # the report's link is a runnable call
    # User 2's only row (day 0) is past the 2-day TTL at day 4: the legacy value had no right to exist.
    assert e.value is None and e.ttl_decision.startswith("expired")
    assert [(s["value"], s["differs"]) for s in e.served] == [(6.0, True)]


def test_bad_arguments(store):
    with pytest.raises(errors.MissingColumnError):
        store.explain("v:x", {"id": 1}, T0)
    with pytest.raises(errors.UnknownFeatureError):
        store.explain("v:nope", {"user_id": 1}, T0)
    with pytest.raises(errors.NaiveTimestampError):
        store.explain("v:x", {"user_id": 1}, dt.datetime(2026, 1, 1))
    with pytest.raises(errors.InvalidArgumentError):
        store.explain("v:x", [1], T0)
    assert not os.path.exists(os.path.join(store.path, "logs"))
