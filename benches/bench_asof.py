"""pytest-benchmark cases for asof_join on the standard workload (size from $SKEWLESS_BENCH_SIZE, default S).

python -m pytest benches/bench_asof.py --benchmark-only
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402
import skewless  # noqa: E402

SIZE = os.environ.get("SKEWLESS_BENCH_SIZE", "S")
TTL = dt.timedelta(days=_workload.TTL_DAYS)


@pytest.fixture(scope="module")
def workload() -> tuple[pa.Table, pa.Table]:
    return _workload.load(SIZE)


@pytest.fixture(scope="module")
def sorted_features(workload: tuple[pa.Table, pa.Table]) -> pa.Table:
    feats, _ = workload
    return feats.sort_by([("entity_id", "ascending"), ("event_timestamp", "ascending")])


def join(feats: pa.Table, labels: pa.Table, **kw: object) -> pa.Table:
    return skewless.asof_join(labels, feats, on="event_timestamp", by="entity_id", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
def test_ttl_join(benchmark, workload, direction):
    feats, labels = workload
    out = benchmark(join, feats, labels, direction=direction, tolerance=TTL, tie_breaker="created_timestamp")
    assert out.num_rows == labels.num_rows


def test_ttl_join_sorted_right(benchmark, workload, sorted_features):
    _, labels = workload
    out = benchmark(join, sorted_features, labels, tolerance=TTL, tie_breaker="created_timestamp")
    assert out.num_rows == labels.num_rows


def test_join_single_chunk_right(benchmark, workload):
    feats, labels = workload
    whole = feats.combine_chunks()
    out = benchmark(join, whole, labels, tolerance=TTL)
    assert out.num_rows == labels.num_rows


def test_string_keys(benchmark, workload):
    feats, labels = workload
    as_str = pa.compute.cast(feats.column("entity_id"), pa.string())
    f = feats.set_column(0, "entity_id", as_str)
    lab = labels.set_column(0, "entity_id", pa.compute.cast(labels.column("entity_id"), pa.string()))
    out = benchmark(join, f, lab, tolerance=TTL)
    assert out.num_rows == labels.num_rows
