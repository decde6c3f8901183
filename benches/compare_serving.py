"""Serving latency: the engine's serving plan (``FeatureStore.online_reader``) against py-lmdb in the same
run, and the Rust floor printed by ``cargo run --release --example lmdb_floor``.

Two workloads, each over ``--entities`` (default 100k) entities:

- 3 views / 7 float64 features (two views keyed by ``user_id``, one by ``merchant_id``): ``get_numpy`` and
  ``get`` for one entity and for 100 entities, beside ONE py-lmdb ``txn.get`` of one key (transaction, get,
  ``np.frombuffer``).
- 1 view / 5 float64 features: 100 random keys and one key, ``get_numpy``, beside py-lmdb's Python loop
  (one transaction, a ``get`` and an unpack per key) and its single get.

Prints a markdown table of p50 / p99 in microseconds and the ratios the targets are stated in.

    python benches/compare_serving.py [--entities 100000] [--iters 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
import pyarrow as pa
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64

KEY = struct.Struct(">q")
T = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def timings(fn: Callable[[object], object], args: list) -> tuple[float, float]:
    for a in args[: min(500, len(args))]:  # warm-up
        fn(a)
    times = np.empty(len(args))
    clock = time.perf_counter_ns
    for i, a in enumerate(args):
        t0 = clock()
        fn(a)
        times[i] = clock() - t0
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--iters", type=int, default=20_000, help="calls per one-entity measurement")
    args = ap.parse_args()
    n = args.entities
    rng = np.random.default_rng(7)
    tmp = Path(tempfile.mkdtemp(prefix="skewless-serving-"))
    rows: list[tuple[str, float, float]] = []
    try:
        store = FeatureStore(tmp / "store")
        user = Entity("user", join_keys=["user_id"], dtype=Int64)
        merchant = Entity("merchant", join_keys=["merchant_id"], dtype=Int64)
        widths = {"a": (user, 3), "b": (user, 2), "m": (merchant, 2), "one": (user, 5)}
        views = [
            FeatureView(v, [e], [Field(f"{v}{j}", Float64) for j in range(w)]) for v, (e, w) in widths.items()
        ]
        store.apply([user, merchant, *views])
        ids = np.arange(n, dtype=np.int64)
        ts = pa.array(
            np.full(n, int((T - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() * 1e6)),
            pa.timestamp("us", "UTC"),
        )
        for v, (e, w) in widths.items():
            cols = {e.join_keys[0]: ids, "event_timestamp": ts}
            cols.update({f"{v}{j}": rng.random(n) for j in range(w)})
            store.write(v, pa.table(cols))

        # py-lmdb: the same 5 float64 per key, raw.
        env = lmdb.open(str(tmp / "lmdb"), map_size=1 << 30)
        vals5 = rng.random((n, 5))
        with env.begin(write=True) as txn:
            for i in range(n):
                txn.put(KEY.pack(i), vals5[i].tobytes())

        def lmdb_one(k: int) -> object:
            with env.begin() as txn:
                return np.frombuffer(txn.get(KEY.pack(k)), np.float64)

        def lmdb_loop(ks: list[int]) -> object:
            with env.begin() as txn:
                return np.array([np.frombuffer(txn.get(KEY.pack(k)), np.float64) for k in ks])

        one_keys = rng.integers(0, n, size=args.iters).tolist()
        hundred = [rng.integers(0, n, size=100).tolist() for _ in range(max(1, args.iters // 10))]

        # --- 3 views / 7 features
        r3 = store.online_reader(["a:a0", "a:a1", "a:a2", "b:b0", "b:b1", "m:m0", "m:m1"])
        one_rows = [{"user_id": [k], "merchant_id": [k]} for k in one_keys]
        hundred_rows = [{"user_id": ks, "merchant_id": ks[::-1]} for ks in hundred]
        v, st = r3.get_numpy(one_rows[0])
        assert v.shape == (1, 7) and (st == 0).all()
        base = timings(lmdb_one, one_keys)
        rows.append(("py-lmdb: one txn.get of one key (txn, get, np.frombuffer)", *base))
        g1 = timings(r3.get_numpy, one_rows)
        rows.append(("3 views / 7 features, get_numpy, 1 entity", *g1))
        rows.append(("3 views / 7 features, get_numpy, 100 entities", *timings(r3.get_numpy, hundred_rows)))
        gr = timings(r3.get, one_rows)
        rows.append(("3 views / 7 features, get (OnlineResponse), 1 entity", *gr))
        rows.append(
            (
                "3 views / 7 features, get(...).to_arrow(), 1 entity",
                *timings(lambda e: r3.get(e).to_arrow(), one_rows),
            )
        )
        rows.append(
            ("3 views / 7 features, get (OnlineResponse), 100 entities", *timings(r3.get, hundred_rows))
        )

        # --- 1 view / 5 features
        r1 = store.online_reader(["one:one0", "one:one1", "one:one2", "one:one3", "one:one4"])
        loop = timings(lmdb_loop, hundred)
        rows.append(("py-lmdb: Python loop over 100 keys (one txn)", *loop))
        s100 = timings(r1.get_numpy, hundred)
        rows.append(("1 view / 5 features, get_numpy, 100 keys", *s100))
        s1 = timings(r1.get_numpy, [[k] for k in one_keys])
        rows.append(("1 view / 5 features, get_numpy, 1 key", *s1))
        env.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{n:,} entities; p50 / p99 in microseconds\n")
    print("| call | p50 us | p99 us |")
    print("| --- | ---: | ---: |")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.2f} | {p99:.2f} |")
    print()
    print(
        f"3 views, 1 entity: get_numpy / one py-lmdb get = {g1[0] / base[0]:.2f}x "
        "(target <= 1.5x, p50 <= 3 us)"
    )
    print(f"3 views, 1 entity: get / get_numpy = {gr[0] / g1[0]:.2f}x (target <= 2x)")
    print(f"1 view, 100 keys: get_numpy / py-lmdb loop = {s100[0] / loop[0]:.3f}x (target <= 0.1x)")
    print(f"1 view, 1 key: get_numpy / one py-lmdb get = {s1[0] / base[0]:.2f}x (target <= 0.67x)")


if __name__ == "__main__":
    main()
