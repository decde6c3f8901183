"""Online values carry a checksum (value layout 3, ``rust/src/online/value.rs``): a damaged value is a
StorageError naming the view in every read path and in the write path, never a served value."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from conftest import snapshot, user
from skewless import FeatureStore, FeatureView, Field, Float64
from skewless import String as StringT
from skewless.errors import StorageError
from skewless.online import OnlineStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
MARKER = "checksum-marker-value"
#: An event time unlikely to occur elsewhere in the data file, to find the stored value by.
STAMP = T0 + dt.timedelta(microseconds=123_457)
STAMP_US = 1_767_225_600_123_457


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), written from its definition: the oracle for the stored checksum."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_the_oracle_is_crc32c():
    assert crc32c(b"123456789") == 0xE3069283


def stored_store(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, FeatureView("v", [user], [Field("x_spend", Float64), Field("s", StringT)])])
    s.write("v", {"user_id": [7], "event_timestamp": pa.array([STAMP], TS), "x_spend": [2.5], "s": [MARKER]})
    return s


def find_value(path) -> tuple[int, int]:
    """(offset, length) of the one stored value of the store's view ``v`` in its data file."""
    blob = (path / "online" / "data.mdb").read_bytes()
    head = b"\x03\x00" + STAMP_US.to_bytes(8, "little", signed=True)
    assert blob.count(head) == 1
    start = blob.index(head)
    # header 18, validity 1, slots 8 + 4, the string, the checksum 4
    length = 18 + 1 + 12 + len(MARKER) + 4
    assert blob[start + length - 4 - len(MARKER) : start + length - 4] == MARKER.encode()
    return start, length


def schema_record(view_id: int) -> bytes:
    """The view's schema record (format 2, layout 3), built from its documented format."""
    out = bytes([2, 3]) + (1).to_bytes(2, "little") + (2).to_bytes(2, "little")
    for tag, name in [(4, "user_id"), (10, "x_spend"), (12, "s")]:
        out += bytes([tag]) + (0).to_bytes(4, "little") + len(name).to_bytes(2, "little") + name.encode()
        out += (0).to_bytes(2, "little")
    return out


def reads(s: FeatureStore, path) -> list:
    """Every read path, each built afresh (a reader resolves the view's schema once)."""
    return [
        lambda: OnlineStore(path / "online").reader("v").get([7]),
        lambda: OnlineStore(path / "online").reader("v", columns=["x_spend"]).get_numpy([7]),
        lambda: s.get_online_features(["v:x_spend", "v:s"], {"user_id": [7]}),
        lambda: s.online_reader(["v:x_spend"]).get_numpy([7]),
        lambda: s.online_reader(["v:x_spend", "v:s"]).get({"user_id": [7]}),
    ]


def flip_at(path, at: int, mask: int) -> None:
    fd = os.open(path / "online" / "data.mdb", os.O_RDWR)
    try:
        b = os.pread(fd, 1, at)[0]
        os.pwrite(fd, bytes([b ^ mask]), at)  # the map is shared: open readers see it at once
    finally:
        os.close(fd)


def test_new_views_store_values_in_layout_3_with_a_crc32c_of_record_key_and_body(tmp_path):
    stored_store(tmp_path)
    start, length = find_value(tmp_path)
    blob = (tmp_path / "online" / "data.mdb").read_bytes()
    value = blob[start : start + length]
    key = (1 << 63 | 7).to_bytes(8, "big")
    # The view id is the first one handed out; try the few small ids rather than assume which.
    crcs = {crc32c(schema_record(i) + i.to_bytes(4, "big") + key + value[:-4]) for i in range(4)}
    assert int.from_bytes(value[-4:], "little") in crcs
    assert blob.count(schema_record(0)) == 1


def test_every_flipped_byte_of_a_value_is_reported_by_every_read_and_write_path(tmp_path):
    s = stored_store(tmp_path)
    for read in reads(s, tmp_path):
        read()  # the intact value reads
    start, length = find_value(tmp_path)
    newer = {
        "user_id": [7],
        "event_timestamp": pa.array([STAMP + dt.timedelta(seconds=1)], TS),
        "x_spend": [9.0],
        "s": ["newer"],
    }
    for i in range(length):
        mask = 1 << (i % 8)
        flip_at(tmp_path, start + i, mask)
        for read in reads(s, tmp_path):
            with pytest.raises(StorageError, match='view "v"'):
                read()
        # The write path reads the stored stamp before replacing a value: it must not trust it either.
        before = snapshot(str(tmp_path))
        with pytest.raises(StorageError, match='view "v"'):
            s.write("v", newer)
        assert snapshot(str(tmp_path)) == before
        with pytest.raises(StorageError, match='view "v"'):
            s.materialize(None, FAR)
        flip_at(tmp_path, start + i, mask)  # undo
    assert s.get_online_features(["v:x_spend", "v:s"], {"user_id": [7]}).to_dict()["s"] == [MARKER]


def test_a_value_under_a_flipped_key_is_reported_not_served_for_the_other_key(tmp_path):
    s = stored_store(tmp_path)
    blob = (tmp_path / "online" / "data.mdb").read_bytes()
    key = (1 << 63 | 7).to_bytes(8, "big")
    assert blob.count(key) == 1
    flip_at(tmp_path, blob.index(key) + 7, 1)  # key 7 -> key 6
    with pytest.raises(StorageError, match='view "v"'):
        s.get_online_features(["v:x_spend"], {"user_id": [6]})
    with pytest.raises(StorageError, match='view "v"'):
        OnlineStore(tmp_path / "online").reader("v").get([6])
    # Key 7 is now absent: a missing value, not a wrong one.
    r = s.get_online_features(["v:x_spend"], {"user_id": [7]})
    assert r.to_dict()["x_spend"] == [None]


def test_a_schema_record_whose_column_kind_flipped_is_reported_not_decoded_as_that_kind(tmp_path):
    s = stored_store(tmp_path)
    blob = (tmp_path / "online" / "data.mdb").read_bytes()
    col = bytes([10]) + (0).to_bytes(4, "little") + (7).to_bytes(2, "little") + b"x_spend"
    assert blob.count(col) == 1
    flip_at(tmp_path, blob.index(col), 1)  # float64 (tag 10) -> bool (tag 11): same offsets, other meaning
    with pytest.raises(StorageError, match='view "v"'):
        OnlineStore(tmp_path / "online").reader("v").get([7])
    with pytest.raises(StorageError, match='view "v"'):
        OnlineStore(tmp_path / "online").reader("v", columns=["x_spend"]).get_numpy([7])
    with pytest.raises(StorageError, match='view "v"'):
        s.online_reader(["v:x_spend"]).get_numpy([7])


def test_a_damaged_value_length_reaching_past_the_file_is_reported_not_a_sigbus(tmp_path):
    # Found by scripts/fault_inject.py: the checksum read every byte LMDB's node said the value had, and a
    # flipped length reached past the end of data.mdb (SIGBUS). The value's own offsets are checked first.
    stored_store(tmp_path)
    blob = (tmp_path / "online" / "data.mdb").read_bytes()
    key = (1 << 63 | 7).to_bytes(8, "big")
    node = blob.index(key) - 4 - 8  # LMDB leaf node: size lo u16, size hi u16, flags, key size, key
    size = (
        int.from_bytes(blob[node : node + 2], "little")
        | int.from_bytes(blob[node + 2 : node + 4], "little") << 16
    )
    assert size == find_value(tmp_path)[1]
    # The value now claims 1 MiB more than it has. The flip lands after the store is open: opening a
    # damaged store refuses it before any read (rust/src/online/verify.rs, tests/test_lmdb_pages.py),
    # so this is the read path's own check, for damage that appears while a process has the store open.
    code = f"""
        import os
        from skewless.online import OnlineStore
        from skewless.errors import StorageError
        store = OnlineStore({str(tmp_path / "online")!r})
        fd = os.open({str(tmp_path / "online" / "data.mdb")!r}, os.O_RDWR)
        os.pwrite(fd, bytes([os.pread(fd, 1, {node + 2})[0] ^ (1 << 4)]), {node + 2})
        os.close(fd)
        try:
            store.reader("v").get([7])
        except StorageError as e:
            print("StorageError", 'view "v"' in str(e))
        """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "StorageError True"
