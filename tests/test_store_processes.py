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
    assert not r._pending and r.get({"user_id": [2], "merchant_id": ["10"]}).to_dict()["risk"] == [0.5]


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
