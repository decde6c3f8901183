"""The benchmark workload generator (benches/_workload.py) makes the workload DESIGN.md specifies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def workload():
    spec = importlib.util.spec_from_file_location("_workload", BENCHES / "_workload.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sizes_are_the_standard_ones():
    assert workload().SIZES == {
        "S": (1_000_000, 100_000, 10_000),
        "M": (10_000_000, 1_000_000, 100_000),
        "L": (50_000_000, 5_000_000, 1_000_000),
    }


def test_columns_types_and_distributions():
    w = workload()
    feats, labels = w.make(200_000, 20_000, 1_000)
    ts = pa.timestamp("us", tz="UTC")
    assert feats.schema == pa.schema(
        [("entity_id", pa.int64()), ("event_timestamp", ts), ("created_timestamp", ts)]
        + [(f"f{i}", pa.float64()) for i in range(5)]
    )
    assert labels.schema == pa.schema(
        [("entity_id", pa.int64()), ("event_timestamp", ts), ("label", pa.int8())]
    )
    assert (feats.num_rows, labels.num_rows) == (200_000, 20_000)

    start = np.datetime64("2023-01-01T00:00:00", "us").astype(np.int64)
    year = 365 * 86_400 * 10**6
    for table in (feats, labels):
        ids = table["entity_id"].to_numpy()
        assert ids.min() == 0 and ids.max() == 999
        t = table["event_timestamp"].cast(pa.int64()).to_numpy()
        assert t.min() >= start and t.max() < start + year
        assert t.max() - t.min() > 0.99 * year  # spread over the whole year
        assert not np.all(np.diff(t) >= 0)  # random order, not sorted
    lag = (feats["created_timestamp"].cast(pa.int64()).to_numpy()) - feats["event_timestamp"].cast(
        pa.int64()
    ).to_numpy()
    assert lag.min() >= 0 and lag.max() < 3_600 * 10**6 and lag.mean() > 0.45 * 3_600 * 10**6

    for i in range(5):
        col = feats[f"f{i}"]
        share = col.null_count / feats.num_rows
        assert (0.045 < share < 0.055) if i == 1 else share == 0
        v = col.drop_null().to_numpy()
        assert abs(v.mean()) < 0.02 and abs(v.std() - 1) < 0.02  # standard normal
    assert set(pc.unique(labels["label"]).to_pylist()) == {0, 1}


def test_seeded():
    w = workload()
    a, b = w.make(1_000, 100, 10), w.make(1_000, 100, 10)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not w.make(1_000, 100, 10, seed=8)[0].equals(a[0])


def test_docstring_example():
    import doctest

    result = doctest.testmod(workload(), verbose=False)
    assert result.attempted > 0 and result.failed == 0
