"""The history's total order (python/skewless/offline.py, "Tie order"): full ties across and within
writes are decided by the write sequence, so renaming the history files, listing them in another order,
compacting, or reading them as a ``source=`` view changes no answer, offline or online. Checked against
a brute-force oracle loop."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
from skewless.errors import InvalidArgumentError, StorageError
from skewless.offline import SEQ, OfflineStore, _with_seq

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000
END = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

user = Entity("user", join_keys=["user_id"], dtype=Int64)


def view(name: str = "v", source: str | None = None) -> FeatureView:
    return FeatureView(name, [user], [Field("x", Float64)], created_timestamp_field="created", source=source)


def table(rows: list[tuple[int, int, int, float]]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] * SEC for r in rows], TS),
            "created": pa.array([r[2] * SEC for r in rows], TS),
            "x": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def winner(cands: list[tuple[int, int, tuple[int, int, int, float]]]) -> float | None:
    """cands: (write, row, (key, ts, created, x)). The greatest (ts, created); among full ties the
    earliest write, and within it the last row."""
    best = None
    for w, r, row in cands:
        rank = (row[1], row[2], -w, r)
        if best is None or rank > best[0]:
            best = (rank, row[3])
    return None if best is None else best[1]


def oracle_offline(writes, labels):
    flat = [(w, r, row) for w, rows in enumerate(writes) for r, row in enumerate(rows)]
    return [winner([c for c in flat if c[2][0] == k and c[2][1] <= t]) for k, t in labels]


def oracle_online(writes, keys):
    flat = [(w, r, row) for w, rows in enumerate(writes) for r, row in enumerate(rows)]
    return [winner([c for c in flat if c[2][0] == k]) for k in keys]


KEYS = [1, 2, 3]
LABELS = [(k, t) for k in KEYS for t in range(0, 5)]


def retrieve(store: FeatureStore, name: str = "v") -> list:
    ents = pa.table(
        {
            "user_id": pa.array([k for k, _ in LABELS], pa.int64()),
            "event_timestamp": pa.array([t * SEC for _, t in LABELS], TS),
        }
    )
    return store.get_historical_features(ents, [f"{name}:x"]).column("x").to_pylist()


def online(store: FeatureStore, name: str = "v") -> list:
    return store.get_online_features([f"{name}:x"], {"user_id": KEYS}, as_of=END).to_dict()["x"]


def fresh_online(path: str, tmp: str) -> FeatureStore:
    """A copy of the store without its online half, materialized from the history alone."""
    shutil.copytree(path, tmp, ignore=shutil.ignore_patterns("online"))
    s = FeatureStore(tmp)
    s.materialize(None, END)
    return s


def renumber(folder: str, rnd: random.Random) -> None:
    """Give the plain part files a shuffled numbering (a compacted file keeps its number, so the same
    files stay live): their names no longer say in which order they were written."""
    names = sorted(n for n in os.listdir(folder) if n.startswith("part-") and ".compact" not in n)
    numbers = [int(n[5:17]) for n in names]
    rnd.shuffle(numbers)
    for n in names:
        os.rename(os.path.join(folder, n), os.path.join(folder, "tmp-" + n))
    for n, num in zip(names, numbers, strict=True):
        os.rename(os.path.join(folder, "tmp-" + n), os.path.join(folder, f"part-{num:012d}.parquet"))


row = st.tuples(st.sampled_from(KEYS), st.integers(1, 3), st.integers(0, 1), st.integers(0, 10**6))
writes_st = st.lists(st.lists(row, min_size=1, max_size=6), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes_st, st.integers(-1, 4), st.randoms(use_true_random=False))
def test_full_ties_do_not_depend_on_file_order(tmp_path_factory, raw, compact_after, rnd):
    writes = [
        [(k, t, c, float(w * 1000 + i)) for i, (k, t, c, _) in enumerate(rows)] for w, rows in enumerate(raw)
    ]
    base = str(tmp_path_factory.mktemp("order"))
    path = os.path.join(base, "store")
    store = FeatureStore(path)
    store.apply([user, view()])
    for w, rows in enumerate(writes):
        store.write("v", table(rows))
        if w == compact_after:
            store.compact("v")
    want_off = oracle_offline(writes, LABELS)
    want_on = oracle_online(writes, KEYS)
    assert retrieve(store) == want_off
    assert online(store) == want_on
    # materialize over an online store that already holds every write changes nothing.
    store.materialize(None, END)
    assert online(store) == want_on

    folder = os.path.join(path, "offline", "v")
    renumber(folder, rnd)
    store = FeatureStore(path)
    assert retrieve(store) == want_off
    assert online(fresh_online(path, os.path.join(base, "m1"))) == want_on

    # The same files as a source= view, under names that sort in another order.
    src = os.path.join(base, "src")
    os.makedirs(src)
    files = sorted(os.listdir(folder))
    rnd.shuffle(files)
    for i, n in enumerate(files):
        shutil.copy(os.path.join(folder, n), os.path.join(src, f"{i:03d}.parquet"))
    other = FeatureStore(os.path.join(base, "other"))
    other.apply([user, view("v", source=src)])
    assert retrieve(other) == want_off
    other.materialize(None, END)
    assert online(other) == want_on

    store.compact("v")
    assert retrieve(store) == want_off
    assert online(fresh_online(path, os.path.join(base, "m2"))) == want_on
    # Writes after a compaction still lose full ties to everything before them.
    more = [(k, t, c, float(9000 + i)) for i, (k, t, c, _) in enumerate(writes[0])]
    store.write("v", table(more))
    writes.append(more)
    assert retrieve(store) == oracle_offline(writes, LABELS)
    assert online(store) == oracle_online(writes, KEYS)
    assert online(fresh_online(path, os.path.join(base, "m3"))) == oracle_online(writes, KEYS)


def write_v1(folder: str, number: int, rows, compacted: bool = False) -> None:
    """A history file as version 1 wrote it: no __seq__ column."""
    os.makedirs(folder, exist_ok=True)
    name = f"part-{number:012d}{'.compact' if compacted else ''}.parquet"
    pq.write_table(table(rows), os.path.join(folder, name))


def test_version_1_files_derive_their_sequence_from_file_number_and_row(tmp_path):
    path = str(tmp_path / "store")
    store = FeatureStore(path)
    store.apply([user, view()])
    folder = os.path.join(path, "offline", "v")
    w1 = [(1, 2, 0, 1.0), (1, 2, 0, 2.0), (2, 1, 0, 3.0)]
    w2 = [(1, 2, 0, 4.0), (2, 1, 0, 5.0), (2, 1, 0, 6.0)]
    write_v1(folder, 1, w1)
    write_v1(folder, 2, w2)
    writes = [w1, w2]
    assert retrieve(store) == oracle_offline(writes, LABELS)
    assert online(fresh_online(path, str(tmp_path / "m"))) == oracle_online(writes, KEYS)
    hist = pa.Table.from_batches(store.offline.scan("v", None, None, ["x"], with_seq=True))
    assert sorted(zip(hist.column(SEQ).to_pylist(), hist.column("x").to_pylist(), strict=True)) == [
        ((f << 32) | r, x) for f, rows in ((1, w1), (2, w2)) for r, (*_, x) in enumerate(rows)
    ]
    # A version 2 write after them, then a compaction that mixes both: still the same answers.
    w3 = [(1, 2, 0, 7.0), (2, 1, 0, 8.0)]
    store.write("v", table(w3))
    writes.append(w3)
    assert retrieve(store) == oracle_offline(writes, LABELS)
    store.compact("v")
    assert retrieve(store) == oracle_offline(writes, LABELS)
    assert online(fresh_online(path, str(tmp_path / "m2"))) == oracle_online(writes, KEYS)
    compacted = [n for n in os.listdir(folder) if ".compact" in n]
    assert SEQ in pq.read_schema(os.path.join(folder, compacted[0])).names


def test_a_version_1_compacted_file_keeps_its_winner_last(tmp_path):
    # Version 1's compact put a full tie's winner last in the sorted file; derived sequences keep it.
    path = str(tmp_path / "store")
    store = FeatureStore(path)
    store.apply([user, view()])
    folder = os.path.join(path, "offline", "v")
    write_v1(folder, 3, [(1, 2, 0, 10.0), (1, 2, 0, 11.0)], compacted=True)
    assert retrieve(store)[:5] == [None, None, 11.0, 11.0, 11.0]
    assert online(fresh_online(path, str(tmp_path / "m")))[0] == 11.0


def test_sequence_limits_are_typed_errors_and_write_nothing(tmp_path):
    t = table([(1, 1, 0, 1.0)])
    with pytest.raises(StorageError, match="sequence range"):
        _with_seq(t, 1 << 31)
    assert _with_seq(t, (1 << 31) - 1).column(SEQ).to_pylist() == [((1 << 31) - 1) << 32]

    class Huge:
        num_rows = 1 << 32

    with pytest.raises(InvalidArgumentError, match="Split"):
        _with_seq(Huge(), 1)  # type: ignore[arg-type]
    off = OfflineStore(str(tmp_path))
    os.makedirs(off.folder("v"))
    open(os.path.join(off.folder("v"), f"part-{(1 << 31) - 1:012d}.parquet"), "wb").close()
    with pytest.raises(StorageError):
        off.append("v", t)
    assert sorted(os.listdir(off.folder("v"))) == [f"part-{(1 << 31) - 1:012d}.parquet"]
