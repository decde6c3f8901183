"""The standard point-in-time workload (DESIGN.md, "Workloads"), generated here and cached as Parquet.

Sizes (feature rows x label rows x entities): S = 1M x 100k x 10k, M = 10M x 1M x 100k,
L = 50M x 5M x 1M. Seeded, so every run sees the same data.

- features: ``entity_id`` int64 uniform over the entities; ``event_timestamp`` timestamp[us, UTC]
  uniform over the year 2023; ``created_timestamp`` = event time + uniform [0, 1 h); ``f0``..``f4``
  float64 standard normal, ``f1`` null in ~5% of rows.
- labels: ``entity_id`` as above; ``event_timestamp`` uniform over the same year; ``label`` int8 0/1.

Rows are in random order (real sources are not sorted). Generated data is cached under
``<repo>/bench-data/<size>/`` (gitignored), so every benchmark process reads the same bytes from Parquet,
as a training job would. ``python benches/_workload.py S`` writes a size's files and prints their paths.

Example:
    >>> feats, labels = make(1_000, 100, 10)
    >>> feats.column_names, labels.schema.field("label").type
    (['entity_id', 'event_timestamp', 'created_timestamp', 'f0', 'f1', 'f2', 'f3', 'f4'], DataType(int8))
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TTL_DAYS = 30
SEED = 7
SIZES: dict[str, tuple[int, int, int]] = {  # feature rows, label rows, entities
    "S": (1_000_000, 100_000, 10_000),
    "M": (10_000_000, 1_000_000, 100_000),
    "L": (50_000_000, 5_000_000, 1_000_000),
}
N_FEATURES = 5
NULL_FEATURE, NULL_SHARE = 1, 0.05
START_US = 1_672_531_200_000_000  # 2023-01-01T00:00:00Z
SPAN_US = 365 * 86_400 * 1_000_000
CREATED_LAG_US = 3_600 * 1_000_000
UTC_US = pa.timestamp("us", tz="UTC")


def _instants(rng: np.random.Generator, n: int) -> np.ndarray:
    return START_US + rng.integers(0, SPAN_US, size=n, dtype=np.int64)


def make(n_features: int, n_labels: int, n_entities: int, seed: int = SEED) -> tuple[pa.Table, pa.Table]:
    """(features, labels) of the given sizes, as described in the module docstring."""
    rng = np.random.default_rng(seed)
    event = _instants(rng, n_features)
    feats: dict[str, pa.Array] = {
        "entity_id": pa.array(rng.integers(0, n_entities, size=n_features, dtype=np.int64)),
        "event_timestamp": pa.array(event, UTC_US),
        "created_timestamp": pa.array(event + rng.integers(0, CREATED_LAG_US, size=n_features), UTC_US),
    }
    for i in range(N_FEATURES):
        values = rng.standard_normal(n_features)
        nulls = rng.random(n_features) < NULL_SHARE if i == NULL_FEATURE else None
        feats[f"f{i}"] = pa.array(values, pa.float64(), mask=nulls)
    labels = {
        "entity_id": pa.array(rng.integers(0, n_entities, size=n_labels, dtype=np.int64)),
        "event_timestamp": pa.array(_instants(rng, n_labels), UTC_US),
        "label": pa.array(rng.integers(0, 2, size=n_labels, dtype=np.int8)),
    }
    return pa.table(feats), pa.table(labels)


def paths(size: str) -> tuple[Path, Path]:
    out = REPO / "bench-data" / size
    return out / "features.parquet", out / "labels.parquet"


def ensure(size: str) -> tuple[Path, Path]:
    """Generate the size's Parquet files once (features in row groups of 1M rows)."""
    if size not in SIZES:
        raise ValueError(f"unknown workload size {size!r}; use one of {sorted(SIZES)}")
    feats, labels = paths(size)
    if not (feats.exists() and labels.exists()):
        f, lab = make(*SIZES[size])
        feats.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so an interrupted run never leaves a truncated cache.
        for table, path, group in ((f, feats, 1 << 20), (lab, labels, None)):
            tmp = path.with_suffix(".tmp")
            pq.write_table(table, tmp, row_group_size=group)
            tmp.replace(path)
    return feats, labels


def load(size: str) -> tuple[pa.Table, pa.Table]:
    """(features, labels) as pyarrow Tables read from the cached Parquet (chunked by row group)."""
    feats, labels = ensure(size)
    return pq.read_table(feats), pq.read_table(labels)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write a workload size's Parquet files (cached).")
    ap.add_argument("size", choices=sorted(SIZES))
    for p in ensure(ap.parse_args().size):
        print(p)
