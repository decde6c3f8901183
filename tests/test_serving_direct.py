"""The serving plan's lookups (`FeatureStore.online_reader`) against a dict oracle where the direct B-tree
search guesses wrong or its state goes stale: keys spread very unevenly (the first probe of a page is
guessed from its bounds as if they were even), one-key requests (the direct search, no batch to hide
behind), the same reader across new snapshots and a growing map, a reader whose per-thread key buffer
was warmed by a large request, and a fork after all of it."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pytest
from conftest import wait_child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
from skewless.online import Status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def make_store(path) -> FeatureStore:
    store = FeatureStore(path)
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    store.apply(
        [
            user,
            FeatureView("v", [user], [Field("x", Float64)]),
            FeatureView("w", [user], [Field("y", Float64)]),
        ]
    )
    return store


def write(store: FeatureStore, view: str, keys: list[int], version: int) -> dict[int, float]:
    vals = {k: float(version * 1e6 + (k % 999_983)) for k in keys}
    col = "x" if view == "v" else "y"
    store.write(
        view,
        pa.table(
            {
                "user_id": pa.array(keys, pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + dt.timedelta(seconds=version)] * len(keys), pa.timestamp("us", "UTC")
                ),
                col: pa.array([vals[k] for k in keys]),
            }
        ),
    )
    return vals


def uneven_keys(rng: np.random.Generator, n: int) -> list[int]:
    """Powers of two, dense clusters far apart and scattered keys: nothing like an even spread."""
    pow2 = [(1 << s) + d for s in range(62) for d in range(3)]
    clusters = [c * (1 << 60) + d for c in range(-7, 7) for d in range(n // 14)]
    scattered = rng.integers(-(2**63), 2**63 - 1, size=n // 4).tolist()
    return sorted(set(pow2 + clusters + scattered))


def check(reader, oracle: dict[int, float], ks: list[int]) -> None:
    values, status = reader.get_numpy(ks)
    want = [oracle.get(k, np.nan) for k in ks]
    np.testing.assert_array_equal(values[:, 0], want)
    assert status[:, 0].tolist() == [Status.PRESENT if k in oracle else Status.NOT_FOUND for k in ks]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(n=st.integers(200, 6000), seed=st.integers(0, 2**32), rounds=st.integers(1, 4))
def test_one_key_and_batched_lookups_equal_a_dict_oracle_across_snapshots(tmp_path_factory, n, seed, rounds):
    rng = np.random.default_rng(seed)
    store = make_store(tmp_path_factory.mktemp("s"))
    keys = uneven_keys(rng, n)
    oracle = write(store, "v", keys, 1)
    reader = store.online_reader(["v:x"])
    for version in range(2, 2 + rounds):
        probe = rng.choice(keys, size=min(len(keys), 300), replace=False).tolist()
        probe += [k + 1 for k in probe[:20]] + [k - 1 for k in probe[:20]] + [-(2**63), 2**63 - 1, 0]
        check(reader, oracle, probe)  # a batch
        for k in probe[::7]:
            check(reader, oracle, [k])  # one key: the direct search with nothing to interleave
        # A new snapshot between two calls of the same reader: rewrite some keys, delete none, add
        # new ones (pages split, freed and reused), so cached roots and pages must follow.
        changed = rng.choice(keys, size=len(keys) // 3, replace=False).tolist()
        fresh = rng.integers(-(2**62), 2**62, size=200).tolist()
        oracle.update(write(store, "v", changed + fresh, version))
        keys = sorted(set(keys) | set(fresh))
        check(reader, oracle, changed[:50] + fresh[:50])
        for k in fresh[:10] + changed[:10]:
            check(reader, oracle, [k])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_after_the_reader_is_warm_reads_the_same_answers(tmp_path):
    rng = np.random.default_rng(3)
    store = make_store(tmp_path / "s")
    keys = uneven_keys(rng, 20_000)
    oracle = write(store, "v", keys, 1)
    wo = write(store, "w", keys[::2], 1)
    reader = store.online_reader(["v:x", "w:y"])
    big = rng.choice(keys, size=20_000).tolist()  # warms this thread's key buffer past what it keeps
    reader.get_numpy(big)
    one = keys[len(keys) // 3]
    reader.get_numpy([one])
    pid = os.fork()
    if pid == 0:  # child: report through the exit code, never return into pytest
        code = 1
        try:
            ks = [one, keys[0], keys[-1], keys[5] + 1]
            values, status = reader.get_numpy(ks)  # the inherited plan reopens the environment
            ok = np.array_equal(values[:, 0], [oracle.get(k, np.nan) for k in ks], equal_nan=True)
            ok = ok and status[:, 1].tolist() == [Status.PRESENT if k in wo else Status.NOT_FOUND for k in ks]
            if ok:
                write(store, "v", [one], 7)  # a new snapshot, written by the child
                values, _ = reader.get_numpy([one])
                code = 0 if values[0, 0] == 7e6 + one % 999_983 else 3
            else:
                code = 2
        finally:
            os._exit(code)
    assert wait_child(pid, "the forked child did not finish within 60 s") == 0
    # The parent's warm reader sees the child's write, one key and in a batch.
    oracle[one] = 7e6 + one % 999_983
    check(store.online_reader(["v:x"]), oracle, [one])
    values, status = reader.get_numpy([one, *big[:100]])
    assert values[0, 0] == oracle[one]
    np.testing.assert_array_equal(values[1:, 0], [oracle[k] for k in big[:100]])
    assert (status[1:, 0] == Status.PRESENT).all()


def test_a_response_makes_its_key_columns_and_status_array_on_first_use(tmp_path):
    store = make_store(tmp_path / "s")
    oracle = write(store, "v", [1, 2, 3], 1)
    reader = store.online_reader(["v:x"])
    resp = reader.get({"user_id": [3, None, 9, 1]})
    served = resp._served
    # The status array is made once: every read is the same array.
    assert served.status is served.status
    assert resp.status.tolist() == [
        [Status.PRESENT],
        [Status.NOT_FOUND],
        [Status.NOT_FOUND],
        [Status.PRESENT],
    ]
    t = resp.to_arrow()
    assert t.column("user_id").to_pylist() == [3, None, 9, 1]
    assert t.column("x").to_pylist() == [oracle[3], None, None, oracle[1]]
    # A second table from the same answer is the same again.
    assert served.table(["x"]).equals(t)
