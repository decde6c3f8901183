"""Entity rows read by the Spark tasks from their Parquet files (skewless.spark_direct): which entity
DataFrames take that way, and that every way gives the local answer (and so the same rows as Spark's
own read). Needs pyspark and Java: it runs in CI's Spark step (conftest.py, SPARK_TESTS)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_spark
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import spark_direct
from test_spark import (
    FEATURES,
    SEC,
    SLOW,
    build_store,
    entity_row,
    entity_table,
    rows_equal,
    to_local,
    v_row,
    w_row,
)

spark = test_spark.spark  # the session's fixture


def write_parts(folder: str, t: pa.Table, files: int, group_rows: int, unit: str = "us") -> str:
    """``t`` as ``files`` Parquet files of row groups of ``group_rows`` rows; the time in ``unit``."""
    os.makedirs(folder, exist_ok=True)
    t = t.set_column(
        t.schema.get_field_index("event_timestamp"),
        "event_timestamp",
        t.column("event_timestamp").cast(pa.timestamp(unit, tz="UTC")),
    )
    step = -(-t.num_rows // files)
    for i in range(files):
        pq.write_table(
            t.slice(i * step, step), os.path.join(folder, f"part-{i}.parquet"), row_group_size=group_rows
        )
    return folder


def staging_jobs(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    import skewless.spark as ss

    count: list[int] = []
    real = ss._stage_job
    monkeypatch.setattr(ss, "_stage_job", lambda *a, **k: count.append(1) or real(*a, **k))
    return count


@settings(max_examples=6, **SLOW)
@given(
    st.sampled_from([None, 2]),
    st.lists(st.lists(v_row, min_size=1, max_size=8), min_size=1, max_size=3),
    st.lists(st.lists(w_row, min_size=1, max_size=6), min_size=0, max_size=2),
    st.lists(entity_row, min_size=1, max_size=30),
    st.integers(1, 3),
    st.integers(1, 7),
    st.sampled_from(["us", "ms"]),
)
def test_a_parquet_entity_df_is_read_by_the_tasks_with_the_local_answer(
    spark, tmp_path_factory, ttl_s, v_writes, w_writes, ents, files, group_rows, unit
):
    import skewless.spark as ss

    path = str(tmp_path_factory.mktemp("store"))
    store = build_store(path, ttl_s, v_writes, w_writes, [[(1, 2, 0, 1.0)]])
    entity = entity_table(ents)
    want = store.get_historical_features(entity, FEATURES)
    folder = write_parts(str(tmp_path_factory.mktemp("labels")), entity, files, group_rows, unit)
    df = spark.read.parquet(folder)
    assert spark_direct.scan_of(df, ss._arrow_schema(df)) is not None
    direct = ss.get_historical_features(spark, path, df, FEATURES, buckets=3)
    rows_equal(to_local(direct, want).sort_by("row"), want)
    # Spark's own read of the same rows (any other DataFrame: here made in memory): the same table.
    through_spark = ss.get_historical_features(
        spark, path, spark.createDataFrame(entity), FEATURES, buckets=3
    )
    rows_equal(to_local(through_spark, want).sort_by("row"), to_local(direct, want).sort_by("row"))


def test_entity_and_histories_are_staged_in_one_job_when_the_footers_give_the_span(
    spark, tmp_path, monkeypatch
):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    store = build_store(path, 4, [[(u, t, 0, float(u + t)) for u in range(5) for t in (1, 4, 7)]], [], [[]])
    entity = entity_table([(u % 6, 0, "p", t) for u in range(12) for t in (0, 3, 8)])
    want = store.get_historical_features(entity, ["v:x", "v:y"])
    folder = write_parts(str(tmp_path / "labels"), entity, 2, 5)
    jobs = staging_jobs(monkeypatch)
    got = ss.get_historical_features(spark, path, spark.read.parquet(folder), ["v:x", "v:y"], buckets=4)
    assert len(jobs) == 1
    rows_equal(to_local(got, want).sort_by("row"), want)
    # No statistics in the footers: the entity rows are staged first (their span from the rows), then
    # the histories, still read by the tasks themselves.
    bare = str(tmp_path / "bare")
    os.makedirs(bare)
    pq.write_table(entity, os.path.join(bare, "x.parquet"), write_statistics=False)
    jobs.clear()
    got = ss.get_historical_features(spark, path, spark.read.parquet(bare), ["v:x", "v:y"], buckets=4)
    assert len(jobs) == 2
    rows_equal(to_local(got, want).sort_by("row"), want)


def test_footers_that_do_not_hold_restage_the_usual_way(spark, tmp_path, monkeypatch):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    store = build_store(
        path, None, [[(u, t, 0, float(u + t)) for u in range(5) for t in (1, 4, 7)]], [], [[]]
    )
    entity = entity_table([(u % 6, 0, "p", t) for u in range(12) for t in (0, 3, 8)])
    want = store.get_historical_features(entity, ["v:x", "v:y"])
    folder = write_parts(str(tmp_path / "labels"), entity, 1, 100)
    stage_root = os.path.join(path, ".skewless-staging")
    # Footers that claim a narrower span than the rows hold (a history row at 7 s is needed by a label at
    # 8 s): the staged rows show it, the first staging is removed, and the usual way gives the answer.
    monkeypatch.setattr(spark_direct.DirectScan, "span", lambda self, c: (0, 5 * SEC))
    jobs = staging_jobs(monkeypatch)
    with ss.staging_scope():
        got = ss.get_historical_features(spark, path, spark.read.parquet(folder), ["v:x", "v:y"], buckets=4)
        assert len(os.listdir(stage_root)) == 1
        rows_equal(to_local(got, want).sort_by("row"), want)
    assert len(jobs) == 3
    assert not os.path.exists(stage_root)


def test_more_entity_rows_than_skew_rows_split_a_hot_key_with_the_tasks_reading(spark, tmp_path, monkeypatch):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    store = build_store(path, None, [[(k, t, 0, float(k + t)) for k in range(6) for t in range(9)]], [], [[]])
    entity = entity_table([(4, 0, "p", t % 9) for t in range(50)] + [(k, 0, "p", 6) for k in range(6)])
    want = store.get_historical_features(entity, ["v:x", "v:y"])
    folder = write_parts(str(tmp_path / "labels"), entity, 2, 8)
    found: list[object] = []
    real_hot = ss._hot
    monkeypatch.setattr(ss, "_hot", lambda *a, **k: found.append(real_hot(*a, **k)) or found[-1])
    got = ss.get_historical_features(
        spark, path, spark.read.parquet(folder), ["v:x", "v:y"], buckets=4, skew_rows=20
    )
    rows_equal(to_local(got, want).sort_by("row"), want)
    assert found and list(found[0]) == [(4,)]  # type: ignore[call-overload]


def test_entity_dataframes_that_are_not_bare_parquet_scans_go_through_spark(spark, tmp_path):
    import skewless.spark as ss
    from pyspark.sql import functions as F

    path = str(tmp_path / "store")
    store = build_store(
        path, None, [[(u, t, 0, float(u + t)) for u in range(5) for t in (1, 4, 7)]], [], [[]]
    )
    entity = entity_table([(u % 6, 0, "p", t) for u in range(12) for t in (0, 3, 8)])
    folder = write_parts(str(tmp_path / "labels"), entity, 2, 5)
    parted = str(tmp_path / "parted")
    pq.write_to_dataset(entity, parted, partition_cols=["b"])
    legacy = str(tmp_path / "legacy")
    os.makedirs(legacy)
    pq.write_table(
        entity.replace_schema_metadata({"org.apache.spark.legacyDateTime": ""}),
        os.path.join(legacy, "x.parquet"),
    )
    scan = spark.read.parquet(folder)
    others = {
        "a filter": scan.where(F.col("a") >= 0),
        "a projection": scan.select("event_timestamp", "user_id", "a", "b", "row"),
        "a reader option": spark.read.option("mergeSchema", "true").parquet(folder),
        "partition folders": spark.read.parquet(parted),
        "legacy calendar files": spark.read.parquet(legacy),
        "made in memory": spark.createDataFrame(entity),
        "a cast column": scan.withColumn("a", F.col("a").cast("int")),
    }
    assert spark_direct.scan_of(scan, ss._arrow_schema(scan)) is not None
    for what, df in others.items():
        assert spark_direct.scan_of(df, ss._arrow_schema(df)) is None, what
        want = store.get_historical_features(df.toArrow().cast(ss._arrow_schema(df)), ["v:x"])
        got = ss.get_historical_features(spark, path, df, ["v:x"], buckets=3)
        rows_equal(to_local(got, want).sort_by("row"), want.sort_by("row"))
    # keep_order numbers the rows in Spark (a column added): Spark reads them, the order is restored.
    want = store.get_historical_features(entity, ["v:x"])
    rows_equal(
        to_local(ss.get_historical_features(spark, path, scan, ["v:x"], keep_order=True), want).sort_by(
            "row"
        ),
        want,
    )


def test_not_a_classic_dataframe_is_not_read_directly():
    class NoJvm:
        columns = ["a"]

    assert spark_direct.scan_of(NoJvm(), pa.schema([("a", pa.int64())])) is None


@pytest.mark.parametrize("kind", ["date", "ms"])
def test_date_and_millisecond_times_read_directly_give_the_local_answer(spark, tmp_path, kind):
    import datetime as dt

    import skewless.spark as ss
    from skewless import Entity, FeatureStore, FeatureView, Field, Float64

    store = FeatureStore(str(tmp_path / "store"))
    u = Entity("user")
    store.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
    day = 86_400 * SEC
    store.write(
        "v",
        {
            "user_id": [1, 1, 2],
            "event_timestamp": pa.array([day, 3 * day, 2 * day], pa.timestamp("us", tz="UTC")),
            "x": [1.0, 3.0, 2.0],
        },
    )
    days = [0, 1, 2, 3, 4]
    when = (
        pa.array([dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in days], pa.date32())
        if kind == "date"
        else pa.array([d * day // 1000 for d in days], pa.timestamp("ms", tz="UTC"))
    )
    entity = pa.table({"row": list(range(5)), "user_id": [1, 2, 1, 2, 1], "event_timestamp": when})
    want = store.get_historical_features(entity, ["v:x"])
    folder = str(tmp_path / "labels")
    os.makedirs(folder)
    pq.write_table(entity, os.path.join(folder, "x.parquet"))
    df = spark.read.parquet(folder)
    assert spark_direct.scan_of(df, ss._arrow_schema(df)) is not None
    got = ss.get_historical_features(spark, str(tmp_path / "store"), df, ["v:x"], buckets=2)
    rows_equal(to_local(got, want).sort_by("row"), want)


def test_empty_parquet_entity_files_give_an_empty_result(spark, tmp_path):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    store = build_store(
        path, None, [[(u, t, 0, float(u + t)) for u in range(5) for t in (1, 4, 7)]], [], [[]]
    )
    entity = entity_table([])
    want = store.get_historical_features(entity, ["v:x", "v:y"])
    folder = str(tmp_path / "labels")
    os.makedirs(folder)
    pq.write_table(entity, os.path.join(folder, "x.parquet"))
    df = spark.read.parquet(folder)
    assert spark_direct.scan_of(df, ss._arrow_schema(df)) is not None
    got = ss.get_historical_features(spark, path, df, ["v:x", "v:y"], buckets=2)
    assert to_local(got, want).num_rows == 0
    assert got.columns == want.column_names
