"""`skewless check-skew`: the report on stdout, exit 1 on an alert, JSON and HTML outputs."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
import skewless as sk
from skewless.cli import main

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture
def store(tmp_path):
    s = sk.FeatureStore(str(tmp_path / "s"))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    s.apply([u, sk.FeatureView("v", [u], [sk.Field("x", sk.Float64), sk.Field("y", sk.Float64)])])
    now = dt.datetime.now(UTC)
    s.write(
        "v",
        {"user_id": [1, 2], "event_timestamp": pa.array([now, now], TS), "x": [1.0, 2.0], "y": [3.0, 4.0]},
    )
    return s


def test_clean_log_exits_0(store, capsys):
    store.log_served({"user_id": [1, 2]}, {"v:x": [1.0, 2.0]}, dt.datetime.now(UTC))
    store.flush_logs()
    assert main(["--store", store.path, "check-skew", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "No alert." in out and "| v:x | 2 |" in out


def test_an_alert_exits_1_and_names_the_feature(store, capsys, tmp_path):
    store.log_served({"user_id": [1, 2]}, {"v:x": [1.0, 2.0], "v:y": [3.0, 9.0]}, dt.datetime.now(UTC))
    store.flush_logs()
    html = tmp_path / "r.html"
    assert main(["--store", store.path, "check-skew", "--json", "--html", str(html)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {a["feature"] for a in report["alerts"]} == {"v:y"}
    assert html.read_text().count("<img") == 1
    # Outside the window there is nothing to check.
    old = dt.datetime.now(UTC) - dt.timedelta(days=3)
    store.prune_logs(before=dt.datetime.now(UTC) + dt.timedelta(days=1))
    store.log_served({"user_id": [2]}, {"v:y": [9.0]}, old)
    store.flush_logs()
    assert main(["--store", store.path, "check-skew", "--since", "1d"]) == 0
    assert main(["--store", store.path, "check-skew", "--features", "v:y"]) == 1


def test_bad_arguments_exit_2(store, capsys):
    assert main(["--store", store.path, "check-skew", "--since", "yesterday"]) == 2
    assert "error" in capsys.readouterr().err
