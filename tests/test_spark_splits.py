"""Which history row groups a Spark task reads without the time filter: only those whose footer
statistics put every time in the range (``skewless.spark._times_within``), against the rows
themselves. No Spark."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless.spark import _times_within

UNITS = ["ms", "us", "ns"]


@settings(max_examples=80, deadline=None)
@given(
    times=st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), min_size=1, max_size=30),
    unit=st.sampled_from(UNITS),
    lo=st.one_of(st.none(), st.integers(-(10**12), 10**12)),
    width=st.one_of(st.none(), st.integers(0, 2 * 10**12)),
    group=st.integers(1, 10),
)
def test_unfiltered_only_when_the_filter_keeps_every_row(
    tmp_path_factory: object,
    times: list[int | None],
    unit: str,
    lo: int | None,
    width: int | None,
    group: int,
) -> None:
    folder = tmp_path_factory.mktemp("splits")  # type: ignore[attr-defined]
    path = os.path.join(folder, "h.parquet")
    col = pa.array(times, pa.int64()).cast(pa.timestamp(unit, tz="UTC"))
    pq.write_table(pa.table({"ts": col, "x": np.arange(len(times))}), path, row_group_size=group)
    md = pq.read_metadata(path)
    hi = None if width is None or lo is None else lo + width
    pf = pq.ParquetFile(path)
    for g in range(md.num_row_groups):
        ts = pf.read_row_group(g).column("ts").cast(pa.timestamp("us", tz="UTC"), safe=False)
        # The oracle: the row filter of the local read (bounds cast to the file's unit, hi inclusive).
        keep = pc.is_valid(ts)
        if lo is not None:
            bound = pc.cast(pa.scalar(lo, pa.timestamp("us", tz="UTC")), col.type, safe=False)
            keep = pc.and_kleene(keep, pc.greater_equal(pf.read_row_group(g).column("ts"), bound))
        if hi is not None:
            bound = pc.cast(pa.scalar(hi, pa.timestamp("us", tz="UTC")), col.type, safe=False)
            keep = pc.and_kleene(keep, pc.less_equal(pf.read_row_group(g).column("ts"), bound))
        all_kept = bool(pc.all(pc.fill_null(keep, False)).as_py())
        if _times_within(md, g, "ts", lo, hi):
            assert all_kept, (g, lo, hi)


def test_in_range_groups_skip_the_filter_and_straddling_ones_keep_it(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "h.parquet")
    ts = pa.array([10, 20, 30, 40, 50, None], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"ts": ts}), path, row_group_size=2)
    md = pq.read_metadata(path)
    assert [_times_within(md, g, "ts", 10, 40) for g in range(3)] == [True, True, False]
    assert [_times_within(md, g, "ts", 15, None) for g in range(3)] == [False, True, False]
    assert [_times_within(md, g, "ts", None, None) for g in range(3)] == [True, True, False]
    assert not _times_within(md, 0, "missing", None, None)
