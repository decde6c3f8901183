"""``_core.partition_rows``: a task's rows ordered by group number in one pass (what skewless.spark
packs one IPC stream per group from), against a numpy stable argsort and pyarrow's take. No Spark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless._core import partition_rows
from skewless.errors import InvalidArgumentError

TYPES = [
    pa.int64(),
    pa.int32(),
    pa.uint8(),
    pa.float64(),
    pa.float32(),
    pa.timestamp("us", tz="UTC"),
    pa.timestamp("ns", tz="Europe/Paris"),
    pa.date32(),
    pa.string(),
    pa.large_string(),
    pa.binary(),
    pa.bool_(),
    pa.list_(pa.int64()),
]


def _column(rng: np.random.Generator, t: pa.DataType, n: int, nulls: bool) -> pa.Array:
    mask = rng.random(n) < 0.3 if nulls else None
    ints = rng.integers(0, 100, n)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.array([f"s{v}" for v in ints], t, mask=mask)
    if pa.types.is_binary(t):
        return pa.array([bytes([v]) * (v % 5) for v in ints], t, mask=mask)
    if pa.types.is_boolean(t):
        return pa.array(ints % 2 == 0, t, mask=mask)
    if pa.types.is_list(t):
        return pa.array([list(range(v % 4)) for v in ints], t, mask=mask)
    if pa.types.is_floating(t):
        return pa.array(ints.astype(np.float64) / 3, t, mask=mask)
    if pa.types.is_date(t):
        return pa.array(ints.astype(np.int32), pa.int32(), mask=mask).cast(t)
    return pa.array(ints, pa.int64(), mask=mask).cast(t)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    n=st.integers(1, 20),
    types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=5),
    nulls=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_partition_rows_is_a_stable_sort_by_group(
    rows: list[int], n: int, types: list[pa.DataType], nulls: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    schema = pa.schema([pa.field(f"c{i}", t) for i, t in enumerate(types)])
    batches = [
        pa.RecordBatch.from_arrays([_column(rng, t, m, nulls) for t in types], schema=schema) for m in rows
    ]
    table = pa.Table.from_batches(batches, schema=schema)
    groups = rng.integers(0, n, table.num_rows).astype(np.int32)

    got, counts = partition_rows(table, groups, n)

    order = np.argsort(groups, kind="stable")
    assert got.schema == table.schema
    assert got.combine_chunks().equals(table.take(pa.array(order)).combine_chunks())
    assert counts.dtype == np.uint64
    assert counts.tolist() == np.bincount(groups, minlength=n).tolist()


def test_partition_rows_refuses_bad_group_numbers() -> None:
    table = pa.table({"x": [1, 2, 3]})
    with pytest.raises(InvalidArgumentError, match="outside 0..2"):
        partition_rows(table, np.array([0, 2, 1], np.int32), 2)
    with pytest.raises(InvalidArgumentError, match="outside"):
        partition_rows(table, np.array([0, -1, 1], np.int32), 2)
    with pytest.raises(InvalidArgumentError, match="one per row"):
        partition_rows(table, np.array([0, 1], np.int32), 2)
    # The input is never changed.
    assert table.column("x").to_pylist() == [1, 2, 3]
