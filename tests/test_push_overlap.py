"""``store.push`` writes its history file and merges the online window state at once
(``skewless.events.push_with_history``): the state's transaction commits only once the history file is
durable, and a failure of either half leaves the store as it was."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest
import skewless as sk
from conftest import snapshot
from skewless import _core
from skewless.errors import InternalError, InvalidArgumentError, MapFullError, SchemaMismatch, StorageError
from skewless.offline import OfflineStore
from skewless.online import OnlineStore

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000
USER = sk.Entity("user", dtype=sk.Int64)
AT = dt.datetime.fromtimestamp(100, dt.timezone.utc)


def view(window: str = "1h") -> sk.FeatureView:
    return sk.FeatureView(
        "ev", [USER], [sk.Field("x", sk.Float64)], aggregations=[sk.Aggregation("x", "sum", window)]
    )


def events(users, secs, xs) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array([s * SEC for s in secs], TS),
            "x": pa.array(xs, pa.float64()),
        }
    )


def total(s: sk.FeatureStore, user: int = 1):
    return s.get_online_features(["ev:x_sum_1h"], {"user_id": [user]}, as_of=AT).to_dict()["x_sum_1h"][0]


def new_store(path) -> sk.FeatureStore:
    s = sk.FeatureStore(str(path))
    s.apply([USER, view()])
    return s


def test_the_state_commits_only_after_the_history_file_is_durable(tmp_path, monkeypatch):
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    real = OfflineStore.write_file
    seen = []

    def spy(self, final, stamped):
        # The merge runs meanwhile, inside an open transaction: nothing of it shows.
        seen.append(("before", total(s), os.path.exists(final)))
        real(self, final, stamped)
        seen.append(("after", total(s), os.path.exists(final)))

    monkeypatch.setattr(OfflineStore, "write_file", spy)
    s.push("ev", events([1, 1], [20, 30], [2.0, 4.0]))
    assert seen == [("before", 1.0, False), ("after", 1.0, True)]
    assert total(s) == 7.0


def test_a_failed_history_file_aborts_the_state_and_writes_nothing(tmp_path, monkeypatch):
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    before = snapshot(str(tmp_path))

    def full_disk(self, final, stamped):
        raise StorageError("No space left on device (simulated)")

    monkeypatch.setattr(OfflineStore, "write_file", full_disk)
    with pytest.raises(StorageError, match="simulated"):
        s.push("ev", events([1, 2], [20, 30], [2.0, 4.0]))
    monkeypatch.undo()
    assert snapshot(str(tmp_path)) == before
    assert total(s) == 1.0
    # The aborted transaction is gone: the next push takes the write lock and lands once.
    s.push("ev", events([1, 2], [20, 30], [2.0, 4.0]))
    assert (total(s), total(s, 2)) == (3.0, 4.0)
    assert s.read_history("ev").num_rows == 3


def test_an_interrupted_history_file_aborts_the_state(tmp_path, monkeypatch):
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    before = snapshot(str(tmp_path))

    def interrupted(self, final, stamped):
        raise KeyboardInterrupt

    monkeypatch.setattr(OfflineStore, "write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.push("ev", events([1], [20], [2.0]))
    monkeypatch.undo()
    assert snapshot(str(tmp_path)) == before
    s.push("ev", events([1], [20], [2.0]))
    assert total(s) == 3.0


def test_a_failed_merge_removes_the_history_file(tmp_path):
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    # A changed definition: the merge refuses the state, after the history file was written meanwhile.
    s.apply([USER, view("2h")])
    before = snapshot(str(tmp_path))
    with pytest.raises(SchemaMismatch, match="materialize"):
        s.push("ev", events([1], [20], [2.0]))
    assert snapshot(str(tmp_path)) == before


def test_a_full_map_removes_the_history_file(tmp_path):
    s = sk.FeatureStore(str(tmp_path))
    # A map that may not grow: the state's commit fails after the history file is durable.
    small = 256 * 1024
    s._online_store = OnlineStore(os.path.join(str(tmp_path), "online"), map_size=small, max_map_size=small)
    s.apply([USER, view()])
    s.push("ev", events([1], [10], [1.0]))
    before = snapshot(str(tmp_path))
    many = 20_000
    with pytest.raises(MapFullError):
        s.push("ev", events(list(range(2, many)), [20] * (many - 2), [1.0] * (many - 2)))
    assert snapshot(str(tmp_path)) == before
    assert s.read_history("ev").num_rows == 1


def test_a_map_that_grows_during_the_merge_commits_once(tmp_path):
    s = sk.FeatureStore(str(tmp_path))
    s._online_store = OnlineStore(os.path.join(str(tmp_path), "online"), map_size=64 * 1024)
    s.apply([USER, view()])
    many = 5_000
    # The transaction is retried after the map grows; the history's go-ahead is not waited for twice.
    s.push("ev", events(list(range(many)), [20] * many, [float(u) for u in range(many)]))
    assert s._online_store.map_size > 64 * 1024
    assert [total(s, u) for u in (0, 7, many - 1)] == [0.0, 7.0, float(many - 1)]
    assert s.read_history("ev").num_rows == many


def test_a_closed_gate_writes_nothing_and_an_open_one_commits(tmp_path):
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    online = s._online()
    seq = pa.array([1 << 40], pa.int64())
    batch = events([1], [20], [5.0]).append_column("__seq__", seq)
    args = (online._inner, "ev", batch, ["user_id"], "event_timestamp", "__seq__", ["x"], 3600 * SEC, False)
    closed = _core.CommitGate()
    closed.close()
    with pytest.raises(InternalError, match="aborted"):
        _core.window_push(*args, closed)
    assert total(s) == 1.0
    # The aborted transaction is gone: the next one takes the write lock and commits.
    gate = _core.CommitGate()
    gate.open()
    gate.close()  # the first answer counts
    assert _core.window_push(*args, gate) == (1, 1)
    assert total(s) == 6.0
    with pytest.raises(InvalidArgumentError, match="already used"):
        _core.window_push(*args, gate)


def test_push_refuses_to_append_behind_a_damaged_history_footer(tmp_path):
    # The footer check of the files already there runs beside the merge (on the history's thread),
    # before the new file is written: it still refuses the push, and nothing is written.
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    s.push("ev", events([1], [20], [2.0]))
    first = sorted(OfflineStore(str(tmp_path / "offline")).files("ev", None))[0]
    with open(first, "r+b") as f:  # the footer length, in the last 8 bytes
        f.seek(-8, os.SEEK_END)
        f.write(b"\xff\xff\xff\x7f")
    before = snapshot(str(tmp_path))
    with pytest.raises(StorageError, match=os.path.basename(first)) as e:
        sk.FeatureStore(str(tmp_path)).push("ev", events([1, 2], [30, 30], [4.0, 8.0]))
    assert "nothing was written" in str(e.value)
    assert snapshot(str(tmp_path)) == before


def test_the_next_history_file_follows_the_newest_whatever_else_the_folder_holds(tmp_path):
    # A push learns its file number from one listing (OfflineStore._last_number), not from the sorted
    # list of live files: both must agree, compacted files and stray names included.
    s = new_store(tmp_path)
    s.push("ev", events([1], [10], [1.0]))
    s.push("ev", events([1], [20], [2.0]))
    s.compact("ev")
    s.push("ev", events([2], [30], [4.0]))
    off = OfflineStore(str(tmp_path / "offline"))
    folder = off.folder("ev")
    strays = ("part-99999999999x.parquet", "part-000000000077.parquet.bak", ".tmp-part-000000000088.parquet")
    for stray in strays:
        open(os.path.join(folder, stray), "w").close()
    names = sorted(os.listdir(folder))
    assert any(".compact." in n for n in names)
    assert off._last_number("ev") == off._parts("ev")[-1][0] == 4
    path, _ = off.next_file("ev", events([1], [40], [8.0]), check=False)
    assert os.path.basename(path) == "part-000000000005.parquet"
    assert OfflineStore(str(tmp_path / "nothing"))._last_number("ev") == 0
    for stray in strays:
        os.remove(os.path.join(folder, stray))
    s.push("ev", events([2], [40], [8.0]))
    assert (total(s), total(s, 2)) == (3.0, 12.0)
