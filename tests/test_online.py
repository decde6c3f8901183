"""Online store: API, types, TTL statuses, map growth, and every bad input (typed error, nothing written)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from skewless import errors
from skewless.online import OnlineStore, Status, WriteResult

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ts(*offsets_s: float) -> pa.Array:
    return pa.array([T0 + dt.timedelta(seconds=o) for o in offsets_s], pa.timestamp("us", "UTC"))


@pytest.fixture
def store(tmp_path):
    return OnlineStore(tmp_path / "online")


def test_round_trip_of_every_supported_type(store):
    emb = pa.array([[1.0, 2.0], [3.0, float("nan")]], pa.list_(pa.float32(), 2))
    emb64 = pa.array([[1.5, 2.5, 3.5], None], pa.list_(pa.float64(), 3))
    data = pa.table(
        {
            "k": pa.array(["a", "b"]),
            "ts": ts(0, 1),
            "i8": pa.array([-1, None], pa.int8()),
            "i16": pa.array([-300, 2], pa.int16()),
            "i32": pa.array([-70000, 3], pa.int32()),
            "i64": pa.array([-(2**40), 4], pa.int64()),
            "u8": pa.array([255, 1], pa.uint8()),
            "u16": pa.array([65535, 1], pa.uint16()),
            "u32": pa.array([2**32 - 1, 1], pa.uint32()),
            "u64": pa.array([2**64 - 1, 1], pa.uint64()),
            "f32": pa.array([1.25, None], pa.float32()),
            "f64": pa.array([2.5, -0.0], pa.float64()),
            "b": pa.array([True, False]),
            "s": pa.array(["héllo", None]),
            "ls": pa.array(["x", ""], pa.large_string()),
            "bin": pa.array([b"\x00\x01", None], pa.binary()),
            "at": pa.array([T0, None], pa.timestamp("ns", "Europe/Tallinn")),
            "emb": emb,
            "emb64": emb64,
        }
    )
    assert store.write("all", data, keys="k", timestamp="ts") == WriteResult(2, 0)
    got = store.reader("all").get(["b", "zz", "a"])
    assert got.column("status").to_pylist() == [Status.PRESENT, Status.NOT_FOUND, Status.PRESENT]
    rows = got.to_pylist()
    expected = data.drop_columns(["ts"]).to_pylist()
    for got_row, exp in ((rows[0], expected[1]), (rows[2], expected[0])):
        for name, value in exp.items():
            g = got_row[name]
            if name == "emb" and value[0] == 3.0:
                # A NaN element is a value like any other (a null element is refused at write).
                assert g[0] == 3.0 and np.isnan(g[1])
            else:
                assert g == value, name
    assert all(v is None for k, v in rows[1].items() if k not in ("k", "status"))
    sch = store.schema("all")
    assert sch.field("s").type == pa.string() and sch.field("ls").type == pa.string()
    assert sch.field("at").type == pa.timestamp("us", "Europe/Tallinn")
    assert sch.field("emb").type == pa.list_(pa.float32(), 2)
    assert sch.names[0] == "k"


def test_get_numpy_decodes_numeric_columns_and_rejects_others(store):
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "ts": ts(0, 0, 0),
            "a": pa.array([1, None, 3], pa.int16()),
            "b": pa.array([0.5, 1.5, None]),
            "c": pa.array([True, False, None]),
            "s": pa.array(["x", "y", "z"]),
        }
    )
    store.write("v", data, keys="id", timestamp="ts")
    r = store.reader("v", columns=["b", "a", "c"])
    assert r.columns == ["b", "a", "c"] and r.key_columns == ["id"]
    for keys in ([3, 9, 1, 2], (3, 9, 1, 2), np.array([3, 9, 1, 2], np.int32), np.array([3, 9, 1, 2])):
        values, status = r.get_numpy(keys)
        assert values.dtype == np.float64 and values.shape == (4, 3)
        assert status.dtype == np.int8 and status.tolist() == [0, 1, 0, 0]
        np.testing.assert_array_equal(
            values, [[np.nan, 3, np.nan], [np.nan] * 3, [0.5, 1, 1], [1.5, np.nan, 0]]
        )
    values, status = r.get_numpy([])
    assert values.shape == (0, 3) and status.shape == (0,)
    with pytest.raises(errors.DtypeError):
        store.reader("v").get_numpy([1])
    with pytest.raises(errors.DtypeError):
        r.get_numpy(["1"])
    with pytest.raises(errors.MissingColumnError):
        store.reader("v", columns=["nope"])
    with pytest.raises(errors.InvalidArgumentError):
        store.reader("never_written")


def test_large_requests_release_the_gil_and_match_small_ones(store):
    n = 5000
    ids = np.arange(n, dtype=np.int64)
    store.write("v", pa.table({"id": ids, "ts": ts(*([0] * n)), "x": ids * 2.0}), keys="id", timestamp="ts")
    r = store.reader("v")
    req = np.arange(-10, n + 10)
    values, status = r.get_numpy(req)
    assert status.tolist() == [1] * 10 + [0] * n + [1] * 10
    np.testing.assert_array_equal(values[10:-10, 0], ids * 2.0)
    t = r.get(req)
    assert t.num_rows == len(req) and t.column("id").to_pylist() == req.tolist()


def test_composite_keys_and_inputs_from_polars_pandas_and_mappings(store):
    df = pl.DataFrame(
        {
            "user": ["a", "a\x00", "b", "a"],
            "shop": [1, 1, -2, 2],
            "ts": [T0, T0, T0, T0],
            "spend": [1.0, 2.0, 3.0, 4.0],
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    assert store.write("c", df, keys=["user", "shop"], timestamp="ts").rows_written == 4
    r = store.reader("c")
    assert r.key_columns == ["user", "shop"]
    got = r.get({"user": ["b", "a", "a", "a\x00", None], "shop": [-2, 2, 3, 1, 1]})
    assert got.column("spend").to_pylist() == [3.0, 4.0, None, 2.0, None]
    assert got.column("status").to_pylist() == [0, 0, 1, 0, 1]
    tuples = [("b", -2), ("a", 2), ("a", 3), ("a\x00", 1)]
    assert r.get_numpy(tuples)[0][:, 0].tolist()[:2] == [3.0, 4.0]
    assert r.get_numpy(tuples)[1].tolist() == [0, 0, 1, 0]
    got_t = r.get(tuples)
    assert got_t.column("user").to_pylist() == ["b", "a", "a", "a\x00"]
    assert got_t.column("shop").to_pylist() == [-2, 2, 3, 1]
    assert got_t.column("spend").to_pylist() == [3.0, 4.0, None, 2.0]
    with pytest.raises(errors.DtypeError):
        r.get_numpy([("a",)])
    with pytest.raises(errors.DtypeError):
        r.get_numpy([(1, "a")])
    keys_pd = pd.DataFrame({"shop": [1], "user": ["a"]})
    values, status = r.get_numpy(keys_pd)
    assert values.tolist() == [[1.0]] and status.tolist() == [0]
    pdf = pd.DataFrame(
        {"user": ["z"], "shop": [5], "ts": pd.to_datetime([T0]).tz_convert("UTC"), "spend": [9.0]}
    )
    assert store.write("c", pdf, keys=["user", "shop"], timestamp="ts").rows_written == 1
    assert r.get_numpy(pa.table({"user": ["z"], "shop": [5]}))[0].tolist() == [[9.0]]


def test_replacement_rule_equal_stamps_created_and_late_rows(store):
    w = store.write
    base = {"k": [1], "x": [1.0]}
    assert w("v", {**base, "ts": ts(10)}, keys="k", timestamp="ts") == (1, 0)
    # Equal (ts, created) never replaces a stored row; an older row never rolls back.
    assert w("v", {"k": [1], "x": [2.0], "ts": ts(10)}, keys="k", timestamp="ts") == (0, 1)
    assert w("v", {"k": [1], "x": [3.0], "ts": ts(5)}, keys="k", timestamp="ts") == (0, 1)
    r = store.reader("v")
    assert r.get_numpy([1])[0].tolist() == [[1.0]]
    # Same ts with a created timestamp beats a missing one; a later created beats an earlier one.
    data = {"k": [1, 1], "x": [4.0, 5.0], "ts": ts(10, 10), "cr": ts(3, 2)}
    assert w("v", data, keys="k", timestamp="ts", created_timestamp="cr") == (1, 1)
    assert r.get_numpy([1])[0].tolist() == [[4.0]]
    # Within a batch, on full equality the last row in input order wins.
    data = {"k": [1, 1, 1], "x": [6.0, 7.0, 8.0], "ts": ts(11, 11, 11), "cr": ts(0, 0, 0)}
    assert w("v", data, keys="k", timestamp="ts", created_timestamp="cr") == (1, 2)
    assert r.get_numpy([1])[0].tolist() == [[8.0]]
    # A null created timestamp ranks below any present one.
    data = {
        "k": [1, 1],
        "x": [9.0, 10.0],
        "ts": ts(12, 12),
        "cr": pa.array([T0, None], pa.timestamp("us", "UTC")),
    }
    assert w("v", data, keys="k", timestamp="ts", created_timestamp="cr") == (1, 1)
    assert r.get_numpy([1])[0].tolist() == [[9.0]]


def test_ttl_and_as_of_statuses_at_the_boundary(store):
    store.write("v", {"k": [1, 2], "x": [1.0, 2.0], "ts": ts(0, 100)}, keys="k", timestamp="ts")
    r = store.reader("v")
    ttl = dt.timedelta(seconds=50)
    boundary = T0 + dt.timedelta(seconds=50)  # as_of - ttl == ts of key 1: still present
    # Key 2 is stamped 100 s: after the request instant, so not yet valid (never a value from the future).
    _, status = r.get_numpy([1, 2, 3], as_of=boundary, ttl=ttl)
    assert status.tolist() == [Status.PRESENT, Status.NOT_YET_VALID, Status.NOT_FOUND]
    values, status = r.get_numpy([1, 2], as_of=boundary + dt.timedelta(microseconds=1), ttl=ttl)
    assert status.tolist() == [Status.EXPIRED, Status.NOT_YET_VALID]
    assert np.isnan(values[0, 0]) and np.isnan(values[1, 0])
    values, status = r.get_numpy([2], as_of=T0 + dt.timedelta(seconds=100), ttl=ttl)
    assert status.tolist() == [Status.PRESENT] and values[0, 0] == 2.0
    t = r.get([1], as_of=boundary + dt.timedelta(microseconds=1), ttl=ttl)
    assert t.column("x").to_pylist() == [None] and t.column("status").to_pylist() == [Status.EXPIRED]
    # Another zone, same instant.
    tallinn = dt.timezone(dt.timedelta(hours=2))
    assert r.get_numpy([1], as_of=boundary.astimezone(tallinn), ttl=ttl)[1].tolist() == [0]
    # Without a ttl nothing expires; as_of defaults to now (everything here is long expired).
    assert r.get_numpy([1])[1].tolist() == [0]
    assert r.get_numpy([1], ttl=dt.timedelta(days=1))[1].tolist() == [Status.EXPIRED]
    with pytest.raises(errors.NaiveTimestampError):
        r.get_numpy([1], as_of=dt.datetime(2026, 1, 1), ttl=ttl)
    with pytest.raises(errors.InvalidArgumentError):
        r.get_numpy([1], as_of=boundary, ttl=dt.timedelta(seconds=-1))


def test_map_grows_by_itself(tmp_path):
    store = OnlineStore(tmp_path / "s", map_size=64 * 1024)
    start = store.map_size
    n = 20_000
    blob = pa.array([b"x" * 200] * n, pa.binary())
    data = pa.table({"k": np.arange(n), "ts": ts(*([0] * n)), "b": blob, "x": np.arange(n) * 1.0})
    assert store.write("v", data, keys="k", timestamp="ts").rows_written == n
    assert store.map_size > start * 16
    values, status = store.reader("v", columns=["x"]).get_numpy(np.arange(n))
    assert (status == 0).all() and values[:, 0].tolist() == list(np.arange(n) * 1.0)


def test_map_that_cannot_grow_raises_map_full_and_writes_nothing(tmp_path):
    store = OnlineStore(tmp_path / "s", map_size=256 * 1024, max_map_size=1024 * 1024)
    store.write("v", {"k": [0], "ts": ts(0), "b": [b"first"]}, keys="k", timestamp="ts")
    n = 5000
    data = pa.table({"k": np.arange(n), "ts": ts(*([1] * n)), "b": pa.array([b"y" * 1000] * n)})
    with pytest.raises(errors.MapFullError, match="max_map_size"):
        store.write("v", data, keys="k", timestamp="ts")
    got = store.reader("v").get([0, 1, n - 1])
    assert got.column("b").to_pylist() == [b"first", None, None]
    # Still writable afterwards.
    assert store.write("v", {"k": [1], "ts": ts(2), "b": [b"ok"]}, keys="k", timestamp="ts").rows_written == 1


def test_handles_on_one_path_share_the_environment(tmp_path):
    a = OnlineStore(tmp_path / "s")
    b = OnlineStore(str(tmp_path / "s" / ".." / "s"))
    a.write("v", {"k": ["x"], "ts": ts(0), "f": [1.0]}, keys="k", timestamp="ts")
    assert b.views() == ["v"] and b.reader("v").get_numpy(["x"])[0].tolist() == [[1.0]]


def good(**over):
    d = {"k": pa.array([1, 2]), "ts": ts(0, 0), "x": pa.array([1.0, 2.0])}
    d.update(over)
    return pa.table(d)


BAD_WRITES = [
    (
        "unsupported value dtype",
        lambda: good(x=pa.array([[1], [2]], pa.list_(pa.int64()))),
        {},
        errors.DtypeError,
    ),
    ("date value", lambda: good(x=pa.array([dt.date(2026, 1, 1)] * 2)), {}, errors.DtypeError),
    ("float key", lambda: good(k=pa.array([1.0, 2.0])), {}, errors.DtypeError),
    ("missing key column", lambda: good(), {"keys": "nope"}, errors.MissingColumnError),
    ("missing timestamp column", lambda: good(), {"timestamp": "nope"}, errors.MissingColumnError),
    ("missing created column", lambda: good(), {"created_timestamp": "nope"}, errors.MissingColumnError),
    ("null key", lambda: good(k=pa.array([1, None])), {}, errors.NullKeyError),
    (
        "null timestamp",
        lambda: good(ts=pa.array([T0, None], pa.timestamp("us", "UTC"))),
        {},
        errors.InvalidArgumentError,
    ),
    (
        "naive timestamp",
        lambda: good(ts=pa.array([T0.replace(tzinfo=None)] * 2)),
        {},
        errors.NaiveTimestampError,
    ),
    (
        "naive created",
        lambda: good(cr=pa.array([T0.replace(tzinfo=None)] * 2)),
        {"created_timestamp": "cr"},
        errors.NaiveTimestampError,
    ),
    (
        "naive value timestamp",
        lambda: good(at=pa.array([T0.replace(tzinfo=None)] * 2)),
        {},
        errors.NaiveTimestampError,
    ),
    ("timestamp is not a timestamp", lambda: good(ts=pa.array([1, 2])), {}, errors.DtypeError),
    ("schema: other value type", lambda: good(x=pa.array([1, 2])), {}, errors.SchemaMismatch),
    ("schema: extra column", lambda: good(y=pa.array([1.0, 2.0])), {}, errors.SchemaMismatch),
    ("schema: missing column", lambda: good().drop_columns(["x"]), {}, errors.SchemaMismatch),
    ("schema: other key type", lambda: good(k=pa.array(["1", "2"])), {}, errors.SchemaMismatch),
    ("empty keys", lambda: good(), {"keys": []}, errors.InvalidArgumentError),
    ("not a table", lambda: 42, {}, errors.DtypeError),
]


@pytest.mark.parametrize("name,make,kwargs,exc", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_writes_raise_typed_errors_and_change_nothing(store, name, make, kwargs, exc):
    store.write("v", good(), keys="k", timestamp="ts")
    store.write("v", good(x=pa.array([5.0, 6.0]), ts=ts(1, 1)), keys="k", timestamp="ts")
    before = (store.views(), store.schema("v"), store.reader("v").get([1, 2, 3]))
    args = {"keys": "k", "timestamp": "ts", **kwargs}
    with pytest.raises(exc):
        store.write("v", make(), **args)
    after = (store.views(), store.schema("v"), store.reader("v").get([1, 2, 3]))
    assert before[0] == after[0] and before[1].equals(after[1]) and before[2].equals(after[2])


FIRST_WRITES = [b for b in BAD_WRITES if not b[0].startswith("schema")]


@pytest.mark.parametrize("name,make,kwargs,exc", FIRST_WRITES, ids=[b[0] for b in FIRST_WRITES])
def test_bad_first_writes_create_no_view(store, name, make, kwargs, exc):
    args = {"keys": "k", "timestamp": "ts", **kwargs}
    with pytest.raises(exc):
        store.write("new", make(), **args)
    assert store.views() == [] and store.schema("new") is None


def test_empty_string_key_and_bad_view_names(store):
    with pytest.raises(errors.InvalidArgumentError, match="empty key"):
        store.write("s", {"k": ["", "b"], "ts": ts(0, 0), "x": [1.0, 2.0]}, keys="k", timestamp="ts")
    with pytest.raises(errors.InvalidArgumentError):
        store.write("", good(), keys="k", timestamp="ts")
    with pytest.raises(errors.InvalidArgumentError):
        store.write("a\x00b", good(), keys="k", timestamp="ts")
    with pytest.raises(errors.InvalidArgumentError, match="507"):
        store.write("s", {"k": ["x" * 600], "ts": ts(0), "x": [1.0]}, keys="k", timestamp="ts")
    assert store.views() == []


def test_single_string_keys_argument_is_rejected(store):
    store.write("s", {"k": ["ab"], "ts": ts(0), "x": [1.0]}, keys="k", timestamp="ts")
    with pytest.raises(errors.DtypeError):
        store.reader("s").get_numpy("ab")
    assert store.reader("s").get_numpy(np.array(["ab", "c"]))[1].tolist() == [0, 1]


def test_threads_read_while_another_thread_grows_the_map(tmp_path):
    import threading

    store = OnlineStore(tmp_path / "s", map_size=64 * 1024)
    store.write(
        "v", {"k": np.arange(2000), "ts": ts(*([0] * 2000)), "x": np.ones(2000)}, keys="k", timestamp="ts"
    )
    reader = store.reader("v")
    stop = threading.Event()
    failures: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                values, status = reader.get_numpy(np.arange(2000))  # >= 1024 keys: runs without the GIL
                assert (status == 0).all() and (values[:, 0] >= 1).all()
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            failures.append(e)

    threads = [threading.Thread(target=read_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for version in range(2, 6):
            n = 20_000 * version
            data = {"k": np.arange(n), "ts": ts(*([version] * n)), "x": np.full(n, float(version))}
            assert store.write("v", data, keys="k", timestamp="ts").rows_written == n
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures
    assert store.map_size > 64 * 1024 * 16
    assert reader.get_numpy([0, 99_999])[0].tolist() == [[5.0], [5.0]]


def test_get_refuses_a_value_column_named_status(store):
    store.write("v", {"k": [1], "ts": ts(0), "status": [1.0], "x": [2.0]}, keys="k", timestamp="ts")
    with pytest.raises(errors.ColumnClashError):
        store.reader("v").get([1])
    assert store.reader("v", columns=["x"]).get([1]).column("x").to_pylist() == [2.0]
    assert store.reader("v").get_numpy([1])[0].tolist() == [[1.0, 2.0]]
    got = store.reader("v").get([1, 2], status_column="lookup").to_pydict()
    assert got == {"k": [1, 2], "status": [1.0, None], "x": [2.0, None], "lookup": [0, 1]}
    with pytest.raises(errors.ColumnClashError, match="'x'|\"x\""):
        store.reader("v").get([1], status_column="x")
    with pytest.raises(errors.ColumnClashError):
        store.reader("v").get([1], status_column="k")


def test_keys_as_series_and_arrow_arrays(store):
    store.write("v", {"k": ["a", "b"], "ts": ts(0, 0), "x": [1.0, 2.0]}, keys="k", timestamp="ts")
    store.write("n", {"k": [1, 2], "ts": ts(0, 0), "x": [1.0, 2.0]}, keys="k", timestamp="ts")
    r, rn = store.reader("v"), store.reader("n")
    for keys in (
        pd.Series(["b", "z"]),
        pl.Series(["b", "z"]),
        pa.array(["b", "z"]),
        pa.chunked_array([["b"], ["z"]]),
    ):
        assert r.get_numpy(keys)[1].tolist() == [0, 1], type(keys)
        assert r.get(keys).column("k").to_pylist() == ["b", "z"]
    for keys in (pd.Series([2, 9]), pl.Series([2, 9]), pa.array([2, 9], pa.int32())):
        assert rn.get_numpy(keys)[0][:, 0].tolist()[0] == 2.0, type(keys)
