"""The skew check's rebuild against a brute-force oracle: for each lookup (key, instant t, known-at K),
the history row with the greatest (timestamp, created, write rank) among the key's rows with
timestamp <= t, written by K, and not older than t - ttl."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureView, Field, Float64
from skewless.offline import SEQ, tie_rank
from skewless.skew import _choose

TS = pa.timestamp("us", tz="UTC")

rows_st = st.lists(
    st.tuples(
        st.integers(0, 3),  # key
        st.integers(0, 20),  # timestamp
        st.integers(0, 2),  # created
        st.integers(1, 4),  # file number (write)
        st.integers(0, 30),  # known at
    ),
    min_size=0,
    max_size=40,
)
lookups_st = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 25), st.integers(0, 35)), min_size=1, max_size=30
)


def oracle(rows, lookups, ttl):
    out = []
    for key, t, known in lookups:
        best, best_rank = -1, None
        for i, (k, ts, cr, _, kn) in enumerate(rows):
            if k != key or ts > t or kn > known or (ttl is not None and ts < t - ttl):
                continue
            rank = (ts, cr, RANKS[i])
            if best_rank is None or rank > best_rank:
                best, best_rank = i, rank
        out.append(best)
    return out


RANKS: list[int] = []


@settings(max_examples=150, deadline=None)
@given(rows=rows_st, lookups=lookups_st, ttl=st.one_of(st.none(), st.integers(0, 10)))
def test_choose_matches_the_oracle(rows, lookups, ttl):
    fv = FeatureView(
        "v",
        [Entity("user")],
        [Field("x", Float64)],
        ttl=None if ttl is None else dt.timedelta(microseconds=ttl),
        created_timestamp_field="created",
    )
    # Sequences: (file << 32) | row within its file, unique per row.
    per_file: dict[int, int] = {}
    seqs = []
    for r in rows:
        n = per_file.get(r[3], 0)
        per_file[r[3]] = n + 1
        seqs.append((r[3] << 32) | n)
    hist = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in rows], pa.int64()).cast(TS),
            "created": pa.array([r[2] for r in rows], pa.int64()).cast(TS),
            "x": pa.array([float(i) for i in range(len(rows))]),
            SEQ: pa.array(seqs, pa.int64()),
            "__known__": pa.array([r[4] for r in rows], pa.int64()),
        }
    )
    RANKS[:] = tie_rank(pa.array(seqs, pa.int64())).to_pylist()
    keys = pa.table({"user_id": pa.array([q[0] for q in lookups], pa.int64())})
    t = np.array([q[1] for q in lookups], np.int64)
    known = np.array([q[2] for q in lookups], np.int64)
    got = _choose(fv, hist, keys, t, known).tolist() if rows else [-1] * len(lookups)
    assert got == oracle(rows, lookups, ttl)
