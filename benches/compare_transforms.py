"""The cost of transforms and imputation over plain retrieval and plain serving.

    python benches/compare_transforms.py [--labels 1000000] [--repeat 3] [--iters 20000]

Setup: the standard workload at size S (1M feature rows, 10k entities, five float64 features split over
three views as in ``compare_store.py``; ``f1`` has 5% nulls), a statistics artifact of ``v_a``, then:

- offline: a training set of ``--labels`` rows (one pass each, median of ``--repeat``): plain
  ``["v_a:f0", "v_a:f1"]`` against the same with ``f1`` imputed (median of the artifact), a z-score of
  ``f0`` and one Python UDF (``f0 * f1``, pyarrow compute) — overhead in percent;
- online, ``get_numpy`` of one random entity, p50 / p99 over ``--iters`` calls: the plain reader of
  ``v_a:f0, v_a:f1`` against a reader of three built-ins (z-score, clip, log1p) with the imputation, and
  a reader of the UDF alone (its cost reported apart: it runs in Python after the engine's call).

Prints markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
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
from compare_store import build, definitions  # noqa: E402
from skewless import (  # noqa: E402
    FeatureView,
    Field,
    Float64,
    Impute,
    TransformView,
    clip,
    log1p,
    transform,
    transforms,  # noqa: E402
    zscore,
)


@transform(inputs=["v_a:f0", "v_a:f1"], outputs=[Field("f0_x_f1", Float64)], version=1)
def product(t: pa.Table) -> dict[str, pa.ChunkedArray]:
    return {"f0_x_f1": pc.multiply(t["f0"], t["f1"])}


def timed(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def lookups(reader, keys: list[int], iters: int) -> tuple[float, float]:
    ts = np.empty(iters)
    for i in range(iters):
        k = [keys[i % len(keys)]]
        t = time.perf_counter_ns()
        reader.get_numpy(k)
        ts[i] = time.perf_counter_ns() - t
    return float(np.percentile(ts, 50)) / 1e3, float(np.percentile(ts, 99)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20_000)
    ap.add_argument(
        "--strategy",
        choices=["median", "previous"],
        default="median",
        help="the imputation of f1 (previous: its last non-null value, one more lookup online)",
    )
    a = ap.parse_args()
    n_feat, _, n_ent = _workload.SIZES["S"]
    feats, labels = _workload.make(n_feat, a.labels, n_ent)
    folder = tempfile.mkdtemp()
    try:
        store, _ = build(folder, feats)
        st = store.compute_statistics("v_a")
        v_a = next(d for d in definitions() if getattr(d, "name", "") == "v_a")
        assert isinstance(v_a, FeatureView)
        imputed = FeatureView(
            "v_a",
            v_a.entities,
            v_a.schema,
            ttl=v_a.ttl,
            created_timestamp_field=v_a.created_timestamp_field,
            impute=[Impute("f1", a.strategy, stats=st.version if a.strategy == "median" else None)],
        )
        tv = TransformView(
            "tv",
            [zscore("v_a:f0", stats=st.version), clip("v_a:f1", -1, 1), log1p("v_a:f1"), product],
        )
        plain = ["v_a:f0", "v_a:f1"]
        full = ["v_a:f0", "v_a:f1", "tv:f0_zscore", "tv:f0_x_f1"]
        store.apply([tv])
        # Interleaved, so that a busy machine slows both alike; the minimum is the least disturbed run.
        t_plain, t_full = [], []
        for _ in range(a.repeat):
            store.apply([v_a])
            t_plain.append(timed(lambda: store.get_historical_features(labels, plain), 1))
            store.apply([imputed])
            t_full.append(timed(lambda: store.get_historical_features(labels, full), 1))
        print(f"### Offline, {a.labels:,} label rows over {n_feat:,} history rows ({a.repeat} runs each)\n")
        print("| retrieval | min s | median s |\n| --- | ---: | ---: |")
        print(f"| plain `v_a:f0, v_a:f1` | {min(t_plain):.3f} | {statistics.median(t_plain):.3f} |")
        print(
            f"| + {a.strategy} imputation of f1, z-score of f0, one UDF | {min(t_full):.3f} | "
            f"{statistics.median(t_full):.3f} |"
        )
        print(
            f"\noverhead: {100 * (min(t_full) / min(t_plain) - 1):.1f} % (min), "
            f"{100 * (statistics.median(t_full) / statistics.median(t_plain) - 1):.1f} % (median)\n"
        )
        # The work the request adds, alone (what retrieval runs after the join: the engine's fill and
        # z-score, the UDF, the output assembly), over the plain training set's columns: free of the
        # join's noise on a busy machine.
        # (With `previous` the stage also reads f1's last non-null value, a second join: not timed alone.)
        if a.strategy == "median":
            compiled = transforms.compile_request(store.registry, full, False)
            assert compiled is not None
            base = store.get_historical_features(labels, plain)
            stage_in = pa.table({"c0": base.column("f0"), "c1": base.column("f1")})

            def stage() -> None:
                out = compiled.program.run(stage_in, compiled.select, compiled.names, False)
                transforms.finish(compiled, out, False)

            t_stage = [timed(stage, 1) for _ in range(a.repeat)]
            print(
                f"the stage alone: {1e3 * min(t_stage):.1f} ms (min of {a.repeat}) = "
                f"{100 * min(t_stage) / min(t_plain):.1f} % of the plain retrieval\n"
            )

        rng = np.random.default_rng(3)
        keys = [int(x) for x in rng.integers(0, n_ent, 1000)]
        store.apply([v_a])
        r_plain = store.online_reader(plain)
        store.apply([imputed])
        if a.strategy == "previous":  # its online records are written by writes and materialize
            store.materialize(None, dt.datetime.now(dt.timezone.utc), ["v_a"])
        r_built = store.online_reader(["tv:f0_zscore", "tv:f1_clip", "tv:f1_log1p"])
        r_udf = store.online_reader(["tv:f0_x_f1"])
        rows = []
        for name, r in [
            ("plain reader, 2 features", r_plain),
            ("3 built-ins + imputation", r_built),
            ("1 UDF (+ imputation)", r_udf),
        ]:
            lookups(r, keys, 1000)  # warm up
            rows.append((name, *lookups(r, keys, a.iters)))
        print(f"### Online, `get_numpy` of one entity, {a.iters:,} calls\n")
        print("| reader | p50 us | p99 us |\n| --- | ---: | ---: |")
        for name, p50, p99 in rows:
            print(f"| {name} | {p50:.2f} | {p99:.2f} |")
        print(
            f"\nbuilt-ins + imputation add {rows[1][1] - rows[0][1]:.2f} us at p50; the UDF adds "
            f"{rows[2][1] - rows[0][1]:.2f} us"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
