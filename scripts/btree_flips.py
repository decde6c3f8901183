"""Bit flips in LMDB's own B-tree pages of an online store, position by position, each read back by a
fresh process-level open of the damaged store.

    python scripts/btree_flips.py --keys 1000            # every bit of every structural byte
    python scripts/btree_flips.py --keys 1000 --sample 5  # every 5th position

LMDB keeps no page checksums. What a reader must never do with a damaged page: die (a signal, e.g.
SIGBUS reading past the end of ``data.mdb`` through a flipped node offset, or SIGSEGV following a flipped
node flag), raise an untyped error, or serve a wrong value. Allowed: a ``StorageError`` (the damage is
reported), the same values, or keys reading as absent (every value that does come back is right).

The positions flipped are the structural bytes of every branch and leaf page of the data file, from
LMDB's page layout (``mdb.c``, 64-bit build: a 16-byte page header ``pgno u64, pad u16, flags u16,
lower u16, upper u16``, then ``lower - 16`` bytes of u16 node offsets; each node starts with ``lo u16,
hi u16, flags u16, ksize u16``, where a branch node's child page number is ``lo | hi << 16 | flags <<
32`` and a leaf node's data size is ``lo | hi << 16``). Each flip runs in a child process that copies
the pristine store, flips one bit, opens the copy and reads every key; a child that dies is recorded
with the flip it was on, and a new child carries on after it.

Exit status 0 when no flip crashed a reader, served a wrong value or raised an untyped error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

PAGE = 4096
P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def build(path: str, keys: int) -> None:
    """An online store at ``path`` with view ``v``: keys 0..keys-1, x == key / 2."""
    import pyarrow as pa
    from skewless.online import OnlineStore

    store = OnlineStore(path)
    ts = pa.array([T0] * keys, pa.timestamp("us", tz="UTC"))
    table = pa.table({"k": pa.array(range(keys), pa.int64()), "ts": ts, "x": [k / 2 for k in range(keys)]})
    store.write("v", table, keys="k", timestamp="ts")


def read_all(path: str, keys: int) -> list[Any]:
    from skewless.online import OnlineStore

    return OnlineStore(path).reader("v").get(list(range(keys))).column("x").to_pylist()


def structural_positions(data: bytes) -> list[tuple[int, str]]:
    """(offset, what) of every structural byte of every branch and leaf page: the header, the node
    offsets and each node's 8-byte header."""
    out: list[tuple[int, str]] = []
    for pgno in range(2, len(data) // PAGE):  # pages 0 and 1 are the meta pages
        base = pgno * PAGE
        (stored_pgno,) = struct.unpack_from("<Q", data, base)
        flags, lower, upper = struct.unpack_from("<HHH", data, base + 10)
        if stored_pgno != pgno or flags & (P_BRANCH | P_LEAF) == 0 or flags & (P_OVERFLOW | P_META):
            continue  # a free or overflow page: no structure LMDB reads on a lookup
        kind = "branch" if flags & P_BRANCH else "leaf"
        if not 16 <= lower <= upper <= PAGE:
            continue
        out += [(base + i, f"{kind} {pgno} header+{i}") for i in range(16)]
        nkeys = (lower - 16) // 2
        out += [(base + 16 + i, f"{kind} {pgno} node offsets+{i}") for i in range(2 * nkeys)]
        for n in range(nkeys):
            (ptr,) = struct.unpack_from("<H", data, base + 16 + 2 * n)
            if ptr + 8 <= PAGE:
                out += [(base + ptr + i, f"{kind} {pgno} node {n} header+{i}") for i in range(8)]
    return out


def child(pristine: str, work: str, keys: int, flips: list[tuple[int, int]]) -> None:
    """Reads the store once per flip (offset, bit), each on its own damaged copy; one JSON line per flip,
    written before the read starts ("start") and after it ends (the outcome)."""
    from skewless.errors import SkewlessError

    expected = read_all(pristine, keys)
    for i, (offset, bit) in enumerate(flips):
        path = os.path.join(work, f"f{i}")
        shutil.copytree(pristine, path)
        with open(os.path.join(path, "data.mdb"), "r+b") as f:
            f.seek(offset)
            b = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([b ^ (1 << bit)]))
        print(json.dumps(["start", i]), flush=True)
        try:
            got = read_all(path, keys)
            if got == expected:
                out = "same"
            elif all(g is None or g == e for g, e in zip(got, expected, strict=True)):
                out = "missing"
            else:
                out = "served"
        except SkewlessError as e:
            out = "reported" if type(e).__name__ == "StorageError" else f"untyped: {e!r}"
        except Exception as e:  # noqa: BLE001 - the point is to see what escapes
            out = f"untyped: {e!r}"
        shutil.rmtree(path)
        print(json.dumps(["done", i, out]), flush=True)


def sweep(
    pristine: str, keys: int, flips: list[tuple[int, int]], batch: int = 500, timeout: float = 600.0
) -> list[str]:
    """The outcome of each flip: 'same', 'missing', 'reported', 'served', 'untyped: ...' or
    'signal NAME' (the reader process died). A child process reads at most ``batch`` flips, each
    child within ``timeout`` seconds (a reader that hangs fails the sweep)."""
    outcomes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="skewless-btree-") as work:
        while len(outcomes) < len(flips):
            rest = flips[len(outcomes) : len(outcomes) + batch]
            args = json.dumps({"pristine": pristine, "work": work, "keys": keys, "flips": rest})
            p = subprocess.run(
                [sys.executable, __file__, "--child"],
                input=args,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            started = None
            for line in p.stdout.splitlines():
                msg = json.loads(line)
                if msg[0] == "start":
                    started = msg[1]
                else:
                    outcomes.append(msg[2])
                    started = None
            if p.returncode != 0:
                if started is None:
                    raise RuntimeError(f"the reader process failed outside a read: {p.stderr[-2000:]}")
                sig = -p.returncode
                name = signal.Signals(sig).name if 0 < sig < signal.NSIG else f"exit {p.returncode}"
                outcomes.append(f"signal {name}")
                for d in os.listdir(work):
                    shutil.rmtree(os.path.join(work, d))
    return outcomes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=1, help="flip every SAMPLE-th position only")
    ap.add_argument("--bits", default="01234567", help="which bits of each byte to flip (default all)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        a = json.loads(sys.stdin.read())
        child(a["pristine"], a["work"], a["keys"], [tuple(f) for f in a["flips"]])
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skewless-btree-base-") as base:
        pristine = os.path.join(base, "online")
        build(pristine, args.keys)
        with open(os.path.join(pristine, "data.mdb"), "rb") as f:
            data = f.read()
        positions = structural_positions(data)[:: args.sample]
        flips = [(off, int(b)) for off, _ in positions for b in args.bits]
        what = [w for _, w in positions for _ in args.bits]
        outcomes = sweep(pristine, args.keys, flips)
    seen = Counter(o.split(":")[0] for o in outcomes)
    print(f"{len(flips)} flips in {len(data) // PAGE} pages ({args.keys} keys): {dict(seen)}")
    bad = [(f, w, o) for f, w, o in zip(flips, what, outcomes, strict=True) if o not in OK]
    for (off, bit), w, o in bad[:50]:
        print(f"  offset {off} bit {bit} ({w}): {o}")
    print(f"{len(bad)} bad outcome(s), {time.perf_counter() - t0:.0f} s")
    return 1 if bad else 0


OK = ("same", "missing", "reported")

if __name__ == "__main__":
    sys.exit(main())
