"""The cost of the ``previous`` imputation strategy: on writes (its last non-null records, written in the
latest rows' transaction) and on a one-entity online lookup.

    python benches/compare_impute_previous.py [--rows 100000] [--repeat 3] [--iters 10000]

A view of three float64 features (20 % nulls), declared three ways: no imputation, ``constant`` for each
feature, ``previous`` for each feature. Writes: three ``store.write`` calls of ``--rows`` rows each (every
key once per call), mean per call, best of ``--repeat`` fresh stores. Lookups: ``get_numpy`` of one
entity, p50 / p99 over ``--iters`` calls per round, rounds interleaved across the three readers.

Prints markdown.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Impute, Int64

USER = Entity("user", join_keys=["user_id"], dtype=Int64)
KINDS = ("none", "constant", "previous")


def view(kind: str) -> FeatureView:
    imp = (
        []
        if kind == "none"
        else [Impute(f"f{i}", kind, 0.0 if kind == "constant" else None) for i in range(3)]
    )
    return FeatureView("v", [USER], [Field(f"f{i}", Float64) for i in range(3)], impute=imp)


def batch(rng: np.random.Generator, n: int, b: int) -> dict[str, pa.Array]:
    out = {
        "user_id": pa.array(np.arange(n)),
        "event_timestamp": pa.array(np.full(n, b * 1_000_000), pa.timestamp("us", "UTC")),
    }
    for i in range(3):
        x = rng.random(n)
        x[rng.random(n) < 0.2] = np.nan
        out[f"f{i}"] = pa.array(x, from_pandas=True)  # NaN -> null here: the nulls to impute
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10_000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    writes: dict[str, float] = {}
    stores: dict[str, FeatureStore] = {}
    for kind in KINDS:
        best = float("inf")
        for _ in range(a.repeat):
            s = FeatureStore(tempfile.mkdtemp())
            s.apply([USER, view(kind)])
            data = [batch(rng, a.rows, b) for b in (1, 2, 3)]
            t = time.perf_counter()
            for d in data:
                s.write("v", d)
            best = min(best, (time.perf_counter() - t) / len(data))
        writes[kind] = best
        stores[kind] = s
    readers = {k: s.online_reader(["v:f0", "v:f1", "v:f2"]) for k, s in stores.items()}
    times: dict[str, list[int]] = {k: [] for k in KINDS}
    keys = rng.integers(0, a.rows, a.iters).tolist()
    for _ in range(3):
        for kind, r in readers.items():
            r.get_numpy([keys[0]])
            for k in keys:
                t0 = time.perf_counter_ns()
                r.get_numpy([k])
                times[kind].append(time.perf_counter_ns() - t0)
    print(
        f"| 3 features, {a.rows:,} rows per write | write ms (best of {a.repeat}) "
        "| get_numpy p50 us | p99 us |"
    )
    print("| --- | ---: | ---: | ---: |")
    for kind in KINDS:
        p50, p99 = (np.percentile(times[kind], q) / 1e3 for q in (50, 99))
        print(f"| {kind} | {writes[kind] * 1e3:.1f} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
