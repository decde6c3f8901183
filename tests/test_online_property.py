"""Property test: writes and reads of the online store against a plain-Python dict oracle that applies the
replacement rule (strictly later (timestamp, created) replaces; within a batch the last of equals wins)."""

from __future__ import annotations

import datetime as dt
import tempfile

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless.online import OnlineStore, Status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", "UTC")

int_keys = st.integers(-3, 3)
str_keys = st.text(alphabet="ab\x00é", max_size=3).filter(bool)
row = st.tuples(
    st.tuples(str_keys, int_keys),  # composite key (user, n)
    st.integers(0, 4),  # event ts (seconds), narrow so that ties are common
    st.one_of(st.none(), st.integers(0, 2)),  # created ts or missing
)
batches = st.lists(st.lists(row, min_size=0, max_size=12), min_size=1, max_size=4)


def stamp(ts: int, created: int | None) -> tuple:
    # A missing created timestamp ranks below any present one.
    return (ts, created is not None, created or 0)


def oracle_apply(state: dict, batch: list, values: list) -> tuple[int, int]:
    winners: dict = {}
    for (key, ts, created), v in zip(batch, values, strict=True):
        s = stamp(ts, created)
        if key not in winners or s >= winners[key][0]:  # >=: the last of equals in input order wins
            winners[key] = (s, v, ts)
    written = 0
    for key, (s, v, ts) in winners.items():
        if key not in state or s > state[key][0]:
            state[key] = (s, v, ts)
            written += 1
    return written, len(batch) - written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches, composite=st.booleans())
def test_writes_match_the_dict_oracle(batches, composite):
    store = OnlineStore(tempfile.mkdtemp(prefix="skewless-prop-"), map_size=1 << 20)
    state: dict = {}
    counter = 0
    for batch in batches:
        if not composite:
            batch = [((0, k[1]), ts, c) for k, ts, c in batch]
        values = [float(counter + i) for i in range(len(batch))]
        counter += len(batch)
        cols = {
            "n": pa.array([k[1] for k, _, _ in batch], pa.int64()),
            "ts": pa.array([T0 + dt.timedelta(seconds=t) for _, t, _ in batch], TS),
            "cr": pa.array([None if c is None else T0 + dt.timedelta(seconds=c) for _, _, c in batch], TS),
            "x": pa.array(values, pa.float64()),
            # A variable-length column next to the fixed ones: its bytes must follow the winning row.
            "s": pa.array([None if int(v) % 3 == 0 else "é" * (int(v) % 5) for v in values], pa.string()),
        }
        if composite:
            cols = {"user": pa.array([k[0] for k, _, _ in batch], pa.string()), **cols}
        keys = ["user", "n"] if composite else ["n"]
        data = pa.table(cols)
        got = store.write("v", data, keys=keys, timestamp="ts", created_timestamp="cr")
        assert tuple(got) == oracle_apply(state, batch, values)

    if not state:
        assert store.views() in ([], ["v"])
        return
    reader = store.reader("v")
    probe = sorted(state) + [("zz", 99)]
    if composite:
        req = {"user": [k[0] for k in probe], "n": [k[1] for k in probe]}
        table = reader.get(req)
        values, status = store.reader("v", columns=["x"]).get_numpy(req)
    else:
        req_list = [k[1] for k in probe[:-1]] + [99]
        table = reader.get(req_list)
        values, status = store.reader("v", columns=["x"]).get_numpy(np.array(req_list))
    expected = [state[k][1] if k in state else None for k in probe]
    assert table.column("x").to_pylist() == expected
    exp_s = [None if e is None or int(e) % 3 == 0 else "é" * (int(e) % 5) for e in expected]
    assert table.column("s").to_pylist() == exp_s
    assert status.tolist() == [Status.PRESENT] * len(state) + [Status.NOT_FOUND]
    np.testing.assert_array_equal(values[:, 0], [np.nan if e is None else e for e in expected])
    # TTL: with as_of = T0 + 4s and ttl = 2s, rows whose event ts < 2s are expired.
    as_of, ttl = T0 + dt.timedelta(seconds=4), dt.timedelta(seconds=2)
    xr = store.reader("v", columns=["x"])
    if composite:
        _, status = xr.get_numpy(req, as_of=as_of, ttl=ttl)
    else:
        _, status = xr.get_numpy(req_list, as_of=as_of, ttl=ttl)
    exp_status = [Status.EXPIRED if state[k][2] < 2 else Status.PRESENT for k in probe[:-1]]
    assert status.tolist() == exp_status + [Status.NOT_FOUND]
