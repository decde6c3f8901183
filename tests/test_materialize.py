"""materialize, compaction and source= views: the online store brought in line with history."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TS, at, snapshot, stats_rows, stats_view, user
from skewless import (
    FeatureStore,
    FeatureView,
    Field,
    Float64,
)
from skewless.errors import (
    InvalidArgumentError,
    NaiveTimestampError,
)
from skewless.normalize import normalize_rows


def test_materialize_repairs_a_write_that_died_between_the_stores(store):
    store.write("stats", stats_rows([1], [0], [1.0]))
    # What a process death after the history append leaves behind: the file, no online update.
    fv = store.get_feature_view("stats")
    rows = pa.table(stats_rows([1, 2], [1, 1], [5.0, 6.0]))
    table, _ = normalize_rows(fv, store.registry.key_types(fv), rows, "x")
    store.offline.append("stats", table)
    stale = store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()
    assert stale["spend"] == [1.0, None]
    n = store.materialize(None, at(10))
    assert n == {"stats": 3}
    fixed = store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()
    assert fixed["spend"] == [5.0, 6.0]


def test_materialize_bounds_and_incremental(tmp_path):
    s = FeatureStore(tmp_path)
    fv = stats_view(online=True)
    s.apply([user, fv])
    rows = pa.table(stats_rows([1, 1, 2], [0, 1, 2], [1.0, 2.0, 3.0]))
    table, _ = normalize_rows(fv, s.registry.key_types(fv), rows, "x")
    s.offline.append("stats", table)
    # end is exclusive: the row at day 1 is not copied.
    assert s.materialize(at(0), at(1)) == {"stats": 1}
    assert s.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()["spend"] == [
        1.0,
        None,
    ]
    assert s.materialize_incremental(at(2)) == {"stats": 2}
    assert s.registry.materialized_until("stats") == (
        at(2) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    ) // dt.timedelta(microseconds=1)
    assert s.materialize_incremental(at(3)) == {"stats": 1}
    assert s.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(2)).to_dict()["spend"] == [
        2.0,
        3.0,
    ]
    with pytest.raises(NaiveTimestampError):
        s.materialize(None, dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidArgumentError):
        s.materialize(at(3), at(1))


# ---- history --------------------------------------------------------------------------------------------


def test_compact_sorts_keeps_results_and_allows_writes(store):
    store.write("stats", stats_rows([3, 1, 2], [2, 1, 0], [1.0, 2.0, 3.0]))
    store.write("stats", stats_rows([1, 1], [1, 0.5], [4.0, 5.0], created=[1, 0.5]))
    labels = {"user_id": [1, 2, 3, 1], "event_timestamp": pa.array([at(1), at(1), at(2), at(0.7)], TS)}
    before = store.get_historical_features(labels, ["stats:spend", "stats:n"])
    assert store.compact("stats") == 5
    files = os.listdir(os.path.join(store.path, "offline", "stats"))
    assert len(files) == 1
    h = store.read_history("stats")
    assert h.column("user_id").to_pylist() == [1, 1, 1, 2, 3]
    # Equal (key, ts, created) in two writes: the earlier write wins (the online store's rule), and
    # the compacted order keeps it last among the tie, where the join picks it.
    assert h.column("spend").to_pylist()[1:3] == [4.0, 2.0]
    tie = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    assert store.get_historical_features(tie, ["stats:spend"]).column("spend").to_pylist() == [2.0]
    assert store.get_historical_features(labels, ["stats:spend", "stats:n"]).equals(before)
    store.write("stats", stats_rows([9], [0], [9.0]))
    assert store.read_history("stats").num_rows == 6


def test_source_view_reads_foreign_parquet(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    t = pa.table(
        {
            "user_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([at(0), at(1), at(0)], pa.timestamp("ns", tz="Europe/Tallinn")),
            "spend": [1.0, 2.0, 3.0],
            "ignored": ["a", "b", "c"],
        }
    )
    pq.write_table(t.slice(0, 2), src / "a.parquet")
    pq.write_table(t.slice(2), src / "b.parquet")
    s = FeatureStore(tmp_path / "store")
    fv = FeatureView("ext", [user], [Field("spend", Float64)], source=str(src / "*.parquet"))
    s.apply([user, fv])
    labels = {"user_id": [1, 1, 2], "event_timestamp": pa.array([at(0.5), at(1), at(-1)], TS)}
    out = s.get_historical_features(labels, ["ext:spend"])
    assert out.column("spend").to_pylist() == [1.0, 2.0, None]
    before = snapshot(s.path)
    with pytest.raises(InvalidArgumentError, match="source"):
        s.write("ext", {"user_id": [1]})
    assert snapshot(s.path) == before
    assert s.materialize(None, at(5)) == {"ext": 3}
    assert s.get_online_features(["ext:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()["spend"] == [
        2.0,
        3.0,
    ]


# ---- training sets --------------------------------------------------------------------------------------


def test_materialize_of_sorted_history_never_splits_a_tie(store, tmp_path, monkeypatch):
    import shutil

    import skewless.materialize as store_mod

    # The same (key, ts, created) in two writes: the earlier write wins, online and in the join.
    store.write("stats", stats_rows([1, 0], [0, 0], [1.0, 0.5]))
    store.write("stats", stats_rows([1], [0], [2.0]))
    store.compact("stats")
    assert store.read_history("stats").column("spend").to_pylist() == [0.5, 2.0, 1.0]
    fresh = tmp_path / "rebuilt"
    fresh.mkdir()
    shutil.copytree(os.path.join(store.path, "offline"), fresh / "offline")
    shutil.copy(os.path.join(store.path, "registry.json"), fresh / "registry.json")
    s = FeatureStore(fresh)
    # A chunk boundary at row 2 would fall inside the tie (rows 1 and 2).
    monkeypatch.setattr(store_mod, "MATERIALIZE_BATCH", 2)
    assert s.materialize(None, at(1)) == {"stats": 3}
    lab = {"user_id": [1], "event_timestamp": pa.array([at(0)], TS)}
    assert s.get_historical_features(lab, ["stats:spend"]).column("spend").to_pylist() == [1.0]
    assert s.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(0)).to_dict()["spend"] == [1.0]
    assert store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(0)).to_dict()["spend"] == [
        1.0
    ]


def test_process_death_between_history_and_online_is_repaired_by_materialize(store):
    import subprocess
    import sys
    import textwrap

    store.write("stats", stats_rows([1], [0], [1.0]))
    code = textwrap.dedent(
        f"""
        import datetime as dt, os
        import pyarrow as pa
        import skewless.online
        from skewless import FeatureStore

        def die(*a, **k):
            os._exit(9)  # the process dies after the history append, before the online write

        skewless.online.OnlineStore.write = die
        t = pa.array([dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))
        FeatureStore({store.path!r}).write(
            "stats", {{"user_id": [1], "event_timestamp": t, "created": t, "spend": [7.0], "n": [1]}}
        )
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert store.read_history("stats").num_rows == 2
    assert not [f for f in os.listdir(os.path.join(store.path, "offline", "stats")) if f.startswith(".tmp")]
    served = store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(1)).to_dict()
    assert served["spend"] == [1.0]
    store.materialize(None, at(10))
    served = store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(1)).to_dict()
    assert served["spend"] == [7.0]
