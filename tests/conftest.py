"""Shared fixtures and helpers of the store tests: a clock, a store with one view, its rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pyarrow as pa
import pytest
from skewless import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
    Int64,
)

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


def snapshot(path: str) -> dict[str, str]:
    """Every file of the store with a hash of its bytes (lock files excluded: readers touch them)."""
    out = {}
    for dp, _, fs in os.walk(path):
        for f in fs:
            if f in (".lock", "lock.mdb"):
                continue
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


user = Entity("user", join_keys=["user_id"], dtype=Int64)
merchant = Entity("merchant", join_keys=["merchant_id"])


def stats_view(**kw):
    args = dict(
        entities=[user],
        schema=[Field("spend", Float64), Field("n", Int64)],
        ttl=dt.timedelta(days=2),
        created_timestamp_field="created",
    )
    args.update(kw)
    return FeatureView("stats", **args)


def stats_rows(ids, days, spend, n=None, created=None):
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "created": pa.array([at(d) for d in (created or days)], TS),
        "spend": pa.array(spend, pa.float64()),
        "n": pa.array(n or list(range(len(ids))), pa.int64()),
    }


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "store")
    s.apply([user, stats_view()])
    return s


# ---- definitions ----------------------------------------------------------------------------------------
