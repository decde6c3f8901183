"""The feature store under real processes: a service started before the first write, and history reads
racing a compaction loop."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, String
from skewless.errors import DtypeError

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
user = Entity("user", join_keys=["user_id"], dtype=Int64)
merchant = Entity("merchant", join_keys=["merchant_id"])


def views() -> list:
    a = FeatureView("a", [user], [Field("x", Float64), Field("s", String)])
    m = FeatureView("m", [merchant], [Field("risk", Float64)])
    return [user, merchant, a, m]


def rows_a(ids, x) -> dict:
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([T0] * len(ids), TS),
        "x": pa.array(x, pa.float64()),
        "s": pa.array([f"s{v}" for v in x], pa.string()),
    }


def run(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---- a service started before any online data -----------------------------------------------------------


def test_reader_of_unwritten_view_answers_not_found_then_serves(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply(views())
    r = s.online_reader(["a:x", "m:risk"])
    vals, st = r.get_numpy({"user_id": [1, 2], "merchant_id": [10, 11]}, as_of=T0)
    assert np.isnan(vals).all() and (st == 1).all() and vals.shape == (2, 2) and st.shape == (2, 2)
    resp = s.get_online_features(["a:x", "a:s"], {"user_id": [1]}, as_of=T0)
    assert resp.to_dict() == {"user_id": [1], "x": [None], "s": [None]}
    assert resp.to_arrow().schema.field("s").type == pa.string()
    assert list(resp.statuses["x"]) == [1]
    with pytest.raises(DtypeError, match="'s'"):
        s.online_reader(["a:s"]).get_numpy([1])
    s.write("a", rows_a([1], [5.0]))
    # The same reader and the cached get_online_features reader pick the view up; "m" is still empty.
    vals, st = r.get_numpy({"user_id": [1, 2], "merchant_id": [10, 11]}, as_of=T0)
    np.testing.assert_array_equal(vals, [[5.0, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(st, [[0, 1], [1, 1]])
    resp = s.get_online_features(["a:x", "a:s"], {"user_id": [1]}, as_of=T0)
    assert resp.to_dict() == {"user_id": [1], "x": [5.0], "s": ["s5.0"]}
    s.write("m", {"merchant_id": ["10"], "event_timestamp": pa.array([T0], TS), "risk": [0.5]})
    vals, st = r.get_numpy({"user_id": [1, 2], "merchant_id": ["10", "11"]}, as_of=T0)
    np.testing.assert_array_equal(vals, [[5.0, 0.5], [np.nan, np.nan]])
    assert r.get({"user_id": [2], "merchant_id": ["10"]}).to_dict()["risk"] == [0.5]


def test_service_started_before_data_serves_another_process_writes(tmp_path):
    """A service process opens its reader before the store has any online data; another process (this
    one) writes, then materializes a second view; the service answers NOT_FOUND, then the values."""
    s = FeatureStore(tmp_path)
    s.apply(views())
    service = run(
        """
        import datetime as dt, json, sys, time
        from skewless import FeatureStore
        T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        s = FeatureStore(sys.argv[1])
        r = s.online_reader(["a:x", "m:risk"])
        keys = {"user_id": [1, 2], "merchant_id": ["10", "10"]}
        def ask():
            v, st = r.get_numpy(keys, as_of=T0)
            online = s.get_online_features(["a:x"], {"user_id": [1]}, as_of=T0).to_dict()["x"]
            return {"v": [[None if x != x else x for x in row] for row in v.tolist()],
                    "st": st.tolist(), "online": online}
        print(json.dumps(ask()), flush=True)
        for want in (1, 2):
            sys.stdin.readline()
            end = time.time() + 30
            while time.time() < end:
                got = ask()
                if sum(x is not None for row in got["v"] for x in row) >= want:
                    break
                time.sleep(0.01)
            print(json.dumps(got), flush=True)
        """,
        str(tmp_path),
    )
    assert service.stdin is not None and service.stdout is not None
    first = json.loads(service.stdout.readline())
    assert first == {"v": [[None, None], [None, None]], "st": [[1, 1], [1, 1]], "online": [None]}
    s.write("a", rows_a([1], [7.0]))
    service.stdin.write("go\n")
    service.stdin.flush()
    second = json.loads(service.stdout.readline())
    assert second == {"v": [[7.0, None], [None, None]], "st": [[0, 1], [1, 1]], "online": [7.0]}
    # The second view reaches the online store through materialize, from a fresh handle.
    other = FeatureStore(tmp_path)
    other.offline.append(
        "m",
        pa.table(
            {
                "merchant_id": pa.array(["10"]),
                "event_timestamp": pa.array([T0], TS),
                "risk": pa.array([0.25]),
            }
        ),
    )
    other.materialize(None, T0 + dt.timedelta(days=1))
    service.stdin.write("go\n")
    service.stdin.flush()
    third = json.loads(service.stdout.readline())
    assert third == {"v": [[7.0, 0.25], [None, 0.25]], "st": [[0, 0], [1, 0]], "online": [7.0]}
    out, err = service.communicate(timeout=30)
    assert service.returncode == 0, err


# ---- history reads racing compaction --------------------------------------------------------------------


def history(seed: int, files: int, rows: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(files):
        ids = rng.integers(0, 50, rows)
        x = rng.normal(size=rows).round(3)
        days = rng.integers(0, 30, rows)
        ts = [T0 + dt.timedelta(days=int(d)) for d in days]
        out.append(
            {
                "user_id": pa.array(ids, pa.int64()),
                "event_timestamp": pa.array(ts, TS),
                "x": pa.array(x, pa.float64()),
                "s": pa.array([str(v) for v in x], pa.string()),
            }
        )
    return out


def test_history_reads_are_whole_while_another_process_compacts(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply(views())
    for part in history(7, 6, 400):
        s.write("a", part)
    labels = {
        "user_id": pa.array(np.arange(60).repeat(3), pa.int64()),
        "event_timestamp": pa.array([T0 + dt.timedelta(days=d) for d in [3, 15, 40] * 60], TS),
    }
    want_join = s.get_historical_features(labels, ["a:x", "a:s"]).to_pydict()
    want_rows = sorted(tuple(r.values()) for r in s.read_history("a").to_pylist())
    assert len(want_rows) == 2400
    (tmp_path / "labels.json").write_text(
        json.dumps({"user_id": labels["user_id"].to_pylist(), "days": [3, 15, 40] * 60})
    )
    (tmp_path / "want.json").write_text(json.dumps({"join": want_join["x"], "s": want_join["s"]}))
    compactor = run(
        """
        import sys, time
        from skewless import FeatureStore
        s = FeatureStore(sys.argv[1]); n = 0; end = time.time() + 4
        while time.time() < end:
            s.compact("a"); n += 1
        print(n)
        """,
        str(tmp_path),
    )
    reader = run(
        """
        import datetime as dt, json, sys, time
        import pyarrow as pa
        from skewless import FeatureStore
        T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        root = sys.argv[1]
        s = FeatureStore(root)
        lab = json.load(open(root + "/labels.json")); want = json.load(open(root + "/want.json"))
        labels = {"user_id": pa.array(lab["user_id"], pa.int64()),
                  "event_timestamp": pa.array([T0 + dt.timedelta(days=d) for d in lab["days"]],
                                              pa.timestamp("us", tz="UTC"))}
        reads = 0; end = time.time() + 4
        while time.time() < end:
            out = s.get_historical_features(labels, ["a:x", "a:s"])
            assert out.column("x").to_pylist() == want["join"], "a training set changed under compaction"
            assert out.column("s").to_pylist() == want["s"]
            assert s.read_history("a").num_rows == 2400, "history rows lost or doubled"
            reads += 1
        print(reads)
        """,
        str(tmp_path),
    )
    c_out, c_err = compactor.communicate(timeout=60)
    r_out, r_err = reader.communicate(timeout=60)
    assert compactor.returncode == 0, c_err
    assert reader.returncode == 0, r_err
    assert int(c_out) > 5 and int(r_out) > 5, (c_out, r_out)
    got_rows = sorted(tuple(r.values()) for r in s.read_history("a").to_pylist())
    assert got_rows == want_rows
    assert s.get_historical_features(labels, ["a:x", "a:s"]).to_pydict() == want_join


def test_files_left_by_a_compaction_that_died_are_ignored_then_removed(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply(views())
    parts = history(3, 3, 100)
    for part in parts:
        s.write("a", part)
    folder = tmp_path / "offline" / "a"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    want = sorted(tuple(r.values()) for r in s.read_history("a").to_pylist())
    assert s.compact("a") == 300
    # A compaction that died after its file became durable, before removing the files it replaces.
    for name, data in before.items():
        (folder / name).write_bytes(data)
    assert sorted(tuple(r.values()) for r in s.read_history("a").to_pylist()) == want
    s.write("a", parts[0])
    assert s.read_history("a").num_rows == 400
    assert s.compact("a") == 400
    assert [p.name for p in folder.iterdir()] == ["part-000000000006.compact.parquet"]
