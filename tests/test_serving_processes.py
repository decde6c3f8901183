"""An online reader in the process models of Python services, with real processes: a gunicorn
``--preload`` app with two workers, a multiprocessing pool started by fork, and threads sharing a reader
while another process writes."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
from conftest import wait_child
from skewless.online import OnlineStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
KEYS = np.arange(1_000)
COLS = 4

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def versioned(version: int, keys: np.ndarray = KEYS) -> pa.Table:
    """Every value column of every key holds `version`, so a read shows which write it saw, whole or not."""
    n = len(keys)
    t = pa.array(np.full(n, int(T0.timestamp() * 1e6) + version), pa.timestamp("us", "UTC"))
    cols = {f"c{j}": np.full(n, float(version)) for j in range(COLS)}
    return pa.table({"k": keys, "ts": t, **cols})


# multiprocessing: the worker function reads through a reader the parent opened before the pool forked.
_READER = None


def _read_in_worker(keys: list[int]) -> tuple[int, list[list[float]], list[int]]:
    assert _READER is not None
    values, status = _READER.get_numpy(keys)
    return os.getpid(), values.tolist(), status.tolist()


def test_multiprocessing_fork_pool_uses_the_parents_reader(tmp_path):
    global _READER
    store = OnlineStore(str(tmp_path / "s"))
    store.write("v", versioned(1), keys="k", timestamp="ts")
    _READER = store.reader("v")
    assert _READER.get_numpy([0])[1].tolist() == [0]  # used in the parent before the fork
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(2) as pool:
            out = pool.map(_read_in_worker, [[i, i + 1] for i in range(0, 40, 2)], chunksize=1)
            store.write("v", versioned(2, KEYS[:10]), keys="k", timestamp="ts")  # the parent writes
            after = pool.map(_read_in_worker, [[3, 500]] * 4, chunksize=1)
    finally:
        _READER = None
    assert {pid for pid, _, _ in out} - {os.getpid()}  # really read in other processes
    for _, values, status in out:
        assert status == [0, 0] and values == [[1.0] * COLS] * 2
    for _, values, _ in after:  # children see the parent's later write through their reopened store
        assert values == [[2.0] * COLS, [1.0] * COLS]


_FS_READER = None


def _fs_read_in_worker(user: int) -> tuple[int, list[float], int]:
    assert _FS_READER is not None
    values, status = _FS_READER.get_numpy([user])
    return os.getpid(), values[0].tolist(), int(status[0, 0])


def test_feature_store_reader_opened_before_a_fork_pool(tmp_path):
    """The FeatureStore's online reader (the README's serving example) through a fork, like the raw one."""
    import skewless as sk

    global _FS_READER
    store = sk.FeatureStore(str(tmp_path / "fs"))
    user = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    spend = sk.FeatureView("spend", [user], [sk.Field("amount", sk.Float64)])
    store.apply([user, spend])
    t = pa.array(np.full(3, int(T0.timestamp() * 1e6)), pa.timestamp("us", "UTC"))
    store.write("spend", pa.table({"user_id": [1, 2, 3], "event_timestamp": t, "amount": [1.5, 2.5, 3.5]}))
    _FS_READER = store.online_reader(["spend:amount"])
    assert _FS_READER.get_numpy([1])[0].tolist() == [[1.5]]  # used before the fork
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            out = pool.map(_fs_read_in_worker, [1, 2, 3, 4] * 5, chunksize=1)
    finally:
        _FS_READER = None
    assert {pid for pid, _, _ in out} - {os.getpid()}
    want = {1: [1.5], 2: [2.5], 3: [3.5]}
    for (_, values, status), user_id in zip(out, [1, 2, 3, 4] * 5, strict=True):
        if user_id in want:
            assert status == 0 and values == want[user_id]
        else:
            assert status == 1  # not found


def test_threads_share_one_reader_while_another_process_writes(tmp_path):
    path = str(tmp_path / "s")
    store = OnlineStore(path)
    store.write("v", versioned(1), keys="k", timestamp="ts")
    reader = store.reader("v")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, numpy as np, pyarrow as pa
                from skewless.online import OnlineStore
                s = OnlineStore(sys.argv[1])
                for v in range(2, 60):
                    t = pa.array(np.full(1000, 1767225600000000 + v), pa.timestamp("us", "UTC"))
                    cols = {f"c{j}": np.full(1000, float(v)) for j in range(4)}
                    s.write("v", pa.table({"k": np.arange(1000), "ts": t, **cols}), keys="k", timestamp="ts")
                """
            ),
            path,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert int(T0.timestamp() * 1e6) == 1767225600000000  # the writer's hard-coded T0

    def reads(seed: int) -> list[float]:
        rng = np.random.default_rng(seed)
        seen = []
        deadline = time.time() + 60
        while writer.poll() is None and time.time() < deadline:
            values, status = reader.get_numpy(rng.integers(0, len(KEYS), 50))
            assert (status == 0).all()
            # One write is one transaction: a read sees one version across its keys and columns.
            assert (values == values[0, 0]).all()
            seen.append(float(values[0, 0]))
        return seen

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(reads, range(8)))
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    for seen in runs:
        assert seen == sorted(seen)  # a thread never sees a version roll back
    assert max(max(s) for s in runs if s) > 1.0  # the writes were observed while reading
    assert reader.get_numpy([0])[0].tolist() == [[59.0] * COLS]


APP = textwrap.dedent(
    """
    import json, os
    import time
    from skewless.online import OnlineStore

    # Opened in the gunicorn master (--preload), before it forks its workers, and used there once.
    reader = OnlineStore(os.environ["SKEWLESS_TEST_STORE"]).reader("v")
    reader.get_numpy([0])

    def app(environ, start_response):
        key = int(environ["PATH_INFO"].strip("/"))
        values, status = reader.get_numpy([key])
        time.sleep(0.02)  # hold the worker briefly, so concurrent requests spread over both workers
        body = json.dumps({"pid": os.getpid(), "values": values[0].tolist(), "status": int(status[0])})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def test_gunicorn_preload_two_workers_serve_from_the_masters_reader(tmp_path):
    pytest.importorskip("gunicorn")
    path = str(tmp_path / "s")
    store = OnlineStore(path)
    store.write("v", versioned(1), keys="k", timestamp="ts")
    (tmp_path / "svc.py").write_text(APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "svc:app"],
        cwd=tmp_path,
        env={**os.environ, "SKEWLESS_TEST_STORE": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while True:  # wait until it listens; never hang on a server that died
            assert server.poll() is None, server.communicate()[1]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "gunicorn did not listen within 60 s"
                time.sleep(0.1)
        with ThreadPoolExecutor(4) as pool:
            first = list(pool.map(lambda k: get(port, f"/{k}"), range(80)))
        store.write("v", versioned(2, KEYS[:1]), keys="k", timestamp="ts")
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(lambda _: get(port, "/0"), range(20)))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert len({r["pid"] for r in first}) == 2, err  # both workers served
    assert all(r["status"] == 0 and r["values"] == [1.0] * COLS for r in first), err
    assert all(r["values"] == [2.0] * COLS for r in after), err  # workers see later writes
    assert "Traceback" not in err, err


def test_thread_in_a_transaction_at_fork_makes_the_childs_handle_raise(tmp_path):
    """The documented exception: a fork while another thread is inside a read on the store. The lock that
    thread held is held forever in the child, so the child's handle reports it rather than deadlocking."""
    from skewless import errors

    store = OnlineStore(str(tmp_path / "s"))
    store.write("v", versioned(1), keys="k", timestamp="ts")
    reader = store.reader("v")
    stop = threading.Event()
    many = np.arange(len(KEYS)).repeat(200)  # a long read, so the fork lands inside one most of the time

    def spin() -> None:
        while not stop.is_set():
            reader.get_numpy(many)

    t = threading.Thread(target=spin)
    t.start()
    codes = []
    try:
        for _ in range(20):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    try:
                        reader.get_numpy([0])
                        code = 0  # the fork fell between two reads: reopened
                    except errors.StorageError as e:
                        code = 3 if "in use by another thread when this process forked" in str(e) else 4
                finally:
                    os._exit(code)
            codes.append(wait_child(pid, "a forked child hung instead of reporting the held lock"))
    finally:
        stop.set()
        t.join()
    assert set(codes) <= {0, 3}, codes  # reopened, or the typed error; never a hang or another error
    assert 3 in codes, codes
