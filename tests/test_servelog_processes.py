"""The served-feature log with real processes: two serving processes logging into one store while a
check runs, and ``kill -9`` in the middle of flushes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
import skewless as sk
from skewless.servelog import segments

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


def make_store(path):
    store = sk.FeatureStore(path)
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    store.apply([u, sk.FeatureView("v", [u], [sk.Field("x", sk.Float64), sk.Field("n", sk.Int64)])])
    ids = list(range(50))
    store.write(
        "v",
        {
            "user_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array([T0] * 50, TS),
            "x": [i / 7 for i in ids],
            "n": ids,
        },
    )
    return store


SERVER = """
import datetime as dt, json, sys, time
import numpy as np
import skewless as sk
from skewless.servelog import ServeLog
store = sk.FeatureStore(sys.argv[1])
store._serve_log = ServeLog(store.path + "/logs", interval=0.05)
rng = np.random.default_rng(int(sys.argv[2]))
t0 = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
n = 0
with store.online_reader(["v:x", "v:n"], log=True) as r:
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        users = rng.integers(0, 60, 3).tolist()  # some not found
        if n % 2:
            r.get({"user_id": users}, as_of=t0)
        else:
            r.get_numpy(users, as_of=t0)
        n += len(users)
print(json.dumps({"rows": n, "dropped": store.serve_log.dropped}))
"""


def test_two_serving_processes_log_into_one_store_while_a_check_runs(tmp_path):
    store = make_store(str(tmp_path / "s"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER, store.path, str(seed), "3"], stdout=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    ]
    checks = 0
    while any(p.poll() is None for p in procs):
        report = store.check_skew()  # segments appear while it reads: only whole ones are seen
        assert report.alerts == [], report.to_markdown()
        checks += 1
        time.sleep(0.1)
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert checks >= 2
    report = store.check_skew()
    assert report.alerts == []
    served = sum(o["rows"] - o["dropped"] for o in outs)
    m = report.features["v:x"]
    assert m["rows"] == served and m["mismatches"] == 0
    tokens = {os.path.basename(p).split("-")[3] for _, _, p in segments(os.path.join(store.path, "logs"))}
    assert len(tokens) == 2


FLOODER = """
import datetime as dt, sys
import numpy as np
import skewless as sk
from skewless.servelog import ServeLog
store = sk.FeatureStore(sys.argv[1])
store._serve_log = ServeLog(store.path + "/logs", interval=0.01)
t0 = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
rows = 5_000
k = 0
while True:
    k += 1
    users = np.arange(rows) % 50
    ids = [f"{k}-{i}" for i in range(rows)]
    store.log_served({"user_id": users}, {"v:x": users / 7, "v:n": users}, t0, request_ids=ids)
    if k == 3:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_kill_9_during_flushes_leaves_only_whole_segments(tmp_path, delay):
    store = make_store(str(tmp_path / "s"))
    p = subprocess.Popen([sys.executable, "-c", FLOODER, store.path], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        # The kill must land while flushes go on, after a first whole segment: under load the first flush
        # can come later than `delay`, so wait for it rather than for a fixed time.
        folder = os.path.join(store.path, "logs")
        deadline = time.time() + 60
        while not (os.path.isdir(folder) and any(e.name.startswith("seg-") for e in os.scandir(folder))):
            assert time.time() < deadline, "the child wrote no log segment within 60 s"
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    log = store.read_log()  # raises StorageError on any damaged segment
    assert log, "the child wrote segments before it was killed"
    if log:
        x = log["v:x"]
        # Whole calls only: each call's 5 000 rows land together or not at all.
        assert x.num_rows % 5_000 == 0
        assert len(set(x.column("__request_id__").to_pylist())) == x.num_rows
        assert store.check_skew().alerts == []
    # Leftover temp files are hidden from readers; prune removes them once they are old.
    for e in os.scandir(folder):
        assert e.name.startswith((".tmp-", "seg-")), e.name


GUNICORN_APP = """
import datetime as dt, json, os, time
import skewless as sk

# Opened in the gunicorn master (--preload) and used there once, so the master has a queued entry and
# a running flusher when it forks its workers.
store = sk.FeatureStore(os.environ["SKEWLESS_TEST_STORE"])
reader = store.online_reader(["v:x", "v:n"], log=True)
AT = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
reader.get_numpy([0], as_of=AT)

def app(environ, start_response):
    key = int(environ["PATH_INFO"].strip("/"))
    values, status = reader.get_numpy([key], as_of=AT)
    time.sleep(0.02)  # hold the worker briefly, so concurrent requests spread over both workers
    body = json.dumps({"pid": os.getpid(), "x": values[0, 0]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
"""


def test_gunicorn_preforked_workers_log_their_own_requests_once(tmp_path):
    pytest.importorskip("gunicorn")
    import http.client
    import socket
    from concurrent.futures import ThreadPoolExecutor

    store = make_store(str(tmp_path / "s"))
    (tmp_path / "svc.py").write_text(GUNICORN_APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "svc:app"],
        cwd=tmp_path,
        env={**os.environ, "SKEWLESS_TEST_STORE": store.path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def get(key: int) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", f"/{key}")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    try:
        deadline = time.time() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "gunicorn did not listen within 60 s"
                time.sleep(0.1)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(get, [1 + k % 49 for k in range(60)]))
    finally:
        server.send_signal(signal.SIGTERM)  # a graceful stop: every process flushes its log at exit
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert len({a["pid"] for a in answers}) == 2, err
    x = store.read_log()["v:x"]
    users = sorted(x.column("user_id").to_pylist())
    # The master's one lookup once (not once per forked copy of its queue), and every request once.
    assert users == sorted([0] + [1 + k % 49 for k in range(60)]), err
    assert len(set(x.column("__request_id__").to_pylist())) == x.num_rows
    assert store.check_skew().alerts == []
