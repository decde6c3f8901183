"""Statistics artifacts: the numbers equal numpy/pandas', cover every history row in [start, end), and
are immutable once numbered."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import TS, at, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, String
from skewless.cli import main
from skewless.errors import InvalidArgumentError, UnknownFeatureError
from skewless.statistics import QUANTILES

user = Entity("user", join_keys=["user_id"], dtype=Int64)


def make_store(path) -> FeatureStore:
    s = FeatureStore(path)
    fv = FeatureView("people", [user], [Field("income", Float64), Field("age", Int64), Field("city", String)])
    s.apply([user, fv])
    return s


def rows(ids, days, income, age, city):
    return {
        "user_id": ids,
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "income": pa.array(income, pa.float64()),
        "age": pa.array(age, pa.int64()),
        "city": pa.array(city, pa.string()),
    }


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan"))),
            st.one_of(st.none(), st.integers(-50, 50)),
            st.one_of(st.none(), st.sampled_from(["a", "b", "c", "dd"])),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_numbers_equal_numpy_and_pandas(tmp_path_factory, data):
    s = make_store(tmp_path_factory.mktemp("s"))
    n = len(data)
    income, age, city = (list(c) for c in zip(*data, strict=True))
    s.write("people", rows(list(range(n)), [0] * n, income, age, city))
    got = s.compute_statistics("people").to_dict()

    inc = pd.Series(income, dtype="float64")
    nan = int(sum(1 for v in income if v is not None and math.isnan(v)))
    finite = inc.dropna().to_numpy()  # pandas treats NaN as missing: the non-null, non-NaN values
    g = got["income"]
    assert (g["count"], g["null_count"], g["nan_count"]) == (n - income.count(None), income.count(None), nan)
    if len(finite):
        assert close(g["mean"], float(np.mean(finite)))
        assert close(g["stddev_pop"], float(np.std(finite, ddof=0)))
        assert close(g["stddev_samp"], float(np.std(finite, ddof=1)) if len(finite) > 1 else None)
        assert (g["min"], g["max"]) == (float(finite.min()), float(finite.max()))
        for q in QUANTILES:
            assert close(g["quantiles"][str(q)], float(np.quantile(finite, q)))
        assert g["median"] == g["quantiles"]["0.5"]
        assert close(g["median"], float(np.median(finite)))
    else:
        assert g["mean"] is None and g["median"] is None and g["stddev_pop"] is None

    a = pd.Series(age, dtype="Int64").dropna()
    ga = got["age"]
    assert ga["count"] == len(a) and ga["null_count"] == n - len(a)
    if len(a):
        assert close(ga["mean"], float(a.mean()))
        assert close(ga["stddev_samp"], float(a.std(ddof=1)) if len(a) > 1 else None)
        assert close(ga["median"], float(np.median(a.to_numpy(dtype=float))))
        assert ga["mode"] == int(a.mode().min())
        assert ga["distinct_count"] == a.nunique()
    c = pd.Series(city, dtype="object").dropna()
    gc = got["city"]
    assert gc["distinct_count"] == c.nunique()
    if len(c):
        assert gc["mode"] == sorted(c.mode())[0]
        assert (gc["min"], gc["max"]) == (min(c), max(c))


def test_range_and_every_version_of_every_value_count(tmp_path):
    s = make_store(tmp_path)
    # User 1 written three times (three versions), user 2 once; day 5 is outside [1, 5).
    s.write("people", rows([1, 1, 2], [0, 1, 2], [10.0, 20.0, 30.0], [1, 2, 3], ["a", "b", "c"]))
    s.write("people", rows([1, 3], [3, 5], [40.0, 1000.0], [4, 5], ["d", "e"]))
    st_ = s.compute_statistics("people", ["income"], start=at(1), end=at(5))
    assert st_.rows == 3 and st_.features == ["income"]
    assert st_["income"]["count"] == 3 and st_["income"]["mean"] == 30.0
    assert st_.start == at(1) and st_.end == at(5)
    everything = s.compute_statistics("people")
    assert everything.rows == 5 and everything["income"]["max"] == 1000.0
    assert [st_.version, everything.version] == [1, 2]


def test_artifacts_are_numbered_and_immutable(tmp_path):
    s = make_store(tmp_path)
    s.write("people", rows([1, 2], [0, 0], [1.0, 3.0], [1, 1], ["a", "a"]))
    v1 = s.compute_statistics("people")
    before = v1.to_dict()
    s.write("people", rows([3], [1], [100.0], [7], ["z"]))
    v2 = s.compute_statistics("people")
    assert (v1.version, v2.version) == (1, 2)
    assert v2["income"]["mean"] != before["income"]["mean"]
    # Another process reading the store sees the same numbers for version 1.
    again = FeatureStore(tmp_path).get_statistics("people", 1)
    assert again.to_dict() == before and again.view_version == 1
    assert FeatureStore(tmp_path).get_statistics("people").version == 2
    assert s.list_statistics("people") == [1, 2]
    # Artifacts are copies: editing what was returned changes nothing stored.
    v1.to_dict()["income"]["mean"] = -1.0
    assert s.get_statistics("people", 1)["income"]["mean"] == before["income"]["mean"]
    with open(tmp_path / "registry.json") as f:
        assert json.load(f)["statistics"]["people"]["1"]["features"] == before


def test_empty_history_and_bad_requests_write_nothing(tmp_path):
    s = make_store(tmp_path)
    empty = s.compute_statistics("people")
    assert empty.rows == 0 and empty["income"]["count"] == 0 and empty["income"]["mean"] is None
    before = snapshot(str(tmp_path))
    with pytest.raises(UnknownFeatureError):
        s.compute_statistics("nope")
    with pytest.raises(UnknownFeatureError):
        s.compute_statistics("people", ["nope"])
    with pytest.raises(InvalidArgumentError):
        s.compute_statistics("people", start=at(2), end=at(1))
    with pytest.raises(UnknownFeatureError):
        s.get_statistics("people", 7)
    assert snapshot(str(tmp_path)) == before
    with pytest.raises(UnknownFeatureError):
        make_store(tmp_path / "other").get_statistics("people")


def test_registries_without_statistics_still_load(tmp_path):
    s = make_store(tmp_path)
    path = tmp_path / "registry.json"
    data = json.loads(path.read_text())
    del data["statistics"]
    path.write_text(json.dumps(data))
    s2 = FeatureStore(tmp_path)
    assert s2.list_statistics("people") == []
    assert s2.compute_statistics("people").version == 1
    del s


def test_cli_lists_artifacts(tmp_path, capsys):
    s = make_store(tmp_path)
    s.write("people", rows([1], [0], [1.0], [1], ["a"]))
    s.compute_statistics("people", ["income"], end=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    capsys.readouterr()
    assert main(["--store", str(tmp_path), "ls"]) == 0
    out = capsys.readouterr().out
    assert "stats    people v1: 1 rows" in out and "['income']" in out
