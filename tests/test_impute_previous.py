"""The ``previous`` imputation strategy: a feature's last non-null value within the view's TTL, the same
bits offline (a second point-in-time join) and online (the last non-null records kept beside the latest
rows, in the same transaction), whatever made the value missing."""

from __future__ import annotations

import datetime as dt
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
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
    String,
    TransformView,
    log1p,
)
from skewless.errors import DtypeError, InvalidArgumentError, MissingValueError, SchemaMismatch
from skewless.imputation import previous_store
from skewless.online import OnlineStore

user = Entity("user", join_keys=["user_id"], dtype=Int64)
SCHEMA = [Field("x", Float64), Field("n", Int64), Field("s", String)]
PREV = [Impute("x", "previous"), Impute("n", "previous"), Impute("s", "previous")]


def view(ttl: dt.timedelta | None = dt.timedelta(days=5), created: bool = False) -> FeatureView:
    return FeatureView(
        "v",
        [user],
        SCHEMA,
        ttl=ttl,
        impute=PREV,
        created_timestamp_field="created" if created else None,
    )


def rows(ids, days, x, n, s, created=None):
    out = {
        "user_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array([at(d) for d in days], TS),
        "x": pa.array(x, pa.float64()),
        "n": pa.array(n, pa.int64()),
        "s": pa.array(s, pa.string()),
    }
    if created is not None:
        out["created"] = pa.array([at(d) for d in created], TS)
    return out


def bits(values: list) -> list:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def offline(store: FeatureStore, ids: list[int], day: float) -> pa.Table:
    labels = pa.table(
        {"user_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array([at(day)] * len(ids), TS)}
    )
    return store.get_historical_features(labels, ["v:x", "v:n", "v:s"], imputed_flags=True)


def test_previous_fills_a_null_latest_row_and_an_expired_one_offline_and_online(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows([1, 2, 3], [0, 0, 0], [1.5, float("nan"), None], [7, 8, None], ["a", None, None]))
    s.write("v", rows([1, 2], [2, 3], [None, None], [None, 9], [None, "b"]))
    # Key 1: latest row (day 2) null everywhere, previous values from day 0. Key 2: NaN is a value.
    # Key 3: never a non-null value: stays missing. Key 4: no row at all.
    off = offline(s, [1, 2, 3, 4], 4)
    assert bits(off.column("x").to_pylist()) == bits([1.5, float("nan"), None, None])
    assert off.column("x__imputed").to_pylist() == [True, True, False, False]
    assert off.column("n").to_pylist() == [7, 9, None, None]
    assert off.column("n__imputed").to_pylist() == [True, False, False, False]
    assert off.column("s").to_pylist() == ["a", "b", None, None]
    r = s.online_reader(["v:x", "v:n", "v:s"])
    resp = r.get({"user_id": [1, 2, 3, 4]}, as_of=at(4))
    t = resp.to_arrow()
    for c in ("x", "n", "s"):
        assert bits(t.column(c).to_pylist()) == bits(off.column(c).to_pylist())
    assert resp.statuses["x"].tolist() == [Status.IMPUTED, Status.IMPUTED, Status.PRESENT, Status.NOT_FOUND]
    assert resp.statuses["n"].tolist() == [Status.IMPUTED, Status.PRESENT, Status.PRESENT, Status.NOT_FOUND]
    values, status = s.online_reader(["v:x", "v:n"]).get_numpy([1, 2, 3, 4], as_of=at(4))
    assert bits(values[:, 0].tolist()) == bits([1.5, float("nan"), float("nan"), float("nan")])
    assert values[:, 1].tolist()[:2] == [7.0, 9.0]
    assert status[:, 0].tolist() == resp.statuses["x"].tolist()
    # Day 5.5: key 1's latest row (day 2, x null) is within the 5-day TTL, its day-0 value is not:
    # nothing fills it, the null stays with its row's status.
    off = offline(s, [1], 5.5)
    assert off.column("x").to_pylist() == [None] and off.column("x__imputed").to_pylist() == [False]
    resp = r.get({"user_id": [1]}, as_of=at(5.5))
    assert resp.to_arrow().column("x").to_pylist() == [None]
    assert resp.statuses["x"].tolist() == [Status.PRESENT]
    # Day 6.5, key 2: the latest row (day 3) is within the TTL, its x null; the last non-null x (day 0) is
    # not: missing, not filled, alike.
    off = offline(s, [2], 6.5)
    assert off.column("x").to_pylist() == [None]
    assert s.online_reader(["v:x"]).get({"user_id": [2]}, as_of=at(6.5)).to_arrow().column(
        "x"
    ).to_pylist() == [None]


def test_strict_still_raises_for_a_value_no_previous_one_fills(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows([1, 2], [0, 0], [None, 1.0], [1, 1], ["a", "a"]))
    labels = pa.table({"user_id": pa.array([2], pa.int64()), "event_timestamp": pa.array([at(1)], TS)})
    assert s.get_historical_features(labels, ["v:x"], strict=True).column("x").to_pylist() == [1.0]
    with pytest.raises(MissingValueError, match="x"):
        s.get_historical_features(
            labels.set_column(0, "user_id", pa.array([1], pa.int64())), ["v:x"], strict=True
        )
    with pytest.raises(MissingValueError, match="x"):
        s.online_reader(["v:x"], strict=True).get({"user_id": [1]}, as_of=at(1))


def test_previous_takes_no_value_and_a_transform_view_refuses_it(tmp_path):
    with pytest.raises(InvalidArgumentError, match="no value"):
        Impute("x", "previous", 1.0)
    with pytest.raises(InvalidArgumentError, match="no value"):
        Impute("x", "previous", stats=1)
    with pytest.raises(InvalidArgumentError, match="feature view"):
        TransformView("tv", [log1p("v:x")], impute=[Impute("v:x", "previous")])
    with pytest.raises(InvalidArgumentError, match="characters"):
        FeatureView("a" * 190, [user], SCHEMA, impute=[Impute("x", "previous")])


def test_a_transform_view_reads_the_value_previous_filled(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view(), TransformView("tv", [log1p("v:x")])])
    s.write("v", rows([1, 1], [0, 1], [1.0, None], [1, 1], ["a", "a"]))
    labels = pa.table({"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([at(2)], TS)})
    off = s.get_historical_features(labels, ["tv:x_log1p"], imputed_flags=True)
    assert off.column("x_log1p").to_pylist() == [np.log1p(1.0)]
    assert off.column("x_log1p__imputed").to_pylist() == [True]
    resp = s.online_reader(["tv:x_log1p"]).get({"user_id": [1]}, as_of=at(2))
    assert resp.to_arrow().column("x_log1p").to_pylist() == [np.log1p(1.0)]
    assert resp.statuses["x_log1p"].tolist() == [Status.IMPUTED]


def test_records_land_with_the_latest_rows_in_one_transaction_or_not_at_all(tmp_path):
    # The previous records are written as extra items of the latest rows' transaction: an item that
    # cannot be written (here a value column of another type than its stored one) fails the whole
    # write, so the view's latest rows do not land either.
    o = OnlineStore(tmp_path / "o")
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    o.write("p", {"k": [1], "ts": [t], "x": ["text"]}, keys="k", timestamp="ts")
    with pytest.raises(SchemaMismatch, match="p"):
        o.write(
            "v",
            {"k": [1], "ts": [t], "x": [1.0]},
            keys="k",
            timestamp="ts",
            also=[("p", {"k": [1], "ts": [t], "x": [2.0]})],
        )
    assert "v" not in o.views()
    res = o.write(
        "v",
        {"k": [1], "ts": [t], "x": [1.0]},
        keys="k",
        timestamp="ts",
        also=[("q", {"k": [1], "ts": [t], "x": [2.0]})],
    )
    assert res.rows_written == 1
    assert o.reader("q").get([1]).column("x").to_pylist() == [2.0]


def test_a_bad_write_writes_no_previous_record(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows([1], [0], [1.0], [1], ["a"]))
    before = snapshot(str(tmp_path))
    bad = rows([1], [1], [2.0], [1], ["a"])
    bad["n"] = pa.array(["not an int"])
    with pytest.raises(DtypeError):
        s.write("v", bad)
    assert snapshot(str(tmp_path)) == before


def test_added_to_a_view_with_data_materialize_fills_its_records(tmp_path):
    s = FeatureStore(tmp_path)
    plain = FeatureView("v", [user], SCHEMA, ttl=dt.timedelta(days=5))
    s.apply([user, plain])
    s.write("v", rows([1, 1], [0, 1], [1.0, None], [1, None], ["a", None]))
    s.apply([view()])
    off = offline(s, [1], 2)
    assert off.column("x").to_pylist() == [1.0]
    s.materialize(None, at(100))
    resp = s.online_reader(["v:x", "v:n", "v:s"]).get({"user_id": [1]}, as_of=at(2))
    assert resp.to_arrow().column("x").to_pylist() == [1.0]
    assert resp.statuses["s"].tolist() == [Status.IMPUTED]


# ---- the invariant: online == offline, bit for bit ----------------------------------------------------

floats = st.one_of(st.none(), st.just(float("nan")), st.just(float("inf")), st.floats(-5, 5, width=32))
row = st.tuples(
    st.integers(1, 4),  # key
    st.integers(0, 6),  # day: equal timestamps across batches are common
    st.integers(0, 2),  # created day
    floats,
    st.one_of(st.none(), st.integers(-3, 3)),
    st.one_of(st.none(), st.sampled_from(["a", "b"])),
)


def _write_all(s: FeatureStore, batches) -> None:
    for b in batches:
        if b:
            ids, days, created, x, n, sv = (list(c) for c in zip(*b, strict=True))
            s.write("v", rows(ids, days, x, n, sv, created))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(row, max_size=6), max_size=4),
    ttl=st.sampled_from([None, 2, 5]),
    when=st.sampled_from([6, 7.5, 9]),
    compact=st.booleans(),
)
def test_online_equals_offline_and_materialize_equals_writes(tmp_path_factory, batches, ttl, when, compact):
    fv = view(None if ttl is None else dt.timedelta(days=ttl), created=True)
    s = FeatureStore(tmp_path_factory.mktemp("w"))
    s.apply([user, fv])
    _write_all(s, batches)
    ids = [1, 2, 3, 4]
    off = offline(s, ids, when)
    # An oracle of the semantics: the latest row within the TTL by (time, created; the earliest write,
    # its last row, of a full tie); its value, else the last non-null value within the TTL by that order.
    for c, col in (("x", 3), ("n", 4), ("s", 5)):
        want, filled = [], []
        for k in ids:
            cand = [
                ((r[1], r[2], -b, i), r[col])
                for b, rs in enumerate(batches)
                for i, r in enumerate(rs)
                if r[0] == k and r[1] <= when and (ttl is None or r[1] >= when - ttl)
            ]
            latest = max(cand, key=lambda e: e[0])[1] if cand else None
            prev = [e for e in cand if e[1] is not None]
            fill = max(prev, key=lambda e: e[0])[1] if latest is None and prev else None
            want.append(latest if latest is not None else fill)
            filled.append(fill is not None)
        assert bits(off.column(c).to_pylist()) == bits(want), c
        assert off.column(f"{c}__imputed").to_pylist() == filled, c
    resp = s.online_reader(["v:x", "v:n", "v:s"]).get({"user_id": ids}, as_of=at(when))
    on = resp.to_arrow()
    for c in ("x", "n", "s"):
        assert bits(on.column(c).to_pylist()) == bits(off.column(c).to_pylist()), c
        assert (resp.statuses[c] == Status.IMPUTED).tolist() == off.column(f"{c}__imputed").to_pylist(), c
    values, status = s.online_reader(["v:x", "v:n"]).get_numpy(ids, as_of=at(when))
    assert bits(values[:, 0].tolist()) == bits(
        [np.nan if v is None else v for v in off.column("x").to_pylist()]
    )
    assert status[:, 0].tolist() == resp.statuses["x"].tolist()
    # The same history materialized into a fresh store's online side gives the same records.
    m = FeatureStore(tmp_path_factory.mktemp("m"))
    m.apply([user, fv])
    for b in batches:
        if b:
            ids_, days, created, x, n, sv = (list(c) for c in zip(*b, strict=True))
            m.offline.append("v", pa.table(rows(ids_, days, x, n, sv, created)))
    if compact and any(batches):
        m.compact("v")  # sorted files: materialize writes them in chunks that never split a tie
    m.materialize(None, at(100))
    for f in ("x", "n", "s"):
        a = (
            s._online().reader(previous_store("v", f)).get(ids)
            if previous_store("v", f) in s._online().views()
            else None
        )
        b_ = (
            m._online().reader(previous_store("v", f)).get(ids)
            if previous_store("v", f) in m._online().views()
            else None
        )
        assert (a is None) == (b_ is None)
        if a is not None:
            assert bits(a.column(f).to_pylist()) == bits(b_.column(f).to_pylist())
    again = m.online_reader(["v:x", "v:n", "v:s"]).get({"user_id": ids}, as_of=at(when)).to_arrow()
    assert bits(again.column("x").to_pylist()) == bits(on.column("x").to_pylist())
    assert again.column("s").to_pylist() == on.column("s").to_pylist()


# ---- crash safety ----------------------------------------------------------------------------------------

_WRITER = """
import sys, datetime as dt
import pyarrow as pa
from skewless import FeatureStore
s = FeatureStore(sys.argv[1])
T = pa.timestamp("us", tz="UTC")
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
print("ready", flush=True)
b = 1
while True:
    s.write("v", {"user_id": pa.array(range(200), pa.int64()),
                  "event_timestamp": pa.array([t0 + dt.timedelta(seconds=b)] * 200, T),
                  "x": pa.array([float(b)] * 200), "n": pa.array([b] * 200, pa.int64()),
                  "s": pa.array([str(b)] * 200)})
    b += 1
"""


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_a_writer_killed_mid_write_never_leaves_the_records_apart_from_the_latest_rows(tmp_path, delay):
    # Every value is non-null, so each key's last non-null records must be its latest row: a write that
    # put them in a transaction of their own could be killed between the two and leave them behind.
    s = FeatureStore(tmp_path)
    s.apply([user, view(ttl=None)])
    p = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    o = FeatureStore(tmp_path)._online()
    if "v" not in o.views():
        return  # killed before its first commit: nothing to compare, and nothing was left behind
    ids = list(range(200))
    latest = o.reader("v").get(ids)
    for f in ("x", "n", "s"):
        assert o.reader(previous_store("v", f)).get(ids).column(f).to_pylist() == latest.column(f).to_pylist()


def test_the_watchdog_rebuilds_previous_fills_as_known_then_and_explains_them(tmp_path):
    """Served `previous` fills (and a transform over one) rebuild exactly in check_skew, with a write
    between the lookups; a legacy path that fills with 0 instead alerts on that feature only; explain
    shows the value the strategy took."""
    s = FeatureStore(tmp_path)
    s.apply([user, view(ttl=None)])
    s.write("v", rows([1, 2], [0, 0], [1.0, 2.0], [10, 20], ["a", "b"]))
    s.write("v", rows([1, 2], [1, 1], [None, 3.0], [None, 30], [None, "c"]))
    s.apply([TransformView("tv", [log1p("v:x")])])
    feats = ["v:x", "v:n", "v:s", "tv:x_log1p"]
    r = s.online_reader(feats, log=True)
    first = r.get({"user_id": [1, 2]}, as_of=at(2))
    assert [first.statuses[f][0] for f in ("x", "n", "s")] == [Status.IMPUTED] * 3
    assert first.to_dict()["x"] == [1.0, 3.0] and first.to_dict()["s"] == ["a", "c"]
    # A later write gives user 1 a value: served later, it is no fill; the first lookup still rebuilds
    # as the fill it was.
    s.write("v", rows([1], [1.5], [7.0], [70], ["z"]))
    later = r.get({"user_id": [1]}, as_of=at(2))
    assert later.to_dict()["x"] == [7.0] and later.statuses["x"][0] == Status.PRESENT
    r.close()
    report = s.check_skew()
    assert report.alerts == [], report.to_markdown()
    assert report.features["v:x"]["rows"] == 3 and report.features["tv:x_log1p"]["mismatches"] == 0
    s.log_served({"user_id": [1]}, {"v:x": [0.0], "v:n": [10]}, at(1.2), source="legacy")
    s.flush_logs()
    assert {a.feature for a in s.check_skew(source="legacy").alerts} == {"v:x"}
    text = str(s.explain("v:x", {"user_id": 1}, at(1.2)))
    assert "imputation of v:x: previous = 1.0" in text and "imputed by previous" in text
