"""History files' footer statistics (min/max), which time-filtered reads prune row groups by, are
checked against the bounds the file recorded under a CRC when it was written (``skewless.bounds``, see
``skewless.offline``): a flipped statistic is a StorageError naming the file, never a skipped row group."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import snapshot
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, offline
from skewless.errors import StorageError

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
user = Entity("user", join_keys=["user_id"], dtype=Int64)
N, GROUP = 3000, 1000


def store_with_row_groups(tmp_path, monkeypatch) -> tuple[FeatureStore, str]:
    """One history file of three row groups; row i is user i at second i."""
    monkeypatch.setattr(offline, "ROW_GROUP", GROUP)
    s = FeatureStore(tmp_path)
    s.apply([user, FeatureView("v", [user], [Field("x", Float64)], ttl=dt.timedelta(hours=1))])
    ts = [T0 + dt.timedelta(seconds=i) for i in range(N)]
    s.write(
        "v",
        {"user_id": list(range(N)), "event_timestamp": pa.array(ts, TS), "x": [float(i) for i in range(N)]},
    )
    (path,) = (tmp_path / "offline" / "v").glob("part-*.parquet")
    assert pq.read_metadata(path).num_row_groups == N // GROUP
    return s, str(path)


def micros(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def rewrite_footer_value(path: str, old: int, new: int) -> int:
    """Replace every 8-byte little-endian ``old`` in the footer by ``new`` (as a flipped statistic
    would read); returns how many were replaced."""
    blob = bytearray(open(path, "rb").read())
    start = len(blob) - 8 - int.from_bytes(blob[-8:-4], "little")
    a, b = old.to_bytes(8, "little", signed=True), new.to_bytes(8, "little", signed=True)
    footer = bytes(blob[start:])
    n = footer.count(a)
    blob[start:] = footer.replace(a, b)
    open(path, "wb").write(bytes(blob))
    return n


def test_new_history_files_record_their_row_group_bounds(tmp_path, monkeypatch):
    _, path = store_with_row_groups(tmp_path, monkeypatch)
    meta = pq.read_metadata(path).metadata
    assert offline.BOUNDS_KEY in meta


def test_a_flipped_max_statistic_is_reported_not_pruned(tmp_path, monkeypatch):
    s, path = store_with_row_groups(tmp_path, monkeypatch)
    # Row group 0 holds seconds 0..999; its max statistic now says it ends before any label.
    assert rewrite_footer_value(path, micros(T0 + dt.timedelta(seconds=GROUP - 1)), micros(T0) - 1) >= 1
    before = snapshot(str(tmp_path))
    labels = {"user_id": [10, 1500], "event_timestamp": pa.array([T0 + dt.timedelta(seconds=1600)] * 2, TS)}
    name = os.path.basename(path)
    with pytest.raises(StorageError, match=name):
        s.get_historical_features(labels, ["v:x"])
    with pytest.raises(StorageError, match=name):
        s.materialize(T0 + dt.timedelta(seconds=500), T0 + dt.timedelta(seconds=2000))
    with pytest.raises(StorageError, match=name):
        s.write("v", {"user_id": [1], "event_timestamp": pa.array([T0], TS), "x": [1.0]})
    assert snapshot(str(tmp_path)) == before


def test_a_flipped_sequence_statistic_is_reported_not_used_to_order_files(tmp_path, monkeypatch):
    s, path = store_with_row_groups(tmp_path, monkeypatch)
    first_seq = 1 << 32  # file 1, row 0
    assert rewrite_footer_value(path, first_seq, first_seq + (5 << 32)) >= 1
    with pytest.raises(StorageError, match=os.path.basename(path)):
        s.materialize(None, T0 + dt.timedelta(days=1))


def test_intact_files_and_files_without_bounds_read_as_before(tmp_path, monkeypatch):
    s, path = store_with_row_groups(tmp_path, monkeypatch)
    labels = {"user_id": [10, 1500], "event_timestamp": pa.array([T0 + dt.timedelta(seconds=1600)] * 2, TS)}
    assert s.get_historical_features(labels, ["v:x"]).to_pydict()["x"] == [10.0, 1500.0]
    # A file written before bounds were recorded (drop the record): statistics are taken as they are.
    t = pq.read_table(path)
    meta = {k: v for k, v in (t.schema.metadata or {}).items() if k != offline.BOUNDS_KEY}
    pq.write_table(t.replace_schema_metadata(meta), path, row_group_size=GROUP, write_page_checksum=True)
    assert offline.BOUNDS_KEY not in pq.read_metadata(path).metadata
    assert FeatureStore(tmp_path).get_historical_features(labels, ["v:x"]).to_pydict()["x"] == [10.0, 1500.0]
