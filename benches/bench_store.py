"""pytest-benchmark cases of the feature store on the standard workload (size from SKEWLESS_BENCH_SIZE,
default S): training-set retrieval, write, materialize, and online lookups through ``online_reader``
next to the bare engine reader they wrap.

    python -m pytest benches/bench_store.py --benchmark-only
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402
from compare_store import FEATURES, SPLIT, build, definitions  # noqa: E402
from skewless import FeatureStore  # noqa: E402

SIZE = os.environ.get("SKEWLESS_BENCH_SIZE", "S")


@pytest.fixture(scope="module")
def data():
    return _workload.load(SIZE)


@pytest.fixture(scope="module")
def store(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    s, _ = build(str(folder), data[0])
    yield s
    shutil.rmtree(folder, ignore_errors=True)


def test_historical_3_views(benchmark, store, data):
    out = benchmark(store.get_historical_features, data[1], FEATURES)
    assert out.num_rows == data[1].num_rows


def test_historical_1_view(benchmark, store, data):
    out = benchmark(store.get_historical_features, data[1], ["v_a:f0", "v_a:f1"])
    assert out.num_rows == data[1].num_rows


def test_store_write_100k_rows(benchmark, data, tmp_path):
    part = data[0].slice(0, 100_000).select(["entity_id", "event_timestamp", "created_timestamp", "f0", "f1"])
    s = FeatureStore(tmp_path / "w")
    s.apply(definitions())
    res = benchmark(s.write, "v_a", part)
    assert res.rows == 100_000


def test_materialize_one_view(benchmark, store, data):
    end = dt.datetime.now(dt.timezone.utc)
    n = benchmark.pedantic(lambda: store.materialize(None, end, ["v_c"]), rounds=3, iterations=1)
    assert n == {"v_c": data[0].num_rows}


@pytest.fixture(scope="module")
def keys(data):
    rng = np.random.default_rng(1)
    ids = data[0].column("entity_id").to_numpy()
    return [int(x) for x in rng.choice(ids, 1000)]


def test_online_reader_1_key(benchmark, store, keys):
    r = store.online_reader(["v_a:f0", "v_a:f1"])
    it = iter(keys * 1000)
    vals, st = benchmark(lambda: r.get_numpy([next(it)]))
    assert vals.shape == (1, 2)


def test_bare_reader_1_key(benchmark, store, keys):
    r = store._online().reader("v_a", columns=["f0", "f1"])
    it = iter(keys * 1000)
    vals, st = benchmark(lambda: r.get_numpy([next(it)], ttl=dt.timedelta(days=_workload.TTL_DAYS)))
    assert vals.shape == (1, 2)


def test_online_reader_100_keys(benchmark, store, keys):
    r = store.online_reader(["v_a:f0", "v_a:f1"])
    vals, st = benchmark(r.get_numpy, keys[:100])
    assert vals.shape == (100, 2)


def test_bare_reader_100_keys(benchmark, store, keys):
    r = store._online().reader("v_a", columns=["f0", "f1"])
    vals, st = benchmark(r.get_numpy, keys[:100], ttl=dt.timedelta(days=_workload.TTL_DAYS))
    assert vals.shape == (100, 2)


def test_online_reader_3_views_1_key(benchmark, store, keys):
    r = store.online_reader(FEATURES)
    vals, st = benchmark(r.get_numpy, {"entity_id": keys[:1]})
    assert vals.shape == (1, 5) and st.shape == (1, len(SPLIT))


def test_get_online_features_1_key(benchmark, store, keys):
    resp = benchmark(store.get_online_features, FEATURES, {"entity_id": keys[:1]})
    assert len(resp) == 1


def test_compact_keeps_answers(store, data):
    # Not a timing: compaction must not change a training set (checked once here on real data).
    lab = data[1].slice(0, 10_000)
    before = store.get_historical_features(lab, FEATURES)
    for v in SPLIT:
        store.compact(v)
    after = store.get_historical_features(lab, FEATURES)
    assert before.equals(after)
    assert isinstance(after, pa.Table)


def test_online_reader_1_key_200_views_registered(benchmark, tmp_path, keys):
    # Same lookup as test_online_reader_1_key, in a registry of 200 views: the cost must not move.
    from skewless import Entity, FeatureView, Field, Float64, Int64

    s = FeatureStore(tmp_path / "many")
    ent = Entity("entity", join_keys=["entity_id"], dtype=Int64)
    views = [FeatureView(f"v{i}", [ent], [Field("f0", Float64), Field("f1", Float64)]) for i in range(200)]
    s.apply([ent, *views])
    ts = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * len(keys), pa.timestamp("us", tz="UTC"))
    s.write(
        "v7", {"entity_id": keys, "event_timestamp": ts, "f0": [1.0] * len(keys), "f1": [2.0] * len(keys)}
    )
    r = s.online_reader(["v7:f0", "v7:f1"])
    it = iter(keys * 1000)
    vals, st = benchmark(lambda: r.get_numpy([next(it)]))
    assert vals.shape == (1, 2)
