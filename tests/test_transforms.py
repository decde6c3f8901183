"""Transforms, transform views and the imputation registry: one definition, the same bits offline and
online, typed errors at apply with nothing written, and the chapter's incidents as tests."""

from __future__ import annotations

import datetime as dt
import inspect
import math
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import TS, at, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
    Impute,
    Int64,
    Status,
    String,
    TransformView,
    bucketize,
    clip,
    log1p,
    min_max_scale,
    one_hot,
    transform,
    zscore,
)
from skewless.errors import (
    DtypeError,
    IncompatibleChangeError,
    InvalidArgumentError,
    MissingColumnError,
    MissingValueError,
    UnknownFeatureError,
)

user = Entity("user", join_keys=["user_id"], dtype=Int64)
SCHEMA = [Field("income", Float64), Field("age", Int64), Field("city", String)]
TTL = dt.timedelta(days=10)


def people(**kw) -> FeatureView:
    return FeatureView("people", [user], SCHEMA, ttl=TTL, **kw)


def rows(ids, days, income, age, city):
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "income": pa.array(income, pa.float64()),
        "age": pa.array(age, pa.int64()),
        "city": pa.array(city, pa.string()),
    }


def make(path, data=None) -> FeatureStore:
    s = FeatureStore(path)
    s.apply([user, people()])
    s.write(
        "people", data or rows([1, 2, 3], [0, 0, 0], [10.0, None, 30.0], [20, 40, None], ["a", "b", None])
    )
    s.compute_statistics("people")
    return s


def bits(col) -> list:
    """Values as comparable bit patterns (NaN payloads included, -0.0 != 0.0)."""
    out = []
    for v in col.to_pylist():
        if isinstance(v, float):
            out.append(struct.pack("<d", v))
        elif isinstance(v, list):
            out.append(tuple(struct.pack("<d", x) for x in v))
        else:
            out.append(v)
    return out


ALL_BUILTINS = [
    zscore("people:income", stats=1),
    min_max_scale("people:age", stats=1),
    clip("people:income", 0, 25),
    log1p("people:income"),
    bucketize("people:age", [25, 35]),
    one_hot("people:city", ["a", "b"]),
]


def test_builtins_offline_and_online_and_spec_in_registry(tmp_path):
    s = make(tmp_path)
    s.apply([people(impute=[Impute("income", "median", stats=1)]), TransformView("tv", ALL_BUILTINS)])
    spec = s.registry.data["transform_views"]["tv"]["spec"]
    z = spec["transforms"][0]
    stats = s.get_statistics("people", 1)["income"]
    # The artifact's numbers are written into the spec: the sample standard deviation, by name.
    assert z["params"] == {"mean": stats["mean"], "std": stats["stddev_samp"]}
    assert z["stats"] == 1 and z["dtype"] == "Float64"
    outs = [
        "tv:income_zscore",
        "tv:age_min_max_scale",
        "tv:income_clip",
        "tv:income_log1p",
        "tv:age_bucketize",
    ]
    outs.append("tv:city_one_hot")
    labels = {"user_id": [1, 2, 3, 4], "event_timestamp": pa.array([at(1)] * 4, TS)}
    off = s.get_historical_features(labels, ["people:age", *outs], imputed_flags=True)
    assert off.column_names == [
        "user_id",
        "event_timestamp",
        "age",
        "income_zscore",
        "income_zscore__imputed",
        "age_min_max_scale",
        "income_clip",
        "income_clip__imputed",
        "income_log1p",
        "income_log1p__imputed",
        "age_bucketize",
        "city_one_hot",
    ]
    med = stats["median"]
    expect_inc = [10.0, med, 30.0, med]
    assert off.column("income_zscore").to_pylist() == [
        (x - stats["mean"]) / stats["stddev_samp"] for x in expect_inc
    ]
    assert off.column("income_zscore__imputed").to_pylist() == [False, True, False, True]
    assert off.column("income_clip").to_pylist() == [10.0, 20.0, 25.0, 20.0]
    assert off.column("age_bucketize").to_pylist() == [0, 2, None, None]
    assert off.column("city_one_hot").to_pylist() == [[1.0, 0.0], [0.0, 1.0], None, None]
    on = s.get_online_features(["people:age", *outs], {"user_id": [1, 2, 3, 4]}, as_of=at(1))
    t = on.to_arrow()
    for c in [
        "age",
        "income_zscore",
        "age_min_max_scale",
        "income_clip",
        "income_log1p",
        "age_bucketize",
        "city_one_hot",
    ]:
        assert bits(t.column(c)) == bits(off.column(c)), c
    st_ = on.statuses
    assert st_["income_zscore"].tolist() == [Status.PRESENT, Status.IMPUTED, Status.PRESENT, Status.IMPUTED]
    assert st_["age"].tolist() == [Status.PRESENT, Status.PRESENT, Status.PRESENT, Status.NOT_FOUND]
    # The plain-feature view status has its own column per feature in a transformed reader.
    r = s.online_reader(["tv:income_zscore", "tv:income_clip", "tv:income_log1p"])
    values, status = r.get_numpy([1, 2, 4], as_of=at(1))
    assert values.shape == (3, 3) and status.shape == (3, 3)
    assert values[:, 0].tolist() == off.column("income_zscore").to_pylist()[0:2] + [
        off.column("income_zscore")[3].as_py()
    ]
    assert status[:, 0].tolist() == [0, Status.IMPUTED, Status.IMPUTED]


def test_imputation_fills_every_kind_of_missing_and_only_those(tmp_path):
    s = make(tmp_path, rows([1, 2, 3], [0, 0, -20], [10.0, None, 30.0], [20, 40, 50], ["a", "a", "b"]))
    s.apply([people(impute=[Impute("income", "constant", -1.0), Impute("city", "mode", stats=1)])])
    labels = {"user_id": [1, 2, 3, 4], "event_timestamp": pa.array([at(1)] * 4, TS)}
    off = s.get_historical_features(labels, ["people:income", "people:city", "people:age"])
    # A stored null (2), an expired value (3, 21 days > ttl) and no row at all (4) are all filled.
    assert off.column("income").to_pylist() == [10.0, -1.0, -1.0, -1.0]
    assert off.column("city").to_pylist() == ["a", "a", "a", "a"]
    # A feature with no strategy stays null: never a silent zero.
    assert off.column("age").to_pylist() == [20, 40, None, None]
    on = s.get_online_features(
        ["people:income", "people:city", "people:age"], {"user_id": [1, 2, 3, 4]}, as_of=at(1)
    )
    assert on.to_dict()["income"] == [10.0, -1.0, -1.0, -1.0]
    assert on.to_dict()["age"] == [20, 40, None, None]
    assert on.statuses["income"].tolist() == [0, Status.IMPUTED, Status.IMPUTED, Status.IMPUTED]
    assert on.statuses["age"].tolist() == [0, 0, Status.EXPIRED, Status.NOT_FOUND]
    with pytest.raises(MissingValueError, match="age"):
        s.get_historical_features(labels, ["people:income", "people:age"], strict=True)
    with pytest.raises(MissingValueError, match="age"):
        s.get_online_features(["people:age"], {"user_id": [4]}, as_of=at(1), strict=True)
    with pytest.raises(MissingValueError, match="age"):
        s.online_reader(["people:age"], strict=True).get_numpy([4], as_of=at(1))
    assert s.get_historical_features(labels, ["people:income"], strict=True).num_rows == 4
    # A value from after the request instant is not filled online (the training set holds an older one).
    late = s.get_online_features(["people:income"], {"user_id": [1]}, as_of=at(-1))
    assert late.to_dict()["income"] == [None] and late.statuses["income"].tolist() == [Status.NOT_YET_VALID]


def test_silent_null_median_offline_zero_online_cannot_happen(tmp_path):
    """The chapter's null-handling divergence: the median in training, 0 in serving. One Impute serves
    both paths; there is no second place to write a fill, and no fill is ever a silent zero."""
    s = make(tmp_path)
    s.apply([people(impute=[Impute("income", "median", stats=1)])])
    med = s.get_statistics("people", 1)["income"]["median"]
    assert med == 20.0
    labels = {"user_id": [2, 9], "event_timestamp": pa.array([at(1)] * 2, TS)}
    off = s.get_historical_features(labels, ["people:income"]).column("income").to_pylist()
    on = s.get_online_features(["people:income"], {"user_id": [2, 9]}, as_of=at(1)).to_dict()["income"]
    assert off == on == [med, med]
    # Without a strategy the value stays null in both paths, never 0.
    s.apply([people()])
    off = s.get_historical_features(labels, ["people:income"]).column("income").to_pylist()
    on = s.get_online_features(["people:income"], {"user_id": [2, 9]}, as_of=at(1)).to_dict()["income"]
    assert off == on == [None, None]


def test_zscore_with_per_request_statistics_is_impossible_by_construction(tmp_path):
    """The chapter's z-score incident: serving recomputed mean and std per user. Here a z-score names an
    artifact version; its numbers are frozen into the registry at apply, the serving call takes no
    statistics, and a z-score without an artifact cannot be declared."""
    with pytest.raises(InvalidArgumentError, match="stats=N"):
        zscore("people:income", stats=None)  # type: ignore[arg-type]
    assert "stats" not in inspect.signature(FeatureStore.get_online_features).parameters
    assert "stats" not in inspect.signature(FeatureStore.online_reader).parameters
    s = make(tmp_path)
    s.apply([TransformView("tv", [zscore("people:income", stats=1)])])
    before = s.get_online_features(["tv:income_zscore"], {"user_id": [1]}, as_of=at(1)).to_dict()
    # New data and a new artifact change nothing already applied: the served number stays the one the
    # training set used until the definition is applied again naming the new artifact.
    s.write("people", rows([4], [0.5], [1000.0], [1], ["c"]))
    s.compute_statistics("people")
    after = s.get_online_features(["tv:income_zscore"], {"user_id": [1]}, as_of=at(1)).to_dict()
    assert before == after
    off = s.get_historical_features(
        {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}, ["tv:income_zscore"]
    )
    assert off.column("income_zscore").to_pylist() == after["income_zscore"]


def test_request_inputs_and_mixed_services(tmp_path):
    s = make(tmp_path)
    tv = TransformView(
        "req",
        [clip("request:amount", 0, 100, name="amount_capped"), zscore("people:income", stats=1)],
        impute=[Impute("request:amount", "constant", 0.0)],
    )
    s.apply([tv, FeatureService("model", ["people:age", "req:amount_capped", "req:income_zscore"])])
    labels = {"user_id": [1, 3], "event_timestamp": pa.array([at(1)] * 2, TS), "amount": [250.0, None]}
    off = s.get_historical_features(labels, s.get_feature_service("model"))
    assert off.column("amount_capped").to_pylist() == [100.0, 0.0]
    on = s.get_online_features(
        s.get_feature_service("model"), {"user_id": [1, 3], "amount": [250.0, None]}, as_of=at(1)
    )
    for c in ["age", "amount_capped", "income_zscore"]:
        assert bits(on.to_arrow().column(c)) == bits(off.column(c))
    assert FeatureService("all", [tv]).features == ["req:amount_capped", "req:income_zscore"]
    on2 = s.get_online_features(["req:amount_capped"], [{"user_id": 1, "amount": 7.0}], as_of=at(1))
    assert on2.to_dict()["amount_capped"] == [7.0]
    with pytest.raises(MissingColumnError, match="amount"):
        s.get_historical_features(
            {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}, ["req:amount_capped"]
        )
    with pytest.raises(UnknownFeatureError, match="nope"):
        s.get_historical_features(labels, ["req:nope"])


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        (TransformView("tv", [zscore("people:income", stats=7)]), UnknownFeatureError),
        (TransformView("tv", [zscore("people:nope", stats=1)]), UnknownFeatureError),
        (TransformView("tv", [zscore("nowhere:income", stats=1)]), UnknownFeatureError),
        (TransformView("tv", [log1p("people:city")]), DtypeError),
        (TransformView("tv", [one_hot("people:city", [1, 2])]), DtypeError),
        (TransformView("tv", [zscore("request:x", stats=1)]), InvalidArgumentError),
        (people(impute=[Impute("income", "median", stats=3)]), UnknownFeatureError),
        (people(impute=[Impute("age", "mean", stats=1)]), DtypeError),  # the mean 30.5 is no Int64
        (people(impute=[Impute("city", "constant", 5)]), DtypeError),
    ],
)
def test_bad_definitions_are_refused_at_apply_and_nothing_is_written(tmp_path, bad, err):
    s = make(tmp_path, rows([1, 2, 3], [0, 0, 0], [10.0, None, 30.0], [20, 41, None], ["a", "b", None]))
    before = snapshot(str(tmp_path))
    with pytest.raises(err):
        s.apply([bad])
    assert snapshot(str(tmp_path)) == before
    assert "tv" not in s.registry.data["transform_views"]


def test_zero_stddev_is_refused_at_apply(tmp_path):
    s = make(tmp_path, rows([1, 2], [0, 0], [5.0, 5.0], [1, 1], ["a", "a"]))
    before = snapshot(str(tmp_path))
    with pytest.raises(InvalidArgumentError, match="standard deviation"):
        s.apply([TransformView("tv", [zscore("people:income", stats=1)])])
    assert snapshot(str(tmp_path)) == before


# ---- UDFs ----------------------------------------------------------------------------------------------


def _ratio_v1():
    @transform(inputs=["people:income", "request:amount"], outputs=[Field("ratio", Float64)], version=1)
    def ratio(t):
        return {"ratio": pc.divide(t["amount"], t["income"])}

    return ratio


def test_udf_runs_in_both_paths_and_changed_code_is_refused(tmp_path):
    s = make(tmp_path)
    ratio = _ratio_v1()
    s.apply(
        [
            people(impute=[Impute("income", "median", stats=1)]),
            TransformView("u", [ratio, log1p("request:amount")]),
        ]
    )
    labels = {"user_id": [1, 2, 9], "event_timestamp": pa.array([at(1)] * 3, TS), "amount": [5.0, 10.0, None]}
    off = s.get_historical_features(labels, ["u:ratio", "u:amount_log1p", "people:city"])
    assert off.column("ratio").to_pylist() == [0.5, 0.5, None]
    on = s.get_online_features(
        ["u:ratio", "u:amount_log1p", "people:city"],
        {"user_id": [1, 2, 9], "amount": [5.0, 10.0, None]},
        as_of=at(1),
    )
    for c in ["ratio", "amount_log1p", "city"]:
        assert bits(on.to_arrow().column(c)) == bits(off.column(c))
    assert on.statuses["ratio"].tolist() == [0, Status.IMPUTED, Status.IMPUTED]
    values, status = s.online_reader(["u:ratio"]).get_numpy({"user_id": [1], "amount": [5.0]}, as_of=at(1))
    assert values.tolist() == [[0.5]] and status.tolist() == [[0]]

    @transform(inputs=["people:income", "request:amount"], outputs=[Field("ratio", Float64)], version=1)
    def ratio(t):  # noqa: F811 - the same UDF, changed code, same version
        return {"ratio": pc.divide(t["income"], t["amount"])}

    before = snapshot(str(tmp_path))
    with pytest.raises(IncompatibleChangeError, match="bump"):
        s.apply([TransformView("u", [ratio, log1p("request:amount")])])
    assert snapshot(str(tmp_path)) == before
    # The process now holds the changed code under the applied version: serving refuses to run it.
    with pytest.raises(IncompatibleChangeError, match="bump"):
        s.get_historical_features(labels, ["u:ratio"])

    @transform(inputs=["people:income", "request:amount"], outputs=[Field("ratio", Float64)], version=2)
    def ratio(t):  # noqa: F811
        return {"ratio": pc.divide(t["income"], t["amount"])}

    assert s.apply([TransformView("u", [ratio, log1p("request:amount")])])["updated"] == ["u"]
    assert s.get_historical_features(labels, ["u:ratio"]).column("ratio").to_pylist()[0] == 2.0


# ---- the invariant -------------------------------------------------------------------------------------

floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, -1.0, 1.0, 1e308, -1e308]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hist=st.lists(
        st.tuples(
            st.integers(1, 4),
            st.integers(0, 30),
            floats,
            st.one_of(st.none(), st.integers(-5, 50)),
            st.sampled_from(["a", "b", "c", None]),
        ),
        min_size=0,
        max_size=12,
    ),
    strategy=st.sampled_from(["constant", "mean", "median", "mode"]),
    query=st.integers(0, 60),
    amounts=st.lists(floats, min_size=5, max_size=5),
)
def test_online_equals_offline_bit_for_bit(tmp_path_factory, hist, strategy, query, amounts):
    path = tmp_path_factory.mktemp("inv")
    s = FeatureStore(path)
    s.apply([user, people()])
    # The artifact is computed over seed rows, so its numbers are finite; the history the property draws
    # (nulls, NaN, infinities, nothing at all) comes after and flows through the transforms.
    seed = [(9, 0, 1.0, 1, "a"), (9, 0, 3.0, 3, "b")]
    s.write("people", rows(*[list(c) for c in zip(*seed, strict=True)]))
    s.compute_statistics("people")
    if hist:
        s.write("people", rows(*[list(c) for c in zip(*hist, strict=True)]))
    data = seed + hist
    imp_income = (
        Impute("income", "constant", 2.5)
        if strategy == "constant"
        else Impute("income", "median" if strategy == "mode" else strategy, stats=1)
    )
    imp_age = Impute("age", "mode", stats=1) if strategy == "mode" else Impute("age", "constant", 7)
    imp_city = Impute("city", "mode", stats=1)

    @transform(inputs=["people:income", "request:amount"], outputs=[Field("s", Float64)], version=1)
    def add(t):
        return {"s": pc.add(t["income"], t["amount"])}

    tv = TransformView("tv", [*ALL_BUILTINS, clip("request:amount", -1, 1), add])
    s.apply([people(impute=[imp_income, imp_age, imp_city]), tv])
    # Every key's latest row is at or before the query instant, so the online store can answer for it.
    t = at(max([r[1] for r in data] + [query]))
    ids = [1, 2, 3, 4, 9]
    feats = ["people:income", "people:age", "people:city", *(f"tv:{o}" for o in tv.output_names)]
    labels = {
        "user_id": ids,
        "event_timestamp": pa.array([t] * 5, TS),
        "amount": pa.array(amounts, pa.float64()),
    }
    off = s.get_historical_features(labels, feats)
    on = s.get_online_features(
        feats, {"user_id": ids, "amount": pa.array(amounts, pa.float64())}, as_of=t
    ).to_arrow()
    for c in off.column_names[3:]:
        assert bits(on.column(c)) == bits(off.column(c)), c
    # Filled features have no null left, in either path.
    for c in ("income", "age", "city"):
        assert off.column(c).null_count == 0


def test_empty_history_is_imputed_the_same_way(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply(
        [
            user,
            people(impute=[Impute("income", "constant", 1.5)]),
            TransformView("tv", [log1p("people:income")]),
        ]
    )
    labels = {"user_id": [1], "event_timestamp": pa.array([at(0)], TS)}
    off = s.get_historical_features(labels, ["tv:income_log1p", "people:income"], imputed_flags=True)
    on = s.get_online_features(["tv:income_log1p", "people:income"], {"user_id": [1]}, as_of=at(0))
    assert off.column("income_log1p").to_pylist() == on.to_dict()["income_log1p"] == [math.log1p(1.5)]
    assert off.column("income__imputed").to_pylist() == [True]
    assert on.statuses["income"].tolist() == [Status.IMPUTED]


def test_registry_keeps_transform_views_across_reopen(tmp_path):
    s = make(tmp_path)
    s.apply([TransformView("tv", [bucketize("people:age", [30])])])
    s2 = FeatureStore(tmp_path)
    labels = {"user_id": [1, 2], "event_timestamp": pa.array([at(1)] * 2, TS)}
    assert s2.get_historical_features(labels, ["tv:*"]).column("age_bucketize").to_pylist() == [0, 1]
    assert os.path.exists(os.path.join(tmp_path, "registry.json"))
    assert np.array_equal(
        s2.online_reader(["tv:age_bucketize"]).get_numpy([1, 2], as_of=at(1))[0], np.array([[0.0], [1.0]])
    )


def test_request_only_transforms_serve_online_as_offline(tmp_path):
    """A transform view read from request values alone reads no view: online it answers from the request
    columns (the row count is theirs), the same values and fills as the training set, alone or mixed
    with view features."""
    s = make(tmp_path)
    tv = TransformView(
        "r",
        [log1p("request:amount"), clip("request:amount", 0, 1), bucketize("request:amount", [0.5])],
        impute=[Impute("request:amount", "constant", 0.25)],
    )
    s.apply([tv])
    feats = ["r:amount_log1p", "r:amount_clip", "r:amount_bucketize"]
    amounts = pa.array([0.0, None, 3.0, float("nan")], pa.float64())
    labels = {"user_id": [1, 2, 3, 4], "event_timestamp": pa.array([at(1)] * 4, TS), "amount": amounts}
    off = s.get_historical_features(labels, feats, imputed_flags=True)
    r = s.online_reader(feats)
    assert r.join_keys == [] and r.views == []
    on = r.get({"amount": amounts}, as_of=at(1))
    values, status = r.get_numpy({"amount": amounts}, as_of=at(1))
    for j, c in enumerate(["amount_log1p", "amount_clip", "amount_bucketize"]):
        assert bits(on.to_arrow().column(c)) == bits(off.column(c)), c
        want = [float("nan") if v is None else float(v) for v in off.column(c).to_pylist()]
        assert [struct.pack("<d", v) for v in values[:, j]] == [struct.pack("<d", v) for v in want], c
        flags = off.column(f"{c}__imputed").to_pylist()
        assert flags == [False, True, False, False]
        assert status[:, j].tolist() == on.statuses[c].tolist()
        assert on.statuses[c].tolist() == [Status.IMPUTED if f else Status.PRESENT for f in flags]
    one = s.get_online_features(["r:amount_log1p"], [{"amount": 1.0}]).to_dict()
    assert one == {"amount_log1p": [math.log1p(1.0)]}
    with pytest.raises(MissingColumnError, match="amount"):
        r.get({"user_id": [1]})
    both = s.get_online_features(
        ["r:amount_log1p", "people:age"], {"user_id": [1], "amount": [0.0]}, as_of=at(1)
    )
    assert both.to_dict()["amount_log1p"] == [0.0]


def test_a_request_runs_only_the_transforms_it_names(tmp_path):
    """Asking for one output of a transform view reads only that output's inputs: the entity rows need
    no key of a view only the other outputs read, and the other transforms do not run."""
    s = make(tmp_path)
    merchant = Entity("merchant", join_keys=["merchant_id"], dtype=Int64)
    shop = FeatureView("shop", [merchant], [Field("rating", Float64)])
    s.apply([merchant, shop])
    s.write("shop", {"merchant_id": [7], "event_timestamp": pa.array([at(0)], TS), "rating": [4.5]})
    s.apply([TransformView("tv", [log1p("people:income"), clip("shop:rating", 0, 1)])])
    labels = {"user_id": [1, 3], "event_timestamp": pa.array([at(1)] * 2, TS)}
    off = s.get_historical_features(labels, ["tv:income_log1p"])
    assert off.column_names == ["user_id", "event_timestamp", "income_log1p"]
    assert off.column("income_log1p").to_pylist() == [math.log1p(10.0), math.log1p(30.0)]
    r = s.online_reader(["tv:income_log1p"])
    assert r.join_keys == ["user_id"]
    values, _ = r.get_numpy({"user_id": [1, 3]}, as_of=at(1))
    assert values[:, 0].tolist() == [math.log1p(10.0), math.log1p(30.0)]
    both = s.get_historical_features({**labels, "merchant_id": [7, 7]}, ["tv:*"])
    assert both.column("rating_clip").to_pylist() == [1.0, 1.0]
