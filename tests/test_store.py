"""FeatureStore API: definitions, registry, write, history, materialize, serving, and every bad input
leaving the store exactly as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skewless
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
    ColumnClashError,
    DtypeError,
    IncompatibleChangeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    NullKeyError,
    RegistryError,
    SchemaMismatch,
    StorageError,
    UnknownFeatureError,
)

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


def snapshot(path: str) -> dict[str, str]:
    """Every file of the store with a hash of its bytes (lock files excluded: readers touch them)."""
    out = {}
    for dp, _, fs in os.walk(path):
        for f in fs:
            if f in (".lock", "lock.mdb"):
                continue
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


user = Entity("user", join_keys=["user_id"], dtype=Int64)
merchant = Entity("merchant", join_keys=["merchant_id"])


def stats_view(**kw):
    args = dict(
        entities=[user],
        schema=[Field("spend", Float64), Field("n", Int64)],
        ttl=dt.timedelta(days=2),
        created_timestamp_field="created",
    )
    args.update(kw)
    return FeatureView("stats", **args)


def stats_rows(ids, days, spend, n=None, created=None):
    return {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "created": pa.array([at(d) for d in (created or days)], TS),
        "spend": pa.array(spend, pa.float64()),
        "n": pa.array(n or list(range(len(ids))), pa.int64()),
    }


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path / "store")
    s.apply([user, stats_view()])
    return s


# ---- definitions ----------------------------------------------------------------------------------------


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


def test_write_feeds_history_and_online(store):
    res = store.write("stats", stats_rows([1, 2, 1], [0, 0, 1], [1.0, 2.0, 3.0]))
    assert res.rows == 3 and res.online_written + res.online_skipped == 3
    hist = store.read_history("stats")
    assert hist.num_rows == 3 and hist.schema.field("event_timestamp").type == TS
    got = store.get_online_features(["stats:spend"], {"user_id": [1, 2, 3]}, as_of=at(1))
    assert got.to_dict() == {"user_id": [1, 2, 3], "spend": [3.0, 2.0, None]}
    assert list(got.statuses["spend"]) == [0, 0, 1]


def test_write_accepts_pandas_polars_and_other_zones_and_units(store):
    ts = (
        pd.Series(pd.to_datetime([at(0), at(0.5)]))
        .dt.tz_convert("Asia/Tokyo")
        .astype("datetime64[ns, Asia/Tokyo]")
    )
    df = pd.DataFrame(
        {"user_id": [5, 6], "event_timestamp": ts, "created": ts, "spend": [1.5, 2.5], "n": [1, 2]}
    )
    store.write("stats", df)
    pldf = pl.DataFrame(
        {"user_id": [7], "event_timestamp": [at(1)], "created": [at(1)], "spend": [3.5], "n": [3]}
    )
    store.write("stats", pldf)
    h = store.read_history("stats")
    assert h.schema.field("event_timestamp").type == TS
    # History reads newest write first, rows of one write in order.
    assert h.column("event_timestamp").to_pylist()[1:] == [at(0), at(0.5)]
    out = store.get_online_features(["stats:spend"], [{"user_id": 6}, {"user_id": 7}], as_of=at(1))
    assert out.to_dict()["spend"] == [2.5, 3.5]


@pytest.mark.parametrize(
    "mutate, err",
    [
        (lambda d: d.pop("spend"), MissingColumnError),
        (lambda d: d.pop("created"), MissingColumnError),
        (lambda d: d.update(extra=[1]), SchemaMismatch),
        (lambda d: d.update(spend=pa.array(["x"])), DtypeError),
        (lambda d: d.update(n=pa.array([1.5])), DtypeError),
        (lambda d: d.update(user_id=pa.array(["a"])), DtypeError),
        (lambda d: d.update(user_id=pa.array([None], pa.int64())), NullKeyError),
        (lambda d: d.update(event_timestamp=pa.array([0], pa.timestamp("us"))), NaiveTimestampError),
        (lambda d: d.update(event_timestamp=pa.array([None], TS)), InvalidArgumentError),
        (lambda d: d.update(event_timestamp=pa.array([0], pa.int64())), DtypeError),
    ],
)
def test_bad_writes_raise_typed_errors_and_change_nothing(store, mutate, err):
    store.write("stats", stats_rows([1], [0], [1.0]))
    before = snapshot(store.path)
    online_before = store.get_online_features(
        ["stats:spend", "stats:n"], {"user_id": [1]}, as_of=at(0)
    ).to_dict()
    d = stats_rows([1], [1], [9.0])
    mutate(d)
    with pytest.raises(err):
        store.write("stats", d)
    assert snapshot(store.path) == before
    assert store.read_history("stats").num_rows == 1
    after = store.get_online_features(["stats:spend", "stats:n"], {"user_id": [1]}, as_of=at(0)).to_dict()
    assert after == online_before


def test_write_unknown_view_and_first_write_fixes_key_type(tmp_path):
    s = FeatureStore(tmp_path)
    fv = FeatureView("m", [merchant], [Field("risk", Float64)])
    s.apply([merchant, fv])
    before = snapshot(str(tmp_path))
    with pytest.raises(UnknownFeatureError):
        s.write("nope", {"merchant_id": ["a"]})
    assert snapshot(str(tmp_path)) == before
    s.write("m", {"merchant_id": ["a"], "event_timestamp": pa.array([at(0)], TS), "risk": [0.5]})
    assert s.registry.key_dtypes("merchant") == [String]
    before = snapshot(str(tmp_path))
    with pytest.raises(DtypeError):
        s.write("m", {"merchant_id": [1], "event_timestamp": pa.array([at(0)], TS), "risk": [0.5]})
    assert snapshot(str(tmp_path)) == before


def test_online_failure_rolls_back_history(store, monkeypatch):
    store.write("stats", stats_rows([1], [0], [1.0]))
    before = snapshot(store.path)

    class Failing:
        """The real online store, except that its writes fail (a full disk, say)."""

        def __init__(self, inner):
            self.inner = inner

        def write(self, *a, **k):
            raise StorageError("disk full (simulated)")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(store, "_online_store", Failing(store._online()))
    with pytest.raises(StorageError):
        store.write("stats", stats_rows([1], [1], [2.0]))
    assert snapshot(store.path) == before
    assert store.read_history("stats").num_rows == 1


def test_online_schema_conflict_rolls_back_history(tmp_path):
    # Someone wrote the view's online database directly, with another layout: the engine refuses the
    # store's write, and the history file already added is taken back.
    s = FeatureStore(tmp_path)
    s.apply([user, stats_view()])
    s._online().write(
        "stats",
        {"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([at(0)], TS), "other": [1.0]},
        keys="user_id",
        timestamp="event_timestamp",
    )
    before = snapshot(str(tmp_path))
    with pytest.raises(SchemaMismatch):
        s.write("stats", stats_rows([1], [1], [2.0]))
    assert snapshot(str(tmp_path)) == before
    assert not s.offline.files("stats", None)


def test_materialize_repairs_a_write_that_died_between_the_stores(store):
    store.write("stats", stats_rows([1], [0], [1.0]))
    # What a process death after the history append leaves behind: the file, no online update.
    fv = store.get_feature_view("stats")
    table, _ = store._normalize(fv, pa.table(stats_rows([1, 2], [1, 1], [5.0, 6.0])), "x")
    store.offline.append("stats", table)
    stale = store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()
    assert stale["spend"] == [1.0, None]
    n = store.materialize(None, at(10))
    assert n == {"stats": 3}
    fixed = store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()
    assert fixed["spend"] == [5.0, 6.0]


def test_materialize_bounds_and_incremental(tmp_path):
    s = FeatureStore(tmp_path)
    fv = stats_view(online=True)
    s.apply([user, fv])
    table, _ = s._normalize(fv, pa.table(stats_rows([1, 1, 2], [0, 1, 2], [1.0, 2.0, 3.0])), "x")
    s.offline.append("stats", table)
    # end is exclusive: the row at day 1 is not copied.
    assert s.materialize(at(0), at(1)) == {"stats": 1}
    assert s.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()["spend"] == [
        1.0,
        None,
    ]
    assert s.materialize_incremental(at(2)) == {"stats": 2}
    assert s.registry.data["state"]["materialized"]["stats"] == (
        at(2) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    ) // dt.timedelta(microseconds=1)
    assert s.materialize_incremental(at(3)) == {"stats": 1}
    assert s.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(2)).to_dict()["spend"] == [
        2.0,
        3.0,
    ]
    with pytest.raises(NaiveTimestampError):
        s.materialize(None, dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidArgumentError):
        s.materialize(at(3), at(1))


# ---- history --------------------------------------------------------------------------------------------


def test_compact_sorts_keeps_results_and_allows_writes(store):
    store.write("stats", stats_rows([3, 1, 2], [2, 1, 0], [1.0, 2.0, 3.0]))
    store.write("stats", stats_rows([1, 1], [1, 0.5], [4.0, 5.0], created=[1, 0.5]))
    labels = {"user_id": [1, 2, 3, 1], "event_timestamp": pa.array([at(1), at(1), at(2), at(0.7)], TS)}
    before = store.get_historical_features(labels, ["stats:spend", "stats:n"])
    assert store.compact("stats") == 5
    files = os.listdir(os.path.join(store.path, "offline", "stats"))
    assert len(files) == 1
    h = store.read_history("stats")
    assert h.column("user_id").to_pylist() == [1, 1, 1, 2, 3]
    # Equal (key, ts, created) in two writes: the earlier write wins (the online store's rule), and
    # the compacted order keeps it last among the tie, where the join picks it.
    assert h.column("spend").to_pylist()[1:3] == [4.0, 2.0]
    tie = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    assert store.get_historical_features(tie, ["stats:spend"]).column("spend").to_pylist() == [2.0]
    assert store.get_historical_features(labels, ["stats:spend", "stats:n"]).equals(before)
    store.write("stats", stats_rows([9], [0], [9.0]))
    assert store.read_history("stats").num_rows == 6


def test_source_view_reads_foreign_parquet(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    t = pa.table(
        {
            "user_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([at(0), at(1), at(0)], pa.timestamp("ns", tz="Europe/Tallinn")),
            "spend": [1.0, 2.0, 3.0],
            "ignored": ["a", "b", "c"],
        }
    )
    pq.write_table(t.slice(0, 2), src / "a.parquet")
    pq.write_table(t.slice(2), src / "b.parquet")
    s = FeatureStore(tmp_path / "store")
    fv = FeatureView("ext", [user], [Field("spend", Float64)], source=str(src / "*.parquet"))
    s.apply([user, fv])
    labels = {"user_id": [1, 1, 2], "event_timestamp": pa.array([at(0.5), at(1), at(-1)], TS)}
    out = s.get_historical_features(labels, ["ext:spend"])
    assert out.column("spend").to_pylist() == [1.0, 2.0, None]
    before = snapshot(s.path)
    with pytest.raises(InvalidArgumentError, match="source"):
        s.write("ext", {"user_id": [1]})
    assert snapshot(s.path) == before
    assert s.materialize(None, at(5)) == {"ext": 3}
    assert s.get_online_features(["ext:spend"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()["spend"] == [
        2.0,
        3.0,
    ]


# ---- training sets --------------------------------------------------------------------------------------


def test_historical_basics_ttl_and_order(store):
    store.write("stats", stats_rows([1, 1, 2], [0, 1, 0], [1.0, 2.0, 3.0]))
    labels = pd.DataFrame(
        {
            "user_id": [2, 1, 1, 1, 3, 1],
            "event_timestamp": pd.to_datetime([at(1), at(0.5), at(1), at(3), at(1), at(-1)]),
            "label": [1, 0, 1, 0, 1, 1],
        }
    )
    out = store.get_historical_features(labels, ["stats:spend"])
    assert out.column_names == ["user_id", "event_timestamp", "label", "spend"]
    # ttl 2 days: the day-1 row still matches at day 3 (boundary inclusive); nothing matches before day 0.
    assert out.column("spend").to_pylist() == [3.0, 1.0, 2.0, 2.0, None, None]
    assert out.column("label").to_pylist() == [1, 0, 1, 0, 1, 1]
    far = {"user_id": [1], "event_timestamp": pa.array([at(3) + dt.timedelta(microseconds=1)], TS)}
    assert store.get_historical_features(far, ["stats:spend"]).column("spend").to_pylist() == [None]


def test_historical_errors(store):
    store.write("stats", stats_rows([1], [0], [1.0]))
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    with pytest.raises(UnknownFeatureError):
        store.get_historical_features(lab, ["stats:nope"])
    with pytest.raises(UnknownFeatureError):
        store.get_historical_features(lab, ["nope:x"])
    with pytest.raises(InvalidArgumentError):
        store.get_historical_features(lab, ["spend"])
    with pytest.raises(MissingColumnError, match="timestamp_column"):
        store.get_historical_features({"user_id": [1]}, ["stats:spend"])
    with pytest.raises(MissingColumnError, match="user_id"):
        store.get_historical_features({"event_timestamp": pa.array([at(1)], TS)}, ["stats:spend"])
    with pytest.raises(NaiveTimestampError):
        store.get_historical_features(
            {"user_id": [1], "event_timestamp": pa.array([1], pa.timestamp("us"))}, ["stats:spend"]
        )
    with pytest.raises(ColumnClashError, match="full_feature_names=True"):
        store.get_historical_features({**lab, "spend": [0.0]}, ["stats:spend"])
    out = store.get_historical_features({**lab, "spend": [0.0]}, ["stats:spend"], full_feature_names=True)
    assert out.column("stats__spend").to_pylist() == [1.0]


def test_historical_name_clash_between_views(tmp_path):
    s = FeatureStore(tmp_path)
    a = FeatureView("a", [user], [Field("x", Float64)])
    b = FeatureView("b", [user], [Field("x", Float64)])
    s.apply([user, a, b])
    for v, val in (("a", 1.0), ("b", 2.0)):
        s.write(v, {"user_id": [1], "event_timestamp": pa.array([at(0)], TS), "x": [val]})
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    with pytest.raises(ColumnClashError, match="full_feature_names=True"):
        s.get_historical_features(lab, ["a:x", "b:x"])
    out = s.get_historical_features(lab, FeatureService("svc", ["a:x", "b:x"]), full_feature_names=True)
    assert out.column_names[-2:] == ["a__x", "b__x"]
    assert out.column("b__x").to_pylist() == [2.0]


def test_historical_empty_inputs_and_empty_views(store):
    lab = {"user_id": pa.array([], pa.int64()), "event_timestamp": pa.array([], TS)}
    assert store.get_historical_features(lab, ["stats:spend"]).num_rows == 0
    lab = {"user_id": [1], "event_timestamp": pa.array([at(1)], TS)}
    out = store.get_historical_features(lab, ["stats:spend", "stats:n"])
    assert out.column("spend").to_pylist() == [None] and out.schema.field("n").type == pa.int64()


def test_embedding_and_string_features_round_trip(tmp_path):
    s = FeatureStore(tmp_path)
    fv = FeatureView("emb", [user], [Field("vec", Array(Float32, 3)), Field("tag", String)])
    s.apply([user, fv])
    s.write(
        "emb",
        {
            "user_id": [1],
            "event_timestamp": pa.array([at(0)], TS),
            "vec": pa.array([[1, 2, 3]], pa.list_(pa.float32(), 3)),
            "tag": ["x"],
        },
    )
    lab = {"user_id": [1, 2], "event_timestamp": pa.array([at(1), at(1)], TS)}
    out = s.get_historical_features(lab, ["emb:vec", "emb:tag"])
    assert out.column("vec").to_pylist() == [[1.0, 2.0, 3.0], None]
    online = s.get_online_features(["emb:vec", "emb:tag"], {"user_id": [1, 2]}, as_of=at(1)).to_dict()
    assert online["vec"] == [[1.0, 2.0, 3.0], None] and online["tag"] == ["x", None]


# ---- serving --------------------------------------------------------------------------------------------


def test_online_ttl_applies_at_read_time(store):
    store.write("stats", stats_rows([1, 2], [0, 5], [1.0, 2.0]))
    r = store.get_online_features(
        ["stats:spend", "stats:n"], [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], as_of=at(2)
    )
    assert r.to_dict()["spend"] == [1.0, 2.0, None]
    r = store.get_online_features(
        ["stats:spend"], {"user_id": [1, 2, 3]}, as_of=at(2) + dt.timedelta(microseconds=1)
    )
    assert r.to_dict()["spend"] == [None, 2.0, None]
    assert list(r.statuses["spend"]) == [2, 0, 1]
    np.testing.assert_array_equal(r.to_numpy()[:, 0], [np.nan, 2.0, np.nan])
    assert list(r.to_pandas().columns) == ["user_id", "spend"]
    # Default as_of is now: day-0 rows in 2026 are long expired with a 2-day TTL... unless now is near.
    now = dt.datetime.now(dt.timezone.utc)
    r = store.get_online_features(["stats:spend"], {"user_id": [1]})
    assert r.to_dict()["spend"] == ([None] if now > at(2) else [1.0])


def test_online_reader_multi_view_numpy(tmp_path):
    s = FeatureStore(tmp_path)
    a = FeatureView("a", [user], [Field("x", Float64), Field("y", Float64)])
    m = FeatureView("m", [merchant], [Field("risk", Float64)], ttl=DAY)
    s.apply([user, merchant, a, m])
    s.write(
        "a",
        {"user_id": [1, 2], "event_timestamp": pa.array([at(0)] * 2, TS), "x": [1.0, 2.0], "y": [None, 4.0]},
    )
    s.write("m", {"merchant_id": [10], "event_timestamp": pa.array([at(0)], TS), "risk": [0.5]})
    r = s.online_reader(["a:y", "m:risk", "a:x"])
    assert r.views == ["a", "m"] and r.feature_names == ["y", "x", "risk"]
    vals, st = r.get_numpy({"user_id": [1, 2, 3], "merchant_id": [10, 10, 11]}, as_of=at(0.5))
    np.testing.assert_array_equal(vals, [[np.nan, 1.0, 0.5], [4.0, 2.0, 0.5], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(st, [[0, 0], [0, 0], [1, 1]])
    one = s.online_reader(["a:x"])
    v, st = one.get_numpy([2, 1], as_of=at(0))
    np.testing.assert_array_equal(v[:, 0], [2.0, 1.0])
    assert st.shape == (2, 1)
    with pytest.raises(MissingColumnError):
        r.get({"user_id": [1]})
    with pytest.raises(UnknownFeatureError):
        s.online_reader(["a:zz"])


def test_online_reader_refuses_offline_only_views(tmp_path):
    s = FeatureStore(tmp_path)
    v = FeatureView("off", [user], [Field("x", Float64)], online=False)
    s.apply([user, v])
    s.write("off", {"user_id": [1], "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    assert not os.path.exists(os.path.join(s.path, "online")) or "off" not in s._online().views()
    with pytest.raises(InvalidArgumentError, match="online=False"):
        s.online_reader(["off:x"])


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


def test_materialize_of_sorted_history_never_splits_a_tie(store, tmp_path, monkeypatch):
    import shutil

    import skewless.store as store_mod

    # The same (key, ts, created) in two writes: the earlier write wins, online and in the join.
    store.write("stats", stats_rows([1, 0], [0, 0], [1.0, 0.5]))
    store.write("stats", stats_rows([1], [0], [2.0]))
    store.compact("stats")
    assert store.read_history("stats").column("spend").to_pylist() == [0.5, 2.0, 1.0]
    fresh = tmp_path / "rebuilt"
    fresh.mkdir()
    shutil.copytree(os.path.join(store.path, "offline"), fresh / "offline")
    shutil.copy(os.path.join(store.path, "registry.json"), fresh / "registry.json")
    s = FeatureStore(fresh)
    # A chunk boundary at row 2 would fall inside the tie (rows 1 and 2).
    monkeypatch.setattr(store_mod, "MATERIALIZE_BATCH", 2)
    assert s.materialize(None, at(1)) == {"stats": 3}
    lab = {"user_id": [1], "event_timestamp": pa.array([at(0)], TS)}
    assert s.get_historical_features(lab, ["stats:spend"]).column("spend").to_pylist() == [1.0]
    assert s.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(0)).to_dict()["spend"] == [1.0]
    assert store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(0)).to_dict()["spend"] == [
        1.0
    ]


def test_every_dtype_round_trips_bit_for_bit(tmp_path):
    from skewless import Bool, Bytes, Int32, Timestamp

    s = FeatureStore(tmp_path)
    schema = [
        Field("i32", Int32),
        Field("i64", Int64),
        Field("f32", Float32),
        Field("f64", Float64),
        Field("b", Bool),
        Field("s", String),
        Field("by", Bytes),
        Field("ts", Timestamp),
        Field("vec", Array(Float64, 2)),
    ]
    fv = FeatureView("all", [user], schema)
    s.apply([user, fv])
    data = {
        "user_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([at(0), at(0)], TS),
        "i32": pa.array([-(2**31), None], pa.int32()),
        "i64": pa.array([2**63 - 1, -1], pa.int64()),
        "f32": pa.array([-0.0, float("nan")], pa.float32()),
        "f64": pa.array([5e-324, None], pa.float64()),
        "b": pa.array([True, None]),
        "s": pa.array(["é", ""], pa.large_string()),
        "by": pa.array([b"\x00\xff", None], pa.binary()),
        "ts": pa.array([at(-1), None], pa.timestamp("ns", tz="America/New_York")),
        "vec": pa.array([[1.5, -0.0], None], pa.list_(pa.float64(), 2)),
    }
    s.write("all", data)
    feats = [f"all:{f.name}" for f in schema]
    lab = pa.table({"user_id": pa.array([1, 2], pa.int64()), "event_timestamp": pa.array([at(1), at(1)], TS)})
    hist = s.get_historical_features(lab, feats).drop_columns(["user_id", "event_timestamp"])
    online = (
        s.get_online_features(feats, {"user_id": [1, 2]}, as_of=at(1)).to_arrow().drop_columns(["user_id"])
    )
    for f in schema:
        h, o = hist.column(f.name), online.column(f.name)
        assert h.type == f.dtype.arrow == o.type, f.name
        if pa.types.is_floating(h.type):
            view = pa.int32() if h.type == pa.float32() else pa.int64()
            h = pa.chunked_array([c.view(view) for c in h.chunks])
            o = pa.chunked_array([c.view(view) for c in o.chunks])
        assert h.to_pylist() == o.to_pylist(), f.name
    assert hist.column("ts").to_pylist()[0] == at(-1)
    assert hist.column("s").to_pylist() == ["é", ""]


def test_entity_df_nulls_polars_and_narrower_keys(tmp_path):
    s = FeatureStore(tmp_path)
    small = Entity("small", join_keys=["sid"], dtype=skewless.Int32)
    fv = FeatureView("v", [small], [Field("x", Float64)])
    s.apply([small, fv])
    s.write("v", {"sid": pa.array([1], pa.int32()), "event_timestamp": pa.array([at(0)], TS), "x": [1.0]})
    # pandas/polars give int64 keys: values that fit the declared Int32 are accepted.
    lab = pl.DataFrame(
        {"sid": [1, None, 1, 2], "event_timestamp": [at(1), at(1), None, at(1)]},
        schema={"sid": pl.Int64, "event_timestamp": pl.Datetime("us", "UTC")},
    )
    out = s.get_historical_features(lab, ["v:x"])
    # A null key or a null time matches nothing; the rows stay.
    assert out.column("x").to_pylist() == [1.0, None, None, None]
    with pytest.raises(DtypeError):
        s.get_historical_features({"sid": [2**40], "event_timestamp": pa.array([at(1)], TS)}, ["v:x"])


def _writer(path: str, k: int) -> None:
    s = FeatureStore(path)
    for i in range(10):
        s.write("stats", stats_rows([k], [i], [float(i)]))


def test_two_writer_processes_never_collide(store):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store.path, k)) for k in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(store.offline.files("stats", None)) == 20
    assert store.read_history("stats").num_rows == 20
    got = store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=at(9)).to_dict()
    assert got["spend"] == [9.0, 9.0]


def test_process_death_between_history_and_online_is_repaired_by_materialize(store):
    import subprocess
    import sys
    import textwrap

    store.write("stats", stats_rows([1], [0], [1.0]))
    code = textwrap.dedent(
        f"""
        import datetime as dt, os
        import pyarrow as pa
        import skewless.online
        from skewless import FeatureStore

        def die(*a, **k):
            os._exit(9)  # the process dies after the history append, before the online write

        skewless.online.OnlineStore.write = die
        t = pa.array([dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))
        FeatureStore({store.path!r}).write(
            "stats", {{"user_id": [1], "event_timestamp": t, "created": t, "spend": [7.0], "n": [1]}}
        )
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert store.read_history("stats").num_rows == 2
    assert not [f for f in os.listdir(os.path.join(store.path, "offline", "stats")) if f.startswith(".tmp")]
    served = store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(1)).to_dict()
    assert served["spend"] == [1.0]
    store.materialize(None, at(10))
    served = store.get_online_features(["stats:spend"], {"user_id": [1]}, as_of=at(1)).to_dict()
    assert served["spend"] == [7.0]


def test_feature_named_status_round_trips_online_and_offline(tmp_path):
    s = FeatureStore(tmp_path)
    v = FeatureView("v", [user], [Field("status", String), Field("x", Float64)])
    s.apply([user, v])
    s.write(
        "v",
        {
            "user_id": [1, 2],
            "event_timestamp": pa.array([at(0), at(1)], TS),
            "status": ["gold", None],
            "x": [1.0, 2.0],
        },
    )
    resp = s.get_online_features(["v:status", "v:x"], {"user_id": [1, 2, 3]}, as_of=at(2))
    assert resp.to_dict() == {"user_id": [1, 2, 3], "status": ["gold", None, None], "x": [1.0, 2.0, None]}
    assert list(resp.statuses["status"]) == [0, 0, 1]
    full = s.get_online_features(["v:status"], [{"user_id": 1}], full_feature_names=True, as_of=at(2))
    assert full.to_dict() == {"user_id": [1], "v__status": ["gold"]}
    labels = {"user_id": [1, 2, 3], "event_timestamp": pa.array([at(2)] * 3, TS)}
    hist = s.get_historical_features(labels, ["v:status", "v:x"])
    assert hist.column("status").to_pylist() == ["gold", None, None]
    assert s.read_history("v", ["status"]).column("status").to_pylist() == ["gold", None]
    s.materialize(None, at(5))
    assert s.online_reader(["v:x", "v:status"]).get({"user_id": [1]}).to_dict()["status"] == ["gold"]


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


def test_nanosecond_times_are_floored_to_microseconds_like_the_engine(tmp_path):
    # -1 ns is in the microsecond before the epoch: floored to -1 us, never truncated to 0.
    store = FeatureStore(str(tmp_path / "s"))
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    store.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    ns = pa.timestamp("ns", tz="UTC")
    store.write("v", {"user_id": [1, 2], "event_timestamp": pa.array([-1, -1_500], ns), "x": [1.0, 2.0]})
    hist = store.read_history("v").sort_by("user_id")
    assert hist.column("event_timestamp").cast(pa.int64()).to_pylist() == [-1, -2]
    # A label at -1 us sees the row written at -1 ns (same microsecond); one at -2 us does not see it.
    labels = {"user_id": [1, 1], "event_timestamp": pa.array([-1, -2], pa.timestamp("us", tz="UTC"))}
    assert store.get_historical_features(labels, ["v:x"]).column("x").to_pylist() == [1.0, None]
