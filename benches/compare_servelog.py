"""What ``log=True`` adds to a one-entity lookup: p50 and p99 of ``get_numpy`` with and without the
served-feature log, in alternating blocks (so machine load hits both alike), then the flusher's cost and
the check's. Then the same for transform view outputs (a z-score of a median-imputed feature, a clip and
a log1p: the engine's post-stage), without and with a request-time input (``log1p("request:amount")``,
which reads the entity rows in Python before the engine call).

python benches/compare_servelog.py [calls per block]
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import skewless as sk
from skewless.servelog import ServeLog

N = 10_000
FEATS = [f"v:f{j}" for j in range(5)]


def main(calls: int = 20_000) -> None:
    store = sk.FeatureStore(tempfile.mkdtemp())
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    store.apply([u, sk.FeatureView("v", [u], [sk.Field(f"f{j}", sk.Float64) for j in range(5)])])
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    store.write(
        "v",
        {
            "user_id": pa.array(np.arange(N), pa.int64()),
            "event_timestamp": pa.array([t0] * N, pa.timestamp("us", "UTC")),
            **{f"f{j}": rng.random(N) for j in range(5)},
        },
    )
    store._serve_log = ServeLog(store.path + "/logs", capacity=10_000_000, interval=0.2)
    plain = store.online_reader(FEATS)
    logged = store.online_reader(FEATS, log=True)
    keys = [[int(k)] for k in rng.integers(0, N, calls)]
    _compare("get_numpy, one entity, 5 features", plain, logged, keys)
    s = time.perf_counter()
    logged.close()
    log = store.serve_log
    print(
        f"logged {log.logged:,} lookups, dropped {log.dropped}, {log.segments} segments; "
        f"final flush {time.perf_counter() - s:.3f} s"
    )
    import scipy.stats  # noqa: F401  (imported before the clock starts: the check, not the import)

    s = time.perf_counter()
    report = store.check_skew()
    rows = report.features["v:f0"]["rows"]
    print(
        f"check_skew over {rows:,} logged lookups x 5 features: {time.perf_counter() - s:.2f} s, "
        f"alerts {report.alerts}"
    )
    # Transform view outputs, logged with their status, lineage and request inputs.
    store.prune_logs(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    n0 = log.logged
    stats = store.compute_statistics("v").version
    tv = sk.TransformView(
        "tv",
        [sk.zscore("v:f0", stats=stats), sk.clip("v:f1", 0, 0.5), sk.log1p("v:f2")],
        impute=[sk.Impute("v:f0", "median", stats=stats)],
    )
    # A request-time input in a transform view of its own (a reader of any output of a transform view
    # takes the request columns of all its transforms).
    store.apply([tv, sk.TransformView("tr", [sk.log1p("request:amount")])])
    outs = ["tv:f0_zscore", "tv:f1_clip", "tv:f2_log1p"]
    _compare(
        "get_numpy, one entity, 3 transform outputs",
        store.online_reader(outs),
        store.online_reader(outs, log=True),
        keys,
    )
    rows_req = [{"user_id": k, "amount": [float(k[0] % 7)]} for k in keys]
    with_req = [*outs, "tr:amount_log1p"]
    treq = store.online_reader(with_req, log=True)
    _compare(
        "get_numpy, one entity, 4 outputs, one request input", store.online_reader(with_req), treq, rows_req
    )
    s = time.perf_counter()
    treq.close()
    took = time.perf_counter() - s
    print(f"logged {log.logged - n0:,} transform lookups, dropped {log.dropped}; final flush {took:.3f} s")
    s = time.perf_counter()
    report = store.check_skew(features=with_req)
    rows = report.features["tv:f0_zscore"]["rows"]
    print(
        f"check_skew over {rows:,} logged lookups x {len(with_req)} transform outputs: "
        f"{time.perf_counter() - s:.2f} s, alerts {report.alerts}"
    )


def _compare(what: str, plain: sk.OnlineReader, logged: sk.OnlineReader, args: list) -> None:
    lat: dict[str, list[int]] = {"unlogged": [], "logged": []}
    clock = time.perf_counter_ns
    for _ in range(5):
        for name, r in (("unlogged", plain), ("logged", logged)):
            get = r.get_numpy
            out = lat[name]
            for k in args:
                s = clock()
                get(k)
                out.append(clock() - s)
    for name, v in lat.items():
        a = np.array(v) / 1000
        print(f"{what}, {name:8s}: p50 {np.median(a):.2f} us, p99 {np.percentile(a, 99):.2f} us")
    d = np.median(np.array(lat["logged"])) - np.median(np.array(lat["unlogged"]))
    print(f"added by log=True at p50: {d / 1000:.2f} us")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
