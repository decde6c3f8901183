"""Damage in LMDB's own B-tree pages (no checksums there) is refused when the store is opened, never a
crash of the reading process: rust/src/online/verify.rs walks every page first. Found by
scripts/fault_inject.py (1 of 75 online flips: SIGBUS in LMDB's node search); each reader below runs in
its own process, since before the fix the damage killed it with a signal."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from conftest import snapshot, user
from skewless import FeatureStore, FeatureView, Field, Float64
from skewless.errors import StorageError
from skewless.online import OnlineStore

_spec = importlib.util.spec_from_file_location(
    "btree_flips", os.path.join(os.path.dirname(__file__), "..", "scripts", "btree_flips.py")
)
assert _spec is not None and _spec.loader is not None
btree_flips = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(btree_flips)

KEYS = 1000
PAGE = btree_flips.PAGE


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("btree") / "online")
    btree_flips.build(path, KEYS)
    return path


def data_of(path) -> bytes:
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return f.read()


def pages(data: bytes, kind: int) -> list[int]:
    """Page numbers of the branch (1) or leaf (2) pages."""
    out = []
    for pgno in range(2, len(data) // PAGE):
        (stored,) = struct.unpack_from("<Q", data, pgno * PAGE)
        (flags,) = struct.unpack_from("<H", data, pgno * PAGE + 10)
        if stored == pgno and flags & 0x0F == kind:
            out.append(pgno)
    return out


def leaf_of(data: bytes, k: int) -> int:
    """The page number of the one leaf holding key ``k`` of view ``v``."""
    key = (1 << 63 | k).to_bytes(8, "big")
    assert data.count(key) == 1
    return data.index(key) // PAGE


def damaged_copy(pristine: str, tmp_path, edits: dict[int, bytes]) -> str:
    path = str(tmp_path / "online")
    os.makedirs(path)
    blob = bytearray(data_of(pristine))
    for at, b in edits.items():
        blob[at : at + len(b)] = b
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(blob)
    return path


def read_in_child(path: str) -> str:
    """Reads every key in a new process: 'StorageError: ...', 'ok', or how the process died."""
    code = f"""
        from skewless.online import OnlineStore
        from skewless.errors import StorageError
        try:
            OnlineStore({path!r}).reader("v").get(list(range({KEYS})))
            print("ok")
        except StorageError as e:
            print("StorageError:", e)
        """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    if r.returncode != 0:
        return f"died: {r.returncode} {r.stderr[-500:]}"
    return r.stdout.strip()


def test_a_node_offset_reaching_past_the_end_of_the_file_is_reported_not_a_sigbus(pristine, tmp_path):
    data = data_of(pristine)
    (root,) = pages(data, 1)  # the data's one branch page: every lookup searches it
    assert len(data) - root * PAGE < 0xFFF0  # so the offset below lands past the end of the file
    lower = struct.unpack_from("<H", data, root * PAGE + 12)[0]
    middle = (lower - 16) // 2 // 2  # the binary search's first probe
    path = damaged_copy(pristine, tmp_path, {root * PAGE + 16 + 2 * middle: struct.pack("<H", 0xFFF0)})
    out = read_in_child(path)
    assert out.startswith("StorageError:"), out
    assert "materialize" in out and f"page {root}" in out


def test_a_leaf_node_flagged_as_holding_duplicates_is_reported_not_a_sigsegv(pristine, tmp_path):
    # F_DUPDATA (0x04) on a database without duplicates: LMDB follows a sub-cursor it never made (null).
    data = data_of(pristine)
    key = (1 << 63 | 7).to_bytes(8, "big")
    assert data.count(key) == 1
    flags = data.index(key) - 4 - 4  # node: lo, hi, flags, ksize, then the key (view prefix, key)
    path = damaged_copy(pristine, tmp_path, {flags: struct.pack("<H", 0x04)})
    out = read_in_child(path)
    assert out.startswith("StorageError:"), out
    assert "flags 0x4" in out


def test_a_branch_child_outside_the_file_and_a_wrong_page_kind_are_reported(pristine, tmp_path):
    data = data_of(pristine)
    (root,) = pages(data, 1)
    first = struct.unpack_from("<H", data, root * PAGE + 16)[0]
    cases = {
        "outside the file": {root * PAGE + first + 4: struct.pack("<H", 0x7FFF)},  # child pgno bits 32..47
        "kind": {leaf_of(data, 7) * PAGE + 10: struct.pack("<H", 0x01)},  # a leaf marked a branch
        "header says page": {leaf_of(data, 7) * PAGE: struct.pack("<Q", 3)},
    }
    for i, (what, edits) in enumerate(cases.items()):
        (tmp_path / str(i)).mkdir()
        out = read_in_child(damaged_copy(pristine, tmp_path / str(i), edits))
        assert out.startswith("StorageError:") and what in out, (what, out)


def test_every_sampled_flip_of_a_structural_byte_is_reported_or_harmless(pristine):
    # A sample of scripts/btree_flips.py's sweep (every 9th structural byte, all 8 bits; the script runs
    # all of them): before the fix, some of these killed the reader (see the README's Reliability).
    positions = btree_flips.structural_positions(data_of(pristine))[::9]
    flips = [(at, bit) for at, _ in positions for bit in range(8)]
    outcomes = btree_flips.sweep(pristine, KEYS, flips)
    bad = [(f, o) for f, o in zip(flips, outcomes, strict=True) if o not in btree_flips.OK]
    assert not bad, bad[:10]
    assert outcomes.count("reported") > len(flips) // 2


def test_a_damaged_store_is_refused_on_open_by_every_entry_point_and_left_unchanged(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    ts = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 3, pa.timestamp("us", tz="UTC"))
    s.write("v", {"user_id": [1, 2, 3], "event_timestamp": ts, "x": [1.0, 2.0, 3.0]})
    online = str(tmp_path / "online")
    data = data_of(online)
    leaf = leaf_of(data, 2)
    code = f"""
        import datetime, os
        from skewless import FeatureStore
        from skewless.online import OnlineStore
        from skewless.errors import StorageError
        fd = os.open({os.path.join(online, "data.mdb")!r}, os.O_RDWR)
        os.pwrite(fd, (0xFFFF).to_bytes(2, "little"), {leaf * PAGE + 12})  # lower: thousands of nodes
        os.close(fd)
        s = FeatureStore({str(tmp_path)!r})
        T = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
        for call in (
            lambda: s.get_online_features(["v:x"], {{"user_id": [2]}}),
            lambda: s.online_reader(["v:x"]).get_numpy([2]),
            lambda: OnlineStore({online!r}).views(),
            lambda: s.write("v", {{"user_id": [4], "event_timestamp": [T], "x": [4.0]}}),
        ):
            try:
                call()
                print("served")
            except StorageError as e:
                print("materialize" in str(e) and "damaged" in str(e))
        """
    before = {k: v for k, v in snapshot(str(tmp_path)).items() if not k.startswith("online")}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True"] * 4, r.stdout
    # Nothing was written: the history and registry as before, the online data file only as damaged.
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("online")} == before
    damaged = bytearray(data)
    damaged[leaf * PAGE + 12 : leaf * PAGE + 14] = (0xFFFF).to_bytes(2, "little")
    assert data_of(online) == bytes(damaged)


def test_verify_counts_the_pages_and_entries_of_a_healthy_store(pristine):
    got = OnlineStore(pristine).verify()
    data = data_of(pristine)
    assert got["branch_pages"] >= 1 and got["overflow_pages"] == 0
    # Data entries, plus the metadata records and the two database records.
    assert got["entries"] > KEYS
    assert got["leaf_pages"] + got["branch_pages"] <= len(data) // PAGE - 2


def test_damage_after_open_is_found_by_verify(tmp_path, pristine):
    path = damaged_copy(pristine, tmp_path, {})
    store = OnlineStore(path)
    leaf = leaf_of(data_of(path), 7)
    fd = os.open(os.path.join(path, "data.mdb"), os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<H", 16), leaf * PAGE + 14)  # upper below lower
    finally:
        os.close(fd)
    with pytest.raises(StorageError, match=f"page {leaf}: lower \\d+, upper 16\\)"):
        store.verify()


def test_the_verify_command_reports_a_healthy_store_and_exits_2_on_damage(tmp_path, capsys):
    from skewless.cli import main

    s = FeatureStore(tmp_path)
    assert main(["--store", str(tmp_path), "verify"]) == 0
    assert json.loads(capsys.readouterr().out) == {"online": "absent"}
    s.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    ts = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 2, pa.timestamp("us", tz="UTC"))
    s.write("v", {"user_id": [1, 2], "event_timestamp": ts, "x": [1.0, 2.0]})
    code = f"""
        import os, sys
        from skewless.cli import main
        print(main(["--store", {str(tmp_path)!r}, "verify"]), flush=True)
        data = os.path.join({str(tmp_path)!r}, "online", "data.mdb")
        blob = open(data, "rb").read()
        at = blob.index((1 << 63 | 2).to_bytes(8, "big")) - 4 - 4  # key 2 node flags (view id, key size)
        fd = os.open(data, os.O_RDWR)
        os.pwrite(fd, bytes([blob[at] | 0x04]), at)
        os.close(fd)
        """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    first, healthy = r.stdout.splitlines()
    assert json.loads(first)["online"] == "ok" and healthy == "0"
    r = subprocess.run(
        [sys.executable, "-m", "skewless.cli", "--store", str(tmp_path), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "StorageError" in r.stderr and "damaged" in r.stderr and "materialize" in r.stderr
