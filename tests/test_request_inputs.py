"""Request-time inputs (``request:<column>``) as a service passes them: a plain list per request is read
by the engine itself, and every form (list, tuple, numpy, pandas, polars, pyarrow) serves the same bits
as the pyarrow array of the same values, online and in the training set; a column of the wrong length
or type is a typed error."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import TS, at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
    Int64,
    Status,
    TransformView,
    clip,
    log1p,
)
from skewless.errors import DtypeError

user = Entity("user", join_keys=["user_id"], dtype=Int64)
FEATS = ["v:x", "r:amount_log1p", "r:amount_clip"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    s = FeatureStore(tmp_path_factory.mktemp("req"))
    s.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    s.write("v", {"user_id": [1, 2, 3], "event_timestamp": pa.array([at(0)] * 3, TS), "x": [0.5, 1.5, 2.5]})
    s.apply([TransformView("r", [log1p("request:amount"), clip("request:amount", -1, 1)])])
    return s


def packed(a: np.ndarray) -> list[bytes]:
    return [struct.pack("<d", v) for v in a.ravel()]


NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**53), 2**53),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NUMBERS, min_size=1, max_size=3))
def test_a_list_serves_what_its_pyarrow_array_serves(store, values):
    """The engine's own reading of a list agrees with pyarrow's typing of it: float64 when a float is
    there, else int64; an int a float cannot hold exactly beside a float is pyarrow's error."""
    reader = store.online_reader(FEATS)
    try:
        want = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        with pytest.raises(DtypeError):
            reader.get_numpy({"user_id": [1] * len(values), "amount": values}, as_of=at(1))
        return
    ids = [1] * len(values)
    got = reader.get_numpy({"user_id": ids, "amount": values}, as_of=at(1))
    ref = reader.get_numpy({"user_id": ids, "amount": want}, as_of=at(1))
    assert packed(got[0]) == packed(ref[0])
    assert got[1].tolist() == ref[1].tolist()
    on = reader.get({"user_id": ids, "amount": values}, as_of=at(1))
    ref_on = reader.get({"user_id": ids, "amount": want}, as_of=at(1))
    for c in ("amount_log1p", "amount_clip"):
        assert [None if v is None else struct.pack("<d", v) for v in on.to_arrow().column(c).to_pylist()] == [
            None if v is None else struct.pack("<d", v) for v in ref_on.to_arrow().column(c).to_pylist()
        ]
        assert on.statuses[c].tolist() == ref_on.statuses[c].tolist()


@pytest.mark.parametrize(
    "form",
    [
        lambda v: v,
        tuple,
        np.array,
        pd.Series,
        lambda v: pl.Series("amount", v),
        lambda v: pa.array(v, pa.float64()),
        lambda v: pa.chunked_array([pa.array(v, pa.float64())]),
    ],
)
def test_every_form_of_request_values_serves_the_training_set(store, form):
    amounts = [0.25, 2.0, -3.0, float("inf")]  # no NaN: pandas reads a NaN as missing
    labels = {"user_id": [1, 2, 3, 1], "event_timestamp": pa.array([at(1)] * 4, TS), "amount": amounts}
    off = store.get_historical_features(labels, FEATS)
    reader = store.online_reader(FEATS)
    rows = {"user_id": [1, 2, 3, 1], "amount": form(amounts)}
    values, status = reader.get_numpy(rows, as_of=at(1))
    names = ["x", "amount_log1p", "amount_clip"]
    want = np.column_stack([np.array(off.column(c).to_pylist(), dtype=np.float64) for c in names])
    assert packed(values) == packed(want)
    assert (status == Status.PRESENT).all()
    got = reader.get(rows, as_of=at(1)).to_arrow()
    for c in names:
        assert [struct.pack("<d", v) for v in got.column(c).to_pylist()] == [
            struct.pack("<d", v) for v in off.column(c).to_pylist()
        ]


@pytest.mark.parametrize("amounts", [[0, None, 3], [None, None, None]])
def test_missing_request_values_are_nulls_as_in_the_training_set(store, amounts):
    """A request value given as None (all of them: a column pyarrow types as null) is a missing number,
    not a type error, online and offline alike."""
    labels = {"event_timestamp": pa.array([at(1)] * 3, TS), "amount": amounts}
    off = store.get_historical_features(labels, ["r:amount_log1p"]).column("amount_log1p").to_pylist()
    reader = store.online_reader(["r:amount_log1p"])
    values, status = reader.get_numpy({"amount": amounts}, as_of=at(1))
    assert [None if np.isnan(v) else v for v in values[:, 0]] == off
    on = reader.get({"amount": amounts}, as_of=at(1))
    assert on.to_dict()["amount_log1p"] == off
    assert status[:, 0].tolist() == on.statuses["amount_log1p"].tolist()


@pytest.mark.parametrize("call", ["get_numpy", "get"])
def test_a_request_column_of_another_length_is_a_dtype_error(store, call):
    reader = store.online_reader(FEATS)
    for rows in (
        {"user_id": [1, 2], "amount": [1.5]},
        {"user_id": [1], "amount": [1.5, 2.5]},
        {"user_id": [1], "amount": np.array([1.5, 2.5])},
    ):
        with pytest.raises(DtypeError, match="one value per row|different lengths"):
            getattr(reader, call)(rows, as_of=at(1))


@pytest.mark.parametrize(
    "amount, match",
    [
        (["a"], "reads numbers"),
        ([True], "reads numbers|bool"),
        (1.5, "pass a sequence"),
        ([[1.0]], "reads numbers|list"),
    ],
)
def test_a_request_value_of_another_type_is_a_dtype_error(store, amount, match):
    reader = store.online_reader(FEATS)
    with pytest.raises(DtypeError, match=match):
        reader.get_numpy({"user_id": [1], "amount": amount}, as_of=at(1))
    # and the reader still serves the next request
    values, _ = reader.get_numpy({"user_id": [1], "amount": [0.0]}, as_of=at(1))
    assert values.tolist() == [[0.5, 0.0, 0.0]]
