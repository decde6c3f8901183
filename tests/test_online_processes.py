"""The online store under real processes: concurrent writer and readers, kill -9 of a writer mid-write,
stale reader slots, fork, and a map grown by another process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import wait_child
from skewless.online import OnlineStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
COLS = 8
PRELUDE = textwrap.dedent(
    """
    import datetime as dt, json, os, sys, time
    import numpy as np, pyarrow as pa
    from skewless.online import OnlineStore
    T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    def versioned(keys, version, cols):
        n = len(keys)
        t = pa.array(np.full(n, int(T0.timestamp() * 1e6) + version), pa.timestamp("us", "UTC"))
        return pa.table({"k": keys, "ts": t, **{f"c{j}": np.full(n, float(version)) for j in range(cols)}})
    """
)


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def versioned(keys, version: int, cols: int = COLS) -> pa.Table:
    n = len(keys)
    t = pa.array(np.full(n, int(T0.timestamp() * 1e6) + version), pa.timestamp("us", "UTC"))
    return pa.table({"k": keys, "ts": t, **{f"c{j}": np.full(n, float(version)) for j in range(cols)}})


def test_one_writer_four_readers_see_only_whole_writes(tmp_path):
    path = str(tmp_path / "s")
    keys = np.arange(500)
    OnlineStore(path).write("v", versioned(keys, 1), keys="k", timestamp="ts")
    writer = spawn(
        """
        s = OnlineStore(sys.argv[1]); keys = np.arange(500); v = 1; end = time.time() + 3
        while time.time() < end:
            v += 1
            s.write("v", versioned(keys, v, 8), keys="k", timestamp="ts")
        print(v)
        """,
        path,
    )
    readers = [
        spawn(
            """
            s = OnlineStore(sys.argv[1]); r = s.reader("v"); rng = np.random.default_rng(int(sys.argv[2]))
            last = np.zeros(500); reads = 0; versions = set(); end = time.time() + 3
            while time.time() < end:
                req = rng.integers(0, 500, size=int(rng.integers(1, 200)))
                values, status = r.get_numpy(req)
                assert (status == 0).all(), status
                assert (values == values[:, :1]).all(), "a vector mixes versions"
                assert (values[:, 0] >= last[req]).all(), "a value rolled back"
                last[req] = values[:, 0]
                versions.update(values[:, 0].tolist()); reads += 1
            print(json.dumps({"reads": reads, "versions": len(versions)}))
            """,
            path,
            str(i),
        )
        for i in range(4)
    ]
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert int(out) > 2
    for p in readers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        res = json.loads(out)
        assert res["reads"] > 100 and res["versions"] > 1


def test_kill_9_mid_write_leaves_the_last_committed_state(tmp_path):
    path = str(tmp_path / "s")
    store = OnlineStore(path)
    keys = np.arange(1000)
    store.write("v", versioned(keys, 1, 2), keys="k", timestamp="ts")
    reader = store.reader("v")  # stays open across the crash
    writer = spawn(
        """
        s = OnlineStore(sys.argv[1])
        s.write("v", versioned(np.arange(1000), 2, 2), keys="k", timestamp="ts")
        big = versioned(np.random.default_rng(0).permutation(3_000_000), 3, 2)
        print("big", flush=True)
        s.write("v", big, keys="k", timestamp="ts")
        print("done", flush=True)
        """,
        path,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "big"
    # Kill only once the big write holds LMDB's writer lock: a probe write to another view then blocks.
    # After the kill the probe goes through (LMDB recovers the dead owner's robust mutex).
    probe = {"k": [1], "ts": [T0], "x": [1.0]}
    deadline = time.time() + 60
    while True:
        done = threading.Event()
        failures: list[BaseException] = []

        def write_probe(done: threading.Event = done, failures: list = failures) -> None:
            try:
                store.write("probe", probe, keys="k", timestamp="ts")
            except BaseException as e:  # noqa: BLE001 - reported to the main thread
                failures.append(e)
            done.set()

        t = threading.Thread(target=write_probe)
        t.start()
        if not done.wait(0.3):
            break  # blocked: the child is inside its write transaction
        t.join()
        assert not failures, failures
        assert writer.poll() is None, "the big write finished before it could be interrupted"
        assert time.time() < deadline
    writer.send_signal(signal.SIGKILL)
    out, _ = writer.communicate(timeout=30)
    assert "done" not in out
    t.join(timeout=30)
    assert done.is_set() and not failures, failures

    values, status = reader.get_numpy(np.arange(1005))
    assert (status[:1000] == 0).all() and (status[1000:] == 1).all()
    assert (values[:1000] == 2.0).all()
    check = spawn(
        """
        s = OnlineStore(sys.argv[1]); r = s.reader("v")
        values, status = r.get_numpy(np.arange(2000))
        present = status == 0
        print(json.dumps({"present": int(present.sum()), "values": sorted(set(values[present, 0].tolist()))}))
        """,
        path,
    )
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, err
    assert json.loads(out) == {"present": 1000, "values": [2.0]}
    # The dead writer's lock was released: this process can write.
    assert store.write("v", versioned(keys[:10], 4, 2), keys="k", timestamp="ts").rows_written == 10


def test_reader_slots_of_killed_processes_are_reclaimed(tmp_path):
    path = str(tmp_path / "s")
    store = OnlineStore(path)
    store.write("v", versioned(np.arange(10), 1, 1), keys="k", timestamp="ts")
    assert store.clear_stale_readers() == 0

    def kill_readers(n: int) -> None:
        procs = [
            spawn(
                """
                s = OnlineStore(sys.argv[1]); s.reader("v").get_numpy([1])
                print("ready", flush=True); time.sleep(60)
                """,
                path,
            )
            for _ in range(n)
        ]
        # All must be reading before any dies: a process that opens the store clears dead slots itself.
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)

    kill_readers(3)
    assert store.clear_stale_readers() == 3
    assert store.clear_stale_readers() == 0
    kill_readers(2)
    fresh = spawn("print(OnlineStore(sys.argv[1]).stale_readers_cleared)", path)
    out, err = fresh.communicate(timeout=60)
    assert fresh.returncode == 0, err
    assert int(out) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_inherited_handles_reopen_the_store_in_the_child(tmp_path):
    path = str(tmp_path / "s")
    store = OnlineStore(path)
    store.write("v", versioned(np.arange(10), 1, 1), keys="k", timestamp="ts")
    reader = store.reader("v")
    pid = os.fork()
    if pid == 0:  # child: report through the exit code, never return into pytest
        code = 1
        try:
            values, status = reader.get_numpy([1])  # the inherited reader reopens the environment
            if status.tolist() == [0] and values.tolist() == [[1.0]]:
                store.write("v", versioned(np.arange(5), 2, 1), keys="k", timestamp="ts")  # inherited store
                again, _ = OnlineStore(path).reader("v").get_numpy([1, 7])  # a new handle shares it
                code = 0 if again.tolist() == [[2.0], [1.0]] else 3
        finally:
            os._exit(code)
    assert wait_child(pid, "the forked child did not finish within 60 s") == 0
    # The parent's handles were never closed by the child and see the child's write.
    values, status = reader.get_numpy([1, 7])
    assert values.tolist() == [[2.0], [1.0]] and status.tolist() == [0, 0]


def test_readers_adopt_a_map_grown_by_another_process(tmp_path):
    path = str(tmp_path / "s")
    store = OnlineStore(path, map_size=64 * 1024)
    store.write("v", versioned(np.arange(10), 1, 1), keys="k", timestamp="ts")
    reader = store.reader("v")
    grower = spawn(
        """
        s = OnlineStore(sys.argv[1], map_size=64 * 1024)
        s.write("v", versioned(np.arange(200_000), 2, 1), keys="k", timestamp="ts")
        print(s.map_size)
        """,
        path,
    )
    out, err = grower.communicate(timeout=120)
    assert grower.returncode == 0, err
    assert int(out) > 64 * 1024 * 8
    values, status = reader.get_numpy(np.arange(200_000))
    assert (status == 0).all() and (values == 2.0).all()
    assert store.map_size >= int(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_map_that_cannot_grow_for_lack_of_address_space_raises_map_full(tmp_path):
    # In a child with an address-space limit of 1.5 maps more than it uses: the write's dirty pages fit,
    # doubling the map does not, so the write must fail with MapFullError and leave the store as it was.
    check = spawn(
        """
        import resource
        from skewless import errors
        ts = lambda n, v: pa.array(np.full(n, 1_700_000_000_000_000 + v), pa.timestamp("us", "UTC"))
        s = OnlineStore(sys.argv[1], map_size=8 << 20)
        n = 40_000
        s.write("v", pa.table({"k": np.arange(n), "ts": ts(n, 0), "b": pa.array([b"x" * 1000] * n)}),
                keys="k", timestamp="ts")
        m = s.map_size
        more = pa.table({"k": np.arange(n, 2 * n), "ts": ts(n, 1), "b": pa.array([b"y" * 1000] * n)})
        status_lines = open("/proc/self/status").read().splitlines()
        vm = [int(line.split()[1]) * 1024 for line in status_lines if line.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + m + m // 2, resource.RLIM_INFINITY))
        try:
            s.write("v", more, keys="k", timestamp="ts")
            outcome = "written"
        except errors.MapFullError as e:
            outcome = "map full" if "address space" in str(e) else str(e)
        status = s.reader("v").get([0, n - 1, n, 2 * n - 1]).column("status").to_pylist()
        small = s.write("v", {"k": [n], "ts": ts(1, 2), "b": [b"ok"]}, keys="k", timestamp="ts").rows_written
        print(json.dumps({"outcome": outcome, "status": status, "map": s.map_size == m, "small": small}))
        """,
        str(tmp_path / "s"),
    )
    out, err = check.communicate(timeout=120)
    assert check.returncode == 0, err
    assert json.loads(out) == {"outcome": "map full", "status": [0, 0, 1, 1], "map": True, "small": 1}
