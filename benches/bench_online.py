"""pytest-benchmark suite of the online store: get_numpy (1 and 100 keys), get (1 and 100 keys), write.

python -m pytest benches/bench_online.py --benchmark-only
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from skewless.online import OnlineStore

N = 100_000
NCOLS = 5
BASE_US = 1_700_000_000_000_000


def table(version: int, n: int = N) -> pa.Table:
    rng = np.random.default_rng(version)
    ts = pa.array(np.full(n, BASE_US + version), pa.timestamp("us", "UTC"))
    return pa.table({"id": np.arange(n), "ts": ts, **{f"f{j}": rng.random(n) for j in range(NCOLS)}})


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    store = OnlineStore(tmp_path_factory.mktemp("online"))
    store.write("v", table(0), keys="id", timestamp="ts")
    return store.reader("v")


@pytest.fixture(scope="module")
def key_batches():
    rng = np.random.default_rng(1)
    return itertools.cycle([rng.integers(0, N, size=100).tolist() for _ in range(1000)])


def test_get_numpy_one_key(benchmark, reader):
    keys = itertools.cycle([[int(k)] for k in np.random.default_rng(2).integers(0, N, size=10_000)])
    values, status = benchmark(lambda: reader.get_numpy(next(keys)))
    assert values.shape == (1, NCOLS) and status.tolist() == [0]


def test_get_numpy_100_keys(benchmark, reader, key_batches):
    values, status = benchmark(lambda: reader.get_numpy(next(key_batches)))
    assert values.shape == (100, NCOLS) and (status == 0).all()


def test_get_one_key(benchmark, reader):
    keys = itertools.cycle([[int(k)] for k in np.random.default_rng(3).integers(0, N, size=10_000)])
    out = benchmark(lambda: reader.get(next(keys)))
    assert out.num_rows == 1


def test_get_100_keys(benchmark, reader, key_batches):
    out = benchmark(lambda: reader.get(next(key_batches)))
    assert out.num_rows == 100


def test_write_100k_rows(benchmark, tmp_path):
    store = OnlineStore(tmp_path / "w")
    versions = itertools.count(1)
    tables = {}

    def setup():
        v = next(versions)
        tables[v] = table(v)
        return (tables.pop(v),), {}

    result = benchmark.pedantic(
        lambda t: store.write("v", t, keys="id", timestamp="ts"), setup=setup, rounds=10
    )
    assert result.rows_written == N
