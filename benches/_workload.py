"""The standard point-in-time workload (DESIGN.md, "Workloads"), cached as Parquet.

`gen_data.py` lives in the shared folder: `$SKEWLESS_SHARED/bench/gen_data.py`, or
`<repo>/../shared/bench/gen_data.py`. Generated data is cached under `<repo>/bench-data/<size>/`
(gitignored), so every benchmark process reads the same bytes from Parquet, as a training job would.

Example:
    >>> from _workload import load  # doctest: +SKIP
    >>> features, labels = load("S")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TTL_DAYS = 30


def shared_dir() -> Path:
    env = os.environ.get("SKEWLESS_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def gen_data() -> ModuleType:
    path = shared_dir() / "bench" / "gen_data.py"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; set SKEWLESS_SHARED to the folder holding bench/gen_data.py"
        )
    spec = importlib.util.spec_from_file_location("gen_data", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def paths(size: str) -> tuple[Path, Path]:
    out = REPO / "bench-data" / size
    return out / "features.parquet", out / "labels.parquet"


def ensure(size: str) -> tuple[Path, Path]:
    """Generate the size's Parquet files once (same layout as gen_data.py's own CLI)."""
    feats, labels = paths(size)
    if not (feats.exists() and labels.exists()):
        g = gen_data()
        feats.parent.mkdir(parents=True, exist_ok=True)
        f, lab = g.make(*g.SIZES[size])
        pq.write_table(f, feats, row_group_size=1 << 20)
        pq.write_table(lab, labels)
    return feats, labels


def load(size: str) -> tuple[pa.Table, pa.Table]:
    """(features, labels) as pyarrow Tables read from the cached Parquet (chunked by row group)."""
    feats, labels = ensure(size)
    return pq.read_table(feats), pq.read_table(labels)
