"""skewless.asof_join side by side with polars, DuckDB and pandas on the standard workload.

    python benches/compare_peers.py S [--repeat 3] [--engines skewless,polars,...] [--no-check]

The join: every label row gets the latest feature row of its entity at or before its timestamp, no
older than 30 days (TTL); among feature rows with equal (entity, timestamp) the latest created wins.
How each peer is made to follow that rule:
- polars `join_asof` (backward, tolerance 30d) has no tie-breaker; it takes the last of equal times in
  its sorted input, so the right is sorted by (entity, timestamp, created).
- DuckDB `ASOF LEFT JOIN` keeps every label; it has no tolerance and picks an arbitrary row among equal
  times, so features are first reduced to the latest-created row per (entity, timestamp) and the TTL is
  applied to the matched row's timestamp.
- pandas `merge_asof` (backward, tolerance 30 days) on inputs sorted by timestamp (right by
  (timestamp, created): it too takes the last of equal times).
Peers' sorting is timed (they need sorted input); skewless takes the rows as they come. "skewless
(sorted right)" gets a right side already sorted by (entity, timestamp, created) — the feature store's
compacted history — with that sort untimed.

Every engine runs in a fresh subprocess (timing and peak RSS there are its own); the agreement check
runs all of them once in this process. Output: a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402

# polars cannot check sortedness within `by` groups and says so on every call; the inputs are sorted.
warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")

FEATURES = ["created_timestamp", "f0", "f1", "f2", "f3", "f4"]
ENGINES = ["skewless", "skewless-sorted", "polars", "duckdb", "pandas"]
PEERS = {"polars", "duckdb", "pandas"}
LABEL = {
    "skewless": "skewless",
    "skewless-sorted": "skewless (sorted right)",
    "polars": "polars join_asof",
    "duckdb": "DuckDB ASOF JOIN",
    "pandas": "pandas merge_asof",
}


def prepare(engine: str, feats: pa.Table, labels: pa.Table) -> tuple[Any, Any]:
    """Inputs in the engine's own format (untimed): what a user of that engine would already hold."""
    labels = labels.append_column("row", pa.array(range(labels.num_rows), pa.int64()))
    if engine == "skewless":
        return feats, labels
    if engine == "skewless-sorted":
        order = [
            ("entity_id", "ascending"),
            ("event_timestamp", "ascending"),
            ("created_timestamp", "ascending"),
        ]
        return feats.sort_by(order), labels
    if engine == "polars":
        import polars as pl

        return pl.from_arrow(feats), pl.from_arrow(labels)
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.register("feats", feats)
        con.register("labels", labels)
        return con, None
    if engine == "pandas":
        return feats.to_pandas(), labels.to_pandas()
    raise SystemExit(f"unknown engine {engine}")


def run(engine: str, f: Any, lab: Any) -> Any:
    """One timed join; returns the engine's native result."""
    if engine.startswith("skewless"):
        import skewless

        return skewless.asof_join(
            lab,
            f,
            on="event_timestamp",
            by="entity_id",
            tolerance=dt.timedelta(days=_workload.TTL_DAYS),
            tie_breaker="created_timestamp",
        )
    if engine == "polars":
        right = f.sort(["entity_id", "event_timestamp", "created_timestamp"])
        return lab.sort("event_timestamp").join_asof(
            right,
            on="event_timestamp",
            by="entity_id",
            strategy="backward",
            tolerance=f"{_workload.TTL_DAYS}d",
        )
    if engine == "duckdb":
        ttl = ", ".join(
            f"CASE WHEN f.event_timestamp >= l.event_timestamp - INTERVAL {_workload.TTL_DAYS} DAY "
            f"THEN f.{c} END AS {c}"
            for c in FEATURES
        )
        return f.sql(
            f"""
            WITH latest AS (
                SELECT * FROM feats
                QUALIFY row_number() OVER (PARTITION BY entity_id, event_timestamp
                                           ORDER BY created_timestamp DESC) = 1)
            SELECT l.*, {ttl}
            FROM labels l ASOF LEFT JOIN latest f
              ON l.entity_id = f.entity_id AND l.event_timestamp >= f.event_timestamp
            """
        ).to_arrow_table()
    if engine == "pandas":
        import pandas as pd

        return pd.merge_asof(
            lab.sort_values("event_timestamp", kind="stable"),
            f.sort_values(["event_timestamp", "created_timestamp"], kind="stable"),
            on="event_timestamp",
            by="entity_id",
            direction="backward",
            tolerance=pd.Timedelta(days=_workload.TTL_DAYS),
        )
    raise SystemExit(f"unknown engine {engine}")


def normalized(result: Any) -> pa.Table:
    """Feature columns in label-row order, as Arrow with microsecond timestamps."""
    if not isinstance(result, pa.Table):
        result = result.to_arrow() if hasattr(result, "to_arrow") else pa.Table.from_pandas(result)
    result = result.sort_by("row").select(FEATURES)
    created = result.column("created_timestamp").cast(pa.timestamp("us", tz="UTC"))
    return result.set_column(0, "created_timestamp", created).combine_chunks()


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(engine: str, size: str, repeat: int) -> dict[str, Any]:
    feats, labels = _workload.load(size)
    f, lab = prepare(engine, feats, labels)
    if engine not in ("skewless", "skewless-sorted"):
        del feats, labels  # the engine works on its own copy
    gc.collect()
    base = rss_kib("VmRSS")
    try:  # reset the high-water mark so the peak is the join's, not the Parquet read's
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    times = []
    out = None
    for _ in range(repeat):
        out = None
        t = time.perf_counter()
        out = run(engine, f, lab)
        times.append(time.perf_counter() - t)
    peak = rss_kib("VmHWM")
    rows = len(out) if out is not None and not isinstance(out, pa.Table) else out.num_rows  # type: ignore[union-attr]
    return {"engine": engine, "times": times, "peak_delta_mib": (peak - base) / 1024, "rows": rows}


def check(size: str, engines: list[str]) -> list[str]:
    """All engines once, in this process; returns lines describing the agreement."""
    feats, labels = _workload.load(size)
    results = {e: normalized(run(e, *prepare(e, feats, labels))) for e in engines}
    ref_name = engines[0]
    ref = results[ref_name]
    matched = ref.num_rows - ref.column("f0").null_count
    lines = [f"agreement check ({size}): {matched} of {ref.num_rows} labels matched a live feature row"]
    for e, r in results.items():
        if e == ref_name:
            continue
        same = r.equals(ref)
        if not same:
            bad = [c for c in FEATURES if not r.column(c).equals(ref.column(c))]
            raise SystemExit(f"{LABEL[e]} disagrees with {LABEL[ref_name]} on {bad}")
        lines.append(f"  {LABEL[e]}: identical to {LABEL[ref_name]} on {', '.join(FEATURES)}")
    return lines


def polars_takes_the_last_of_equal_times() -> bool:
    """The premise of the polars set-up above, checked rather than assumed."""
    import polars as pl

    ts = pl.Datetime("us", "UTC")
    right = pl.DataFrame(
        {"e": [1, 1, 1], "t": pl.Series([5, 5, 5], dtype=ts), "c": [1, 3, 2], "v": ["c1", "c3", "c2"]}
    ).sort(["e", "t", "c"])
    left = pl.DataFrame({"e": [1], "t": pl.Series([6], dtype=ts)})
    return left.join_asof(right, on="t", by="e", strategy="backward")["v"].to_list() == ["c3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", choices=["S", "M", "L"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.size, a.repeat)))
        return
    engines = [e for e in a.engines.split(",") if e]
    _workload.ensure(a.size)
    notes = []
    if "polars" in engines:
        notes.append(
            f"polars picks the last of equal times (latest created after the sort): "
            f"{polars_takes_the_last_of_equal_times()}"
        )
    if not a.no_check:
        notes += check(a.size, engines)
    rows = []
    for e in engines:
        proc = subprocess.run(
            [sys.executable, __file__, a.size, "--repeat", str(a.repeat), "--worker", e],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    medians = {r["engine"]: statistics.median(r["times"]) for r in rows}
    peer_times = [medians[e] for e in medians if e in PEERS]
    fastest = min(peer_times) if peer_times else None
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    print(f"size {a.size}, median of {a.repeat}; {os.cpu_count()} CPUs ({cpu}), {platform.python_version()}")
    for n in notes:
        print(n)
    print()
    print("| engine | median s | min s | peak RSS delta MiB | time / fastest peer |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        m = medians[r["engine"]]
        ratio = f"{m / fastest:.2f}" if fastest else "-"
        cells = [
            LABEL[r["engine"]],
            f"{m:.3f}",
            f"{min(r['times']):.3f}",
            f"{r['peak_delta_mib']:.0f}",
            ratio,
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
