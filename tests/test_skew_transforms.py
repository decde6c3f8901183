"""The skew watchdog over transform view outputs and imputed values: logged as served (value, status,
request inputs, the definitions and artifacts behind them), rebuilt offline through the same compiled
transform stage, the chapter's transform incidents caught on exactly the feature they hit, format-1
segments still read, and explain's transform part."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import TS, at, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    Float64,
    Impute,
    Int64,
    Status,
    TransformView,
    bucketize,
    clip,
    log1p,
    min_max_scale,
    transform,
    zscore,
)
from skewless.errors import UnknownFeatureError
from skewless.servelog import LOG_FORMAT_VERSION, META_KEY, segments

user = Entity("user", join_keys=["user_id"], dtype=Int64)
TTL = dt.timedelta(days=10)
INCOME = [10.0, None, 30.0, 50.0, 12.0, 14.0]
IDS = [1, 2, 3, 4, 5, 6]


def people(**kw) -> FeatureView:
    return FeatureView("people", [user], [Field("income", Float64), Field("age", Int64)], ttl=TTL, **kw)


def rows(ids, days, income, age):
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "income": pa.array(income, pa.float64()),
        "age": pa.array(age, pa.int64()),
    }


TV = [
    zscore("people:income", stats=1),
    min_max_scale("people:age", stats=1),
    clip("people:income", 0, 25),
    log1p("request:amount"),
    bucketize("people:age", [30, 40]),
]


def make(path) -> FeatureStore:
    s = FeatureStore(path)
    s.apply([user, people()])
    s.write("people", rows(IDS, [0] * 6, INCOME, [20, 35, None, 41, 28, 33]))
    s.compute_statistics("people")
    s.apply([people(impute=[Impute("income", "median", stats=1)]), TransformView("tv", TV)])
    return s


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return make(tmp_path / "s")


FEATS = ["tv:income_zscore", "tv:age_min_max_scale", "tv:income_clip", "tv:amount_log1p", "people:income"]


def serve_and_log(s: FeatureStore, when: dt.datetime) -> None:
    ids = [*IDS, 99]  # 99: no row, imputed
    amounts = [1.0, 2.0, None, 0.5, 3.0, 4.0, 5.0]
    with s.online_reader(FEATS, log=True) as r:
        r.get_numpy({"user_id": ids, "amount": amounts}, as_of=when)
        r.get({"user_id": ids, "amount": amounts}, as_of=when)
    s.get_online_features(
        ["tv:age_bucketize", "tv:income_zscore"], {"user_id": ids, "amount": amounts}, as_of=when, log=True
    )
    s.flush_logs()


def test_clean_run_logs_transforms_and_imputation_and_raises_no_alert(store):
    s = store
    serve_and_log(s, at(1))
    # A write after the lookups (a backfill of an earlier instant) changes nothing in the check.
    s.write("people", rows([2], [0.5], [1000.0], [60]))
    serve_and_log(s, at(2))
    log = s.read_log()
    z = log["tv:income_zscore"]
    assert z.num_rows == 3 * 7 * 2
    # Status as served: IMPUTED where the median filled a null or a missing entity.
    st = z.column("tv:income_zscore@status").to_pylist()[:7]
    assert st == [0, Status.IMPUTED, 0, 0, 0, 0, Status.IMPUTED]
    assert z.column("request:amount").to_pylist()[:3] == [1.0, 2.0, None]
    served_by = json.loads(z.column("served_by")[0].as_py())
    assert served_by["transform_view"]["version"] == 1
    assert served_by["transform_view"]["spec"]["transforms"][0]["stats"] == 1
    assert served_by["impute"]["people"]["impute"][0]["strategy"] == "median"
    report = s.check_skew()
    assert report.alerts == [], report.to_markdown()
    assert set(report.features) == {*FEATS, "tv:age_bucketize"}
    assert report.features["tv:income_zscore"]["rows"] == 42
    assert report.features["people:income"]["mismatch_rate"] == 0.0
    (what,) = report.features["tv:income_zscore"]["served_with"]
    assert "zscore(people:income) artifact people#1" in what and "median" in what
    assert report.features["tv:income_zscore"]["changes"] == []
    assert "Transforms and imputation served" in report.to_markdown()
    # The segment is format 2 and names its request inputs.
    (_, _, path), *_ = segments(os.path.join(s.path, "logs"))
    with pa.memory_map(path) as src:
        meta = json.loads(pa.ipc.open_file(src).schema.metadata[META_KEY])
    assert meta["version"] == LOG_FORMAT_VERSION == 2 and meta["request"] == ["amount"]


# ---- the chapter's incidents, injected into transform outputs --------------------------------------------


def _truth(s: FeatureStore, when: dt.datetime, feats: list[str], amounts: list[float]) -> pa.Table:
    """The definition's values (the training set), to build a legacy log from."""
    labels = {"user_id": IDS, "event_timestamp": pa.array([when] * 6, TS), "amount": amounts}
    return s.get_historical_features(labels, feats, full_feature_names=True)


def _legacy(s: FeatureStore, when: dt.datetime, wrong: dict[str, list[float]]) -> list[str]:
    """Log what a legacy service served: the right values for every output except those in ``wrong``;
    returns the features the check alerts on."""
    amounts = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    feats = ["tv:income_zscore", "tv:income_clip", "tv:amount_log1p", "people:income"]
    truth = _truth(s, when, feats, amounts)
    values = {f: truth.column(f.replace(":", "__")).to_pylist() for f in feats}
    values.update(wrong)
    s.log_served({"user_id": IDS, "amount": amounts}, values, when, source="legacy")
    s.flush_logs()
    report = s.check_skew(source="legacy")
    assert report.features["tv:income_zscore"]["rows"] == 6
    return sorted({a.feature for a in report.alerts})


def _income_filled() -> list[float]:
    med = statistics.median([x for x in INCOME if x is not None])
    return [med if x is None else x for x in INCOME]


def test_per_user_statistics_in_a_zscore_are_caught_on_that_output(store):
    # The legacy path normalizes with each user's own statistics; one row per user gives 0 (or NaN).
    wrong = [0.0] * 6
    assert _legacy(store, at(1), {"tv:income_zscore": wrong}) == ["tv:income_zscore"]


def test_ddof_0_instead_of_1_is_caught_on_that_output(store):
    x = _income_filled()
    st = store.get_statistics("people", 1)["income"]
    pop = statistics.pstdev([v for v in INCOME if v is not None])
    assert pop != st["stddev_samp"]
    wrong = [(v - st["mean"]) / pop for v in x]
    assert _legacy(store, at(1), {"tv:income_zscore": wrong}) == ["tv:income_zscore"]


def test_zero_imputation_instead_of_median_is_caught_on_the_features_it_feeds(store):
    st = store.get_statistics("people", 1)["income"]
    zero = [0.0 if v is None else v for v in INCOME]
    wrong = {
        "tv:income_zscore": [(v - st["mean"]) / st["stddev_samp"] for v in zero],
        "people:income": zero,
    }
    got = _legacy(store, at(1), wrong)
    # Clip of the same input filled with 0 is 0 where the median (20) gives 20: it is wrong too, so the
    # legacy path logs it right here, and only the two features given wrong values alert.
    assert got == ["people:income", "tv:income_zscore"]


def test_a_clean_legacy_path_raises_no_alert(store):
    assert _legacy(store, at(1), {}) == []


# ---- versions that changed between serving and the check -------------------------------------------------


def test_the_rebuild_uses_the_served_artifact_and_says_what_changed(store):
    s = store
    serve_and_log(s, at(1))
    # New statistics and a new version of the transform view after serving.
    s.write("people", rows([7, 8], [0, 0], [500.0, 700.0], [80, 90]))
    st2 = s.compute_statistics("people")
    assert st2.version == 2
    tv2 = [zscore("people:income", stats=2), *TV[1:]]
    s.apply([TransformView("tv", tv2)])
    assert s.version("tv", "transform_views") == 2
    report = s.check_skew(features=["tv:income_zscore", "tv:income_clip"], end=at(1) + dt.timedelta(hours=1))
    z = report.features["tv:income_zscore"]
    # Rebuilt with artifact 1 (as served): no alert, and the report states the change.
    assert report.alerts == [], report.to_markdown()
    assert any("people#1" in c and "people#2" in c for c in z["changes"]), z["changes"]
    assert "changed since serving" in report.to_markdown()
    page = open(report.to_html(str(s.path) + "/skew.html"), encoding="utf-8").read()
    assert "changed since serving" in page and "artifact people#1" in page
    # Served after the change: rebuilt with artifact 2, and nothing to report as changed.
    serve_and_log(s, at(2))
    later = s.check_skew(features=["tv:income_zscore"], start=at(2))
    assert later.alerts == [] and later.features["tv:income_zscore"]["changes"] == []
    assert "artifact people#2" in next(iter(later.features["tv:income_zscore"]["served_with"]))


def test_a_feature_view_changed_since_serving_is_stated(store):
    s = store
    serve_and_log(s, at(1))
    s.apply([people(impute=[Impute("income", "median", stats=1)], description="now documented")])
    report = s.check_skew(features=["tv:income_zscore", "people:income"])
    assert report.alerts == []
    for f in ("tv:income_zscore", "people:income"):
        notes = report.features[f]["changes"]
        assert any("feature view people served v2, registry now v3" in c for c in notes), notes


# ---- UDFs ------------------------------------------------------------------------------------------------


RATIO_IN = ["people:income", "request:amount"]


def _ratio(version=1, flip=False):
    if not flip:

        @transform(inputs=RATIO_IN, outputs=[Field("ratio", Float64)], version=version)
        def ratio(t):
            return {"ratio": pc.divide(t["amount"], t["income"])}

    else:

        @transform(inputs=RATIO_IN, outputs=[Field("ratio", Float64)], version=version)
        def ratio(t):
            return {"ratio": pc.divide(t["income"], t["amount"])}

    return ratio


def test_a_udf_output_is_logged_and_rebuilt_with_the_served_code(store):
    s = store
    s.apply([TransformView("u", [_ratio()])])
    with s.online_reader(["u:ratio"], log=True) as r:
        r.get_numpy({"user_id": [1, 2, 99], "amount": [5.0, 10.0, 2.0]}, as_of=at(1))
    s.flush_logs()
    log = s.read_log()["u:ratio"]
    med = statistics.median([x for x in INCOME if x is not None])
    assert log.column("u:ratio").to_pylist() == [0.5, 10.0 / med, 2.0 / med]
    assert log.column("u:ratio@status").to_pylist() == [0, Status.IMPUTED, Status.IMPUTED]
    fp = json.loads(log.column("served_by")[0].as_py())["transform_view"]["spec"]["transforms"][0]
    assert fp["fingerprint"] == _ratio().fingerprint
    assert s.check_skew().alerts == []
    # A legacy path computing it upside down is caught on that output.
    s.log_served({"user_id": [1, 3], "amount": [5.0, 6.0]}, {"u:ratio": [2.0, 5.0]}, at(1), source="legacy")
    s.flush_logs()
    report = s.check_skew(source="legacy")
    assert [a.feature for a in report.alerts if a.metric == "mismatch_rate"] == ["u:ratio"]
    # New code under a new version after serving: the served rows are still rebuilt with version 1.
    s.apply([TransformView("u", [_ratio(version=2, flip=True)])])
    _ratio()  # the served version's code is defined in this process
    again = s.check_skew(source="online_reader")
    assert again.alerts == [], again.to_markdown()
    assert any("v1" in c and "v2" in c for c in again.features["u:ratio"]["changes"])


# ---- format 1 --------------------------------------------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "servelog_v1"


def test_format_1_segments_are_still_read_and_checked(tmp_path):
    dst = tmp_path / "old"
    shutil.copytree(FIXTURE, dst)
    s = FeatureStore(dst)
    paths = [p for _, _, p in segments(os.path.join(dst, "logs"))]
    for p in paths:
        with pa.memory_map(p) as src:
            assert json.loads(pa.ipc.open_file(src).schema.metadata[META_KEY])["version"] == 1
    log = s.read_log()
    x = log["v:x"]
    assert x.column("user_id").to_pylist() == [1, 2, 3, 2, 1, 2]
    assert x.column("v:x").to_pylist() == [0.5, None, None, None, 0.5, 9.0]
    assert x.column("v:x@status").to_pylist() == [0, 0, 1, 0, None, None]
    assert x.column("source").to_pylist() == ["online_reader"] * 4 + ["legacy"] * 2
    # Format 1 named the legacy path's extra column as given; it reads back as a request input.
    assert x.column("request:amount").to_pylist() == [None] * 4 + [7.0, 8.0]
    assert x.column("served_by").null_count == 6
    assert log["v:n"].column("v:n").to_pylist() == [3.0, 4.0, None, 4.0]
    report = s.check_skew()
    assert [(a.feature, a.metric) for a in report.alerts][:1] == [("v:x", "mismatch_rate")]
    assert report.features["v:x"]["mismatches"] == 1 and report.features["v:n"]["mismatches"] == 0
    # A new segment (format 2) is read together with the old ones.
    s.log_served({"user_id": [1]}, {"v:x": [0.5]}, dt.datetime(2026, 3, 1, 1, tzinfo=dt.timezone.utc))
    s.flush_logs()
    assert s.read_log()["v:x"].num_rows == 7


# ---- explain ---------------------------------------------------------------------------------------------


def test_explain_a_transform_output_with_its_statistics_input_and_imputation(store):
    s = store
    serve_and_log(s, at(1))
    st = s.get_statistics("people", 1)["income"]
    e = s.explain("tv:income_zscore", {"user_id": 2}, at(1))
    med = statistics.median([x for x in INCOME if x is not None])
    assert e.value == (med - st["mean"]) / st["stddev_samp"]
    assert e.transform_view == {"name": "tv", "version": 1}
    assert e.transform["kind"] == "zscore" and e.transform["stats"] == "people#1"
    assert e.transform["params"] == {"mean": st["mean"], "stddev_samp": st["stddev_samp"]}
    assert e.artifacts == ["people#1"]
    assert [i["input"] for i in e.inputs] == ["people:income"] and e.inputs[0]["value"] is None
    (imp,) = e.imputation
    assert (imp["strategy"], imp["stats"], imp["value"], imp["applied"]) == ("median", "people#1", med, True)
    assert e.definitions == "as served"
    assert len(e.served) == 3 and not any(x["differs"] for x in e.served)
    assert all(x["status"] == Status.IMPUTED for x in e.served)
    text = str(e)
    assert "zscore(people:income) with statistics artifact people#1" in text and "filled" in text
    # A present value: no fill applied.
    e1 = s.explain("tv:income_zscore", {"user_id": 1}, at(1))
    assert e1.value == (10.0 - st["mean"]) / st["stddev_samp"] and not e1.imputation[0]["applied"]


def test_explain_an_imputed_value_and_a_request_input_and_what_was_served(store):
    s = store
    at1 = at(1)
    s.log_served({"user_id": [2], "amount": [3.0]}, {"people:income": [0.0]}, at1, source="legacy")
    s.flush_logs()
    e = s.explain("people:income", {"user_id": 2}, at1)
    assert e.value == statistics.median([x for x in INCOME if x is not None])
    assert e.row is not None and e.row["value"] is None  # the history row holds a null
    assert e.transform is None and e.imputation[0]["applied"]
    (served,) = e.served
    assert (served["value"], served["rebuilt"], served["differs"]) == (0.0, e.value, True)
    assert "DIFFERS" in str(e)
    r = s.explain("tv:amount_log1p", {"user_id": 1, "amount": 0.0}, at1)
    assert r.value == 0.0 and r.inputs == [
        {"input": "request:amount", "value": 0.0, "decision": "request-time value", "row": None}
    ]


# ---- bad input -------------------------------------------------------------------------------------------


def test_an_unknown_transform_output_is_refused_and_nothing_is_logged(store):
    s = store
    before = snapshot(s.path)
    with pytest.raises(UnknownFeatureError):
        s.log_served({"user_id": [1]}, {"tv:nope": [1.0]}, at(1))
    with pytest.raises(UnknownFeatureError):
        s.explain("tv:nope", {"user_id": 1}, at(1))
    with pytest.raises(UnknownFeatureError):
        s.check_skew(features=["tv:nope"])
    s.flush_logs()
    assert snapshot(s.path) == before


def test_a_strict_reader_logs_each_lookup_once(tmp_path):
    # A strict get_numpy that meets a NaN looks again through the Arrow answer (a stored NaN is a value,
    # a null is not); that second look must not log the lookup a second time.
    s = FeatureStore(tmp_path / "s")
    s.apply([user, people()])
    s.write("people", rows([1], [0], [float("nan")], [20]))
    with s.online_reader(["people:income"], strict=True, log=True) as r:
        values, _ = r.get_numpy([1], as_of=at(1))
    assert values[0, 0] != values[0, 0]
    assert s.read_log()["people:income"].num_rows == 1


# ---- property: the store's own served transform values always rebuild exactly ---------------------------

values_st = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")))
ages_st = st.one_of(st.none(), st.integers(0, 90))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.integers(1, 4), st.integers(0, 6), values_st, st.one_of(st.none(), st.integers(0, 90))
            ),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    ),
    instants=st.lists(st.integers(0, 8), min_size=4, max_size=4),
    strategy=st.sampled_from(["median", "mean", "constant"]),
)
def test_served_transform_values_rebuild_exactly_whatever_was_written_between(
    tmp_path_factory, batches, instants, strategy
):
    """Writes interleaved with logged lookups (each lookup sees only the writes before it; a later write
    may land before its instant): the check rebuilds every served transform output and imputed value
    exactly, so the store's own log never alerts."""
    s = FeatureStore(tmp_path_factory.mktemp("p") / "s")
    s.apply([user, people()])
    s.write("people", rows([9, 9], [0, 0], [1.0, 3.0], [20, 40]))
    s.compute_statistics("people")
    imp = (
        Impute("income", "constant", -1.0) if strategy == "constant" else Impute("income", strategy, stats=1)
    )
    s.apply([people(impute=[imp]), TransformView("tv", TV, impute=[Impute("people:age", "constant", 30)])])
    feats = [*FEATS, "tv:age_bucketize"]
    with s.online_reader(feats, log=True) as r:
        for batch, when in zip(batches, instants, strict=False):
            s.write("people", rows(*[list(c) for c in zip(*batch, strict=True)]))
            r.get({"user_id": [1, 2, 3, 4, 5], "amount": [0.0, 1.0, None, 3.0, -0.5]}, as_of=at(when))
    report = s.check_skew(thresholds={"ks_statistic": None})
    assert report.alerts == [], report.to_markdown()
    assert all(m["mismatches"] == 0 for m in report.features.values())
    # A lookup before a key's latest stored row is served NOT_YET_VALID: counted apart, not compared.
    z = report.features["tv:income_zscore"]
    assert z["rows"] + z["not_comparable"] == 5 * min(len(batches), len(instants))


def test_a_request_only_output_from_a_legacy_path_is_checked_and_its_worst_row_explained(store):
    s = store
    s.apply([TransformView("r", [log1p("request:amount")])])
    s.log_served({"amount": [0.0, 1.0, 3.0]}, {"r:amount_log1p": [0.0, math.log1p(1.0), 9.0]}, at(1))
    s.flush_logs()
    report = s.check_skew()
    assert [a.feature for a in report.alerts if a.metric == "mismatch_rate"] == ["r:amount_log1p"]
    (worst,) = report.features["r:amount_log1p"]["worst"]
    assert worst["entity"] == {"amount": 3.0}
    e = eval(worst["explain"], {"store": s})  # the report's link reproduces the row
    assert e.value == math.log1p(3.0)
    # Only the logged lookup with that request value is shown.
    assert [(x["value"], x["differs"]) for x in e.served] == [(9.0, True)]
