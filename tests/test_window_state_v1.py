"""Window state written before format v2 stays readable and pushable: ``fixtures/window_v1`` holds an event
view whose online state an older skewless wrote one record per entity (layout 1), and the online answers
that version gave (``answers.json``; how both were made: ``fixtures/make_window_v1.py``). This build
reads the same answers, they equal the offline ones, a push keeps the stored layout, and a rebuild lays
the state out anew and answers the same."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import skewless as sk

FIXTURE = Path(__file__).parent / "fixtures" / "window_v1"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def _maker():
    spec = importlib.util.spec_from_file_location("make_window_v1", FIXTURE.parent / "make_window_v1.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKER = _maker()


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    # Opening writes LMDB's lock file (and a push writes the data): work on a copy.
    dst = tmp_path / "store"
    shutil.copytree(FIXTURE, dst)
    return dst


def layout(path: Path) -> int:
    """The view's stored state layout: the first byte of its meta record (``window/ev`` in the online
    store's metadata database; rust/src/window/state.rs). Read in a child process, which opens the
    environment on its own (LMDB allows one open environment per file and process)."""
    code = (
        "import lmdb, sys\n"
        "env = lmdb.open(sys.argv[1], readonly=True, lock=False, max_dbs=4, subdir=True)\n"
        "meta = env.open_db(b'__skewless_meta__', create=False)\n"
        "with env.begin() as t:\n"
        "    print(t.get(b'window/ev', db=meta)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path / "online")], check=True, capture_output=True)
    return int(out.stdout)


def same(a: list, b: list) -> bool:
    """Equal value for value, floats bit for bit (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


def online(store: sk.FeatureStore, sec: float) -> dict[str, list]:
    at = EPOCH + dt.timedelta(seconds=sec)
    return store.get_online_features(MAKER.FEATURES, {"user_id": MAKER.USERS}, as_of=at).to_dict()


def check_online_equals_offline(store: sk.FeatureStore, secs: list[float]) -> None:
    for sec in secs:
        labels = pa.table(
            {
                "user_id": pa.array(MAKER.USERS, pa.int64()),
                "event_timestamp": pa.array([int(sec * 1_000_000)] * len(MAKER.USERS), TS),
            }
        )
        off = store.get_historical_features(labels, MAKER.FEATURES).to_pydict()
        resp = store.online_reader(MAKER.FEATURES).get(
            {"user_id": MAKER.USERS}, as_of=EPOCH + dt.timedelta(seconds=sec)
        )
        on = resp.to_dict()
        for i in range(len(MAKER.USERS)):
            if resp.status[i, 0] != 0:  # an instant the kept tail cannot answer: nothing is served
                continue
            for a in MAKER.AGGS:
                assert same([on[a.name][i]], [off[a.name][i]]), (sec, i, a.name)


def test_the_old_state_answers_as_before_and_as_offline(old_store: Path) -> None:
    assert layout(old_store) == 1
    s = sk.FeatureStore(old_store)
    want = json.loads((FIXTURE / "answers.json").read_text())
    assert sorted(want) == sorted(str(t) for t in MAKER.INSTANTS)
    for sec in MAKER.INSTANTS:
        got = online(s, sec)
        for name, values in want[str(sec)].items():
            assert same(got[name], values), (sec, name)
    check_online_equals_offline(s, [150, 175, 185, 200, 210])


def test_a_push_into_the_old_state_keeps_its_layout_and_a_rebuild_answers_the_same(old_store: Path) -> None:
    s = sk.FeatureStore(old_store)
    import random

    rng = random.Random(5)
    s.push("ev", MAKER.events(rng, 150, 240, 200))
    assert layout(old_store) == 1, "a push keeps the stored layout"
    secs = [200, 230, 239.5, 245, 300]
    check_online_equals_offline(s, secs)
    before = {sec: online(s, sec) for sec in secs}
    s.materialize(None, EPOCH + dt.timedelta(days=1))
    assert layout(old_store) == 2, "a rebuild lays the state out as segments"
    for sec in secs:
        got = online(s, sec)
        for name, values in before[sec].items():
            assert same(got[name], values), (sec, name)
    s.push("ev", MAKER.events(rng, 230, 300, 150))
    assert layout(old_store) == 2
    check_online_equals_offline(s, [260, 290, 299.5, 330])
