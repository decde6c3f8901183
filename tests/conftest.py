"""Shared fixtures and helpers of the store tests: a clock, a store with one view, its rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import time

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


def wait_child(pid: int, what: str, seconds: float = 60) -> int:
    """The exit code of the forked child ``pid``; a child still running after ``seconds`` is killed and the
    test fails with ``what`` (a stuck child must never hang the suite)."""
    deadline = time.time() + seconds
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(st)
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(what)
        time.sleep(0.01)


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


# ---- the Spark tests run on their own -------------------------------------------------------------------
# These files need pyspark and Java and a Spark start (slow); CI runs them in its own step. The rest of
# the suite leaves them out unless they are named (or SKEWLESS_SPARK_TESTS=1), and says so in its header.
# (tests/test_spark_*.py files that need no Spark, such as test_spark_splits.py, run in the default suite.)
SPARK_TESTS = ("test_spark.py", "test_spark_readme.py", "test_spark_direct.py", "test_spark_jobs.py")


def _spark_tests_wanted(config: pytest.Config) -> bool:
    named = any(name in str(a) for a in config.args for name in SPARK_TESTS)
    return named or os.environ.get("SKEWLESS_SPARK_TESTS") == "1"


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in SPARK_TESTS and not _spark_tests_wanted(config):
        return True
    return None


def pytest_report_header(config):
    if not _spark_tests_wanted(config):
        files = " ".join(f"tests/{name}" for name in SPARK_TESTS)
        return (
            f"{files} are not part of this run: run `python -m pytest {files}` "
            "(they need pyspark and Java 17+; CI runs them in its Spark step)"
        )
    return None
