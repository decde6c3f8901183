"""``get_numpy`` of a transform view runs the program over float64 rows (the dense post-stage), not over
Arrow arrays: the same bits as the training set and the same statuses as ``get`` (the Arrow path)."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
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
    Float32,
    Float64,
    Impute,
    Int32,
    Int64,
    Status,
    TransformView,
    bucketize,
    clip,
    log1p,
    min_max_scale,
    one_hot,
    zscore,
)
from skewless.errors import DtypeError

user = Entity("user", join_keys=["user_id"], dtype=Int64)
SCHEMA = [Field("income", Float64), Field("age", Int64), Field("score", Float32), Field("level", Int32)]
TTL = dt.timedelta(days=10)


def people(**kw) -> FeatureView:
    return FeatureView("people", [user], SCHEMA, ttl=TTL, **kw)


def rows(hist):
    ids, days, income, age, score, level = (list(c) for c in zip(*hist, strict=True))
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "income": pa.array(income, pa.float64()),
        "age": pa.array(age, pa.int64()),
        "score": pa.array(score, pa.float32()),
        "level": pa.array(level, pa.int32()),
    }


def f64_bits(col) -> list[bytes]:
    """A column as get_numpy answers it (float64, null as NaN), as bit patterns."""
    vals = col.cast(pa.float64()).to_pylist()
    return [struct.pack("<d", float("nan") if v is None else v) for v in vals]


floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, -1.0, 1.0, 1e308]),
)
small_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hist=st.lists(
        st.tuples(
            st.integers(1, 4),
            st.integers(0, 30),
            floats,
            st.one_of(st.none(), st.integers(-5, 50)),
            small_floats,
            st.one_of(st.none(), st.integers(-3, 3)),
        ),
        max_size=12,
    ),
    strategy=st.sampled_from(["constant", "mean", "median", "mode", "none"]),
    query=st.integers(0, 60),
    amounts=st.lists(floats, min_size=5, max_size=5),
    fill_amount=st.booleans(),
)
def test_get_numpy_equals_offline_and_get_bit_for_bit(
    tmp_path_factory, hist, strategy, query, amounts, fill_amount
):
    s = FeatureStore(tmp_path_factory.mktemp("dense"))
    s.apply([user, people()])
    seed = [(9, 0, 1.0, 1, 0.5, 1), (9, 0, 3.0, 3, 1.5, 2)]
    s.write("people", rows(seed))
    s.compute_statistics("people")
    if hist:
        s.write("people", rows(hist))
    imps = []
    if strategy != "none":
        imps = [
            Impute("income", "constant", 2.5)
            if strategy == "constant"
            else Impute("income", "median" if strategy == "mode" else strategy, stats=1),
            Impute("age", "mode", stats=1) if strategy == "mode" else Impute("age", "constant", 7),
            Impute("score", "median", stats=1),
            Impute("level", "constant", -2),
        ]
    tv = TransformView(
        "tv",
        [
            zscore("people:income", stats=1),
            min_max_scale("people:age", stats=1),
            clip("people:income", 0, 25),
            log1p("people:score"),
            bucketize("people:level", [-1, 2]),
            clip("request:amount", -1, 1),
            log1p("request:amount", name="amount_log"),
        ],
        impute=[Impute("request:amount", "constant", 0.5)] if fill_amount else [],
    )
    s.apply([people(impute=imps), tv])
    t = at(max([r[1] for r in seed + hist] + [query]))
    ids = [1, 2, 3, 4, 9]
    feats = [
        "people:income",
        "people:age",
        "people:score",
        "people:level",
        *(f"tv:{o}" for o in tv.output_names),
    ]
    amount = pa.array(amounts, pa.float64())
    off = s.get_historical_features(
        {"user_id": ids, "event_timestamp": pa.array([t] * 5, TS), "amount": amount}, feats
    )
    reader = s.online_reader(feats)
    values, status = reader.get_numpy({"user_id": ids, "amount": amount}, as_of=t)
    resp = reader.get({"user_id": ids, "amount": amount}, as_of=t)
    for j, name in enumerate(reader.feature_names):
        got = [struct.pack("<d", v) for v in values[:, j].tolist()]
        assert got == f64_bits(off.column(name)), name
        assert status[:, j].tolist() == resp.statuses[name].tolist(), name


def test_one_entity_without_request_columns_and_a_one_hot_reader(tmp_path):
    """The benchmark's shape (built-ins and a fill over view features only), and a program with a one-hot
    encoding (the Arrow path), answer as the training set does."""
    s = FeatureStore(tmp_path)
    s.apply([user, people()])
    s.write("people", rows([(1, 0, 2.0, 30, 2.0, 1), (2, 0, 4.0, 40, None, None)]))
    st_ = s.compute_statistics("people")
    s.write("people", rows([(1, 1, None, 31, 2.0, 2)]))
    builtins = [zscore("people:income", stats=st_.version), clip("people:income", 0, 1)]
    s.apply(
        [
            people(impute=[Impute("income", "median", stats=st_.version)]),
            TransformView("tv", [*builtins, one_hot("people:level", [1, 2])]),
        ]
    )
    feats = ["tv:income_zscore", "tv:income_clip", "tv:level_one_hot"]
    want = s.get_historical_features({"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}, feats)
    v, status = s.online_reader(feats[:2]).get_numpy([1], as_of=at(1))
    assert [struct.pack("<d", x) for x in v[0].tolist()] == [
        *f64_bits(want.column("income_zscore")),
        *f64_bits(want.column("income_clip")),
    ]
    assert v[0].tolist() == [(3.0 - 3.0) / 2**0.5, 1.0]
    assert status.tolist() == [[Status.IMPUTED, Status.IMPUTED]]
    on = s.online_reader(feats).get([1], as_of=at(1))
    assert on.to_dict()["level_one_hot"] == want.column("level_one_hot").to_pylist() == [[0.0, 1.0]]
    v2, s2 = s.online_reader(["tv:income_zscore", "people:level"]).get_numpy([1, 2, 3], as_of=at(1))
    assert np.isnan(v2[2, 1]) and v2[0, 1] == 2.0 and s2[2].tolist() == [Status.IMPUTED, Status.NOT_FOUND]


def test_a_value_from_after_the_request_is_not_filled_in_either_path(tmp_path):
    """NOT_YET_VALID stays missing with that status in get_numpy as in get, filled feature or not."""
    s = FeatureStore(tmp_path)
    s.apply([user, people()])
    s.write("people", rows([(1, 0, 2.0, 30, 2.0, 1), (2, 0, 4.0, 40, None, None)]))
    st_ = s.compute_statistics("people")
    s.write("people", rows([(1, 5, 3.0, 31, 2.0, 2)]))
    s.apply(
        [
            people(impute=[Impute("income", "median", stats=st_.version)]),
            TransformView("tv", [zscore("people:income", stats=st_.version), log1p("people:score")]),
        ]
    )
    feats = ["tv:income_zscore", "tv:score_log1p", "people:income"]
    r = s.online_reader(feats)
    v, status = r.get_numpy([1, 2, 3], as_of=at(1))
    resp = r.get([1, 2, 3], as_of=at(1))
    for j, name in enumerate(r.feature_names):
        assert status[:, j].tolist() == resp.statuses[name].tolist(), name
        assert [struct.pack("<d", x) for x in v[:, j].tolist()] == f64_bits(resp.to_arrow().column(name))
    assert status[0].tolist() == [Status.NOT_YET_VALID] * 3 and np.isnan(v[0]).all()
    assert status[2].tolist() == [Status.IMPUTED, Status.NOT_FOUND, Status.IMPUTED]


def test_a_request_column_of_another_type_gets_the_arrow_paths_error_then_numbers_still_serve(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, people(), TransformView("tv", [clip("request:amount", 0, 1)])])
    s.write("people", rows([(1, 0, 2.0, 30, 2.0, 1)]))
    r = s.online_reader(["tv:amount_clip", "people:age"])
    with pytest.raises(DtypeError, match="amount"):
        r.get_numpy({"user_id": [1], "amount": ["high"]}, as_of=at(1))
    v, status = r.get_numpy({"user_id": [1, 2], "amount": pa.array([5, None], pa.int8())}, as_of=at(1))
    assert v[0].tolist() == [1.0, 30.0] and np.isnan(v[1]).all()
    assert status.tolist() == [[Status.PRESENT, Status.PRESENT], [Status.PRESENT, Status.NOT_FOUND]]
