"""The direct B-tree search of the serving path (rust/src/online/direct.rs) against a dict oracle: stores
large enough for several B-tree levels, string and integer keys, values big enough for LMDB's overflow
pages, rewrites that free and reuse pages, and a map that grows; and a reader looping while another
process writes, which must never see a wrong or torn value."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skewless.online import OnlineStore, Status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", "UTC")


def text_of(key, version: int, big: bool) -> str:
    """A value that names its key and version, long enough for overflow pages when `big`."""
    base = f"{key}:{version};"
    return base * (400 if big else 1 + version % 3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 4000),
    string_keys=st.booleans(),
    rounds=st.lists(st.tuples(st.integers(1, 400), st.integers(0, 2**32)), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_lookups_equal_a_dict_oracle(n, string_keys, rounds, seed):
    rng = np.random.default_rng(seed)
    # A small first map: the rounds below grow it (the direct search's map follows the resize).
    store = OnlineStore(tempfile.mkdtemp(prefix="skewless-direct-"), map_size=1 << 20)
    ids = np.arange(n) * 7 - n  # negative keys too: the sign bit is flipped in the encoding

    def keys_of(idx: np.ndarray) -> list:
        return [f"user-{i:06d}" for i in ids[idx]] if string_keys else ids[idx].tolist()

    state: dict = {}
    version = 0
    # Every key once, then rounds that rewrite random subsets (freeing pages that later writes reuse).
    plan = [(n, seed)] + rounds
    for size, round_seed in plan:
        version += 1
        idx = np.random.default_rng(round_seed).choice(n, size=min(size, n), replace=False)
        ks = keys_of(idx)
        big = [(i + version) % 17 == 0 for i in idx]
        texts = [text_of(k, version, b) for k, b in zip(ks, big, strict=True)]
        table = pa.table(
            {
                "k": pa.array(ks, pa.string() if string_keys else pa.int64()),
                "ts": pa.array([T0 + dt.timedelta(seconds=version)] * len(ks), TS),
                "x": pa.array([float(version * 100_000 + i) for i in idx]),
                "s": pa.array(texts, pa.string()),
            }
        )
        store.write("v", table, keys="k", timestamp="ts")
        for k, i, t in zip(ks, idx, texts, strict=True):
            state[k] = (float(version * 100_000 + i), t)
    # Present keys in random order, absent neighbours, and repeats, in one request.
    present = keys_of(rng.permutation(n)[: min(n, 600)])
    absent = (
        [f"user-{i:06d}x" for i in range(5)] + ["user-", "a", "zzzz"]
        if string_keys
        else [int(ids.max()) + 1, int(ids.min()) - 1, 3, -3, 2**62]
    )
    probe = present + absent + present[:3]
    table = store.reader("v").get(probe)
    assert table.column("x").to_pylist() == [state[k][0] if k in state else None for k in probe]
    assert table.column("s").to_pylist() == [state[k][1] if k in state else None for k in probe]
    values, status = store.reader("v", columns=["x"]).get_numpy(probe)
    want = [Status.PRESENT if k in state else Status.NOT_FOUND for k in probe]
    assert status.tolist() == want
    np.testing.assert_array_equal(values[:, 0], [state[k][0] if k in state else np.nan for k in probe])
    # One key per request too (a batch of one walks the same code with nothing to interleave).
    for k in probe[:: max(1, len(probe) // 20)]:
        assert store.reader("v", columns=["x"]).get([k]).column("x").to_pylist() == [
            state[k][0] if k in state else None
        ]


WRITER = """
import sys, time
import numpy as np, pyarrow as pa
from skewless.online import OnlineStore
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = OnlineStore(path)
rng = np.random.default_rng(1)
v = 1
end = time.time() + secs
while time.time() < end:
    v += 1
    keys = rng.choice(n, size=300, replace=False)
    # Every column of a row holds its version; the string column is long for some rows (overflow pages).
    s.write("v", pa.table({
        "k": keys,
        "ts": pa.array(np.full(300, 1_767_225_600_000_000 + v), pa.timestamp("us", "UTC")),
        "a": np.full(300, float(v)), "b": np.full(300, float(v)),
        "t": [str(v) * (3000 if k % 13 == 0 else 2) for k in keys],
    }), keys="k", timestamp="ts")
print(v)
"""

READER = """
import json, sys, time
import numpy as np
from skewless.online import OnlineStore
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = OnlineStore(path)
r = s.reader("v")
rng = np.random.default_rng(int(sys.argv[4]))
last = np.zeros(n)
reads = 0
end = time.time() + secs
while time.time() < end:
    req = rng.integers(0, n, size=int(rng.integers(1, 300)))
    t = r.get(req.tolist())
    a = np.array(t.column("a").to_pylist())
    b = np.array(t.column("b").to_pylist())
    texts = t.column("t").to_pylist()
    assert (a == b).all(), "a row mixes versions"
    for k, x, text in zip(req, a, texts):
        want = str(int(x)) * (3000 if k % 13 == 0 else 2)
        assert text == want, (int(k), x, text[:20])
    # A later read never sees an older version of a key (snapshots only move forward).
    assert (a >= last[req]).all(), "a value rolled back"
    last[req] = a
    reads += 1
print(json.dumps({"reads": reads, "versions": int(np.unique(last).size)}))
"""


def test_a_reader_looping_while_another_process_writes_sees_only_whole_values(tmp_path):
    path = str(tmp_path / "s")
    n = 20_000  # enough for three B-tree levels
    keys = np.arange(n)
    OnlineStore(path).write(
        "v",
        pa.table(
            {
                "k": keys,
                "ts": pa.array(np.full(n, 1_767_225_600_000_001), TS),
                "a": np.ones(n),
                "b": np.ones(n),
                "t": ["1" * (3000 if k % 13 == 0 else 2) for k in keys],
            }
        ),
        keys="k",
        timestamp="ts",
    )
    run = [sys.executable, "-c"]
    writer = subprocess.Popen(
        [*run, textwrap.dedent(WRITER), path, str(n), "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    readers = [
        subprocess.Popen(
            [*run, textwrap.dedent(READER), path, str(n), "4", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert int(out) > 10
    for p in readers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        res = json.loads(out)
        assert res["reads"] > 50 and res["versions"] > 2, res
