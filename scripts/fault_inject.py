"""Fault injection: kill -9 at random points, a full disk, and flipped bits, then check the store.

    python scripts/fault_inject.py --trials 20 --seed 1

Each trial runs in its own process (a crash of the reader is recorded, not fatal) and is seeded, so a
failing trial replays with the same ``--seed``. Kinds of trial (``--trials`` of each):

- ``kill-write`` / ``kill-compact`` / ``kill-materialize``: a child writes batches (compacting after each,
  or materializing a history in a loop) and is killed with SIGKILL after a random delay.
- ``kill-push``: the same for ``push`` into an event view (history, then the online window state).
- ``kill-log``: a child serves with ``log=True`` and flushes the served-feature log in a loop, killed
  with SIGKILL; every segment left must read whole and agree with the history (``check_skew``: no
  alert), and no lookup may be logged twice.
- ``flip-history``: random bits flipped in one history file of a store holding three writes.
- ``flip-online``: random bits flipped in the online store's data file.
- ``full-disk`` (once): writes into a 1 MiB tmpfs until it is full (without the permission to mount
  one, a file size limit, RLIMIT_FSIZE, stands in and the report says so).

Checks after every trial:

- the store opens, and no temp file of a killed writer is left;
- the history is a committed prefix: batches 1..m, each whole (batch b is R rows with x == b);
- online is never ahead: every served x is <= m, and after ``materialize`` every key serves m;
- a damaged history file is reported (StorageError), never read as other data;
- a damaged online value is reported (StorageError), never served: every value carries a CRC-32C over
  its view's schema record, its key and its bytes (value layout 3), and opening the store walks LMDB's
  own pages (B-tree branches and leaves, page headers, node offsets, the free list), which LMDB does
  not checksum, refusing damage there (rust/src/online/verify.rs). A flipped byte of a key (or a key
  size that still leaves the page well formed) may make keys read as absent ("missing": every value
  that does come back is right), which is counted and allowed; a wrong value served, a crash of the
  reader or an untyped error fails the run. ``scripts/btree_flips.py`` flips every bit of every
  structural byte of LMDB's pages, one by one.

Exit status 0 when every check held. Prints one line per kind: trials and outcomes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

R = 200  # rows (keys) per batch
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


# ---- the store every trial uses ------------------------------------------------------------------------


def definitions() -> list[Any]:
    from skewless import Aggregation, Entity, FeatureView, Field, Float64, Int64

    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    events = FeatureView(
        "e",
        [user],
        [Field("x", Float64)],
        aggregations=[Aggregation("x", "sum", "400d"), Aggregation("x", "count", "400d")],
    )
    return [user, FeatureView("v", [user], [Field("x", Float64)]), events]


def batch(b: int) -> Any:
    """Batch ``b``: every key once, at second ``b``, with x == b (so a row says which write it came from)."""
    import pyarrow as pa

    ts = pa.array([T0 + dt.timedelta(seconds=b)] * R, pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": pa.array(range(R), pa.int64()), "event_timestamp": ts, "x": [float(b)] * R})


def new_store(path: str, batches: int = 0, online: bool = True) -> None:
    from skewless import FeatureStore

    s = FeatureStore(path)
    s.apply(definitions())
    for b in range(1, batches + 1):
        if online:
            s.write("v", batch(b))
        else:
            s.offline.append("v", batch(b))  # history only, as another process's writes to materialize


class Broken(AssertionError):
    """A check that did not hold."""


def no_temp_files(path: str) -> None:
    """No temp file of a killed writer is left once the store is open. A killed log flush's temp file
    may stay in ``logs/`` (another process may be writing one there): ``prune_logs`` removes it later."""
    for dp, _, fs in os.walk(path):
        left = [f for f in fs if f.startswith(".tmp-")]
        if left and os.path.basename(dp) != "logs":
            raise Broken(f"temp files left after open in {dp}: {left}")


def check(path: str, *, materialize: bool = True) -> int:
    """Every invariant of a store after a fault; returns m, the number of committed batches."""
    from skewless import FeatureStore

    s = FeatureStore(path)
    no_temp_files(path)
    h = s.read_history("v")
    counts = Counter(h.column("x").to_pylist())
    m = len(counts)
    if sorted(counts) != [float(b) for b in range(1, m + 1)]:
        raise Broken(f"history is not a prefix of the writes: batches {sorted(counts)}")
    if any(c != R for c in counts.values()):
        raise Broken(f"a batch is torn: rows per batch {dict(counts)}")
    served = s.get_online_features(["v:x"], {"user_id": list(range(R))}, as_of=FAR).to_dict()["x"]
    ahead = [x for x in served if x is not None and x > m]
    if ahead:
        raise Broken(f"online is ahead of the history ({m} batches): serves {sorted(set(ahead))}")
    if materialize and m:
        s.materialize(None, FAR)
        served = s.get_online_features(["v:x"], {"user_id": list(range(R))}, as_of=FAR).to_dict()["x"]
        if set(served) != {float(m)}:
            raise Broken(f"after materialize online serves {sorted(set(map(str, served)))}, not {m}")
    return m


def check_push(path: str) -> int:
    """The invariants after a killed ``push``: the event history is a committed prefix of the pushes and
    the online window state never ahead of it (its count is c <= m, its sum that of pushes 1..c), and
    ``materialize`` brings it to m. Returns m."""
    from skewless import FeatureStore

    s = FeatureStore(path)
    no_temp_files(path)
    h = s.read_history("e")
    counts = Counter(h.column("x").to_pylist())
    m = len(counts)
    if sorted(counts) != [float(b) for b in range(1, m + 1)] or any(c != R for c in counts.values()):
        raise Broken(f"event history is not a prefix of whole pushes: {dict(counts)}")
    at = T0 + dt.timedelta(days=1)
    feats = ["e:x_sum_400d", "e:x_count_400d"]

    def served() -> set[tuple[Any, Any]]:
        d = s.get_online_features(feats, {"user_id": list(range(R))}, as_of=at).to_dict()
        return set(zip(d["x_count_400d"], d["x_sum_400d"], strict=True))

    for c, total in served():
        if c > m or total != (float(c * (c + 1) // 2) if c else None):
            raise Broken(f"online window state ahead of or apart from the history ({m} pushes): {c}, {total}")
    s.materialize(None, FAR)
    if served() != {(m, float(m * (m + 1) // 2) if m else None)}:
        raise Broken(f"after materialize the window state serves {served()}, not {m} pushes")
    return m


def check_log(path: str) -> int:
    """The invariants after a killed log flush: every segment reads whole, no lookup is in two segments,
    and what was logged agrees with the history (no alert). Returns the rows logged."""
    from skewless import FeatureStore

    s = FeatureStore(path)
    no_temp_files(path)
    log = s.read_log(features=["v:x"]).get("v:x")
    if log is None:
        return 0
    ids = log.column("__request_id__").to_pylist()
    if len(ids) != len(set(ids)):
        raise Broken("a lookup was logged twice")
    report = s.check_skew(features=["v:x"])
    if report.alerts:
        raise Broken(f"the logged values disagree with the history: {report.alerts}")
    return log.num_rows


# ---- children: the work that gets killed, and the readers of damaged files --------------------------------


def child(kind: str, path: str, arg: str) -> None:
    from skewless import FeatureStore

    s = FeatureStore(path)
    print("ready", flush=True)
    if kind == "kill-write":
        b = check(path, materialize=False) + 1
        while True:
            s.write("v", batch(b))
            b += 1
    elif kind == "kill-compact":
        b = check(path, materialize=False) + 1
        while True:
            s.write("v", batch(b))
            s.compact("v")
            b += 1
    elif kind == "kill-materialize":
        while True:
            s.materialize(None, FAR)
    elif kind == "kill-push":
        b = len(set(s.read_history("e").column("x").to_pylist())) + 1
        while True:
            s.push("e", batch(b))
            b += 1
    elif kind == "kill-log":
        reader = s.online_reader(["v:x"], log=True)
        i = 0
        while True:
            reader.get_numpy([i % R, (i * 7) % R], as_of=T0 + dt.timedelta(seconds=3 + i % 5))
            i += 1
            if i % 50 == 0:
                reader.close()  # a flush: the segment is written under a temp name, then renamed
    elif kind in ("flip-history", "flip-online"):
        print(json.dumps(read_damaged(kind, path, json.loads(arg))), flush=True)
    elif kind == "full-disk":
        limit = int(arg)
        if limit:  # no tmpfs: a file size limit stands in for a full disk
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        print(json.dumps(fill_disk(s)), flush=True)


def read_damaged(kind: str, path: str, expected: list[Any]) -> str:
    """Read everything back: 'reported' (a StorageError), 'same' (the damage changed nothing read),
    'missing' (online: some keys read as absent, every value that came back is right; the flip hit a key,
    which LMDB does not checksum, in a way the page walk on open cannot tell from data), 'served' (other
    values came back), or 'untyped: ...'
    (an error outside skewless.errors)."""
    from skewless import FeatureStore
    from skewless.errors import SkewlessError

    try:
        s = FeatureStore(path)
        if kind == "flip-history":
            got = s.read_history("v").to_pylist()
        else:
            from skewless.online import OnlineStore

            r = OnlineStore(os.path.join(path, "online")).reader("v")
            got = r.get(list(range(R))).drop_columns(["status"]).to_pylist()
            got = [{k: (str(v) if k == "x" and v is not None else v) for k, v in row.items()} for row in got]
    except SkewlessError as e:
        return "reported" if type(e).__name__ in ("StorageError", "MapFullError") else f"untyped: {e!r}"
    except Exception as e:  # noqa: BLE001 - the point is to see what escapes
        return f"untyped: {e!r}"
    norm = json.loads(json.dumps(got, default=str))
    if norm == expected:
        return "same"
    if kind == "flip-online" and len(norm) == len(expected):
        wrong = [g for g, e in zip(norm, expected, strict=True) if g != e]
        if all(g["x"] is None for g in wrong):
            return "missing"
    return "served"


def fill_disk(s: Any) -> str:
    from skewless.errors import SkewlessError

    b = 1
    while b < 100_000:
        try:
            s.write("v", batch(b))
        except SkewlessError as e:
            return f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001
            return f"untyped: {e!r}"
        b += 1
    return "never full"


# ---- the parent: trials ---------------------------------------------------------------------------------


def spawn(kind: str, path: str, arg: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", kind, path, arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_trial(kind: str, path: str, rng: random.Random) -> str:
    new_store(path, batches=3, online=kind != "kill-materialize")
    if kind == "kill-materialize":
        from skewless.offline import OfflineStore

        off = OfflineStore(os.path.join(path, "offline"))
        for b in range(4, 40):
            off.append("v", batch(b))
    p = spawn(kind, path)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise Broken(f"the child did not start: {p.communicate()[1][-2000:]}")
    time.sleep(rng.uniform(0.0, 1.0))
    p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    if p.returncode != -signal.SIGKILL:
        raise Broken(f"the child ended on its own ({p.returncode}) before the kill: {err[-2000:]}")
    if kind == "kill-push":
        return f"m={check_push(path)}"
    if kind == "kill-log":
        return f"logged={check_log(path)}"
    return f"m={check(path)}"


def flip(path: str, rng: random.Random, bits: int) -> str:
    """Flip ``bits`` random bits of ``path``; returns where (for the report of a failing trial)."""
    done = []
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for _ in range(bits):
            i, bit = rng.randrange(size), rng.randrange(8)
            f.seek(i)
            byte = f.read(1)[0]
            f.seek(i)
            f.write(bytes([byte ^ (1 << bit)]))
            done.append(f"{i}.{bit}")
    return f"{os.path.basename(path)} (size {size}) bits {' '.join(done)}"


def flip_trial(kind: str, base: str, path: str, rng: random.Random) -> str:
    shutil.copytree(base, path)
    if kind == "flip-history":
        files = sorted(
            os.path.join(path, "offline", "v", f) for f in os.listdir(os.path.join(path, "offline", "v"))
        )
        flip(rng.choice(files), rng, rng.choice([1, 8, 64]))
    else:
        flip(os.path.join(path, "online", "data.mdb"), rng, rng.choice([1, 8, 64]))
    p = spawn(kind, path, json.dumps(EXPECTED[kind]))
    out, err = p.communicate()
    if p.returncode != 0:
        return f"crash: exit {p.returncode}: {err.strip().splitlines()[-1:] if err else ''}"
    return out.strip().splitlines()[-1]


EXPECTED: dict[str, Any] = {}


def expected_of(kind: str, path: str) -> Any:
    """What reading the undamaged store gives, in read_damaged's form."""
    from skewless import FeatureStore

    s = FeatureStore(path)
    if kind == "flip-history":
        got = s.read_history("v").to_pylist()
    else:
        from skewless.online import OnlineStore

        r = OnlineStore(os.path.join(path, "online")).reader("v")
        got = r.get(list(range(R))).drop_columns(["status"]).to_pylist()
        got = [{k: (str(v) if k == "x" and v is not None else v) for k, v in row.items()} for row in got]
    return json.loads(json.dumps(got, default=str))


def full_disk_trial(root: str) -> tuple[str, str]:
    mnt = os.path.join(root, "tiny")
    os.makedirs(mnt)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True)
    how = "tmpfs of 1 MiB" if mounted.returncode == 0 else "RLIMIT_FSIZE of 1 MiB (mounting not permitted)"
    try:
        path = os.path.join(mnt, "store")
        new_store(path)
        p = spawn("full-disk", path, "0" if mounted.returncode == 0 else str(1 << 20))
        out, err = p.communicate()
        if p.returncode != 0:
            raise Broken(f"full disk: the writer crashed ({p.returncode}): {err[-2000:]}")
        last = json.loads(out.strip().splitlines()[-1])
        if not last.startswith("StorageError"):
            raise Broken(f"full disk: not a StorageError: {last}")
        m = check(path, materialize=False)
        return how, f"{last[:100]}... then m={m}, store consistent"
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", mnt], check=False)


def trial_rng(seed: int, kind: str, i: int) -> random.Random:
    """Each trial's own generator: a failing trial replays alone (``--only KIND --trial I``)."""
    return random.Random(f"{seed}/{kind}/{i}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="trials of each kind (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", help="run only this kind of trial (e.g. flip-history)")
    ap.add_argument("--trial", type=int, help="with --only: run only trial number TRIAL")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    failures: list[str] = []
    trials = [args.trial] if args.trial is not None else list(range(args.trials))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skewless-faults-") as root:
        for kind in ("kill-write", "kill-compact", "kill-materialize", "kill-push", "kill-log"):
            if args.only not in (None, kind):
                continue
            seen: Counter[str] = Counter()
            for i in trials:
                try:
                    kill_trial(kind, os.path.join(root, f"{kind}-{i}"), trial_rng(args.seed, kind, i))
                    seen["held"] += 1
                except Broken as e:
                    seen["BROKEN"] += 1
                    failures.append(f"{kind} trial {i}: {e}")
            print(f"{kind:17} {len(trials):4} trials: {dict(seen)}", flush=True)
        for kind in ("flip-history", "flip-online"):
            if args.only not in (None, kind):
                continue
            base = os.path.join(root, f"{kind}-base")
            new_store(base, batches=3)
            EXPECTED[kind] = expected_of(kind, base)
            seen = Counter()
            for i in trials:
                out = flip_trial(kind, base, os.path.join(root, f"{kind}-{i}"), trial_rng(args.seed, kind, i))
                seen[out.strip('"').split(":")[0].split('"')[0]] += 1
                # Both stores must report damage rather than serve it. Online, a flip in a key (LMDB
                # checksums nothing) may only make keys read as absent.
                ok = ('"reported', '"same', '"missing') if kind == "flip-online" else ('"reported', '"same')
                bad = not out.startswith(ok)
                if bad:
                    failures.append(f"{kind} trial {i}: {out}")
            print(f"{kind:17} {len(trials):4} trials: {dict(seen)}", flush=True)
        try:
            if args.only not in (None, "full-disk"):
                raise LookupError
            how, what = full_disk_trial(root)
            print(f"{'full-disk':17}    1 trial ({how}): {what}", flush=True)
        except LookupError:
            pass
        except Broken as e:
            failures.append(str(e))
            print(f"{'full-disk':17}    1 trial: BROKEN", flush=True)
    for f in failures:
        print("FAILED", f)
    print(
        f"{'all checks held' if not failures else f'{len(failures)} failure(s)'} "
        f"(seed {args.seed}, {time.perf_counter() - t0:.0f} s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
