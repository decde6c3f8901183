"""Event views online: ``store.push`` throughput and the online read latency of a 12-aggregate view.

    python benches/bench_push.py S [--batch 10000] [--reads 20000]

Workload: the standard feature rows as events (``f0`` as the amount; DESIGN.md, "Workloads"), pushed in
time order in batches of ``--batch`` rows into an event view with sum, count, mean and max of the amount
over 1h, 7d and 30d (12 aggregates). Reported: events/s of ``store.push`` (validation, the history's
Parquet file and the online window state, one call per batch), and of the online half alone (the same
batches merged into the window state by the engine, ``skewless.events.push_events``); then the latency
of ``online_reader(...).get_numpy([entity], as_of=t)`` (one entity, all 12 aggregates evaluated at the
request instant) over random entities, at the instant of the newest event. Output: a markdown table;
throughputs also per second of the process's CPU time (on a shared machine, wall time includes waiting).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402

WINDOWS = ("1h", "7d", "30d")
FUNCS = ("sum", "count", "mean", "max")


def rate(n: int, wall: float, cpu: float) -> str:
    """Events per second of wall time, and per second of this process's CPU time (the machine may be
    shared: CPU time leaves out waiting for it, not the commit's disk writes)."""
    return f"{n / wall:,.0f} events/s ({n / cpu:,.0f} per CPU-second)"


def main() -> None:
    import skewless as sk
    from skewless.events import push_events

    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=["S", "M", "L"])
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=20_000)
    a = ap.parse_args()

    feats, _ = _workload.load(a.size)
    events = feats.select(["entity_id", "event_timestamp", "f0"]).rename_columns(
        ["user_id", "event_timestamp", "amount"]
    )
    events = events.take(pc.sort_indices(events, [("event_timestamp", "ascending")]))
    user = sk.Entity("user", dtype=sk.Int64)
    view = sk.FeatureView(
        "txn",
        [user],
        [sk.Field("amount", sk.Float64)],
        aggregations=[sk.Aggregation("amount", f, w) for w in WINDOWS for f in FUNCS],
    )
    batches = [events.slice(i, a.batch) for i in range(0, events.num_rows, a.batch)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = sk.FeatureStore(d)
        store.apply([user, view])
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            store.push("txn", b)
        full, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append((f"store.push, batches of {a.batch}", rate(events.num_rows, full, cpu)))

        online = store._online()
        seq = pa.array(np.arange(events.num_rows, dtype=np.int64))
        t0, c0 = time.perf_counter(), time.process_time()
        for i, b in enumerate(batches):
            push_events(online, view, b, seq.slice(i * a.batch, b.num_rows), reset=i == 0)
        half, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append((f"online window state alone, batches of {a.batch}", rate(events.num_rows, half, cpu)))

        reader = store.online_reader(["txn:" + x.name for x in view.aggregations])
        at: dt.datetime = pc.max(events.column("event_timestamp")).as_py()
        ids = np.random.default_rng(1).choice(pc.unique(events.column("user_id")).to_numpy(), a.reads)
        keys = [[int(k)] for k in ids]
        for k in keys[:1000]:
            reader.get_numpy(k, as_of=at)
        lat = []
        for k in keys:
            s = time.perf_counter_ns()
            reader.get_numpy(k, as_of=at)
            lat.append(time.perf_counter_ns() - s)
        q = statistics.quantiles(lat, n=100)
        rows.append(("online read, 1 entity x 12 aggregates, p50", f"{statistics.median(lat) / 1000:.1f} us"))
        rows.append(("online read, 1 entity x 12 aggregates, p99", f"{q[98] / 1000:.1f} us"))
        vals, status = reader.get_numpy(keys[0], as_of=at)
        assert status[0, 0] == 0 and vals.shape == (1, 12)

    print(f"size {a.size}: {events.num_rows:,} events, {len(batches)} batches\n")
    print("| measure | value |\n| --- | ---: |")
    for name, v in rows:
        print(f"| {name} | {v} |")


if __name__ == "__main__":
    main()
