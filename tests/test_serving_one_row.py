"""The one-row path of the serving plan (issue 7, sixth pass): a request of one entity to a reader of
one view is answered without the batch walk, into two numpy arrays over one block of memory. Checked
against the batch walk (the same key asked twice), against an independent oracle of the status rule
(found, missing, expired, not yet valid; a stored null stays NaN-free in the statuses and a stored NaN
stays NaN), and for the arrays' ownership."""

from __future__ import annotations

import datetime as dt
import gc
import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, String
from skewless.errors import DtypeError
from skewless.online import Status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", "UTC")
TTL = dt.timedelta(hours=10)
STORED = range(-40, 40, 2)


def event_time(k: int) -> dt.datetime:
    """Key k's stored event time: spread over 40 hours, so an instant finds some keys expired and some
    not yet valid."""
    return T0 + dt.timedelta(hours=k % 40)


def x_of(k: int) -> float | None:
    return None if k % 3 == 0 else float(k)


def y_of(k: int) -> float:
    return float("nan") if k % 5 == 0 else k / 4


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    s = FeatureStore(tmp_path_factory.mktemp("one_row"))
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    s.apply(
        [
            user,
            FeatureView("v", [user], [Field("x", Float64), Field("y", Float64)], ttl=TTL),
            FeatureView("w", [user], [Field("z", Float64)]),
            FeatureView("text", [user], [Field("name", String)]),
        ]
    )
    keys = list(STORED)
    s.write(
        "v",
        {
            "user_id": keys,
            "event_timestamp": pa.array([event_time(k) for k in keys], TS),
            "x": [x_of(k) for k in keys],
            "y": [y_of(k) for k in keys],
        },
    )
    s.write(
        "w",
        {"user_id": keys, "event_timestamp": pa.array([T0] * len(keys), TS), "z": [k * 1.0 for k in keys]},
    )
    s.write(
        "text",
        {"user_id": keys, "event_timestamp": pa.array([T0] * len(keys), TS), "name": [str(k) for k in keys]},
    )
    return s


def oracle(k: int, at: dt.datetime) -> tuple[list[float], int]:
    """The status rule written out: not stored, stored after the instant, older than the TTL, else served."""
    nan = float("nan")
    if k not in STORED:
        return [nan, nan], int(Status.NOT_FOUND)
    ts = event_time(k)
    if ts > at:
        return [nan, nan], int(Status.NOT_YET_VALID)
    if ts < at - TTL:
        return [nan, nan], int(Status.EXPIRED)
    x = x_of(k)
    return [nan if x is None else x, y_of(k)], int(Status.PRESENT)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(-45, 45), hours=st.integers(-2, 60), shape=st.sampled_from(["list", "dict", "tuple"]))
def test_one_row_equals_the_batch_walk_and_the_oracle(
    store: FeatureStore, k: int, hours: int, shape: str
) -> None:
    r = store.online_reader(["v:x", "v:y"])
    at = T0 + dt.timedelta(hours=hours)
    req = {"list": [k], "dict": {"user_id": [k]}, "tuple": (k,)}[shape]
    values, status = r.get_numpy(req, as_of=at)
    # Two rows take the batch walk: its first row must be the one-row answer.
    both, both_status = r.get_numpy([k, k], as_of=at)
    want, want_status = oracle(k, at)
    assert values.shape == (1, 2) and status.shape == (1, 1)
    assert values.dtype == np.float64 and status.dtype == np.int8
    assert same(values[0], np.array(want)), (values, want)
    assert int(status[0, 0]) == want_status
    assert same(values[0], both[0]) and same(values[0], both[1])
    assert (status[0] == both_status[0]).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(-45, 45), hours=st.integers(-2, 60))
def test_one_row_of_one_view_equals_the_same_row_of_a_two_view_plan(
    store: FeatureStore, k: int, hours: int
) -> None:
    """A plan of two views takes the walk even for one row: the one-view plans' columns must be its."""
    at = T0 + dt.timedelta(hours=hours)
    both, both_status = store.online_reader(["v:x", "v:y", "w:z"]).get_numpy([k], as_of=at)
    v, v_status = store.online_reader(["v:x", "v:y"]).get_numpy([k], as_of=at)
    w, w_status = store.online_reader(["w:z"]).get_numpy([k], as_of=at)
    assert same(both[:, :2], v) and same(both[:, 2:], w)
    assert both_status[0, 0] == v_status[0, 0] and both_status[0, 1] == w_status[0, 0]


def test_the_arrays_are_the_callers_own(store: FeatureStore) -> None:
    """Each call's two arrays are new, writable, C-ordered, and keep their memory while either lives."""
    r = store.online_reader(["w:z"])
    values, status = r.get_numpy([2], as_of=T0)
    again, _ = r.get_numpy([2], as_of=T0)
    assert values.flags.writeable and status.flags.writeable
    assert values.flags.c_contiguous and status.flags.c_contiguous
    values[0, 0] = -1.0
    status[0, 0] = 99
    assert again[0, 0] == 2.0  # a later answer shares nothing with an earlier one
    fresh, fresh_status = r.get_numpy([2], as_of=T0)
    assert fresh[0, 0] == 2.0 and fresh_status[0, 0] == int(Status.PRESENT)
    del values
    gc.collect()
    assert status[0, 0] == 99  # the status array still owns the block after the values are gone
    empty, empty_status = r.get_numpy([], as_of=T0)
    assert empty.shape == (0, 1) and empty_status.shape == (0, 1)


def test_many_rows_fill_every_element(store: FeatureStore) -> None:
    """Requests large enough to release the GIL write into the same kind of block: every element set."""
    r = store.online_reader(["v:x", "v:y"])
    at = T0 + dt.timedelta(hours=20)
    keys = [int(k) for k in np.random.default_rng(5).integers(-45, 45, size=3000)]
    values, status = r.get_numpy(keys, as_of=at)
    for i, k in enumerate(keys):
        want, want_status = oracle(k, at)
        assert same(values[i], np.array(want)) and status[i, 0] == want_status


def test_a_non_numeric_feature_is_refused_on_every_call(store: FeatureStore) -> None:
    r = store.online_reader(["text:name"])
    for _ in range(2):
        with pytest.raises(DtypeError):
            r.get_numpy([2])


def test_a_reader_made_before_its_view_has_data(tmp_path) -> None:
    """Numeric by declaration while the view has no data, then by its stored kinds; both answered."""
    s = FeatureStore(tmp_path)
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    s.apply([user, FeatureView("late", [user], [Field("a", Float64)])])
    r = s.online_reader(["late:a"])
    values, status = r.get_numpy([1], as_of=T0)
    assert np.isnan(values[0, 0]) and status[0, 0] == int(Status.NOT_FOUND)
    s.write("late", {"user_id": [1], "event_timestamp": pa.array([T0], TS), "a": [3.5]})
    values, status = r.get_numpy([1], as_of=T0)
    assert values[0, 0] == 3.5 and status[0, 0] == int(Status.PRESENT)


def test_the_clock_is_read_per_request(store: FeatureStore) -> None:
    """Without as_of, the instant served at is the real-time clock's, in UTC microseconds."""
    r = store.online_reader(["w:z"])
    before = time.time_ns() // 1000
    _, _, at = r._plan.get_numpy_at([2])
    after = time.time_ns() // 1000
    assert before <= at <= after + 1
