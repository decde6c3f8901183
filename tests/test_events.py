"""Event views: definitions and their validation, window features in training sets (against a DuckDB
oracle through the store), push, online window state, materialize, and the product invariant (online
value == offline value bit for bit)."""

from __future__ import annotations

import datetime as dt
import math
import struct

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import skewless as sk
from conftest import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless.errors import (
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    SchemaMismatch,
    UnknownFeatureError,
)
from skewless.online import Status

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
USER = sk.Entity("user", dtype=sk.Int64)
SCHEMA = [sk.Field("x", sk.Float64), sk.Field("m", sk.Int64), sk.Field("s", sk.String)]
FLOAT_FUNCS = [f for f in sk.window.FUNCTIONS if f != "count_distinct"]
AGGS = (
    [sk.Aggregation("x", f, "5s") for f in FLOAT_FUNCS]
    + [sk.Aggregation("x", "sum", w) for w in ("1s", "10s")]
    + [sk.Aggregation("m", f, "3s") for f in ("sum", "count_distinct", "max", "last", "mean")]
    + [sk.Aggregation("s", f, "5s") for f in ("count_distinct", "first", "min", "count")]
)
PLAIN = sk.FeatureView("plain", [USER], [sk.Field("p", sk.Float64)])


def event_view(aggs=AGGS, name="ev") -> sk.FeatureView:
    return sk.FeatureView(name, [USER], SCHEMA, aggregations=aggs)


def new_store(tmp_path, *views) -> sk.FeatureStore:
    s = sk.FeatureStore(str(tmp_path))
    s.apply([USER, *views])
    return s


def events_table(users, secs, xs, ms, ss) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array([int(t * SEC) for t in secs], TS),
            "x": pa.array(xs, pa.float64()),
            "m": pa.array(ms, pa.int64()),
            "s": pa.array(ss, pa.string()),
        }
    )


# ---- definitions ---------------------------------------------------------------------------------------


def test_names_registry_round_trip_and_versions(tmp_path):
    v = event_view()
    assert "x_sum_5s" in [a.name for a in v.aggregations]
    s = new_store(tmp_path, v)
    again = sk.FeatureStore(str(tmp_path)).get_feature_view("ev")
    assert again.aggregations == v.aggregations and again.is_event_view
    assert s.version("ev") == 1
    s.apply([USER, event_view(AGGS + [sk.Aggregation("x", "max", "1h")])])
    assert s.version("ev") == 2
    svc = sk.FeatureService("svc", [v])
    assert svc.features[0] == "ev:x_sum_5s" and len(svc.features) == len(AGGS)
    s.apply([svc])


@pytest.mark.parametrize(
    ("make", "err"),
    [
        (lambda: sk.Aggregation("x", "median", "1h"), InvalidArgumentError),
        (lambda: sk.Aggregation("x", "sum", "0s"), InvalidArgumentError),
        (lambda: sk.Aggregation("x", "sum", dt.timedelta(seconds=-5)), InvalidArgumentError),
        (lambda: sk.Aggregation("x", "sum", "401d"), InvalidArgumentError),
        (lambda: event_view([sk.Aggregation("s", "sum", "1h")]), DtypeError),
        (lambda: event_view([sk.Aggregation("x", "count_distinct", "1h")]), DtypeError),
        (lambda: event_view([sk.Aggregation("nope", "count", "1h")]), UnknownFeatureError),
        (lambda: event_view([sk.Aggregation("x", "sum", "1h")] * 2), InvalidArgumentError),
        (lambda: event_view([sk.Aggregation("x", "sum", "1h", name="m")]), InvalidArgumentError),
        (lambda: event_view([]), InvalidArgumentError),
        (
            lambda: sk.FeatureView(
                "e", [USER], SCHEMA, ttl="1d", aggregations=[sk.Aggregation("x", "sum", "1h")]
            ),
            InvalidArgumentError,
        ),
        (
            lambda: sk.FeatureView(
                "e",
                [USER],
                SCHEMA,
                created_timestamp_field="c",
                aggregations=[sk.Aggregation("x", "sum", "1h")],
            ),
            InvalidArgumentError,
        ),
    ],
)
def test_bad_definitions_are_typed_errors(make, err):
    with pytest.raises(err):
        make()


def test_an_event_view_name_leaves_room_for_its_state():
    agg = [sk.Aggregation("x", "sum", "1h")]
    sk.FeatureView("v" * 192, [USER], SCHEMA, aggregations=agg)
    with pytest.raises(InvalidArgumentError, match="at most 192"):
        sk.FeatureView("v" * 193, [USER], SCHEMA, aggregations=agg)


def test_an_event_view_over_a_source(tmp_path):
    import pyarrow.parquet as pq

    ms = pa.timestamp("ms", tz="UTC")
    src = pa.table(
        {
            "user_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([1000, 2000, 3000], ms),
            "amount": pa.array([1.0, 2.0, 3.0], pa.float32()),
        }
    )
    aggs = [sk.Aggregation("amount", "sum", "1h"), sk.Aggregation("amount", "max", "1h")]
    v = sk.FeatureView("ev", [USER], [sk.Field("amount", sk.Float32)], source="ev.parquet", aggregations=aggs)
    s = sk.FeatureStore(str(tmp_path))
    pq.write_table(src, str(tmp_path / "ev.parquet"))
    s.apply([USER, v])
    feats = ["ev:amount_sum_1h", "ev:amount_max_1h"]
    labels = {"user_id": [1, 2], "event_timestamp": pa.array([2 * SEC, 3 * SEC], TS)}
    off = s.get_historical_features(labels, feats).to_pydict()
    assert off["amount_sum_1h"] == [3.0, 3.0] and off["amount_max_1h"] == [2.0, 3.0]
    assert s.materialize(None, T0) == {"ev": 3}
    on = s.get_online_features(feats, {"user_id": [1, 2]}, as_of=EPOCH + dt.timedelta(seconds=3)).to_dict()
    assert on["amount_sum_1h"] == [3.0, 3.0] and on["amount_max_1h"] == [2.0, 3.0]


def test_apply_checks_again_and_leaves_the_registry_unchanged(tmp_path):
    s = new_store(tmp_path)
    before = snapshot(str(tmp_path))
    v = event_view([sk.Aggregation("x", "sum", "1h")])
    # An Aggregation is a plain object: one changed after the view was built is caught by apply.
    v.aggregations[0].function = "count_distinct"
    with pytest.raises(DtypeError):
        s.apply([USER, v])
    assert snapshot(str(tmp_path)) == before
    with pytest.raises(UnknownFeatureError):
        s.apply([sk.FeatureService("svc", ["ev:x"])])


def test_raw_columns_are_not_features(tmp_path):
    s = new_store(tmp_path, event_view())
    with pytest.raises(UnknownFeatureError, match="request an aggregation"):
        s.get_historical_features({"user_id": [1], "event_timestamp": pa.array([0], TS)}, ["ev:x"])
    with pytest.raises(UnknownFeatureError):
        s.online_reader(["ev:x"])
    with pytest.raises(InvalidArgumentError, match="push is for event views"):
        new_store(tmp_path / "p", PLAIN).push("plain", {"user_id": [1]})


# ---- the oracle ----------------------------------------------------------------------------------------


def oracle(events: pa.Table, seqs: list[int], labels: pa.Table, aggs) -> dict[str, list]:
    """Each aggregate per label row: DuckDB joins labels to events on ts > t - w AND ts <= t and lists the
    window's non-null values in (time, write sequence) order; exact arithmetic (fsum, integers) in Python."""
    ev = events.append_column("seq", pa.array(seqs, pa.int64())).to_pandas()
    lab = labels.to_pandas()
    lab["rid"] = np.arange(len(lab))
    con = duckdb.connect()
    con.register("ev", ev)
    con.register("lab", lab)
    out: dict[str, list] = {}
    for a in aggs:
        q = (
            f"SELECT l.rid, list(e.{a.column} ORDER BY e.event_timestamp, e.seq) "
            f"FILTER (WHERE e.{a.column} IS NOT NULL) FROM lab l LEFT JOIN ev e ON e.user_id = l.user_id "
            f"AND e.event_timestamp > l.event_timestamp - to_microseconds({a.window_us}::BIGINT) "
            "AND e.event_timestamp <= l.event_timestamp GROUP BY l.rid ORDER BY l.rid"
        )
        out[a.name] = [reduce(a.function, r[1] or []) for r in con.execute(q).fetchall()]
    return out


def reduce(f: str, v: list):
    n = len(v)
    if f == "count":
        return n
    if f == "count_distinct":
        return len(set(v))
    if n == 0 or (f in ("var_samp", "stddev_samp") and n < 2):
        return None
    if f == "first":
        return v[0]
    if f == "last":
        return v[-1]
    if f == "min":
        return min(v)
    if f == "max":
        return max(v)
    is_int = isinstance(v[0], int)
    if f == "sum":
        return sum(v) if is_int else math.fsum(v)
    if f == "mean":
        return (sum(v) if is_int else math.fsum(v)) / n
    mean = math.fsum(v) / n
    var = math.fsum((x - mean) ** 2 for x in v) / (n - 1 if f.endswith("samp") else n)
    return math.sqrt(var) if f.startswith("stddev") else var


def same(got, want, f: str) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if f in ("var_samp", "var_pop", "stddev_samp", "stddev_pop"):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, float) and isinstance(want, float):
        return struct.pack("<d", got) == struct.pack("<d", want) or got == want
    return got == want


@st.composite
def streams(draw):
    """Events of users 0..3 on a coarse grid of seconds (ties and bursts), in 1 to 4 writes in any time
    order (out-of-order writes), with nulls; labels at any second, some before every event."""
    n = draw(st.integers(0, 30))
    users = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    secs = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    xs = draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from([-0.0, 0.1, 1e16, -1e16, 3.5, 1e-300])),
            min_size=n,
            max_size=n,
        )
    )
    ms = draw(st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=n, max_size=n))
    ss = draw(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "é"])), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    m = draw(st.integers(1, 12))
    lusers = draw(st.lists(st.integers(0, 4), min_size=m, max_size=m))
    lsecs = draw(st.lists(st.integers(-3, 40), min_size=m, max_size=m))
    labels = pa.table(
        {
            "user_id": pa.array(lusers, pa.int64()),
            "event_timestamp": pa.array([t * SEC for t in lsecs], TS),
        }
    )
    return events_table(users, secs, xs, ms, ss), [0, *cuts, n], labels


def push_batches(s: sk.FeatureStore, events: pa.Table, bounds: list[int]) -> list[int]:
    """Push events in the batches ``bounds`` gives; returns each event's write sequence."""
    seqs: list[int] = []
    number = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b > a:
            s.push("ev", events.slice(a, b - a))
            number += 1
            seqs.extend((number << 32) + r for r in range(b - a))
    return seqs


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=streams())
def test_training_sets_match_duckdb_and_mix_with_plain_views(tmp_path_factory, data):
    events, bounds, labels = data
    s = new_store(tmp_path_factory.mktemp("s"), event_view(), PLAIN)
    seqs = push_batches(s, events, bounds)
    s.write("plain", {"user_id": [0, 1], "event_timestamp": pa.array([0, 5 * SEC], TS), "p": [1.5, 2.5]})
    hist = s.read_history("ev")
    assert hist.num_rows == events.num_rows
    feats = ["ev:" + a.name for a in AGGS] + ["plain:p"]
    got = s.get_historical_features(labels, feats)
    want = oracle(events, seqs, labels, AGGS)
    for a in AGGS:
        g = got.column(a.name).to_pylist()
        assert all(same(x, y, a.function) for x, y in zip(g, want[a.name], strict=True)), (
            a.name,
            g,
            want[a.name],
        )
    plain = [
        1.5 if u == 0 and t >= 0 else 2.5 if u == 1 and t >= 5 * SEC else None
        for u, t in zip(
            labels.column("user_id").to_pylist(),
            labels.column("event_timestamp").cast(pa.int64()).to_pylist(),
            strict=False,
        )
    ]
    assert got.column("p").to_pylist() == plain
    assert (
        got.schema.field("x_count_5s").type == pa.int64() and got.schema.field("m_sum_3s").type == pa.int64()
    )


def test_retrieve_without_a_store_and_empty_histories(tmp_path):
    from skewless.retrieval import retrieve

    v = event_view()
    labels = pa.table(
        {"user_id": pa.array([1, 2], pa.int64()), "event_timestamp": pa.array([5 * SEC, 0], TS)}
    )
    ev = events_table([1, 1], [1, 5], [1.0, 2.0], [1, None], ["a", None])
    out = retrieve(labels, {"ev": ev}, [(v, ["x_sum_5s", "x_count_5s", "s_first_5s"])])
    assert out.column("x_sum_5s").to_pylist() == [3.0, None]
    assert out.column("x_count_5s").to_pylist() == [2, 0]
    empty = retrieve(labels, {"ev": None}, [(v, ["x_sum_5s", "x_count_5s", "s_first_5s"])])
    assert empty.column("x_count_5s").to_pylist() == [0, 0]
    assert empty.column("s_first_5s").type == pa.string()


# ---- push ------------------------------------------------------------------------------------------------


def test_bad_pushes_are_typed_errors_and_write_nothing(tmp_path):
    s = new_store(tmp_path, event_view())
    s.push("ev", events_table([1], [1], [1.0], [1], ["a"]))
    before = snapshot(str(tmp_path))
    good = events_table([1], [2], [1.0], [1], ["a"])
    naive = good.set_column(1, "event_timestamp", pa.array([2 * SEC], pa.timestamp("us")))
    with pytest.raises(MissingColumnError):
        s.push("ev", good.drop_columns(["m"]))
    with pytest.raises(NaiveTimestampError):
        s.push("ev", naive)
    with pytest.raises(DtypeError):
        s.push("ev", good.set_column(2, "x", pa.array(["oops"])))
    with pytest.raises(DtypeError):
        s.push("ev", good.set_column(0, "user_id", pa.array(["k"])))
    assert snapshot(str(tmp_path)) == before


def value(s, feats, user, t, **kw):
    r = s.get_online_features(feats, {"user_id": [user]}, as_of=t, **kw)
    return {f.split(":")[1]: r.to_dict()[f.split(":")[1]][0] for f in feats}, r.status[0, 0]


def test_online_values_age_out_late_events_count_and_statuses(tmp_path):
    aggs = [
        sk.Aggregation("x", "sum", "10s"),
        sk.Aggregation("x", "count", "10s"),
        sk.Aggregation("s", "last", "5s"),
    ]
    s = new_store(tmp_path, event_view(aggs))
    feats = ["ev:x_sum_10s", "ev:x_count_10s", "ev:s_last_5s"]
    # Before any push: not found, the empty window's values.
    assert value(s, feats, 1, T0) == (
        {"x_sum_10s": None, "x_count_10s": 0, "s_last_5s": None},
        Status.NOT_FOUND,
    )
    s.push("ev", events_table([1, 1], [100, 103], [1.0, 2.0], [None, None], ["a", "b"]))
    at = lambda sec: dt.datetime.fromtimestamp(sec, dt.timezone.utc)  # noqa: E731
    assert value(s, feats, 1, at(103)) == (
        {"x_sum_10s": 3.0, "x_count_10s": 2, "s_last_5s": "b"},
        Status.PRESENT,
    )
    # A value ages out with no new event.
    assert value(s, feats, 1, at(111))[0] == {"x_sum_10s": 2.0, "x_count_10s": 1, "s_last_5s": None}
    assert value(s, feats, 1, at(113))[0] == {"x_sum_10s": None, "x_count_10s": 0, "s_last_5s": None}
    # A late event lands where it belongs.
    s.push("ev", events_table([1], [101], [4.0], [None], ["c"]))
    assert value(s, feats, 1, at(104))[0] == {"x_sum_10s": 7.0, "x_count_10s": 3, "s_last_5s": "b"}
    # A newer event drops 100 and 101 from the kept tail: instants before 111 can no longer be answered.
    s.push("ev", events_table([1], [112], [8.0], [None], ["d"]))
    assert value(s, feats, 1, at(110)) == (
        {"x_sum_10s": None, "x_count_10s": None, "s_last_5s": None},
        Status.NOT_YET_VALID,
    )
    assert value(s, feats, 1, at(112)) == (
        {"x_sum_10s": 10.0, "x_count_10s": 2, "s_last_5s": "d"},
        Status.PRESENT,
    )
    # An unknown entity: not found, count 0 (what a training set computes for it).
    assert value(s, feats, 2, at(112)) == (
        {"x_sum_10s": None, "x_count_10s": 0, "s_last_5s": None},
        Status.NOT_FOUND,
    )
    vals, status = s.online_reader(feats[:2]).get_numpy({"user_id": [1, 2]}, as_of=at(112))
    assert vals[0].tolist() == [10.0, 2.0] and math.isnan(vals[1, 0]) and vals[1, 1] == 0.0
    assert status[:, 0].tolist() == [Status.PRESENT, Status.NOT_FOUND]
    with pytest.raises(DtypeError):
        s.online_reader(feats).get_numpy({"user_id": [1]})


def test_write_on_an_event_view_pushes_and_mixes_with_plain_views_online(tmp_path):
    s = new_store(tmp_path, event_view([sk.Aggregation("x", "max", "1h")]), PLAIN)
    s.write("ev", events_table([1], [10], [3.0], [None], [None]))
    s.write("plain", {"user_id": [1], "event_timestamp": pa.array([10 * SEC], TS), "p": [0.5]})
    at = dt.datetime.fromtimestamp(20, dt.timezone.utc)
    r = s.get_online_features(["plain:p", "ev:x_max_1h"], {"user_id": [1]}, as_of=at)
    assert r.to_dict() == {"user_id": [1], "p": [0.5], "x_max_1h": [3.0]}


# ---- materialize ----------------------------------------------------------------------------------------


def test_materialize_repairs_a_push_that_died_before_its_online_half(tmp_path):
    s = new_store(tmp_path, event_view([sk.Aggregation("x", "sum", "1h")]))
    s.push("ev", events_table([1], [10], [1.0], [None], [None]))
    # The history half of a push whose process died before the online half.
    s.offline.append("ev", events_table([1, 2], [20, 30], [2.0, 4.0], [None, None], [None, None]))
    at = dt.datetime.fromtimestamp(40, dt.timezone.utc)
    assert value(s, ["ev:x_sum_1h"], 1, at)[0] == {"x_sum_1h": 1.0}
    s.materialize(None, at)
    assert value(s, ["ev:x_sum_1h"], 1, at)[0] == {"x_sum_1h": 3.0}
    assert value(s, ["ev:x_sum_1h"], 2, at)[0] == {"x_sum_1h": 4.0}
    # A replay of a range already in the state changes nothing (events are kept once).
    s.materialize(dt.datetime.fromtimestamp(0, dt.timezone.utc), at)
    assert value(s, ["ev:x_sum_1h"], 1, at)[0] == {"x_sum_1h": 3.0}


def test_a_changed_definition_needs_a_rebuild(tmp_path):
    s = new_store(tmp_path, event_view([sk.Aggregation("x", "sum", "1h")]))
    s.push("ev", events_table([1], [10], [1.0], [None], [None]))
    s.apply([USER, event_view([sk.Aggregation("x", "sum", "2h")])])
    at = dt.datetime.fromtimestamp(40, dt.timezone.utc)
    with pytest.raises(SchemaMismatch, match="materialize"):
        s.get_online_features(["ev:x_sum_2h"], {"user_id": [1]}, as_of=at)
    before = s.read_history("ev").num_rows
    with pytest.raises(SchemaMismatch, match="materialize"):
        s.push("ev", events_table([1], [20], [1.0], [None], [None]))
    assert s.read_history("ev").num_rows == before
    s.materialize(None, at)
    assert value(s, ["ev:x_sum_2h"], 1, at)[0] == {"x_sum_2h": 1.0}


def test_a_damaged_state_record_is_a_storage_error(tmp_path):
    s = new_store(tmp_path, event_view([sk.Aggregation("x", "sum", "1h")]))
    s.push("ev", events_table([0], [10], [5.0], [None], [None]))
    # Another record where the entity's state belongs (a latest-value record under the same key; written
    # first, since a write over a state record is itself refused as damage by the value checksum).
    junk = {"user_id": [1], "ts": pa.array([1 << 62], TS), "junk": [1.0]}
    s._online().write("ev__window", junk, keys="user_id", timestamp="ts")
    # The state's segments are found by the greatest key at or below an entity's: the push of entity 2
    # lands on the foreign record and refuses, writing nothing (history included), and so do reads.
    ev2 = events_table([2], [10], [1.0], [None], [None])
    with pytest.raises(sk.errors.StorageError, match="materialize"):
        s.push("ev", ev2)
    for user in (1, 2):
        with pytest.raises(sk.errors.StorageError, match="materialize"):
            s.get_online_features(["ev:x_sum_1h"], {"user_id": [user]}, as_of=T0)
    at = EPOCH + dt.timedelta(seconds=10)
    assert value(s, ["ev:x_sum_1h"], 0, at)[0] == {"x_sum_1h": 5.0}, "the entity below is whole"
    s.materialize(None, T0)
    assert value(s, ["ev:x_sum_1h"], 2, EPOCH + dt.timedelta(seconds=10))[0] == {"x_sum_1h": None}
    s.push("ev", ev2)
    assert value(s, ["ev:x_sum_1h"], 2, EPOCH + dt.timedelta(seconds=10))[0] == {"x_sum_1h": 1.0}


# ---- the product invariant --------------------------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=streams(), instants=st.lists(st.integers(-2, 45), min_size=1, max_size=6))
def test_online_equals_offline_bit_for_bit(tmp_path_factory, data, instants):
    events, bounds, _ = data
    s = new_store(tmp_path_factory.mktemp("s"), event_view())
    push_batches(s, events, bounds)
    feats = ["ev:" + a.name for a in AGGS]
    reader = s.online_reader(feats)
    users = [0, 1, 2, 3, 4]
    newest = {}
    for u, t in zip(
        events.column("user_id").to_pylist(),
        events.column("event_timestamp").cast(pa.int64()).to_pylist(),
        strict=False,
    ):
        newest[u] = max(newest.get(u, t), t)
    for sec in instants:
        t = sec * SEC
        labels = pa.table(
            {"user_id": pa.array(users, pa.int64()), "event_timestamp": pa.array([t] * len(users), TS)}
        )
        off = s.get_historical_features(labels, feats).to_pydict()
        resp = reader.get({"user_id": users}, as_of=EPOCH + dt.timedelta(microseconds=t))
        on = resp.to_dict()
        for i, u in enumerate(users):
            st_ = resp.status[i, 0]
            if u not in newest:
                assert st_ == Status.NOT_FOUND
            elif t >= newest[u]:
                assert st_ == Status.PRESENT
            if st_ == Status.NOT_YET_VALID:
                continue
            for a in AGGS:
                o, n = off[a.name][i], on[a.name][i]
                if isinstance(o, float):
                    assert isinstance(n, float) and struct.pack("<d", o) == struct.pack("<d", n), (
                        a.name,
                        u,
                        t,
                        o,
                        n,
                    )
                else:
                    assert o == n, (a.name, u, t, o, n)


def test_readme_event_view_example(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    first = re.search(r"```python\n(.*?)```", text, re.S)
    example = re.search(r"### Event views.*?```python\n(.*?)```", text, re.S)
    assert first is not None and example is not None, "README lost its examples"
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(first.group(1), "README", "exec"), scope)
    code = example.group(1).rstrip().splitlines()
    code[-1] = "answer = " + code[-1]
    exec(compile("\n".join(code), "README", "exec"), scope)
    assert scope["answer"].to_dict()["amount_sum_7d"] == [12.5]  # type: ignore[attr-defined]
