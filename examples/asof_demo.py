"""A point-in-time training set in a few lines: labels joined to the feature history with a 30-day TTL.

    python examples/asof_demo.py [n_features]

Builds a synthetic feature history (unsorted, like a real event log) and a set of labels, joins each
label to the latest feature row of its entity at or before the label's time (never after: no leakage),
ignoring rows older than 30 days and preferring the latest-created row among equal timestamps.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import numpy as np
import pyarrow as pa
import skewless


def make(n_feat: int, n_lab: int, n_ent: int, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    ts = pa.timestamp("us", tz="UTC")
    t0, year = 1_672_531_200_000_000, 365 * 86_400 * 1_000_000
    when = t0 + rng.integers(0, year, n_feat)
    features = pa.table(
        {
            "user_id": pa.array(rng.integers(0, n_ent, n_feat)),
            "event_timestamp": pa.array(when, ts),
            "created_timestamp": pa.array(when + rng.integers(0, 3_600_000_000, n_feat), ts),
            "clicks_7d": pa.array(rng.poisson(3.0, n_feat)),
            "spend_30d": pa.array(rng.gamma(2.0, 20.0, n_feat)),
        }
    )
    labels = pa.table(
        {
            "user_id": pa.array(rng.integers(0, n_ent, n_lab)),
            "event_timestamp": pa.array(t0 + rng.integers(0, year, n_lab), ts),
            "churned": pa.array(rng.integers(0, 2, n_lab).astype(np.int8)),
        }
    )
    return features, labels


def main() -> None:
    n_feat = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    features, labels = make(n_feat, max(n_feat // 10, 1), max(n_feat // 100, 1))
    start = time.perf_counter()
    training = skewless.asof_join(
        labels,
        features,
        on="event_timestamp",
        by="user_id",
        tolerance=dt.timedelta(days=30),
        tie_breaker="created_timestamp",
    )
    took = time.perf_counter() - start
    matched = training.num_rows - training.column("spend_30d").null_count
    print(training.slice(0, 8).to_pandas().to_string(index=False))
    print(
        f"\nasof_join: {labels.num_rows:,} labels x {features.num_rows:,} feature rows -> "
        f"{training.num_rows:,} rows ({matched:,} with a live feature row) in {took * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
