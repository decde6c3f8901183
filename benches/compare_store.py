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

    python benches/compare_store.py --wide [--labels 200000] [--views 10] [--features 100]

A wide request instead: ``--views`` views of ``--features`` float64 features each (100k history rows per
view), all requested at once for ``--labels`` label rows; the retrieval runs in a fresh process whose
peak RSS is compared with the size of the output table.
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


def wide(n_labels: int, n_views: int, n_feats: int, rows: int = 100_000) -> None:
    import json
    import subprocess

    rng = np.random.default_rng(3)
    root = Path(_workload.REPO) / "bench-data"
    root.mkdir(exist_ok=True)
    folder = tempfile.mkdtemp(prefix="store-wide-", dir=root)
    try:
        store = FeatureStore(folder)
        ent = Entity("entity", join_keys=["entity_id"], dtype=Int64)
        fvs = [
            FeatureView(
                f"w{v}", [ent], [Field(f"w{v}_f{i}", Float64) for i in range(n_feats)], ttl=TTL, online=False
            )
            for v in range(n_views)
        ]
        store.apply([ent, *fvs])
        t0 = 1_672_531_200_000_000
        year = 365 * 86_400_000_000
        for fv in fvs:
            cols: dict[str, Any] = {
                "entity_id": pa.array(rng.integers(0, 10_000, rows), pa.int64()),
                "event_timestamp": pa.array(t0 + rng.integers(0, year, rows), pa.timestamp("us", tz="UTC")),
            }
            for f in fv.feature_names:
                cols[f] = rng.standard_normal(rows)
            store.write(fv.name, cols)
        labels = pa.table(
            {
                "entity_id": pa.array(rng.integers(0, 10_000, n_labels), pa.int64()),
                "event_timestamp": pa.array(
                    t0 + rng.integers(0, year, n_labels), pa.timestamp("us", tz="UTC")
                ),
            }
        )
        lab_path = os.path.join(folder, "labels.arrow")
        with pa.OSFile(lab_path, "wb") as f, pa.ipc.new_file(f, labels.schema) as w:
            w.write_table(labels)
        feats = [f"{fv.name}:{n}" for fv in fvs for n in fv.feature_names]
        code = f"""
import json, resource, time, pyarrow as pa
from skewless import FeatureStore
labels = pa.ipc.open_file({lab_path!r}).read_all()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = FeatureStore({folder!r})
t = time.perf_counter()
out = s.get_historical_features(labels, {feats!r})
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"secs": secs, "out_mib": out.nbytes / 2**20, "base_mib": base / 1024,
                  "peak_mib": peak / 1024, "cols": out.num_columns}}))
"""
        r = json.loads(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        )
        grown = r["peak_mib"] - r["base_mib"]
        print(
            f"\n### Wide request: {n_views} views x {n_feats} features = {n_views * n_feats} features, "
            f"{n_labels:,} label rows, {rows:,} history rows per view\n"
        )
        print(
            "| seconds | output MiB | peak RSS MiB (process) | RSS growth during the call MiB "
            "| growth / output |"
        )
        print("| ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {r['secs']:.2f} | {r['out_mib']:,.0f} | {r['peak_mib']:,.0f} | {grown:,.0f} | "
            f"{grown / r['out_mib']:.2f}x |"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    if "--wide" in sys.argv:
        wp = argparse.ArgumentParser()
        wp.add_argument("--wide", action="store_true")
        wp.add_argument("--labels", type=int, default=200_000)
        wp.add_argument("--views", type=int, default=10)
        wp.add_argument("--features", type=int, default=100)
        w = wp.parse_args()
        wide(w.labels, w.views, w.features)
        return
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
