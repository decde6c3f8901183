"""The feature store on the standard workload, side by side with the same join in DuckDB SQL and polars.

    python benches/compare_store.py S [--repeat 3] [--no-check]

Setup: the workload's five features are split over three views of one entity (``v_a``: f0, f1; ``v_b``:
f2, f3; ``v_c``: f4), each with the 30-day TTL and ``created_timestamp`` as tie-breaker, written with
``store.write`` (history + online store in one call). Then, timed:

- ``write``: rows/s of ``store.write`` (Parquet append + online upsert) over the three views;
- ``materialize``: rows/s rebuilding the online store from the history (online folder removed first);
- ``get_historical_features`` for the label rows, three views and one view, on the appended history
  and after ``compact``; DuckDB (``ASOF LEFT JOIN`` per view, latest created row per (entity, time),
  TTL applied to the match) and polars (``join_asof`` per view on inputs sorted by (time, created))
  read the same Parquet files of the store, with their sorts timed.

Every engine's output is checked to agree, value for value (``--no-check`` skips it). Prints markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64  # noqa: E402

warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")

SPLIT = {"v_a": ["f0", "f1"], "v_b": ["f2", "f3"], "v_c": ["f4"]}
TTL = dt.timedelta(days=_workload.TTL_DAYS)
FEATURES = ["v_a:f0", "v_a:f1", "v_b:f2", "v_b:f3", "v_c:f4"]


def definitions() -> list[Any]:
    ent = Entity("entity", join_keys=["entity_id"], dtype=Int64)
    views = [
        FeatureView(
            name,
            [ent],
            [Field(f, Float64) for f in feats],
            ttl=TTL,
            created_timestamp_field="created_timestamp",
        )
        for name, feats in SPLIT.items()
    ]
    return [ent, *views]


def build(folder: str, feats: pa.Table) -> tuple[FeatureStore, float]:
    store = FeatureStore(folder)
    store.apply(definitions())
    t = time.perf_counter()
    for name, cols in SPLIT.items():
        store.write(name, feats.select(["entity_id", "event_timestamp", "created_timestamp", *cols]))
    return store, time.perf_counter() - t


def files(store: FeatureStore, view: str) -> list[str]:
    return store.offline.files(view, None)


def duckdb_join(store: FeatureStore, labels: pa.Table, views: list[str]) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    con.register("labels", labels)
    sel, joins = [], []
    for i, v in enumerate(views):
        fl = ", ".join(f"'{p}'" for p in files(store, v))
        cols = SPLIT[v]
        joins.append(
            f"""ASOF LEFT JOIN (
                SELECT entity_id, event_timestamp AS ts{i}, {", ".join(cols)}
                FROM read_parquet([{fl}])
                QUALIFY row_number() OVER (PARTITION BY entity_id, event_timestamp
                                           ORDER BY created_timestamp DESC) = 1
            ) r{i} ON l.entity_id = r{i}.entity_id AND l.event_timestamp >= r{i}.ts{i}"""
        )
        ttl = f"r{i}.ts{i} >= l.event_timestamp - INTERVAL {_workload.TTL_DAYS} DAY"
        sel += [f"CASE WHEN {ttl} THEN r{i}.{c} END AS {c}" for c in cols]
    q = f"SELECT l.*, {', '.join(sel)} FROM labels l {' '.join(joins)} ORDER BY l.rid"
    return con.sql(q).to_arrow_table()


def polars_join(store: FeatureStore, labels: pa.Table, views: list[str]) -> pa.Table:
    import polars as pl

    out = pl.from_arrow(labels).lazy().sort("event_timestamp")
    for v in views:
        right = (
            pl.scan_parquet(files(store, v))
            .select(["entity_id", "event_timestamp", "created_timestamp", *SPLIT[v]])
            .sort(["event_timestamp", "created_timestamp"])
            .drop("created_timestamp")
        )
        out = out.join_asof(right, on="event_timestamp", by="entity_id", strategy="backward", tolerance=TTL)
    res = out.sort("rid").collect()
    return res.to_arrow()


def skewless_join(store: FeatureStore, labels: pa.Table, views: list[str]) -> pa.Table:
    return store.get_historical_features(labels, [f for f in FEATURES if f.split(":")[0] in views])


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    ts, out = [], None
    for _ in range(repeat):
        out = None
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def agree(a: pa.Table, b: pa.Table, cols: list[str]) -> str:
    bad = []
    for c in cols:
        x = pc.fill_null(a.column(c), np.inf).to_numpy()
        y = pc.fill_null(pc.cast(b.column(c), pa.float64()), np.inf).to_numpy()
        if x.shape != y.shape or not np.array_equal(x.view(np.int64), y.view(np.int64)):
            bad.append(c)
    return "yes" if not bad else "NO: " + ",".join(bad)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=["S", "M", "L"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--engines", default="skewless,duckdb,polars")
    a = ap.parse_args()
    engines = a.engines.split(",")

    feats, labels = _workload.load(a.size)
    labels = labels.append_column("rid", pa.array(np.arange(labels.num_rows), pa.int64()))
    root = Path(_workload.REPO) / "bench-data"
    root.mkdir(exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"store-{a.size}-", dir=root)
    try:
        store, t_write = build(folder, feats)
        n_written = feats.num_rows * len(SPLIT)
        shutil.rmtree(os.path.join(folder, "online"))
        store = FeatureStore(folder)
        t = time.perf_counter()
        n_mat = sum(store.materialize(None, dt.datetime.now(dt.timezone.utc)).values())
        t_mat = time.perf_counter() - t

        rows: list[tuple[str, str, float, str]] = []
        results: dict[tuple[str, str], pa.Table] = {}
        fns = {"skewless": skewless_join, "duckdb": duckdb_join, "polars": polars_join}
        for views_label, views in (("3 views", list(SPLIT)), ("1 view", ["v_a"])):
            for e in engines:
                secs, out = timed(lambda e=e, views=views: fns[e](store, labels, views), a.repeat)
                results[(views_label, e)] = out
                rows.append((views_label, e, secs, ""))
        for v in SPLIT:
            store.compact(v)
        for views_label, views in (("3 views", list(SPLIT)), ("1 view", ["v_a"])):
            secs, out = timed(lambda views=views: skewless_join(store, labels, views), a.repeat)
            results[(views_label, "skewless (compacted)")] = out
            rows.append((views_label, "skewless (compacted)", secs, ""))
        if not a.no_check:
            for i, (vl, e, s, _) in enumerate(rows):
                cols = [f for v in (SPLIT if vl == "3 views" else ["v_a"]) for f in SPLIT[v]]
                ref = results[(vl, "skewless")]
                rows[i] = (vl, e, s, agree(ref, results[(vl, e)], cols))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"\n### Feature store, size {a.size}: {feats.num_rows:,} feature rows, "
            f"{labels.num_rows:,} label rows"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; "
            f"median of {a.repeat}; process peak RSS {peak:,.0f} MiB\n"
        )
        print("| operation | rows | seconds | rows/s |")
        print("| --- | ---: | ---: | ---: |")
        print(
            f"| store.write (history + online), 3 views | {n_written:,} | {t_write:.2f} | "
            f"{n_written / t_write:,.0f} |"
        )
        print(f"| materialize (rebuild online), 3 views | {n_mat:,} | {t_mat:.2f} | {n_mat / t_mat:,.0f} |")
        print("\n| get_historical_features | engine | seconds | vs skewless | agrees |")
        print("| --- | --- | ---: | ---: | --- |")
        base = {vl: s for vl, e, s, _ in rows if e == "skewless"}
        for vl, e, s, ok in rows:
            print(f"| {vl} | {e} | {s:.3f} | {s / base[vl]:.2f}x | {ok or '-'} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
