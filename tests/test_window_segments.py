"""Window state format v2 (entities packed into segments, rust/src/window/segment.rs): damage in a
segment's head or in one entity's record is a typed StorageError, never a wrong value; the entities whose
bytes are whole are still served, equal to the offline values; materialize repairs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import skewless as sk

TS = pa.timestamp("us", tz="UTC")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
USER = sk.Entity("user", dtype=sk.Int64)
AGGS = [sk.Aggregation("x", "sum", "1h"), sk.Aggregation("x", "count", "1h")]
FEATS = ["ev:x_sum_1h", "ev:x_count_1h"]
USERS = [1, 2, 3, 4, 5]
AT = EPOCH + dt.timedelta(seconds=100)

# In a child process (its own LMDB environment, read only and without the lock file, whose format
# py-lmdb's LMDB does not share): finds the view's one segment (the only value whose first byte is the
# segment format version 2; the other values are latest-value records, layout 3) and prints its entity
# count and the file offset of the byte to damage. WHERE: "head" (the count byte) or "record:<i>" (the
# middle of entity i's record, from the segment's directory).
FIND = """
import lmdb, struct, sys
env = lmdb.open(sys.argv[1], max_dbs=4, lock=False, readonly=True)
data = env.open_db(b"__skewless_data__", create=False)
with env.begin() as t:
    segs = [bytes(v) for _, v in t.cursor(db=data) if v[:1] == b"\x02"]
assert len(segs) == 1, len(segs)
v = segs[0]
n = struct.unpack_from("<H", v, 1)[0]
if sys.argv[2] == "head":
    at = 1
else:
    i = int(sys.argv[2].split(":")[1])
    key_end = struct.unpack_from("<H", v, 3 + 2 * (n - 1))[0]
    rec_ends = [0] + [struct.unpack_from("<I", v, 3 + 2 * n + 4 * j)[0] for j in range(n)]
    recs = 3 + 6 * n + key_end + 4
    at = recs + (rec_ends[i] + rec_ends[i + 1]) // 2
blob = open(sys.argv[1] + "/data.mdb", "rb").read()
assert blob.count(v) == 1
print(n, blob.index(v) + at)
"""


def flip(path: Path, where: str) -> int:
    """Flips one bit of the view's segment in the data file (the map is shared: open readers see it at
    once); returns the segment's entity count."""
    out = subprocess.run(
        [sys.executable, "-c", FIND, str(path / "online"), where], check=True, capture_output=True, text=True
    )
    n, at = (int(x) for x in out.stdout.split())
    fd = os.open(path / "online" / "data.mdb", os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0x10]), at)
    finally:
        os.close(fd)
    return n


def new_store(path: Path) -> sk.FeatureStore:
    s = sk.FeatureStore(str(path))
    s.apply([USER, sk.FeatureView("ev", [USER], [sk.Field("x", sk.Float64)], aggregations=AGGS)])
    s.push(
        "ev",
        {
            "user_id": pa.array(USERS * 2, pa.int64()),
            "event_timestamp": pa.array([10_000_000 * (1 + i) for i in range(10)], TS),
            "x": pa.array([float(i) for i in range(10)]),
        },
    )
    return s


def batch(users: list[int], sec: int, xs: list[float]) -> dict:
    return {
        "user_id": pa.array(users, pa.int64()),
        "event_timestamp": pa.array([sec * 1_000_000] * len(users), TS),
        "x": xs,
    }


def one(s: sk.FeatureStore, user: int) -> list:
    r = s.get_online_features(FEATS, {"user_id": [user]}, as_of=AT).to_dict()
    return [r["x_sum_1h"][0], r["x_count_1h"][0]]


def offline(s: sk.FeatureStore, user: int) -> list:
    labels = pa.table({"user_id": pa.array([user], pa.int64()), "event_timestamp": pa.array([AT], TS)})
    r = s.get_historical_features(labels, FEATS).to_pydict()
    return [r["x_sum_1h"][0], r["x_count_1h"][0]]


def test_damage_in_a_segment_head_is_a_storage_error_for_every_entity_it_holds(tmp_path):
    s = new_store(tmp_path)
    assert [one(s, u) for u in USERS] == [offline(s, u) for u in USERS]
    assert flip(tmp_path, "head") == len(USERS), "the view's five entities share one segment"
    for u in USERS:
        with pytest.raises(sk.errors.StorageError, match="materialize"):
            one(s, u)
    # A push that must rewrite the segment refuses too, and writes nothing.
    with pytest.raises(sk.errors.StorageError, match="materialize"):
        s.push("ev", batch([3], 95, [1.0]))
    with pytest.raises(sk.errors.StorageError):
        one(s, 1)
    s.materialize(None, AT + dt.timedelta(seconds=1))  # end exclusive: the event at AT included
    assert [one(s, u) for u in USERS] == [offline(s, u) for u in USERS]
    assert one(s, 3) == [2.0 + 7.0, 2], "the refused push wrote nothing, its history neither"


def test_damage_in_one_record_fails_that_entity_and_serves_the_others_whole(tmp_path):
    s = new_store(tmp_path)
    want = {u: offline(s, u) for u in USERS}
    flip(tmp_path, "record:1")  # the second entity, user 2
    with pytest.raises(sk.errors.StorageError, match="materialize"):
        one(s, 2)
    for u in [1, 3, 4, 5]:
        assert one(s, u) == want[u]
    # A push touching only whole entities copies the damaged record as bytes: still refused when read.
    s.push("ev", batch([4], 96, [2.0]))
    assert one(s, 4) == offline(s, 4) == [3.0 + 8.0 + 2.0, 3]
    with pytest.raises(sk.errors.StorageError):
        one(s, 2)
    # A push merging into the damaged record refuses, and writes nothing.
    with pytest.raises(sk.errors.StorageError, match="materialize"):
        s.push("ev", batch([2, 5], 97, [1.0, 1.0]))
    assert one(s, 5) == want[5]
    s.materialize(None, AT + dt.timedelta(seconds=1))  # end exclusive: the event at AT included
    assert [one(s, u) for u in USERS] == [offline(s, u) for u in USERS]
