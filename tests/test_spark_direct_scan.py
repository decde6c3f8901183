"""skewless.spark_direct without Spark: the footers' time span against the rows themselves, the parts a
task reads, the reader's types. (The Spark side, which entity DataFrames are read directly and that
the answers equal the local ones, is in test_spark_direct.py.)"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import spark_direct
from skewless.spark import _micros_np

UNITS = {"ms": 1000, "us": 1}


def column(kind: str, values: list[int | None]) -> pa.Array:
    if kind == "date":
        return pa.array(values, pa.int32()).cast(pa.date32())  # days since 1970
    if kind == "int":
        return pa.array(values, pa.int64())
    return pa.array(values, pa.timestamp(kind, tz="UTC"))


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["ms", "us", "date", "int"]),
    st.lists(
        st.lists(st.one_of(st.none(), st.integers(-(10**6), 10**6)), min_size=0, max_size=12),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 5),
    st.booleans(),
)
def test_the_footers_span_is_the_rows_span_or_none(tmp_path_factory, kind, files, group_rows, stats):
    folder = tmp_path_factory.mktemp("p")
    paths = []
    for i, values in enumerate(files):
        p = os.path.join(folder, f"{i}.parquet")
        pq.write_table(
            pa.table({"k": pa.array(range(len(values)), pa.int64()), "t": column(kind, values)}),
            p,
            row_group_size=group_rows,
            write_statistics=stats,
        )
        paths.append(p)
    tables = [pq.read_table(p) for p in paths]
    scan = spark_direct.DirectScan(paths, tables[0].schema)
    assert scan.rows == sum(len(v) for v in files)
    times = np.concatenate([_micros_np(t.column("t")) for t in tables])
    valid = np.concatenate([t.column("t").is_valid().to_numpy(zero_copy_only=False) for t in tables])
    span = scan.span("t")
    if not valid.any():
        assert span is None
    elif span is not None:
        # Whatever the footers say, they say it exactly (a span too narrow would lose history rows).
        assert span == (int(times[valid].min()), int(times[valid].max()))
    else:
        assert not stats or any(
            pq.read_metadata(p).row_group(g).column(1).statistics is None
            for p in paths
            for g in range(pq.read_metadata(p).num_row_groups)
        )
    if stats:
        assert (span is None) == (not valid.any())
    assert scan.span("missing") is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=4), st.integers(1, 7), st.integers(1, 20))
def test_the_parts_hold_every_row_group_once_and_read_in_spark_types(
    tmp_path_factory, sizes, group_rows, split
):
    folder = tmp_path_factory.mktemp("p")
    paths, tables = [], []
    start = 0
    for i, n in enumerate(sizes):
        t = pa.table(
            {
                "t": pa.array(range(start, start + n), pa.timestamp("ms", tz="UTC")),
                "s": pa.array([f"x{j}" for j in range(start, start + n)], pa.large_string()),
                "k": pa.array(range(start, start + n), pa.int32()),
            }
        )
        start += n
        p = os.path.join(folder, f"{i}.parquet")
        pq.write_table(t, p, row_group_size=group_rows)
        paths.append(p)
        tables.append(t)
    # Spark hands a task microseconds, its zone's name, plain strings; only the columns it has.
    want = pa.schema([("k", pa.int32()), ("t", pa.timestamp("us", tz="Etc/UTC")), ("s", pa.string())])
    old = spark_direct.SPLIT_ROWS
    spark_direct.SPLIT_ROWS = split
    try:
        scan = spark_direct.DirectScan(paths, want)
        parts = scan.splits()
        read = scan.reader()
        got = [b for i in range(len(parts)) for b in read(i)]
    finally:
        spark_direct.SPLIT_ROWS = old
    seen = [(p, g) for part in parts for p, groups in part for g in groups]
    assert seen == [(p, g) for p in paths for g in range(pq.read_metadata(p).num_row_groups)]
    out = pa.Table.from_batches(got, want) if got else want.empty_table()
    assert out.schema == want
    whole = pa.concat_tables(tables).select(want.names).cast(want)
    assert out.equals(whole)
    ms = pa.concat_tables(tables).column("t").cast(pa.int64()).to_pylist()
    assert out.column("t").cast(pa.int64()).to_pylist() == [v * 1000 for v in ms]


def test_only_exact_casts_count_as_the_same_type():
    same = spark_direct._same_type
    assert same(pa.timestamp("ms", tz="UTC"), pa.timestamp("us", tz="America/New_York"))
    assert same(pa.large_string(), pa.string())
    assert same(pa.int8(), pa.int8())
    assert not same(pa.timestamp("ns", tz="UTC"), pa.timestamp("us", tz="UTC"))  # Spark refuses nanos
    assert not same(pa.timestamp("us"), pa.timestamp("us", tz="UTC"))  # INT96 / NTZ: Spark's own rules
    assert not same(pa.uint32(), pa.int64())
    assert not same(pa.int32(), pa.int64())
    assert spark_direct._old_spark(b"2.4.8") and not spark_direct._old_spark(b"3.5.1")
    assert not spark_direct._old_spark(None)
    assert spark_direct._local_path("file:///a/b%20c.parquet") == "/a/b c.parquet"
    assert spark_direct._local_path("hdfs://nn/a.parquet") is None
