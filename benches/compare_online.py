"""Online lookups side by side: skewless (get_numpy, get), raw py-lmdb with a Python loop, SQLite in-process,
and Redis on loopback. Loads N entities x 5 float64, then measures p50/p99 latency of one key per call and
100 keys per call, and write throughput. Prints a markdown table.

    python benches/compare_online.py [--entities 100000] [--iters 20000]

Redis runs only when ``redis-server`` is on PATH (started here on a free 127.0.0.1 port without
persistence, stopped at the end) and the ``redis`` package is installed; otherwise "redis: skipped".
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import socket
import sqlite3
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from skewless.online import OnlineStore

NCOLS = 5
VALUE = struct.Struct(f"<{NCOLS}d")
KEY = struct.Struct(">q")


def percentiles(fn: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> tuple[float, float]:
    for b in batches[: min(200, len(batches))]:  # warm-up
        fn(b)
    times = np.empty(len(batches))
    clock = time.perf_counter_ns
    for i, b in enumerate(batches):
        t0 = clock()
        fn(b)
        times[i] = clock() - t0
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--iters", type=int, default=20_000, help="calls per one-key measurement")
    args = ap.parse_args()
    n = args.entities
    rng = np.random.default_rng(7)
    ids = np.arange(n, dtype=np.int64)
    values = rng.random((n, NCOLS))
    one = [rng.integers(0, n, size=1) for _ in range(args.iters)]
    hundred = [rng.integers(0, n, size=100) for _ in range(max(1, args.iters // 10))]
    rows: list[tuple[str, float, float, float, float, float | None]] = []
    tmp = Path(tempfile.mkdtemp(prefix="skewless-compare-"))
    try:
        # --- skewless
        t = pa.array(np.full(n, 1_700_000_000_000_000), pa.timestamp("us", "UTC"))
        table = pa.table({"id": ids, "ts": t, **{f"f{j}": values[:, j] for j in range(NCOLS)}})
        store = OnlineStore(tmp / "skewless")
        t0 = time.perf_counter()
        store.write("v", table, keys="id", timestamp="ts")
        write_rate = n / (time.perf_counter() - t0)
        reader = store.reader("v")
        got, status = reader.get_numpy(hundred[0])
        assert (status == 0).all() and np.array_equal(got, values[hundred[0]])

        def sk_numpy(keys: np.ndarray) -> object:
            return reader.get_numpy(keys.tolist())

        def sk_get(keys: np.ndarray) -> object:
            return reader.get(keys.tolist())

        rows.append(
            (
                "skewless Reader.get_numpy",
                *percentiles(sk_numpy, one),
                *percentiles(sk_numpy, hundred),
                write_rate,
            )
        )
        rows.append(
            ("skewless Reader.get (pyarrow)", *percentiles(sk_get, one), *percentiles(sk_get, hundred), None)
        )

        # --- raw py-lmdb, Python loop
        import lmdb

        env = lmdb.open(str(tmp / "lmdb"), map_size=1 << 30)
        t0 = time.perf_counter()
        with env.begin(write=True) as txn:
            for i in range(n):
                txn.put(KEY.pack(int(ids[i])), VALUE.pack(*values[i]))
        lmdb_rate = n / (time.perf_counter() - t0)

        def py_lmdb(keys: np.ndarray) -> object:
            with env.begin() as txn:
                return np.array([VALUE.unpack(txn.get(KEY.pack(k))) for k in keys.tolist()])

        assert np.array_equal(py_lmdb(hundred[0]), values[hundred[0]])
        rows.append(
            ("py-lmdb + Python loop", *percentiles(py_lmdb, one), *percentiles(py_lmdb, hundred), lmdb_rate)
        )
        env.close()

        # --- SQLite in-process, primary-key table
        db = sqlite3.connect(str(tmp / "sqlite.db"))
        cols = ", ".join(f"f{j} REAL" for j in range(NCOLS))
        db.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {cols})")
        t0 = time.perf_counter()
        db.executemany(
            f"INSERT INTO t VALUES (?{', ?' * NCOLS})",
            ((int(i), *map(float, v)) for i, v in zip(ids, values, strict=True)),
        )
        db.commit()
        sqlite_rate = n / (time.perf_counter() - t0)
        fields = ", ".join(f"f{j}" for j in range(NCOLS))
        q1 = f"SELECT {fields} FROM t WHERE id = ?"
        q100 = f"SELECT id, {fields} FROM t WHERE id IN ({', '.join('?' * 100)})"

        def sqlite_get(keys: np.ndarray) -> object:
            ks = keys.tolist()
            if len(ks) == 1:
                return np.array([db.execute(q1, ks).fetchone()])
            found = {r[0]: r[1:] for r in db.execute(q100, ks)}
            return np.array([found[k] for k in ks])

        assert np.array_equal(sqlite_get(hundred[0]), values[hundred[0]])
        rows.append(
            (
                "SQLite (in-process)",
                *percentiles(sqlite_get, one),
                *percentiles(sqlite_get, hundred),
                sqlite_rate,
            )
        )
        db.close()

        # --- Redis on loopback
        server = shutil.which("redis-server")
        try:
            import redis
        except ImportError:
            redis = None
        if server is None or redis is None:
            print("redis: skipped (redis-server not on PATH or the redis package missing)")
        else:
            port = free_port()
            proc = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                r = redis.Redis(host="127.0.0.1", port=port)
                for _ in range(100):
                    try:
                        r.ping()
                        break
                    except redis.ConnectionError:
                        time.sleep(0.05)
                t0 = time.perf_counter()
                pipe = r.pipeline(transaction=False)
                for start in range(0, n, 10_000):
                    pipe.mset(
                        {
                            KEY.pack(int(i)): VALUE.pack(*values[i])
                            for i in range(start, min(n, start + 10_000))
                        }
                    )
                pipe.execute()
                redis_rate = n / (time.perf_counter() - t0)

                def redis_get(keys: np.ndarray) -> object:
                    ks = [KEY.pack(k) for k in keys.tolist()]
                    if len(ks) == 1:
                        return np.array([VALUE.unpack(r.get(ks[0]))])
                    return np.array([VALUE.unpack(v) for v in r.mget(ks)])

                assert np.array_equal(redis_get(hundred[0]), values[hundred[0]])
                rows.append(
                    (
                        "Redis (loopback, GET/MGET)",
                        *percentiles(redis_get, one),
                        *percentiles(redis_get, hundred),
                        redis_rate,
                    )
                )
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{n:,} entities x {NCOLS} float64, {args.iters:,} one-key calls, {len(hundred):,} 100-key calls")
    print(f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print("| system | 1 key p50 (us) | 1 key p99 (us) | 100 keys p50 (us) | 100 keys p99 (us) ", end="")
    print("| write (rows/s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, a50, a99, b50, b99, w in rows:
        rate = "" if w is None else f"{w:,.0f}"
        print(f"| {name} | {a50:.1f} | {a99:.1f} | {b50:.1f} | {b99:.1f} | {rate} |")


if __name__ == "__main__":
    main()
