"""The serving plan's fast paths of the latency pass on issue 7, against independent oracles: request keys
given as a Python list (plain ints take a shortcut; every other item the general path), values checked
by the store's own checksum routine (one call over key and body, unaligned words), and float64 rows
decoded straight from a checked value (a stored null stays apart from a stored NaN)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
from skewless.errors import DtypeError
from skewless.online import Status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", "UTC")
STORED = range(-50, 50, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    s = FeatureStore(tmp_path_factory.mktemp("fast"))
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    s.apply([user, FeatureView("v", [user], [Field("x", Float64), Field("y", Float64)])])
    keys = list(STORED)
    # Every third row has a null x, every fifth a NaN y: a null must stay null, a NaN stays NaN.
    xs = [None if k % 3 == 0 else float(k) for k in keys]
    ys = [float("nan") if k % 5 == 0 else k / 2 for k in keys]
    s.write(
        "v",
        {"user_id": keys, "event_timestamp": pa.array([T0] * len(keys), TS), "x": xs, "y": ys},
    )
    return s


def oracle(keys: list) -> tuple[list[list[float | None]], list[int]]:
    rows, status = [], []
    for k in keys:
        if k is None or int(k) not in STORED:
            rows.append([None, None])
            status.append(int(Status.NOT_FOUND))
            continue
        k = int(k)
        rows.append([None if k % 3 == 0 else float(k), float("nan") if k % 5 == 0 else k / 2])
        status.append(int(Status.PRESENT))
    return rows, status


items = st.one_of(
    st.integers(-60, 60),
    st.none(),
    st.integers(-60, 60).map(np.int64),
    st.integers(0, 60).map(np.uint16),
)


@given(keys=st.lists(items, max_size=40))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_list_keys_of_mixed_int_forms_and_nones_match_a_dict(store, keys):
    r = store.online_reader(["v:x", "v:y"])
    at = T0 + dt.timedelta(seconds=1)
    want_rows, want_status = oracle(keys)
    for request in (keys, {"user_id": keys}, tuple(keys)):
        values, status = r.get_numpy(request, as_of=at)
        assert status[:, 0].tolist() == want_status
        got = r.get(request, as_of=at).to_arrow()
        assert got.column("x").to_pylist() == [w[0] for w in want_rows]
        for i, w in enumerate(want_rows):
            # get_numpy: no value is NaN; get: null is None and a stored NaN stays NaN.
            x, y = values[i]
            assert np.isnan(x) if w[0] is None else x == w[0]
            assert np.isnan(y) if w[1] is None or np.isnan(w[1]) else y == w[1]
            gy = got.column("y")[i].as_py()
            assert (gy is None) if w[1] is None else (np.isnan(gy) if np.isnan(w[1]) else gy == w[1])


@pytest.mark.parametrize(
    "keys",
    [
        [1, "2"],
        ["2", 1],
        [1, b"2"],
        [1, True],
        [True],
        [1, 2.0],
        [None, 1, "x"],
        [2**64],
        [1, 2**63],
        [1, -(2**63) - 1],
    ],
)
def test_list_keys_that_mix_types_or_do_not_fit_are_dtype_errors(store, keys):
    r = store.online_reader(["v:x"])
    with pytest.raises(DtypeError):
        r.get_numpy(keys, as_of=T0)
    with pytest.raises(DtypeError):
        r.get({"user_id": keys}, as_of=T0)


def test_int_subclasses_and_big_ints_in_range_take_the_general_path(store):
    class Id(int):
        pass

    r = store.online_reader(["v:x"])
    at = T0 + dt.timedelta(seconds=1)
    values, status = r.get_numpy([Id(1), 1, Id(4), 2**63 - 1, -(2**63)], as_of=at)
    assert status[:, 0].tolist() == [0, 0, 0, int(Status.NOT_FOUND), int(Status.NOT_FOUND)]
    assert values[:3, 0].tolist() == [1.0, 1.0, 4.0]
