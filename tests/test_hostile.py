"""What a hostile user (or a crash, a full disk, a flipped bit) does to a store: every case raises a typed
error and leaves the store as it was, or gives the right answer (issue 9)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
from skewless.errors import DtypeError, InvalidArgumentError, RegistryError, StorageError

# pyarrow before 26 cannot read a null Array row back from Parquet; skewless then refuses to write one.
NULL_ARRAYS_UNREADABLE = int(pa.__version__.split(".")[0]) < 26

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
user = Entity("user", join_keys=["user_id"], dtype=Int64)


def rows(n: int = 3, start: int = 0) -> dict:
    return {
        "user_id": list(range(start, start + n)),
        "event_timestamp": pa.array([T0] * n, TS),
        "x": [float(i) for i in range(start, start + n)],
    }


def view(name: str = "v", **kw) -> FeatureView:
    return FeatureView(name, [user], [Field("x", Float64)], **kw)


# ---- item 9: a crafted registry cannot lead the store outside its folder ------------------------------


def craft_registry(store_path: str, rename: dict[str, str]) -> None:
    """Re-file registry entries under other keys, as a hand-edited or malicious registry.json would."""
    p = os.path.join(store_path, "registry.json")
    with open(p) as f:
        data = json.load(f)
    for old, new in rename.items():
        for kind in ("entities", "feature_views", "feature_services"):
            if old in data[kind]:
                data[kind][new] = data[kind].pop(old)
    with open(p, "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("key", ["../../OUTSIDE", "../x", "/abs", "a/b", "v\n", "x" * 300, "stats"])
def test_crafted_registry_key_is_refused_on_load(tmp_path, key):
    store = tmp_path / "store"
    s = FeatureStore(store)
    s.apply([user, view()])
    craft_registry(str(store), {"v": key})
    before = snapshot(str(tmp_path))
    with pytest.raises(RegistryError, match="registry"):
        FeatureStore(store).write(key, rows())
    # An open store that sees the file change refuses too.
    with pytest.raises(RegistryError):
        s.write(key, rows())
    assert snapshot(str(tmp_path)) == before


def test_crafted_registry_cannot_make_compact_unlink_outside(tmp_path):
    store = tmp_path / "a" / "b" / "store"
    s = FeatureStore(store)
    s.apply([user, view()])
    # Files an attacker would like removed: part-*.parquet in a folder outside the store.
    victim = tmp_path / "OUTSIDE"
    victim.mkdir()
    pq.write_table(pa.table({"x": [1]}), victim / "part-000000000001.parquet")
    craft_registry(str(store), {"v": "../../../../OUTSIDE"})
    before = snapshot(str(tmp_path))
    with pytest.raises(RegistryError):
        FeatureStore(store).compact("../../../../OUTSIDE")
    assert snapshot(str(tmp_path)) == before


def test_offline_folder_refuses_a_name_that_leaves_the_store(tmp_path):
    from skewless.offline import OfflineStore

    off = OfflineStore(str(tmp_path / "offline"))
    with pytest.raises(InvalidArgumentError):
        off.append("../escape", pa.table({"x": [1]}))
    assert not (tmp_path / "escape").exists()


def test_view_name_over_the_length_limit_is_refused_by_the_definition():
    with pytest.raises(InvalidArgumentError, match="at most 200"):
        view("v" * 256)


def test_registry_state_with_a_crafted_name_is_refused(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    p = tmp_path / "registry.json"
    data = json.loads(p.read_text())
    data["state"]["materialized"]["../x"] = 0
    p.write_text(json.dumps(data))
    with pytest.raises(RegistryError):
        FeatureStore(tmp_path)


# ---- item 5: a relative source= is relative to the store, and a source with no file is an error --------


def test_relative_source_resolves_against_the_store_not_the_cwd(tmp_path, monkeypatch):
    store = tmp_path / "store"
    (store / "src").mkdir(parents=True)
    pq.write_table(pa.table(rows()), store / "src" / "part-0.parquet")
    s = FeatureStore(store)
    s.apply([user, view(source="src")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s2 = FeatureStore(store)
    assert s2.materialize(None, T0 + DAY) == {"v": 3}
    labels = {"user_id": [1], "event_timestamp": pa.array([T0], TS)}
    assert s2.get_historical_features(labels, ["v:x"]).column("x").to_pylist() == [1.0]


@pytest.mark.parametrize("source", ["missing", "missing/*.parquet", "empty_dir"])
def test_source_that_matches_no_file_is_an_error(tmp_path, source):
    (tmp_path / "empty_dir").mkdir()
    s = FeatureStore(tmp_path)
    s.apply([user, view(source=source)])
    before = snapshot(str(tmp_path))
    with pytest.raises(StorageError, match="matches no Parquet file"):
        s.materialize(None, T0 + DAY)
    labels = {"user_id": [1], "event_timestamp": pa.array([T0], TS)}
    with pytest.raises(StorageError, match="matches no Parquet file"):
        s.get_historical_features(labels, ["v:x"])
    with pytest.raises(StorageError, match="matches no Parquet file"):
        s.read_history("v")
    assert snapshot(str(tmp_path)) == before


def test_demo_store_reads_its_source_from_another_directory(tmp_path, monkeypatch):
    from skewless.demo import run

    monkeypatch.chdir(tmp_path)
    run("demo", events=3000, say=lambda *_: None)
    monkeypatch.chdir(tmp_path / "demo")  # any directory but the one the demo ran in
    s = FeatureStore(tmp_path / "demo")
    n = s.materialize(None, dt.datetime.now(dt.timezone.utc), ["merchant_risk"])
    assert n["merchant_risk"] > 0


def run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


# ---- item 8: a truncated data.mdb is a StorageError, not a SIGBUS ------------------------------------


def test_truncated_online_data_file_raises_storage_error_not_sigbus(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows(20_000))
    data = tmp_path / "online" / "data.mdb"
    size = data.stat().st_size
    del s
    # The write above ran in this process, whose cached environment stays open: truncate and read in a
    # fresh process, where a SIGBUS would show as a signal exit instead of killing pytest.
    os.truncate(data, size // 2)
    r = run_child(
        f"""
        from skewless import FeatureStore
        from skewless.errors import StorageError
        s = FeatureStore({str(tmp_path)!r})
        try:
            s.online_reader(["v:x"]).get_numpy([1, 2])
        except StorageError as e:
            assert "truncated" in str(e), e
            print("StorageError")
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "StorageError"


# ---- item 6: history pages carry checksums; a damaged file is a StorageError naming it ----------------


def flip_in_page(path: str, column: str = "x", n: int = 64) -> None:
    """Flip ``n`` bytes in the middle of ``column``'s first column chunk (as disk rot would)."""
    md = pq.ParquetFile(path).metadata
    j = md.schema.to_arrow_schema().get_field_index(column)
    cc = md.row_group(0).column(j)
    first = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
    start = first + cc.total_compressed_size // 2
    with open(path, "r+b") as f:
        f.seek(start)
        b = bytearray(f.read(n))
        f.seek(start)
        f.write(bytes(x ^ 0x5A for x in b))


def history_store(tmp_path, n_files: int = 3):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    for i in range(n_files):
        s.write("v", rows(5000, start=i * 5000))
    files = sorted((tmp_path / "offline" / "v").glob("part-*.parquet"))
    return s, [str(p) for p in files]


def test_flipped_bytes_in_history_are_reported_naming_the_file_everywhere(tmp_path):
    s, files = history_store(tmp_path)
    flip_in_page(files[1])
    before = snapshot(str(tmp_path))
    name = os.path.basename(files[1])
    labels = {"user_id": [1, 7000], "event_timestamp": pa.array([T0, T0], TS)}
    with pytest.raises(StorageError, match=name):
        s.get_historical_features(labels, ["v:x"])
    with pytest.raises(StorageError, match=name):
        s.read_history("v")
    with pytest.raises(StorageError, match=name):
        s.materialize(None, T0 + DAY)
    with pytest.raises(StorageError, match=name) as e:
        s.compact("v")
    assert "nothing was compacted" in str(e.value)
    assert snapshot(str(tmp_path)) == before


def test_write_refuses_to_append_behind_a_history_whose_footer_is_damaged(tmp_path):
    s, files = history_store(tmp_path, 2)
    with open(files[0], "r+b") as f:  # the footer length, in the last 8 bytes
        f.seek(-8, os.SEEK_END)
        f.write(b"\xff\xff\xff\x7f")
    before = snapshot(str(tmp_path))
    with pytest.raises(StorageError, match=os.path.basename(files[0])) as e:
        FeatureStore(tmp_path).write("v", rows(1, start=99))
    assert "nothing was written" in str(e.value)
    assert snapshot(str(tmp_path)) == before


def test_history_written_without_checksums_still_reads(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    folder = tmp_path / "offline" / "v"
    folder.mkdir(parents=True)
    # A file as the store wrote it before page checksums (history format version 1).
    table = pa.table({"user_id": [1, 2], "event_timestamp": pa.array([T0, T0], TS), "x": [1.0, 2.0]})
    pq.write_table(table, folder / "part-000000000001.parquet", write_page_checksum=False)
    s.write("v", rows(1, start=5))
    assert s.read_history("v").column("x").to_pylist() == [1.0, 2.0, 5.0]  # write order
    assert s.compact("v") == 3


def test_history_files_carry_page_checksums(tmp_path):
    _, files = history_store(tmp_path, 1)
    flip_in_page(files[0], n=1)
    # pyarrow itself, verifying checksums, refuses the file: the checksums are there.
    with pytest.raises(OSError, match="CRC"):
        pq.ParquetFile(files[0], page_checksum_verification=True).read()


# ---- item 7: union value columns in asof_join -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "sparse", "nested"])
def test_asof_join_refuses_union_value_columns(mode):
    import skewless

    types = pa.array([0, 1], pa.int8())
    if mode == "dense":
        u = pa.UnionArray.from_dense(types, pa.array([0, 0], pa.int32()), [pa.array([1]), pa.array(["a"])])
    else:
        u = pa.UnionArray.from_sparse(types, [pa.array([1, 2]), pa.array(["a", "b"])])
    if mode == "nested":
        u = pa.StructArray.from_arrays([u], ["u"])
    left = pa.table({"t": pa.array([0, 5], pa.int64())})
    right = pa.table({"t": pa.array([1, 2], pa.int64()), "v": u})
    with pytest.raises(DtypeError, match="union"):
        skewless.asof_join(left, right, on="t")


# ---- item 1: a null element inside an Array feature ----------------------------------------------------


def test_null_element_inside_an_array_is_refused_by_write(tmp_path):
    from skewless import Array, Float32

    fv = FeatureView("emb", [user], [Field("e", Array(Float32, 2))])
    s = FeatureStore(tmp_path)
    s.apply([user, fv])
    before = snapshot(str(tmp_path))
    data = {
        "user_id": [1, 2],
        "event_timestamp": pa.array([T0, T0], TS),
        "e": pa.array([[1.0, 2.0], [1.0, None]], pa.list_(pa.float32(), 2)),
    }
    with pytest.raises(InvalidArgumentError, match="null element"):
        s.write("emb", data)
    assert snapshot(str(tmp_path)) == before
    # A whole null array is stored and served as null on both paths.
    data["e"] = pa.array([[1.0, 2.0], None], pa.list_(pa.float32(), 2))
    if NULL_ARRAYS_UNREADABLE:
        with pytest.raises(DtypeError, match="Upgrade pyarrow to 26"):
            s.write("emb", data)
        assert snapshot(str(tmp_path)) == before
        return
    s.write("emb", data)
    labels = {"user_id": [1, 2], "event_timestamp": pa.array([T0, T0], TS)}
    off = s.get_historical_features(labels, ["emb:e"]).column("e").to_pylist()
    on = s.get_online_features(["emb:e"], {"user_id": [1, 2]}, as_of=T0).to_dict()["e"]
    assert off == on == [[1.0, 2.0], None]


def test_online_store_refuses_a_null_element_inside_an_array(tmp_path):
    from skewless.online import OnlineStore

    o = OnlineStore(tmp_path)
    data = {
        "k": [1, 2],
        "ts": pa.array([T0, T0], TS),
        "e": pa.array([None, [1.0, None]], pa.list_(pa.float64(), 2)),
    }
    with pytest.raises(InvalidArgumentError, match="null element"):
        o.write("v", data, keys="k", timestamp="ts")
    assert o.views() == []


# ---- items 2, 3, 4: write validates under the lock, fixes key types first, and an error writes nothing --


def test_write_revalidates_under_the_lock_after_another_process_applies(tmp_path, monkeypatch):
    from skewless import String
    from skewless import store as store_mod

    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    real = store_mod.normalize_rows
    calls = []

    def racing(*a, **kw):
        out = real(*a, **kw)
        if not calls:  # between the unlocked check and the lock: another process changes the dtype
            other = FeatureStore(tmp_path)
            other.apply([FeatureView("v", [user], [Field("x", String)])])
        calls.append(1)
        return out

    monkeypatch.setattr(store_mod, "normalize_rows", racing)
    before = snapshot(str(tmp_path))
    data = {"user_id": [1], "event_timestamp": pa.array([T0], TS), "x": [3.5]}
    with pytest.raises(DtypeError):
        s.write("v", data)
    after = snapshot(str(tmp_path))
    after.pop("registry.json")
    before.pop("registry.json")
    assert after == before  # no history, no online rows
    monkeypatch.setattr(store_mod, "normalize_rows", real)
    s.write("v", {"user_id": [1], "event_timestamp": pa.array([T0], TS), "x": ["3.5"]})
    assert s.read_history("v").column("x").to_pylist() == ["3.5"]


def untyped_view():
    anyone = Entity("anyone")  # no dtype: the first write fixes it
    return anyone, FeatureView("u", [anyone], [Field("x", Float64)], online=False)


def test_key_types_are_in_the_registry_before_any_row_lands(tmp_path, monkeypatch):
    from skewless.offline import OfflineStore

    anyone, fv = untyped_view()
    s = FeatureStore(tmp_path)
    s.apply([anyone, fv])
    seen = []
    real = OfflineStore.append

    def spy(self, view, table):
        # What a process killed at this instant leaves behind: the registry on disk.
        seen.append(json.loads((tmp_path / "registry.json").read_text())["state"]["key_dtypes"])
        return real(self, view, table)

    monkeypatch.setattr(OfflineStore, "append", spy)
    s.write("u", {"anyone_id": [1], "event_timestamp": pa.array([T0], TS), "x": [1.0]})
    assert seen == [{"anyone": ["Int64"]}]


@pytest.mark.parametrize("fail", ["registry", "history", "online"])
def test_a_first_write_that_fails_anywhere_writes_nothing(tmp_path, monkeypatch, fail):
    from skewless.offline import OfflineStore
    from skewless.online import OnlineStore
    from skewless.registry import Registry

    anyone = Entity("anyone")
    fv = FeatureView("u", [anyone], [Field("x", Float64)])
    s = FeatureStore(tmp_path)
    s.apply([anyone, fv])
    s._online()  # the online folder exists before, as in a store already serving other views
    before = snapshot(str(tmp_path))

    def boom(*a, **kw):
        raise StorageError("No space left on device")

    target = {"registry": (Registry, "save"), "history": (OfflineStore, "append")}
    target["online"] = (OnlineStore, "write")
    monkeypatch.setattr(*target[fail], boom)
    with pytest.raises(StorageError):
        s.write("u", {"anyone_id": [1], "event_timestamp": pa.array([T0], TS), "x": [1.0]})
    monkeypatch.undo()
    assert snapshot(str(tmp_path)) == before
    # A retry after the failure writes the rows once.
    s.write("u", {"anyone_id": [1], "event_timestamp": pa.array([T0], TS), "x": [1.0]})
    assert s.read_history("u").num_rows == 1


# ---- errors that were untyped or said the wrong thing ----------------------------------------------------


def test_ttl_beyond_64_bit_microseconds_is_refused_by_the_definition():
    with pytest.raises(InvalidArgumentError, match="use None for no expiry"):
        view(ttl=dt.timedelta.max)


def test_label_near_the_start_of_time_with_a_ttl_matches_nothing(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view(ttl=dt.timedelta(days=3650))])
    s.write("v", rows(2))
    labels = {"user_id": [1, 1], "event_timestamp": pa.array([-(2**63) + 5, 2**62], TS)}
    got = s.get_historical_features(labels, ["v:x"]).column("x").to_pylist()
    assert got == [None, None]  # the second is past the TTL


@pytest.mark.parametrize("end", [2**70, -(2**70)])
def test_materialize_with_an_instant_out_of_range_is_invalid_argument(tmp_path, end):
    s = FeatureStore(tmp_path)
    s.apply([user, view(online=True)])
    s.write("v", rows(2))
    before = snapshot(str(tmp_path))
    with pytest.raises(InvalidArgumentError, match="outside the range"):
        s.materialize(None, end)
    with pytest.raises(InvalidArgumentError, match="outside the range"):
        s.materialize_incremental(end)
    assert snapshot(str(tmp_path)) == before


def test_out_of_range_timestamps_are_dtype_errors(tmp_path):
    import pandas as pd
    from skewless import Timestamp

    fv = FeatureView("t", [user], [Field("at", Timestamp)])
    s = FeatureStore(tmp_path)
    s.apply([user, fv])
    before = snapshot(str(tmp_path))
    PD_MIN = pd.Timestamp.min.tz_localize("UTC")
    cases = [
        # pandas 2 keeps Timestamp.min in nanoseconds, which fits in microseconds: only pandas 3 overflows.
        *[pd.DataFrame({"user_id": [1], "event_timestamp": [T0], "at": [PD_MIN]})]
        * (int(pd.__version__.split(".")[0]) >= 3),
        {
            "user_id": [1],
            "event_timestamp": pa.array([T0], TS),
            "at": pa.array([2**62], pa.timestamp("s", "UTC")),
        },
        {
            "user_id": [1],
            "event_timestamp": pa.array([2**62], pa.timestamp("s", "UTC")),
            "at": pa.array([T0], TS),
        },
    ]
    for data in cases:
        with pytest.raises(DtypeError, match="do not fit"):
            s.write("t", data)
    labels = {"user_id": [1], "event_timestamp": pa.array([2**62], pa.timestamp("s", "UTC"))}
    with pytest.raises(DtypeError, match="do not fit"):
        s.get_historical_features(labels, ["t:at"])
    assert snapshot(str(tmp_path)) == before


def test_duplicate_column_names_are_column_clash_errors(tmp_path):
    import pandas as pd
    from skewless.errors import ColumnClashError

    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    before = snapshot(str(tmp_path))
    arrays = [pa.array([1]), pa.array([T0], TS), pa.array([1.0]), pa.array([2.0])]
    dup = pa.Table.from_arrays(arrays, names=["user_id", "event_timestamp", "x", "x"])
    with pytest.raises(ColumnClashError, match="'x'"):
        s.write("v", dup)
    frame = pd.DataFrame([[1, T0, 1.0, 2.0]], columns=["user_id", "event_timestamp", "x", "x"])
    with pytest.raises(ColumnClashError, match="'x'"):
        s.write("v", frame)
    labels = pa.Table.from_arrays(
        [pa.array([1]), pa.array([1]), pa.array([T0], TS)], names=["user_id", "user_id", "event_timestamp"]
    )
    with pytest.raises(ColumnClashError, match="'user_id'"):
        s.get_historical_features(labels, ["v:x"])
    assert snapshot(str(tmp_path)) == before


def test_online_lookup_of_none_is_invalid_argument(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows(1))
    with pytest.raises(InvalidArgumentError, match="entity_rows"):
        s.get_online_features(["v:x"], None)


def test_temp_files_of_killed_writes_are_removed_on_open(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    s.write("v", rows(1))
    left = [tmp_path / ".tmp-dead.json", tmp_path / "offline" / "v" / ".tmp-dead.parquet"]
    for p in left:
        p.write_bytes(b"partial")
    FeatureStore(tmp_path)
    assert not any(p.exists() for p in left)
    assert s.read_history("v").num_rows == 1


def test_temp_files_are_left_alone_while_another_process_holds_the_lock(tmp_path):
    import fcntl

    s = FeatureStore(tmp_path)
    tmp = tmp_path / ".tmp-live.json"
    tmp.write_bytes(b"a writer is filling me")
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = run_child(f"from skewless import FeatureStore; FeatureStore({str(tmp_path)!r})")
        assert r.returncode == 0, r.stderr
        assert tmp.exists()
    finally:
        os.close(fd)
    del s


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB file system (tmpfs); skipped where mounting is not permitted (not root)."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)  # lazy: a cached LMDB map may still hold it


def test_full_disk_under_the_online_store_says_the_disk_is_full(tiny_disk):
    import numpy as np
    from skewless.online import OnlineStore

    o = OnlineStore(tiny_disk / "online", map_size=1 << 26)
    n = 200_000
    data = {"k": np.arange(n), "ts": pa.array(np.full(n, 10), TS), "x": np.random.default_rng(0).random(n)}
    with pytest.raises(StorageError, match="disk .* is full"):
        o.write("v", data, keys="k", timestamp="ts")
    assert o.views() == []


# ---- findings of scripts/fuzz.py (registry target) -------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["feature_views"]["v"]["spec"].__setitem__("ttl_us", 10**30),  # OverflowError before
        lambda d: d["feature_views"]["v"]["spec"].__setitem__("schema", 5),
        lambda d: d["feature_views"]["v"].__setitem__("spec", []) or d["feature_views"]["v"],
        lambda d: d["state"]["key_dtypes"].__setitem__("user", 5),
        lambda d: d["state"]["materialized"].__setitem__("v", "soon"),
    ],
)
def test_malformed_registry_values_are_registry_errors(tmp_path, edit):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    p = tmp_path / "registry.json"
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data))
    with pytest.raises(RegistryError):
        FeatureStore(tmp_path).get_feature_view("v")


def test_a_flipped_bit_in_a_footer_column_name_is_reported_not_read_as_nulls(tmp_path):
    # Found by scripts/fault_inject.py: the footer has no checksum, and a renamed column read as nulls.
    s, files = history_store(tmp_path, 2)
    blob = bytearray(open(files[1], "rb").read())
    footer = len(blob) - 8 - int.from_bytes(blob[-8:-4], "little")
    at = blob.index(b"event_timestamp", footer) + len("event_timestam")
    blob[at] ^= 1  # 'p' -> 'q'
    open(files[1], "wb").write(bytes(blob))
    before = snapshot(str(tmp_path))
    with pytest.raises(StorageError, match=os.path.basename(files[1])):
        s.read_history("v")
    with pytest.raises(StorageError, match=os.path.basename(files[1])):
        s.compact("v")
    with pytest.raises(StorageError, match=os.path.basename(files[1])):
        FeatureStore(tmp_path).write("v", rows(1, start=99))
    assert snapshot(str(tmp_path)) == before


def test_cli_get_on_an_unwritten_view_says_not_found_without_a_traceback(tmp_path):
    s = FeatureStore(tmp_path)
    s.apply([user, view()])
    r = subprocess.run(
        [sys.executable, "-m", "skewless.cli", "--store", str(tmp_path), "get", "v:x", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["status"] == "not_found"
    assert "Traceback" not in r.stderr


# ---- the product invariant, extended to arrays and to instants before a key's latest write -------------


_elem = st.floats(allow_nan=False, width=64)
_arow = st.tuples(
    st.integers(0, 2),  # key
    st.integers(0, 6),  # ts (seconds)
    st.one_of(st.none(), st.tuples(_elem, _elem)),  # a whole array, or a null one
)


@pytest.mark.skipif(NULL_ARRAYS_UNREADABLE, reason="pyarrow < 26 cannot read null Array rows back")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(_arow, min_size=1, max_size=6), min_size=1, max_size=3),
    probe=st.integers(-7, 7),
)
def test_online_array_equals_historical_or_is_withheld(tmp_path_factory, batches, probe):
    """Arrays: the online value at an instant equals the training set's, bit for bit. Before a key's
    latest write the online store (which keeps the latest row only) withholds its value (NOT_YET_VALID,
    null) rather than serve one from the future; it never serves a value the training set would not."""
    from skewless import Array
    from skewless.online import Status

    sec = dt.timedelta(seconds=1)
    s = FeatureStore(tmp_path_factory.mktemp("arr"))
    s.apply([user, FeatureView("a", [user], [Field("e", Array(Float64, 2))])])
    latest: dict[int, dt.datetime] = {}
    for b in batches:
        k, t, e = zip(*b, strict=True)
        ts = [T0 + v * sec for v in t]
        arrays = pa.array([None if v is None else list(v) for v in e], pa.list_(pa.float64(), 2))
        s.write("a", {"user_id": list(k), "event_timestamp": pa.array(ts, TS), "e": arrays})
        for kk, tt in zip(k, ts, strict=True):
            latest[kk] = max(latest.get(kk, tt), tt)
    keys = [0, 1, 2]
    inst = [latest.get(k, T0) + probe * sec for k in keys]
    labels = {"user_id": keys, "event_timestamp": pa.array(inst, TS)}
    hist = s.get_historical_features(labels, ["a:e"]).column("e").to_pylist()
    reader = s.online_reader(["a:e"])
    for k, when, want in zip(keys, inst, hist, strict=True):
        got = reader.get({"user_id": [k]}, as_of=when).to_arrow()
        value = got.column("e").to_pylist()[0]
        status = Status(s.get_online_features(["a:e"], {"user_id": [k]}, as_of=when).statuses["e"][0])
        if k in latest and when < latest[k]:
            assert value is None and status == Status.NOT_YET_VALID
            continue
        as_bits = [None if v is None else [np.float64(x).view(np.int64) for x in v] for v in (value, want)]
        assert as_bits[0] == as_bits[1], (k, value, want)
