"""Definitions and the registry: validation, versions, incompatible changes, malformed files."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pytest
import skewless
from conftest import merchant, snapshot, stats_rows, stats_view, user
from skewless import (
    Array,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    Float32,
    Float64,
    Int64,
    String,
)
from skewless.errors import (
    DtypeError,
    IncompatibleChangeError,
    InvalidArgumentError,
    RegistryError,
    UnknownFeatureError,
)


def test_definitions_validate_alone():
    with pytest.raises(InvalidArgumentError, match="negative"):
        stats_view(ttl=dt.timedelta(seconds=-1))
    with pytest.raises(InvalidArgumentError, match="used twice"):
        FeatureView("v", [user], [Field("user_id", Float64)])
    with pytest.raises(InvalidArgumentError):
        Entity("bad name")
    with pytest.raises(InvalidArgumentError, match="double underscores"):
        Field("a__b", Float64)
    with pytest.raises(DtypeError):
        Array(Int64, 3)
    assert Array(Float32, 4).arrow == pa.list_(pa.float32(), 4)
    with pytest.raises(InvalidArgumentError):
        FeatureService("svc", ["no_colon"])
    fv = stats_view()
    assert FeatureService("svc", [fv]).features == ["stats:spend", "stats:n"]


# ---- registry -------------------------------------------------------------------------------------------


def test_registry_versions_and_format(tmp_path):
    s = FeatureStore(tmp_path)
    assert s.apply([user, stats_view()])["created"] == ["user", "stats"]
    assert s.version("stats") == 1
    assert s.apply([user, stats_view()])["unchanged"] == ["user", "stats"]
    assert s.version("stats") == 1
    s.apply([stats_view(ttl=dt.timedelta(days=9))])
    assert s.version("stats") == 2
    reg = json.loads((tmp_path / "registry.json").read_text())
    assert reg["format"] == "skewless-registry" and reg["version"] == 1
    assert reg["feature_views"]["stats"]["spec"]["ttl_us"] == 9 * 86400 * 10**6
    again = FeatureStore(tmp_path)
    assert again.get_feature_view("stats").ttl == dt.timedelta(days=9)
    assert [v.name for v in again.list_feature_views()] == ["stats"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_registry_refuses_bad_definitions_and_changes_nothing(tmp_path):
    s = FeatureStore(tmp_path)
    before = snapshot(str(tmp_path))
    with pytest.raises(RegistryError, match="not registered"):
        s.apply([stats_view()])
    s.apply([user])
    before = snapshot(str(tmp_path))
    with pytest.raises(UnknownFeatureError):
        s.apply([stats_view(), FeatureService("svc", ["stats:nope"])])
    with pytest.raises(RegistryError, match="twice"):
        s.apply([stats_view(), stats_view()])
    with pytest.raises(RegistryError, match="differs"):
        s.apply([FeatureView("w", [Entity("user", join_keys=["uid"])], [Field("x", Float64)])])
    assert snapshot(str(tmp_path)) == before
    with pytest.raises(UnknownFeatureError):
        s.get_feature_view("stats")


def test_incompatible_changes_refused_once_data_is_stored(store):
    # Before data: a schema change is fine and bumps the version.
    store.apply([stats_view(schema=[Field("spend", Float64), Field("n", Int64), Field("z", Float64)])])
    assert store.version("stats") == 2
    store.apply([stats_view()])
    store.write("stats", stats_rows([1], [0], [1.0]))
    before = snapshot(store.path)
    for bad in (
        stats_view(schema=[Field("spend", Float32), Field("n", Int64)]),
        stats_view(schema=[Field("spend", Float64), Field("n", Int64), Field("z", Float64)]),
        stats_view(timestamp_field="ts"),
        stats_view(entities=[merchant]),
    ):
        with pytest.raises((IncompatibleChangeError, RegistryError)) as ei:
            store.apply([merchant, bad])
        assert "view" in str(ei.value)
    with pytest.raises(IncompatibleChangeError, match="v2"):
        store.apply([stats_view(schema=[Field("spend", Float32), Field("n", Int64)])])
    with pytest.raises(IncompatibleChangeError, match="Int64"):
        store.apply([Entity("user", join_keys=["user_id"], dtype=String)])
    assert snapshot(store.path) == before
    # TTL and description changes stay allowed.
    store.apply([stats_view(ttl=dt.timedelta(days=5), description="d")])
    assert store.version("stats") == 4


# ---- write ----------------------------------------------------------------------------------------------


def test_top_level_exports():
    for name in (
        "FeatureStore",
        "FeatureView",
        "Entity",
        "Field",
        "FeatureService",
        "OnlineResponse",
        "Float64",
    ):
        assert hasattr(skewless, name)


def test_a_malformed_registry_entry_is_a_registry_error(tmp_path):
    from skewless.errors import RegistryError

    store = FeatureStore(str(tmp_path / "s"))
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    store.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    path = tmp_path / "s" / "registry.json"
    data = json.loads(path.read_text())
    del data["feature_views"]["v"]["spec"]["schema"]
    path.write_text(json.dumps(data))
    with pytest.raises(RegistryError, match="malformed"):
        FeatureStore(str(tmp_path / "s")).get_feature_view("v")
