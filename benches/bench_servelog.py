"""pytest-benchmark suite of the served-feature log: what ``log=True`` adds to a one-entity lookup
(5 float features of one view, 10k entities), and the flush and check that run off the hot path.

python -m pytest benches/bench_servelog.py --benchmark-only

The logged reader's flusher runs in the background during the timing, as it does in a service (its
interval is shortened so the queue never fills).
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
import skewless as sk
from skewless.servelog import ServeLog

N = 10_000
FEATS = [f"v:f{j}" for j in range(5)]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = sk.FeatureStore(str(tmp_path_factory.mktemp("servelog")))
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    s.apply([u, sk.FeatureView("v", [u], [sk.Field(f"f{j}", sk.Float64) for j in range(5)])])
    rng = np.random.default_rng(0)
    s.write(
        "v",
        {
            "user_id": pa.array(np.arange(N), pa.int64()),
            "event_timestamp": pa.array([T0] * N, pa.timestamp("us", "UTC")),
            **{f"f{j}": rng.random(N) for j in range(5)},
        },
    )
    s._serve_log = ServeLog(s.path + "/logs", interval=0.05, capacity=1_000_000)
    return s


def keys():
    return itertools.cycle([[int(k)] for k in np.random.default_rng(2).integers(0, N, size=10_000)])


def test_lookup_one_entity_unlogged(benchmark, store):
    r = store.online_reader(FEATS)
    ks = keys()
    values, _ = benchmark(lambda: r.get_numpy(next(ks)))
    assert values.shape == (1, 5)


def test_lookup_one_entity_logged(benchmark, store):
    r = store.online_reader(FEATS, log=True)
    ks = keys()
    values, _ = benchmark(lambda: r.get_numpy(next(ks)))
    r.close()
    assert values.shape == (1, 5) and store.serve_log.dropped == 0


def test_flush_10k_logged_lookups(benchmark, store):
    log = ServeLog(store.path + "/logs-flush", interval=3600, capacity=1_000_000)
    store._serve_log, old = log, store._serve_log
    r = store.online_reader(FEATS, log=True)
    ks = keys()

    def fill():
        for _ in range(10_000):
            r.get_numpy(next(ks))
        return (), {}

    benchmark.pedantic(log.flush, setup=fill, rounds=3)
    store._serve_log = old
    log.close()


def test_check_skew_10k_logged_lookups(benchmark, store):
    users = np.random.default_rng(3).integers(0, N, 10_000)
    vals = store.get_online_features(FEATS, {"user_id": users}, as_of=T0 + dt.timedelta(days=1)).to_arrow()
    store.log_served(
        {"user_id": users},
        {f: vals.column(f.split(":")[1]) for f in FEATS},
        T0 + dt.timedelta(days=1),
        source="bench",
    )
    store.flush_logs()
    report = benchmark.pedantic(lambda: store.check_skew(source="bench"), rounds=3)
    assert report.alerts == []


TV_OUTS = ["tv:f0_zscore", "tv:f1_clip", "tv:f2_log1p"]


@pytest.fixture(scope="module")
def tv_store(store):
    """The store with a transform view: a z-score of a median-imputed feature, a clip and a log1p."""
    stats = store.compute_statistics("v").version
    store.apply(
        [
            sk.TransformView(
                "tv",
                [sk.zscore("v:f0", stats=stats), sk.clip("v:f1", 0, 0.5), sk.log1p("v:f2")],
                impute=[sk.Impute("v:f0", "median", stats=stats)],
            )
        ]
    )
    return store


def test_lookup_transform_outputs_unlogged(benchmark, tv_store):
    r = tv_store.online_reader(TV_OUTS)
    ks = keys()
    values, _ = benchmark(lambda: r.get_numpy(next(ks)))
    assert values.shape == (1, 3)


def test_lookup_transform_outputs_logged(benchmark, tv_store):
    r = tv_store.online_reader(TV_OUTS, log=True)
    ks = keys()
    values, _ = benchmark(lambda: r.get_numpy(next(ks)))
    r.close()
    assert values.shape == (1, 3) and tv_store.serve_log.dropped == 0


def test_check_skew_10k_logged_transform_lookups(benchmark, tv_store):
    users = np.random.default_rng(4).integers(0, N, 10_000)
    at = T0 + dt.timedelta(days=2)
    with tv_store.online_reader(TV_OUTS, log=True) as r:
        for chunk in np.array_split(users, 100):
            r.get_numpy(chunk, as_of=at)
    end = at + dt.timedelta(microseconds=1)
    report = benchmark.pedantic(lambda: tv_store.check_skew(features=TV_OUTS, start=at, end=end), rounds=3)
    assert report.alerts == [] and report.features["tv:f0_zscore"]["rows"] == 10_000
