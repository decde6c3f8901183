"""Per-key cost of ``Reader.get_numpy`` over one large request: 100,000 keys of a 5-float64 view, in
sorted and in random order, the minimum and median of 15 calls. One call is one read transaction, so
the per-key figure is the lookup and decode (with value layout 3, the checksum too) without Python
overhead. To compare two builds, run it with each on ``PYTHONPATH`` in turn, alternating.

    python benches/online_lookup_cost.py [--keys 100000] [--calls 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from skewless.online import OnlineStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=15)
    args = ap.parse_args()
    n = args.keys
    tmp = Path(tempfile.mkdtemp(prefix="skewless-lookup-"))
    try:
        o = OnlineStore(tmp / "online", map_size=1 << 30)
        ts = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC"))
        cols = {f"f{i}": np.random.default_rng(i).random(n) for i in range(5)}
        o.write("v", pa.table({"k": np.arange(n), "ts": ts, **cols}), keys="k", timestamp="ts")
        r = o.reader("v")
        for order, keys in (("sorted", np.arange(n)), ("random", np.random.default_rng(1).permutation(n))):
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                r.get_numpy(keys)
                times.append(time.perf_counter() - t0)
            per = np.array(times) / n * 1e9
            print(
                f"{n} {order} keys, 5 float64: min {per.min():.0f} ns/key, median {np.median(per):.0f} ns/key"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
