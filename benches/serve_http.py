"""HTTP serving latency under load: the README's FastAPI example (benches/serve_app.py, get_numpy) under
uvicorn on 127.0.0.1, driven by concurrent keep-alive clients for a fixed number of requests. Prints the
client-side p50/p99 latency of one request (HTTP included) and the throughput.

    python benches/serve_http.py [--entities 100000] [--requests 5000] [--concurrency 8]

Needs the `bench` extra (fastapi, uvicorn). The server runs one uvicorn process (one event loop); the
clients run in this process, so on a 2-core machine both compete for the same cores, as they would in a
small service container.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import skewless as sk

HERE = Path(__file__).resolve().parent


def build_store(path: str, n: int) -> None:
    """The README's user_spend view with `n` users, written once."""
    store = sk.FeatureStore(path)
    user = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    spend = sk.FeatureView(
        "user_spend",
        [user],
        [sk.Field("amount_7d", sk.Float64), sk.Field("txn_count_7d", sk.Int64)],
        ttl=dt.timedelta(days=30),
    )
    store.apply([user, spend])
    rng = np.random.default_rng(7)
    now = np.full(n, int(time.time() * 1e6))
    store.write(
        "user_spend",
        pa.table(
            {
                "user_id": np.arange(n, dtype=np.int64),
                "event_timestamp": pa.array(now, pa.timestamp("us", tz="UTC")),
                "amount_7d": rng.gamma(2.0, 50.0, n),
                "txn_count_7d": rng.integers(0, 40, n),
            }
        ),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {server.communicate()[1]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not listen in time") from None
            time.sleep(0.1)


def client(port: int, keys: np.ndarray, out: np.ndarray, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    clock = time.perf_counter_ns
    try:
        for i, k in enumerate(keys):
            t0 = clock()
            conn.request("GET", f"/features/{k}")
            resp = conn.getresponse()
            body = resp.read()
            out[i] = clock() - t0
            if resp.status != 200:
                errors.append(f"{resp.status} {body[:200]!r}")
                return
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=5_000)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        build_store(path, a.entities)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serve_app:app", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-access-log", "--log-level", "warning"],
            cwd=HERE,
            env={**os.environ, "SKEWLESS_STORE": path},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_listening(port, server)
            rng = np.random.default_rng(1)
            per = a.requests // a.concurrency
            keys = rng.integers(0, a.entities, (a.concurrency, per))
            warm: list[str] = []
            client(port, keys[0, : min(200, per)], np.empty(per, np.int64), warm)  # warm-up
            times = np.zeros((a.concurrency, per), np.int64)
            errors: list[str] = []
            threads = [
                threading.Thread(target=client, args=(port, keys[i], times[i], errors))
                for i in range(a.concurrency)
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=30)
        if errors or warm:
            raise SystemExit(f"requests failed: {(errors or warm)[:3]}")
        us = times.ravel() / 1e3
        result = {
            "requests": int(us.size),
            "concurrency": a.concurrency,
            "p50_us": round(float(np.percentile(us, 50)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1),
            "requests_per_s": round(us.size / wall),
            "cpus": os.cpu_count(),
        }
        print("| requests | concurrency | p50 | p99 | requests/s |\n|---|---|---|---|---|")
        print(
            f"| {result['requests']} | {a.concurrency} | {result['p50_us'] / 1e3:.2f} ms "
            f"| {result['p99_us'] / 1e3:.2f} ms | {result['requests_per_s']} |"
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
