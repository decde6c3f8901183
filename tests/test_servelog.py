"""The served-feature log: what is recorded, bad input, the bounded queue, fork, exit, pruning, and the
history's write time (format version 3) next to older files."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skewless as sk
from conftest import snapshot
from skewless import errors
from skewless.offline import FORMAT_KEY, SEQ, WRITTEN
from skewless.servelog import KNOWN_AT, REQUEST_ID, SERVED_AT, ServeLog, segments

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def two_view_store(path):
    store = sk.FeatureStore(path)
    u = sk.Entity("user", join_keys=["user_id"], dtype=sk.Int64)
    m = sk.Entity("merchant", join_keys=["merchant_id"], dtype=sk.String)
    store.apply(
        [
            u,
            m,
            sk.FeatureView(
                "a", [u], [sk.Field("x", sk.Float64), sk.Field("k", sk.Int64)], ttl=dt.timedelta(days=3)
            ),
            sk.FeatureView("b", [m], [sk.Field("r", sk.Float64)]),
        ]
    )
    store.write(
        "a", {"user_id": [1, 2], "event_timestamp": pa.array([T0, T0], TS), "x": [0.5, None], "k": [3, 4]}
    )
    store.write("b", {"merchant_id": ["m1"], "event_timestamp": pa.array([T0], TS), "r": [0.25]})
    return store


def test_reader_logs_every_vector_with_status_versions_and_instants(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    feats = ["a:x", "a:k", "b:r"]
    with store.online_reader(feats, log=True) as r:
        r.get_numpy({"user_id": [1, 2, 9], "merchant_id": ["m1", "m1", "zz"]}, as_of=T0 + DAY)
        resp = r.get({"user_id": [1], "merchant_id": ["m1"]}, as_of=T0 + 5 * DAY)
    assert resp.statuses["x"].tolist() == [int(sk.Status.EXPIRED)]
    log = store.read_log()
    assert sorted(log) == sorted(feats)
    x = log["a:x"]
    assert x.column("user_id").to_pylist() == [1, 2, 9, 1]
    assert x.column("merchant_id").to_pylist() == ["m1", "m1", "zz", "m1"]
    assert x.column("a:x").to_pylist() == [0.5, None, None, None]  # a stored null, not found, expired
    assert x.column("a:x@status").to_pylist() == [0, 0, 1, 2]
    assert log["a:k"].column("a:k").to_pylist()[:3] == [3.0, 4.0, None]  # get_numpy logs float64
    assert log["a:k"].column("a:k").to_pylist()[3] is None
    assert log["b:r"].column("b:r").to_pylist() == [0.25, 0.25, None, 0.25]
    served = [v.isoformat() for v in x.column(SERVED_AT).to_pylist()]
    assert served == [(T0 + DAY).isoformat()] * 3 + [(T0 + 5 * DAY).isoformat()]
    assert x.column("version").to_pylist() == [1, 1, 1, 1]
    assert x.column("source").to_pylist() == ["online_reader"] * 4
    ids = x.column(REQUEST_ID).to_pylist()
    assert len(set(ids)) == 4
    now = dt.datetime.now(UTC)
    assert all(abs(k - now) < dt.timedelta(minutes=5) for k in x.column(KNOWN_AT).to_pylist())


def test_get_online_features_logs_and_served_at_of_the_clock(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    before = dt.datetime.now(UTC)
    resp = store.get_online_features(["a:x"], {"user_id": [1]}, log=True)
    store.get_online_features(["a:x"], {"user_id": [2]})  # not logged
    store.flush_logs()
    x = store.read_log()["a:x"]
    assert x.column("user_id").to_pylist() == [1]
    assert x.column(SERVED_AT).to_pylist() == [resp.served_at]
    assert resp.served_at >= before


def test_entity_rows_are_snapshotted(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    r = store.online_reader(["a:x"], log=True)
    keys = [1]
    arr = np.array([2])
    r.get_numpy(keys, as_of=T0)
    r.get_numpy(arr, as_of=T0)
    keys[0] = 7  # a caller reusing its buffers for the next request
    arr[0] = 8
    r.close()
    assert store.read_log()["a:x"].column("user_id").to_pylist() == [1, 2]


def test_log_served_forms_and_bad_input_writes_nothing(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    # b:r needs merchant_id: missing key.
    with pytest.raises(errors.MissingColumnError):
        store.log_served({"user_id": [1, 2]}, {"a:x": [1.0, 2.0], "b:r": [0.1, 0.2]}, T0)
    with pytest.raises(errors.UnknownFeatureError):
        store.log_served({"user_id": [1]}, {"a:nope": [1.0]}, T0)
    with pytest.raises(errors.InvalidArgumentError):
        store.log_served({"user_id": [1]}, {"x": [1.0]}, T0)
    with pytest.raises(errors.InvalidArgumentError):
        store.log_served({"user_id": [1, 2]}, {"a:x": [1.0]}, T0)
    with pytest.raises(errors.InvalidArgumentError):
        store.log_served({"user_id": [1, 2]}, {"a:x": [1.0, 2.0]}, pa.array([T0], TS))
    with pytest.raises(errors.NaiveTimestampError):
        store.log_served({"user_id": [1]}, {"a:x": [1.0]}, dt.datetime(2026, 1, 1))
    with pytest.raises(errors.InvalidArgumentError):
        store.log_served({"user_id": [1]}, {"a:x": ["high"]}, T0)
    assert store.serve_log.logged == 0 and len(store.serve_log.queue) == 0
    assert store.flush_logs() == 0 and store.read_log() == {}
    n = store.log_served(
        {"user_id": [1, 2], "merchant_id": ["m1", "m2"], "country": ["fr", "de"]},
        {"a:x": [1.0, 2.0], "b:r": [0.1, None]},
        pa.array([T0, T0 + DAY], TS),
        source="legacy",
        request_ids=["r1", "r2"],
        statuses={"a:x": [0, 1]},
    )
    assert n == 2
    store.flush_logs()
    log = store.read_log(source="legacy")
    assert log["a:x"].column(REQUEST_ID).to_pylist() == ["r1", "r2"]
    assert log["a:x"].column("a:x@status").to_pylist() == [0, 1]
    assert log["b:r"].column("b:r@status").to_pylist() == [None, None]
    assert log["a:x"].column("version").to_pylist() == [None, None]
    assert store.read_log(source="other") == {}


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    log = ServeLog(os.path.join(store.path, "logs"), capacity=4, interval=3600)
    store._serve_log = log
    r = store.online_reader(["a:x"], log=True)
    for _ in range(10):
        r.get_numpy([1], as_of=T0)
    assert (log.logged, log.dropped) == (4, 6)
    r.close()
    assert store.read_log()["a:x"].num_rows == 4


def test_forked_child_logs_its_own_rows_only(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    store = two_view_store(str(tmp_path / "s"))
    store._serve_log = ServeLog(str(tmp_path / "s" / "logs"), interval=3600)
    r = store.online_reader(["a:x"], log=True)
    for _ in range(3):
        r.get_numpy([1], as_of=T0)  # queued in the parent, not yet flushed
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            r.get_numpy([2], as_of=T0)
            r.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    r.close()
    users = sorted(store.read_log()["a:x"].column("user_id").to_pylist())
    assert users == [1, 1, 1, 2]  # the parent's three once, the child's one
    tokens = {os.path.basename(p).split("-")[3] for _, _, p in segments(str(tmp_path / "s" / "logs"))}
    assert len(tokens) == 2


def test_interpreter_exit_flushes(tmp_path):
    path = str(tmp_path / "s")
    two_view_store(path)
    code = textwrap.dedent(
        f"""
        import datetime as dt, skewless as sk
        s = sk.FeatureStore({path!r})
        s._serve_log = None
        from skewless.servelog import ServeLog
        s._serve_log = ServeLog(s.path + "/logs", interval=3600)
        r = s.online_reader(["a:x"], log=True)
        r.get_numpy([1, 2], as_of=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert sk.FeatureStore(path).read_log()["a:x"].column("user_id").to_pylist() == [1, 2]


def test_prune_logs(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    store.log_served({"user_id": [1]}, {"a:x": [1.0]}, T0)
    store.flush_logs()
    store.log_served({"user_id": [2]}, {"a:x": [1.0]}, T0 + 10 * DAY)
    store.flush_logs()
    stale = os.path.join(store.path, "logs", ".tmp-dead.arrow")
    open(stale, "wb").close()
    os.utime(stale, (0, 0))
    assert store.prune_logs(before=T0 + DAY) == 1
    assert store.read_log()["a:x"].column("user_id").to_pylist() == [2]
    assert not os.path.exists(stale)
    with pytest.raises(errors.NaiveTimestampError):
        store.prune_logs(before=dt.datetime(2026, 1, 1))


def test_a_damaged_segment_is_a_storage_error_naming_it(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    store.log_served({"user_id": [1]}, {"a:x": [1.0]}, T0)
    store.flush_logs()
    ((_, _, p),) = segments(os.path.join(store.path, "logs"))
    with open(p, "r+b") as f:
        f.truncate(40)
    with pytest.raises(errors.StorageError, match=os.path.basename(p)):
        store.read_log()


def test_history_records_write_time_and_old_files_still_read(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    folder = os.path.join(store.path, "offline", "a")
    (f,) = os.listdir(folder)
    t = pq.read_table(os.path.join(folder, f))
    assert t.column_names[-2:] == [SEQ, WRITTEN]
    assert pq.read_schema(os.path.join(folder, f)).metadata[FORMAT_KEY] == b"3"
    w = t.column(WRITTEN).to_pylist()
    now_us = int(dt.datetime.now(UTC).timestamp() * 1e6)
    assert len(set(w)) == 1 and abs(w[0] - now_us) < 300e6
    # A version 2 file (no write time) next to it: every read works, and compaction keeps both.
    v2 = t.drop_columns([WRITTEN]).replace_schema_metadata({FORMAT_KEY: b"2"})
    v2 = v2.set_column(v2.schema.get_field_index(SEQ), SEQ, pa.array([(2 << 32) | i for i in range(2)]))
    pq.write_table(v2, os.path.join(folder, "part-000000000002.parquet"))
    assert store.read_history("a").num_rows == 4
    store.write("a", {"user_id": [3], "event_timestamp": pa.array([T0], TS), "x": [1.0], "k": [1]})
    store.compact("a")
    (c,) = os.listdir(folder)
    assert sorted(pq.read_table(os.path.join(folder, c)).column(WRITTEN).to_pylist(), key=str)[-2:] == [
        None,
        None,
    ]
    labels = {"user_id": [1, 3], "event_timestamp": pa.array([T0, T0], TS)}
    assert store.get_historical_features(labels, ["a:x"]).column("x").to_pylist() == [0.5, 1.0]


def test_checking_writes_nothing_to_the_store(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    store.log_served({"user_id": [1]}, {"a:x": [0.5]}, T0)
    store.flush_logs()
    before = snapshot(store.path)
    assert store.check_skew().alerts == []
    assert snapshot(store.path) == before


def test_a_refused_lookup_logs_nothing(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    r = store.online_reader(["a:x"], log=True)
    with pytest.raises(errors.NaiveTimestampError):
        r.get_numpy([1], as_of=dt.datetime(2026, 1, 1))
    with pytest.raises(errors.DtypeError):
        r.get_numpy(["not an int"], as_of=T0)
    with pytest.raises(errors.DtypeError):
        r.get({"user_id": ["x"]}, as_of=T0)
    with pytest.raises(errors.InvalidArgumentError):
        store.online_reader(["a:x"], log="yes")
    r.close()
    assert store.serve_log.logged == 0 and store.read_log() == {}


def test_a_failed_flush_is_counted_and_serving_goes_on(tmp_path):
    store = two_view_store(str(tmp_path / "s"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store._serve_log = ServeLog(str(blocker / "logs"), interval=3600)
    r = store.online_reader(["a:x"], log=True)
    assert r.get_numpy([1], as_of=T0)[0].tolist() == [[0.5]]
    assert store.flush_logs() == 0
    log = store.serve_log
    assert (log.failed, log.segments) == (1, 0) and isinstance(log.last_error, errors.StorageError)
    assert r.get_numpy([1], as_of=T0)[0].tolist() == [[0.5]]
