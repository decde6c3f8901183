"""The ``skewless`` command line, run in-process through ``main`` (and once as a real process)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from skewless import FeatureStore
from skewless.cli import main
from skewless.normalize import normalize_rows

TS = pa.timestamp("us", tz="UTC")

DEFS = textwrap.dedent(
    """
    from datetime import timedelta
    from skewless import Entity, FeatureService, FeatureView, Field, Float64, String
    user = Entity("user", join_keys=["user_id"])
    shop = Entity("shop", join_keys=["shop_id"])
    stats = FeatureView("stats", [user], [Field("spend", Float64)], ttl=timedelta(days={ttl}))
    names = FeatureView("names", [shop], [Field("title", String)])
    svc = FeatureService("model", ["stats:spend", "names:title"])
    alias = stats
    """
)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "fs"
    assert main(["--store", str(d), "init"]) == 0
    (tmp_path / "defs.py").write_text(DEFS.format(ttl=3650))
    assert main(["--store", str(d), "apply", str(tmp_path / "defs.py")]) == 0
    return d


def test_init_apply_ls_describe(folder, tmp_path, capsys):
    capsys.readouterr()
    assert main(["--store", str(folder), "ls"]) == 0
    out = capsys.readouterr().out
    assert "view     stats (v1)" in out and "service  model (v1)" in out and "entity   user (v1)" in out
    (tmp_path / "defs.py").write_text(DEFS.format(ttl=10))
    assert main(["--store", str(folder), "apply", str(tmp_path / "defs.py")]) == 0
    assert "updated: stats" in capsys.readouterr().out
    assert main(["--store", str(folder), "describe", "stats"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == 2 and info["ttl_us"] == 10 * 86400 * 10**6 and info["history"]["rows"] == 0


def test_apply_and_ls_event_and_transform_views(folder, tmp_path, capsys):
    # A definitions file with an event view and a transform view: apply takes both, ls lists what each
    # serves (an event view's aggregates, not its raw columns; a transform view's outputs).
    (tmp_path / "more.py").write_text(
        textwrap.dedent(
            """
            from skewless import Aggregation, Entity, FeatureView, Field, Float64, TransformView, clip, log1p
            user = Entity("user", join_keys=["user_id"])
            txn = FeatureView(
                "txn", [user], [Field("amount", Float64)],
                aggregations=[Aggregation("amount", "sum", "7d"), Aggregation("amount", "count", "1h")],
            )
            tv = TransformView("tv", transforms=[log1p("txn:amount_sum_7d"), clip("stats:spend", 0, 10)])
            """
        )
    )
    capsys.readouterr()
    assert main(["--store", str(folder), "apply", str(tmp_path / "more.py")]) == 0
    assert "created: txn, tv" in capsys.readouterr().out
    assert main(["--store", str(folder), "ls"]) == 0
    out = capsys.readouterr().out
    assert "view     txn (v1): event view, aggregates ['amount_sum_7d', 'amount_count_1h']" in out
    assert "tview    tv (v1): outputs ['amount_sum_7d_log1p', 'spend_clip']" in out
    assert "view     stats (v1): 1 features, entities ['user'], ttl 3650 days" in out


def test_materialize_and_get(folder, capsys):
    s = FeatureStore(folder)
    now = dt.datetime.now(dt.timezone.utc)
    t = now - dt.timedelta(hours=1)
    # History written by a process that died before its online write: materialize repairs it.
    fv = s.get_feature_view("stats")
    rows = pa.table({"user_id": [7], "event_timestamp": pa.array([t], TS), "spend": [2.5]})
    table, fixes = normalize_rows(fv, s.registry.key_types(fv), rows, "x")
    s.offline.append("stats", table)
    s.registry.fix_key_dtypes({"user": ["Int64"]})
    s.write("names", {"shop_id": ["a"], "event_timestamp": pa.array([t], TS), "title": ["Cafe"]})
    capsys.readouterr()
    assert main(["--store", str(folder), "materialize"]) == 0
    assert "stats: 1 rows" in capsys.readouterr().out
    assert main(["--store", str(folder), "get", "stats:spend", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == 2.5
    assert main(["--store", str(folder), "get", "names:title", "a"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == "Cafe"
    assert main(["--store", str(folder), "get", "stats:spend", "8"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "not_found"
    # A second incremental run starts where the first ended: nothing new.
    assert main(["--store", str(folder), "materialize"]) == 0
    assert "stats: 0 rows" in capsys.readouterr().out
    start = (now - dt.timedelta(days=1)).isoformat()
    assert main(["--store", str(folder), "materialize", "--start", start, "--views", "stats"]) == 0
    assert "stats: 1 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["describe", "nope"], "UnknownFeatureError"),
        (["get", "stats:nope", "1"], "UnknownFeatureError"),
        (["get", "stats", "1"], "InvalidArgumentError"),
        (["materialize", "--end", "2026-01-01T00:00:00"], "NaiveTimestampError"),
        (["materialize", "--end", "yesterday"], "InvalidArgumentError"),
        (["apply", "missing.py"], "InvalidArgumentError"),
    ],
)
def test_errors_exit_2_with_the_typed_error(folder, capsys, argv, msg):
    before = open(os.path.join(folder, "registry.json")).read()
    assert main(["--store", str(folder), *argv]) == 2
    assert msg in capsys.readouterr().err
    assert open(os.path.join(folder, "registry.json")).read() == before


def test_commands_on_a_folder_that_is_no_store(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "none"), "ls"]) == 2
    assert "skewless init" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_demo_small_end_to_end(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--events", "3000"]) == 0
    out = capsys.readouterr().out
    assert "get_historical_features: 3,000 label rows x 7 features" in out
    assert "online == offline at the same instant for 100/100" in out
    s = FeatureStore(tmp_path / "demo")
    assert [v.name for v in s.list_feature_views()] == [
        "merchant_risk",
        "user_basket",
        "user_profile",
        "user_txn_1d",
    ]
    # The demo's skew watchdog: the legacy lifetime average is named, the store's own serving is clean.
    assert "the store's own serving path raises no alert" in out
    assert "ALERT user_basket:avg_basket_30d: mismatch_rate" in out


def test_demo_never_deletes_a_store_it_did_not_make(folder, capsys):
    before = sorted(os.listdir(folder))
    assert main(["demo", "--dir", str(folder), "--events", "1000"]) == 2
    assert "did not make" in capsys.readouterr().err
    assert sorted(os.listdir(folder)) == before


def test_entry_point_runs_as_a_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "skewless.cli", "--store", str(tmp_path), "init"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "registry.json").exists()


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    import skewless

    r = subprocess.run([sys.executable, "-m", "skewless.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"skewless {version('skewless')}" == f"skewless {skewless.__version__}"
