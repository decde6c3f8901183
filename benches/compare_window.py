"""skewless.window_aggregate side by side with polars and DuckDB on the standard window workload.

    python benches/compare_window.py S [--repeat 3] [--engines skewless,polars,duckdb] [--no-check]

Workload (DESIGN.md, "Workloads"): the feature rows as events (f0 as the amount, f1's nulls skipped by
nothing here: f0 has none), the label rows as request instants; sum, count, mean and max of the amount
over 1h, 7d and 30d windows (12 aggregates), each over (t - w, t] of the label's entity.
How each peer is made to compute exactly that:
- polars: events and labels in one frame sorted by (entity, time, events before labels at equal times),
  `rolling(period=w, closed="right", group_by=entity)` over it, label rows kept; an empty window's sum
  is made null (polars sums no value to 0).
- DuckDB: the same union with window functions `RANGE BETWEEN INTERVAL (w - 1 us) PRECEDING AND CURRENT
  ROW` (microsecond times: >= t - w + 1 us is > t - w), label rows kept, back in label order.
Every engine runs in a fresh subprocess (its own time and peak RSS); the agreement check runs all of
them once in this process. Output: a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402

WINDOWS = {"1h": 3600, "7d": 7 * 86400, "30d": 30 * 86400}
FUNCS = ["sum", "count", "mean", "max"]
ENGINES = ["skewless", "polars", "duckdb"]


def names() -> list[str]:
    return [f"amount_{f}_{w}" for w in WINDOWS for f in FUNCS]


def run_skewless(events: pa.Table, labels: pa.Table) -> pa.Table:
    import skewless as sk

    aggs = [sk.Aggregation("amount", f, w) for w in WINDOWS for f in FUNCS]
    out = sk.window_aggregate(labels, events, on="event_timestamp", by="entity_id", aggregations=aggs)
    return out.select(names())


def run_polars(events: pa.Table, labels: pa.Table) -> pa.Table:
    import polars as pl

    ev = pl.from_arrow(events.select(["entity_id", "event_timestamp", "amount"]))
    lab = pl.from_arrow(labels.select(["entity_id", "event_timestamp"]))
    assert isinstance(ev, pl.DataFrame) and isinstance(lab, pl.DataFrame)
    both = pl.concat(
        [
            ev.with_columns(pl.lit(0, pl.Int8).alias("is_label"), pl.lit(None, pl.UInt32).alias("rid")),
            lab.with_columns(
                pl.lit(None, pl.Float64).alias("amount"),
                pl.lit(1, pl.Int8).alias("is_label"),
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("rid"),
            ).select(["entity_id", "event_timestamp", "amount", "is_label", "rid"]),
        ]
    ).sort(["entity_id", "event_timestamp", "is_label"])
    parts = []
    for w in WINDOWS:
        r = both.rolling("event_timestamp", period=w, closed="right", group_by="entity_id").agg(
            [
                pl.col("rid").last(),
                pl.col("is_label").last(),
                pl.col("amount").sum().alias(f"amount_sum_{w}"),
                pl.col("amount").count().alias(f"amount_count_{w}"),
                pl.col("amount").mean().alias(f"amount_mean_{w}"),
                pl.col("amount").max().alias(f"amount_max_{w}"),
            ]
        )
        r = r.filter(pl.col("is_label") == 1).sort("rid")
        r = r.with_columns(
            pl.when(pl.col(f"amount_count_{w}") > 0).then(pl.col(f"amount_sum_{w}")).alias(f"amount_sum_{w}")
        )
        parts.append(r.select([f"amount_{f}_{w}" for f in FUNCS]))
    return pl.concat(parts, how="horizontal").select(names()).to_arrow()


def run_duckdb(events: pa.Table, labels: pa.Table) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    ev = events.select(["entity_id", "event_timestamp", "amount"])  # noqa: F841 - read by DuckDB by name
    lab = labels.select(["entity_id", "event_timestamp"])  # noqa: F841
    cols = []
    for w, secs in WINDOWS.items():
        frame = (
            "OVER (PARTITION BY entity_id ORDER BY event_timestamp "
            f"RANGE BETWEEN INTERVAL {secs * 1_000_000 - 1} MICROSECONDS PRECEDING AND CURRENT ROW)"
        )
        cols += [
            f"sum(amount) {frame} AS amount_sum_{w}",
            f"count(amount) {frame} AS amount_count_{w}",
            f"avg(amount) {frame} AS amount_mean_{w}",
            f"max(amount) {frame} AS amount_max_{w}",
        ]
    q = f"""
        WITH u AS (
            SELECT entity_id, event_timestamp, amount, NULL::BIGINT AS rid FROM ev
            UNION ALL
            SELECT entity_id, event_timestamp, NULL::DOUBLE, row_number() OVER () - 1 FROM lab
        )
        SELECT rid, {", ".join(cols)} FROM u QUALIFY rid IS NOT NULL ORDER BY rid
    """
    res = con.execute(q)
    # DuckDB 2 renamed fetch_arrow_table to to_arrow_table.
    fetch = getattr(res, "to_arrow_table", None) or res.fetch_arrow_table
    return fetch().select(names())


RUN = {"skewless": run_skewless, "polars": run_polars, "duckdb": run_duckdb}


def workload(size: str) -> tuple[pa.Table, pa.Table]:
    feats, labels = _workload.load(size)
    events = feats.select(["entity_id", "event_timestamp", "f0"]).rename_columns(
        ["entity_id", "event_timestamp", "amount"]
    )
    return events, labels.select(["entity_id", "event_timestamp"])


def child(size: str, engine: str, repeat: int) -> None:
    import resource

    events, labels = workload(size)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        RUN[engine](events, labels)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median": statistics.median(times), "peak_mib": peak}))


def check(size: str, engines: list[str]) -> None:
    events, labels = workload(size)
    ref = RUN["skewless"](events, labels)
    for e in engines:
        if e == "skewless":
            continue
        other = RUN[e](events, labels)
        for name in names():
            a = ref.column(name).to_numpy(zero_copy_only=False).astype(float)
            b = other.column(name).to_numpy(zero_copy_only=False).astype(float)
            same_null = ((a != a) == (b != b)).all()
            ok = same_null and (abs(a - b) <= 1e-9 * abs(a) + 1e-9)[a == a].all()
            if not ok:
                raise SystemExit(f"{e} disagrees with skewless on {name}")
    print(f"agreement: {', '.join(engines)} give the same values (float sums within 1e-9 relative)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=["S", "M", "L"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.size, a.child, a.repeat)
        return
    engines = a.engines.split(",")
    _workload.ensure(a.size)
    if not a.no_check:
        check(a.size, engines)
    rows: list[tuple[str, Any]] = []
    for e in engines:
        out = subprocess.run(
            [sys.executable, __file__, a.size, "--child", e, "--repeat", str(a.repeat)],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        ).stdout
        rows.append((e, json.loads(out.strip().splitlines()[-1])))
    best_peer = min((r["median"] for e, r in rows if e != "skewless"), default=None)
    print(f"\nsize {a.size}, 12 aggregates (sum/count/mean/max x 1h/7d/30d), median of {a.repeat}\n")
    print("| engine | time (s) | peak RSS (MiB) | vs fastest peer |")
    print("|---|---|---|---|")
    for e, r in rows:
        ratio = "" if best_peer is None else f"{r['median'] / best_peer:.2f}x"
        print(f"| {e} | {r['median']:.3f} | {r['peak_mib']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
