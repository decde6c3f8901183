"""FeatureStore.write: validation, both halves fed from one call, rollback, dtype round trips."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import TS, at, merchant, snapshot, stats_rows, stats_view, user
from skewless import (
    Array,
    Entity,
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
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    NullKeyError,
    SchemaMismatch,
    StorageError,
    UnknownFeatureError,
)

NULL_ARRAYS = int(pa.__version__.split(".")[0]) >= 26  # see _check_round_trips in skewless/offline.py


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
    # History reads in write order: oldest write first, rows of one write in order.
    assert h.column("event_timestamp").to_pylist() == [at(0), at(0.5), at(1)]
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
        # A null Array row needs pyarrow >= 26 in the history (test_array_nulls_on_old_pyarrow_...).
        "vec": pa.array([[1.5, -0.0], None if NULL_ARRAYS else [2.5, -1.0]], pa.list_(pa.float64(), 2)),
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


@pytest.mark.skipif(NULL_ARRAYS, reason="pyarrow >= 26 stores null Array rows (test above)")
def test_array_nulls_on_old_pyarrow_raise_typed_error_and_write_nothing(tmp_path):
    s = FeatureStore(str(tmp_path / "fs"))
    fv = FeatureView("emb", [user], [Field("vec", Array(Float64, 2))])
    s.apply([user, fv])
    before = snapshot(s.path)
    rows = {
        "user_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([at(0), at(0)], TS),
        "vec": pa.array([[1.5, -0.0], None], pa.list_(pa.float64(), 2)),
    }
    with pytest.raises(DtypeError, match="Upgrade pyarrow to 26"):
        s.write("emb", rows)
    assert snapshot(s.path) == before
