"""skewless.spark against the local path: the same rows, value for value, on random inputs.

One SparkSession in ``local[2,2]`` (two cores, a failed task retried once) serves every test (Spark
starts slowly). Without pyspark or Java these tests fail, saying what to install; the default suite
leaves this file to its own run (conftest.py): ``python -m pytest tests/test_spark.py`` (CI: its Spark step).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import shutil
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import snapshot
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int32, Int64, String, asof_join
from skewless.errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    RegistryError,
    UnknownFeatureError,
)

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000
# Every example runs Spark jobs (seconds each): no shrinking, which could take many minutes; a failure
# prints its inputs as they were generated.
SLOW = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.fail(
            "pyspark is not installed: the Spark tests need it. Install it with "
            "`pip install 'skewless[spark]'` (or `pip install 'pyspark>=4.0'`) and a Java 17+ runtime"
        )
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail(
            "no Java runtime: Spark needs Java 17 or later. Install one (Debian/Ubuntu: "
            "`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        )
    session = (
        # Two attempts per task, as a cluster retries a failed task (tests of retried staging tasks).
        SparkSession.builder.master("local[2,2]")
        .appName("skewless-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "America/New_York")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def to_local(spark_out: object, like: pa.Table) -> pa.Table:
    """A Spark result as an Arrow table in the local result's types (Spark has its own: zone names)."""
    t = spark_out.toArrow()  # type: ignore[attr-defined]
    assert t.column_names == like.column_names
    return t.cast(like.schema)


def rows_equal(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows
    for name in b.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


# ---- asof_join -------------------------------------------------------------------------------------------

left_row = st.tuples(
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from(["a", "b", None]),
    st.one_of(st.none(), st.integers(0, 20)),
)
right_row = st.tuples(
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from(["a", "b", None]),
    st.one_of(st.none(), st.integers(0, 20)),
    st.one_of(st.none(), st.integers(0, 2)),
    st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
)


def asof_tables(lrows: list, rrows: list) -> tuple[pa.Table, pa.Table]:
    left = pa.table(
        {
            "lid": pa.array(range(len(lrows)), pa.int64()),
            "k": pa.array([r[0] for r in lrows], pa.int64()),
            "s": pa.array([r[1] for r in lrows], pa.string()),
            "t": pa.array([None if r[2] is None else r[2] * SEC for r in lrows], TS),
        }
    )
    right = pa.table(
        {
            "k": pa.array([r[0] for r in rrows], pa.int32()),
            "s": pa.array([r[1] for r in rrows], pa.string()),
            "t": pa.array([None if r[2] is None else r[2] * SEC for r in rrows], TS),
            "created": pa.array([None if r[3] is None else r[3] * SEC for r in rrows], TS),
            # Unique per row: full ties are decided by it, not by the order rows reach a task.
            "seq": pa.array(range(len(rrows)), pa.int64()),
            "x": pa.array([r[4] for r in rrows], pa.float64()),
        }
    )
    return left, right


@settings(max_examples=12, **SLOW)
@given(
    st.lists(left_row, max_size=40),
    st.lists(right_row, max_size=40),
    st.sampled_from(["backward", "forward", "nearest"]),
    st.sampled_from([None, 0, 3 * SEC]),
    st.booleans(),
    st.sampled_from([None, 1, 4]),
    st.sampled_from([1, 3]),
)
def test_asof_join_equals_the_local_join(spark, lrows, rrows, direction, tol, exact, skew_rows, buckets):
    import skewless.spark as ss

    left, right = asof_tables(lrows, rrows)
    kw = dict(
        on="t",
        by=["k", "s"],
        direction=direction,
        tolerance=None if tol is None else dt.timedelta(microseconds=tol),
        allow_exact_matches=exact,
        tie_breaker="created",
        sequence="seq",
    )
    want = asof_join(left, right, **kw)
    got = ss.asof_join(
        spark.createDataFrame(left), spark.createDataFrame(right), buckets=buckets, skew_rows=skew_rows, **kw
    )
    rows_equal(to_local(got, want).sort_by("lid"), want)


def hot_tables(n: int) -> tuple[pa.Table, pa.Table]:
    """Key 0 holds most rows of both sides; keys 1..5 a few each."""
    lk = [0] * n + [1, 2, 3, 4, 5]
    lt = [(i * 7919) % 1000 for i in range(n)] + [10, 20, 30, 40, 50]
    rk = [0] * (n // 2) + [1, 2, 3]
    rt = [(i * 104729) % 1000 for i in range(n // 2)] + [5, 15, 25]
    left = pa.table(
        {"lid": pa.array(range(len(lk)), pa.int64()), "k": lk, "t": pa.array([x * SEC for x in lt], TS)}
    )
    right = pa.table(
        {
            "k": rk,
            "t": pa.array([x * SEC for x in rt], TS),
            "seq": pa.array(range(len(rk)), pa.int64()),
            "x": pa.array([float(i) for i in range(len(rk))]),
        }
    )
    return left, right


@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
def test_a_hot_key_is_split_by_time_over_several_groups_with_the_same_answer(spark, direction):
    import skewless.spark as ss

    left, right = hot_tables(400)
    ls, rs = spark.createDataFrame(left), spark.createDataFrame(right)
    hot = ss._hot(ls, ["k"], "t", 50)
    links = ss._links(ss._Source(rs), ["k"], "t", hot, 4, direction)
    _, lgroups = ss._Assign(["k"], "t", 4, hot, False)(left.filter(pc.equal(left["k"], 0)))
    _, rgroups = ss._Assign(["k"], "t", 4, hot, True, links)(right.filter(pc.equal(right["k"], 0)))
    # 400 rows of key 0 at most ~50 per group: about eight groups, none with most of them.
    counts = collections.Counter(lgroups.tolist())
    assert len(counts) >= 6
    assert max(counts.values()) <= 100
    # Each group's right rows are its own time range plus the neighbours' boundary ties: far fewer
    # than all 200 of the key.
    assert max(collections.Counter(rgroups.tolist()).values()) < 100
    kw = dict(on="t", by="k", direction=direction, sequence="seq", tolerance=dt.timedelta(seconds=30))
    want = asof_join(left, right, **kw)
    for skew_rows in (50, None):
        got = ss.asof_join(ls, rs, buckets=4, skew_rows=skew_rows, **kw)
        rows_equal(to_local(got, want).sort_by("lid"), want)


@pytest.mark.parametrize("kind", ["int", "date"])
def test_integer_and_date_times_split_and_join_as_locally(spark, kind):
    import skewless.spark as ss

    n = 60
    days = [(i * 37) % 20 for i in range(n)]
    if kind == "int":
        lt, rt = pa.array(days, pa.int64()), pa.array([d * 3 % 20 for d in days], pa.int32())
    else:
        # Dates on the left are their 00:00 UTC; the right's timestamps fall inside days.
        lt = pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in days], pa.date32())
        rt = pa.array([(20454 + (d * 3 % 20)) * 86_400 * SEC + 3600 * SEC * (d % 2) for d in days], TS)
    left = pa.table({"lid": pa.array(range(n), pa.int64()), "k": [i % 2 for i in range(n)], "t": lt})
    right = pa.table({"k": [i % 3 for i in range(n)], "t": rt, "seq": pa.array(range(n), pa.int64())})
    for direction in ("backward", "nearest"):
        kw = dict(on="t", by="k", direction=direction, sequence="seq")
        want = asof_join(left, right, **kw)
        got = ss.asof_join(spark.createDataFrame(left), spark.createDataFrame(right), skew_rows=8, **kw)
        rows_equal(to_local(got, want).sort_by("lid"), want)


def test_asof_join_arguments_are_checked_on_the_driver(spark):
    import skewless.spark as ss

    left, right = asof_tables([(1, "a", 1)], [(1, "a", 1, 0, 1.0)])
    ls, rs = spark.createDataFrame(left), spark.createDataFrame(right)
    with pytest.raises(InvalidArgumentError, match="direction"):
        ss.asof_join(ls, rs, on="t", by="k", direction="sideways")
    with pytest.raises(MissingColumnError):
        ss.asof_join(ls, rs, on="t", by="nope")
    with pytest.raises(InvalidArgumentError, match="by"):
        ss.asof_join(ls, rs, on="t", by=[])
    with pytest.raises(InvalidArgumentError, match="buckets"):
        ss.asof_join(ls, rs, on="t", by="k", buckets=0)
    with pytest.raises(InvalidArgumentError, match="skew_rows"):
        ss.asof_join(ls, rs, on="t", by="k", skew_rows=-1)
    with pytest.raises(ColumnClashError, match="reserved"):
        ss.asof_join(ls.withColumn(ss.BUCKET, ls.k), rs, on="t", by="k")
    naive = spark.createDataFrame([(1, dt.datetime(2026, 1, 1))], "k long, t timestamp_ntz")
    with pytest.raises(NaiveTimestampError):
        ss.asof_join(naive, rs, on="t", by="k")


def test_tasks_run_the_kernels_on_spark_task_cpus_threads(spark):
    import skewless.spark as ss

    def probe(batches):
        from skewless.threads import num_threads, set_num_threads

        for _ in batches:
            set_num_threads(None)  # the default: every core of the machine
            before = num_threads()
            ss._size_threads()
            yield pa.RecordBatch.from_pydict({"before": [before], "after": [num_threads()]})

    got = spark.range(2).repartition(2).mapInArrow(probe, "before long, after long").toArrow()
    cpus = int(spark.conf.get("spark.task.cpus", "1"))
    assert set(got.column("after").to_pylist()) == {cpus}
    assert set(got.column("before").to_pylist()) == {os.cpu_count()}


# ---- get_historical_features --------------------------------------------------------------------------

user = Entity("user", join_keys=["user_id"], dtype=Int64)
pair = Entity("pair", join_keys=["a", "b"], dtype=[Int64, String])


def views(ttl_s: int | None) -> list:
    ttl = None if ttl_s is None else dt.timedelta(seconds=ttl_s)
    return [
        user,
        pair,
        FeatureView(
            "v",
            [user],
            [Field("x", Float64), Field("y", Int64)],
            ttl=ttl,
            created_timestamp_field="created",
        ),
        FeatureView("w", [pair], [Field("z", Float64)], ttl=ttl),
        # Parquet files someone else wrote (no __seq__: derived from the sorted path order and the row),
        # with names Spark percent-encodes.
        FeatureView("src", [user], [Field("q", Float64)], source="ext/*.parquet", ttl=ttl),
    ]


v_row = st.tuples(
    st.integers(0, 3),
    st.integers(0, 8),
    st.integers(0, 1),
    st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
)
w_row = st.tuples(st.integers(0, 2), st.sampled_from(["p", "q"]), st.integers(0, 8), st.floats(-5, 5))
entity_row = st.tuples(
    st.one_of(st.none(), st.integers(0, 4)),
    st.integers(0, 2),
    st.sampled_from(["p", "q"]),
    st.integers(0, 10),
)


def v_table(rows: list) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] * SEC for r in rows], TS),
            "created": pa.array([r[2] * SEC for r in rows], TS),
            "x": pa.array([r[3] for r in rows], pa.float64()),
            "y": pa.array([i for i in range(len(rows))], pa.int64()),
        }
    )


def build_store(
    path: str, ttl_s: int | None, v_writes: list, w_writes: list, src_files: list
) -> FeatureStore:
    store = FeatureStore(path)
    store.apply(views(ttl_s))
    folder = os.path.join(path, "offline", "v")
    os.makedirs(folder, exist_ok=True)
    # The first write as history format 1 wrote it (no __seq__), the rest through the store.
    pq.write_table(v_table(v_writes[0]), os.path.join(folder, "part-000000000001.parquet"))
    for rows in v_writes[1:]:
        store.write("v", v_table(rows))
    for rows in w_writes:
        store.write(
            "w",
            {
                "a": pa.array([r[0] for r in rows], pa.int64()),
                "b": [r[1] for r in rows],
                "event_timestamp": pa.array([r[2] * SEC for r in rows], TS),
                "z": [r[3] for r in rows],
            },
        )
    ext = os.path.join(path, "ext")
    os.makedirs(ext, exist_ok=True)
    for i, rows in enumerate(src_files):
        t = v_table(rows).select(["user_id", "event_timestamp"]).append_column("q", v_table(rows).column("x"))
        pq.write_table(t, os.path.join(ext, f"{i} a+b%c d.parquet"))
    return store


def entity_table(rows: list) -> pa.Table:
    return pa.table(
        {
            "row": pa.array(range(len(rows)), pa.int64()),
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "a": pa.array([r[1] for r in rows], pa.int64()),
            "b": pa.array([r[2] for r in rows], pa.string()),
            "event_timestamp": pa.array([r[3] * SEC for r in rows], TS),
        }
    )


FEATURES = ["v:x", "v:y", "w:z", "src:q"]


@settings(max_examples=6, **SLOW)
@given(
    st.sampled_from([None, 2]),
    st.lists(st.lists(v_row, min_size=1, max_size=8), min_size=1, max_size=3),
    st.lists(st.lists(w_row, min_size=1, max_size=6), min_size=0, max_size=2),
    st.lists(st.lists(v_row, min_size=1, max_size=5), min_size=1, max_size=2),
    st.lists(entity_row, min_size=1, max_size=30),
    st.sampled_from([None, 3]),
)
def test_get_historical_features_equals_the_local_call(
    spark, tmp_path_factory, ttl_s, v_writes, w_writes, src_files, ents, skew_rows
):
    import skewless.spark as ss

    path = str(tmp_path_factory.mktemp("store"))
    store = build_store(path, ttl_s, v_writes, w_writes, src_files)
    entity = entity_table(ents)
    want = store.get_historical_features(entity, FEATURES)
    got = ss.get_historical_features(
        spark, path, spark.createDataFrame(entity), FEATURES, buckets=3, skew_rows=skew_rows, keep_order=True
    )
    rows_equal(to_local(got, want), want)
    unordered = ss.get_historical_features(spark, path, spark.createDataFrame(entity), FEATURES, buckets=2)
    rows_equal(to_local(unordered, want).sort_by("row"), want)


def test_get_historical_features_splits_a_hot_entity_and_keeps_ties_and_ttl(spark, tmp_path):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    # Entity 0 has most rows; full ties across files (same key, time and created) at every time. The
    # earliest write, which wins them, is the largest file: Spark reads files largest first, so the
    # order rows arrive in does not give the winner (a run that ignores the write sequence fails here).
    writes = [[(0, t % 9, 0, float(10 * w + t)) for t in range(40)] + [(1, 3, 0, 1.0)] for w in range(3)]
    writes[0] += [(2, t, 0, float(t)) for t in range(300)]
    store = build_store(path, 3, writes, [], [[(0, 1, 0, 1.0)]])
    ents = [(0, 0, "p", t % 11) for t in range(300)] + [(1, 0, "p", 5), (None, 0, "p", 5), (7, 1, "q", 2)]
    entity = entity_table(ents)
    want = store.get_historical_features(entity, ["v:x", "v:y", "src:q"], full_feature_names=True)
    got = ss.get_historical_features(
        spark,
        path,
        spark.createDataFrame(entity),
        ["v:x", "v:y", "src:q"],
        full_feature_names=True,
        buckets=2,
        skew_rows=40,
    )
    rows_equal(to_local(got, want).sort_by("row"), want)


def test_get_historical_features_request_errors_are_typed_and_write_nothing(spark, tmp_path):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    build_store(path, None, [[(1, 1, 0, 1.0)]], [], [[(1, 1, 0, 1.0)]])
    before = snapshot(path)
    entity = spark.createDataFrame(entity_table([(1, 0, "p", 3)]))
    with pytest.raises(UnknownFeatureError):
        ss.get_historical_features(spark, path, entity, ["v:nope"])
    with pytest.raises(MissingColumnError):
        ss.get_historical_features(spark, path, entity.drop("user_id"), ["v:x"])
    with pytest.raises(MissingColumnError):
        ss.get_historical_features(spark, path, entity, ["v:x"], timestamp_column="when")
    with pytest.raises(ColumnClashError):
        ss.get_historical_features(spark, path, entity.withColumnRenamed("row", "x"), ["v:x"])
    with pytest.raises(InvalidArgumentError):
        ss.get_historical_features(spark, path, entity, ["v:x"], buckets=-3)
    naive = entity.withColumn("event_timestamp", entity.event_timestamp.cast("timestamp_ntz"))
    with pytest.raises(NaiveTimestampError):
        ss.get_historical_features(spark, path, naive, ["v:x"])
    with pytest.raises(RegistryError):
        ss.get_historical_features(spark, str(tmp_path / "nothing"), entity, ["v:x"])
    with pytest.raises(InvalidArgumentError):
        ss.get_historical_features(spark, path, entity, ["v:x"], staging=5)
    with pytest.raises(InvalidArgumentError):  # the store's readers would meet it there
        ss.get_historical_features(spark, path, entity, ["v:x"], staging=os.path.join(path, "offline", "s"))
    assert snapshot(path) == before
    assert not os.path.exists(tmp_path / "nothing")


# ---- window aggregates -----------------------------------------------------------------------------------

event_row = st.tuples(st.integers(0, 2), st.integers(0, 30), st.one_of(st.none(), st.integers(-3, 3)))


@settings(max_examples=5, **SLOW)
@given(
    st.lists(st.lists(event_row, min_size=1, max_size=12), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), min_size=1, max_size=25),
    st.sampled_from([None, 2]),
)
def test_window_features_equal_the_local_call(spark, tmp_path_factory, pushes, labels, skew_rows):
    # Event views through the same retrieval per bucket: ties within and across pushes (first/last follow
    # the write sequence), empty windows, labels before any event, mixed with a plain view.
    import skewless.spark as ss
    from skewless import Aggregation

    path = str(tmp_path_factory.mktemp("store"))
    ev = FeatureView(
        "ev",
        [user],
        schema=[Field("amount", Int64)],
        aggregations=[
            Aggregation("amount", "sum", "10s"),
            Aggregation("amount", "count", "3s"),
            Aggregation("amount", "last", "5s"),
            Aggregation("amount", "first", "20s"),
            Aggregation("amount", "max", "7s"),
        ],
    )
    plain = FeatureView("p", [user], schema=[Field("x", Float64)])
    store = FeatureStore(path)
    store.apply([user, ev, plain])
    for batch in pushes:
        store.push(
            "ev",
            {
                "user_id": pa.array([r[0] for r in batch], pa.int64()),
                "event_timestamp": pa.array([r[1] * SEC for r in batch], TS),
                "amount": pa.array([r[2] for r in batch], pa.int64()),
            },
        )
    store.write("p", {"user_id": [0, 1], "event_timestamp": pa.array([0, 5 * SEC], TS), "x": [1.5, 2.5]})
    entity = pa.table(
        {
            "user_id": pa.array([u for u, _ in labels], pa.int64()),
            "event_timestamp": pa.array([t * SEC for _, t in labels], TS),
        }
    )
    feats = ["ev:*", "p:x"]
    want = store.get_historical_features(entity, feats)
    got = ss.get_historical_features(
        spark, path, spark.createDataFrame(entity), feats, buckets=3, skew_rows=skew_rows, keep_order=True
    )
    rows_equal(to_local(got, want), want)


# ---- errors found in tasks, and where groups run ----------------------------------------------------------


def test_an_error_a_task_finds_reaches_the_driver_typed_and_nothing_is_written(spark, tmp_path):
    # A value that does not fit the view's key type is found only by the task that holds it; the action
    # raises the local error's class with its message, and the output folder is not created.
    import skewless.spark as ss

    path = str(tmp_path / "store")
    u32 = Entity("u32", join_keys=["user_id"], dtype=Int32)
    store = FeatureStore(path)
    store.apply([u32, FeatureView("v32", [u32], [Field("x", Float64)])])
    store.write(
        "v32",
        {"user_id": pa.array([1], pa.int32()), "event_timestamp": pa.array([1 * SEC], TS), "x": [1.0]},
    )
    entity = pa.table(
        {"user_id": pa.array([1, 1 << 40], pa.int64()), "event_timestamp": pa.array([5 * SEC] * 2, TS)}
    )
    with pytest.raises(DtypeError) as local:
        store.get_historical_features(entity, ["v32:x"])
    before = snapshot(path)
    out = tmp_path / "out"
    with ss.staging_scope():
        got = ss.get_historical_features(spark, path, spark.createDataFrame(entity), ["v32:x"], buckets=2)
        with pytest.raises(DtypeError) as remote:
            got.write.parquet(str(out))
    assert str(remote.value) == str(local.value)
    assert snapshot(path) == before
    assert not out.exists() or not list(out.rglob("*.parquet"))
    # Errors that are not skewless's stay Spark's own.
    from pyspark.errors import PythonException

    def boom(batches):
        raise ValueError("not ours")
        yield  # pragma: no cover

    with pytest.raises(PythonException, match="not ours"):
        spark.range(1).mapInArrow(boom, "id long").collect()


def test_groups_are_placed_one_per_partition(spark):
    # The packed rows of group g carry a value Spark's repartition(n, col) sends to partition g: the
    # tasks get equal shares of groups. The hash is Spark's own (the `hash` function).
    import numpy as np
    import skewless.spark as ss
    from pyspark.sql import functions as F

    values = [*range(-300, 3000), 2**31 - 1, -(2**31)]
    want = [
        r[0] for r in spark.createDataFrame([(v,) for v in values], "v int").select(F.hash("v")).collect()
    ]
    assert ss._murmur3_int(np.array(values, np.int64)).tolist() == want
    for n in (1, 3, 16, 37):
        placer = ss._placer(n)
        rows = (
            spark.createDataFrame([(int(x), g) for g, x in enumerate(placer)], "d int, g int")
            .repartition(n, "d")
            .select(F.spark_partition_id().alias("p"), "g")
            .collect()
        )
        assert sorted((r.p, r.g) for r in rows) == [(g, g) for g in range(n)]


def test_a_hot_entity_of_an_event_view_is_split_by_time_with_the_same_windows(spark, tmp_path):
    # Entity 0 has most labels and events: its labels are cut into time sub-buckets, and each event goes
    # to every sub-bucket whose windows reach back to it (the view's largest window), not to all.
    import skewless.spark as ss
    from skewless import Aggregation

    path = str(tmp_path / "store")
    ev = FeatureView(
        "ev",
        [user],
        schema=[Field("amount", Int64)],
        aggregations=[
            Aggregation("amount", "sum", "20s"),
            Aggregation("amount", "count", "5s"),
            Aggregation("amount", "last", "8s"),
            Aggregation("amount", "first", "20s"),
        ],
    )
    store = FeatureStore(path)
    store.apply([user, ev])
    n = 400
    for part in range(2):  # ties across pushes: first/last follow the write sequence
        store.push(
            "ev",
            {
                "user_id": pa.array([0] * n + [1, 2], pa.int64()),
                "event_timestamp": pa.array(
                    [((i * 7919) % 1000) * SEC for i in range(n)] + [3 * SEC] * 2, TS
                ),
                "amount": pa.array([i % 13 - 6 + part for i in range(n)] + [5, 6], pa.int64()),
            },
        )
    entity = pa.table(
        {
            "row": pa.array(range(n + 2), pa.int64()),
            "user_id": pa.array([0] * n + [1, 2], pa.int64()),
            "event_timestamp": pa.array([((i * 104729) % 1000) * SEC for i in range(n)] + [9 * SEC] * 2, TS),
        }
    )
    want = store.get_historical_features(entity, ["ev:*"])
    ents = spark.createDataFrame(entity)
    for skew_rows in (50, None):
        got = ss.get_historical_features(spark, path, ents, ["ev:*"], buckets=2, skew_rows=skew_rows)
        rows_equal(to_local(got, want).sort_by("row"), want)
    hot = ss._hot(ents, ["user_id"], "event_timestamp", 50)
    assert hot is not None and len(hot[(0,)][1]) >= 5
    left = entity.filter(pc.equal(entity["user_id"], 0))
    _, lgroups = ss._Assign(["user_id"], "event_timestamp", 2, hot, False)(left)
    assert max(collections.Counter(lgroups.tolist()).values()) <= 100
    events = pa.table({"user_id": pa.array([0] * n, pa.int64()), "event_timestamp": left["event_timestamp"]})
    reach = 20 * SEC
    _, rgroups = ss._Assign(["user_id"], "event_timestamp", 2, hot, True, reach=reach)(events)
    per_group = collections.Counter(rgroups.tolist())
    # Each sub-bucket holds its own ~1/8 of the events plus the 20 s before it (2% of the span).
    assert len(per_group) == len(collections.Counter(lgroups.tolist()))
    assert max(per_group.values()) < n // 3


# ---- the staging folder (skewless.spark_staging) ---------------------------------------------------------


def small_store(path: str) -> tuple[FeatureStore, pa.Table]:
    store = build_store(
        path, None, [[(u, t, 0, float(10 * u + t)) for u in range(4) for t in range(6)]], [], []
    )
    return store, entity_table([(u % 5, 0, "p", t) for u, t in zip(range(40), range(40), strict=True)])


def calls(root: str) -> list[str]:
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def test_a_result_reads_its_staging_at_every_evaluation_until_it_is_removed(spark, tmp_path):
    # The staging job runs at the call; the result only reads the folder: evaluated twice, or through a
    # derived DataFrame, it gives the same rows. When the scope ends the folder is gone (the store is as
    # before) and evaluating the result again raises StorageError saying to call again.
    import skewless.spark as ss
    from skewless.errors import StorageError

    path = str(tmp_path / "store")
    store, entity = small_store(path)
    want = store.get_historical_features(entity, ["v:x", "v:y"])
    before = snapshot(path)
    root = os.path.join(path, ".skewless-staging")
    with ss.staging_scope():
        got = ss.get_historical_features(
            spark, path, spark.createDataFrame(entity), ["v:x", "v:y"], buckets=3
        )
        assert len(calls(root)) == 1
        first = to_local(got, want).sort_by("row")
        rows_equal(first, want)
        rows_equal(to_local(got, want).sort_by("row"), want)
        assert got.where("user_id = 1").count() == sum(
            1 for u in entity.column("user_id").to_pylist() if u == 1
        )
        files = os.listdir(os.path.join(root, calls(root)[0]))
        assert "index.arrow" in files and not [f for f in files if f.endswith(".tmp")]
    assert calls(root) == []
    assert snapshot(path) == before
    with pytest.raises(StorageError, match="call skewless.spark.get_historical_features again"):
        got.collect()


def test_clear_staging_removes_this_process_calls_or_old_leftovers(spark, tmp_path):
    import skewless.spark as ss

    path = str(tmp_path / "store")
    store, entity = small_store(path)
    elsewhere = str(tmp_path / "mnt" / "staging")
    a = ss.get_historical_features(spark, path, spark.createDataFrame(entity), ["v:x"], buckets=2)
    b = ss.get_historical_features(
        spark, path, spark.createDataFrame(entity), ["v:x"], buckets=2, staging=elsewhere
    )
    want = store.get_historical_features(entity, ["v:x"])
    rows_equal(to_local(b, want).sort_by("row"), want)
    root = os.path.join(path, ".skewless-staging")
    assert len(calls(root)) == 1 and len(calls(elsewhere)) == 1
    # A dead driver's leftover: not this process's, so only older_than removes it.
    os.makedirs(os.path.join(root, "20200101T000000-deadbeef0000"))
    os.utime(os.path.join(root, "20200101T000000-deadbeef0000"), (0, 0))
    assert ss.clear_staging(path) == 1
    assert calls(root) == ["20200101T000000-deadbeef0000"]
    assert len(calls(elsewhere)) == 1  # another staging root
    assert ss.clear_staging(path, older_than=dt.timedelta(days=1)) == 1
    assert not os.path.exists(root)
    assert ss.clear_staging(path, staging=elsewhere) == 1 and calls(elsewhere) == []
    with pytest.raises(InvalidArgumentError):
        ss.clear_staging(path, older_than=3)
    del a


def test_an_unwritable_staging_folder_is_a_typed_error_and_writes_nothing(spark, tmp_path):
    import skewless.spark as ss
    from skewless.errors import StorageError

    path = str(tmp_path / "store")
    _, entity = small_store(path)
    before = snapshot(path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="staging="):
        ss.get_historical_features(
            spark, path, spark.createDataFrame(entity), ["v:x"], staging=str(blocker / "staging")
        )
    assert snapshot(path) == before
    assert blocker.read_text() == "not a folder"


def test_a_retried_staging_task_is_read_from_its_successful_attempt_only(spark, tmp_path):
    # The first attempt of every task of the entity rows fails after its first batch; Spark runs it
    # again. Each attempt writes a file of its own under a temporary name, so the result holds the
    # rows of the attempts that succeeded, once, and no partial file is left or read.
    import skewless.spark as ss
    from pyspark import TaskContext

    path = str(tmp_path / "store")
    store, entity = small_store(path)
    want = store.get_historical_features(entity, ["v:x", "v:y"])

    def flaky(batches):
        for i, b in enumerate(batches):
            yield b
            if i == 0 and TaskContext.get().attemptNumber() == 0:
                raise RuntimeError("lost executor")

    df = spark.createDataFrame(entity).repartition(2).mapInArrow(flaky, spark.createDataFrame(entity).schema)
    with ss.staging_scope():
        got = ss.get_historical_features(spark, path, df, ["v:x", "v:y"], buckets=3, skew_rows=None)
        rows_equal(to_local(got, want).sort_by("row"), want)
        root = os.path.join(path, ".skewless-staging")
        (call,) = calls(root)
        files = os.listdir(os.path.join(root, call))
        assert not [f for f in files if f.endswith(".tmp")]
        import pyarrow.ipc as ipc

        with pa.memory_map(os.path.join(root, call, "index.arrow")) as f:
            used = set(ipc.open_file(f).read_all().column("file").to_pylist())
        assert {f for f in used if f.startswith("s0-")} and all(
            "-a1-" in f for f in used if f.startswith("s0-")
        )


def test_a_pack_file_is_renamed_only_when_complete(tmp_path):
    # A writer that fails mid-way (a task killed by an error) leaves no file under any name.
    import skewless.spark_staging as stg

    root = str(tmp_path / "staging")
    with stg.staging_scope():
        call = stg.new_call(root)
        with pytest.raises(RuntimeError), stg.pack_file(call, "s0-p0-a0") as (f, _):
            f.write(b"x" * 1000)
            raise RuntimeError("killed")
        assert os.listdir(call) == []
        with stg.pack_file(call, "s0-p0-a1") as (f, name):
            f.write(b"abc")
        assert os.listdir(call) == [name]
        from skewless.errors import StorageError

        with pytest.raises(StorageError, match="shorter than written"):
            stg.Packs(call).read(name, 2, 5)
    assert not os.path.exists(call)


def test_a_damaged_history_fails_the_staging_job_typed_and_leaves_no_staging(spark, tmp_path, monkeypatch):
    # A page that fails its checksum is found by the staging task that reads it: the call raises the
    # local error's class and message, and its staging folder is removed.
    import skewless.spark as ss
    from skewless.errors import StorageError

    path = str(tmp_path / "store")
    store, entity = small_store(path)
    store.write("v", v_table([(1, 7, 0, 2.0)] * 50))
    part = sorted(os.listdir(os.path.join(path, "offline", "v")))[-1]
    f = os.path.join(path, "offline", "v", part)
    data = bytearray(open(f, "rb").read())
    col = pq.read_metadata(f).row_group(0).column(0)  # the pages of a column, not the footer
    data[col.data_page_offset + col.total_compressed_size - 8] ^= 0xFF
    open(f, "wb").write(bytes(data))
    with pytest.raises(StorageError) as local:
        store.get_historical_features(entity, ["v:x"])
    before = snapshot(path)
    removed = []
    remove = ss.spark_staging.remove_call
    monkeypatch.setattr(ss.spark_staging, "remove_call", lambda call: (removed.append(call), remove(call)))
    with pytest.raises(StorageError) as remote:
        ss.get_historical_features(spark, path, spark.createDataFrame(entity), ["v:x"], buckets=2)
    assert len(removed) == 1  # the staging job ran, and its task found the damage
    assert type(remote.value) is type(local.value) and f"{f} failed to decode" in str(remote.value)
    assert snapshot(path) == before
    assert calls(os.path.join(path, ".skewless-staging")) == []


def test_the_hot_key_pass_runs_only_when_a_bucket_has_more_than_skew_rows(spark, tmp_path, monkeypatch):
    import skewless.spark as ss
    from skewless import spark_staging

    path = str(tmp_path / "store")
    store = build_store(path, None, [[(k, t, 0, float(k + t)) for k in range(30) for t in (1, 5)]], [], [[]])
    calls: list[object] = []
    real_hot = ss._hot

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(real_hot(*a, **kw))
        return calls[-1]

    monkeypatch.setattr(ss, "_hot", spy)
    stage_root = os.path.join(path, spark_staging.DEFAULT_FOLDER)
    # 60 rows, more than skew_rows, but spread over 30 keys: no bucket holds more than 40 rows.
    spread = entity_table([(k, 0, "p", 3 + i) for k in range(30) for i in range(2)])
    # One key with 50 rows: its bucket has more than 40, and the key is split by time.
    hot = entity_table([(4, 0, "p", t % 9) for t in range(50)] + [(k, 0, "p", 6) for k in range(10)])
    for entity, ran in ((spread, False), (hot, True)):
        calls.clear()
        want = store.get_historical_features(entity, ["v:x", "v:y"])
        with spark_staging.staging_scope():
            got = ss.get_historical_features(
                spark, path, spark.createDataFrame(entity), ["v:x", "v:y"], buckets=4, skew_rows=40
            )
            # A restaged call leaves only its own folder.
            assert len(os.listdir(stage_root)) == 1
            rows_equal(to_local(got, want).sort_by("row"), want)
        assert bool(calls) == ran
        if ran:
            assert list(calls[0]) == [(4,)]
        assert not os.path.exists(stage_root)


def test_many_buckets_and_history_parts_run_in_two_tasks_per_core_with_the_same_answer(
    spark, tmp_path, monkeypatch
):
    import skewless.spark as ss

    # Every row group its own history part, and more buckets than 2 x the session's 2 cores: both jobs
    # deal their units to 4 tasks, each running several one after another.
    monkeypatch.setattr(ss, "_SPLIT_ROWS", 1)
    path = str(tmp_path / "store")
    writes = [[(u, (3 * u + w) % 9, w % 2, float(10 * u + w)) for u in range(8)] for w in range(6)]
    store = build_store(path, 4, writes, [], [[(1, 2, 0, 1.0)]])
    ents = [(u % 9, 0, "p", t) for u in range(9) for t in (0, 3, 6, 9)]
    entity = entity_table(ents)
    dealt: list[tuple[int, int]] = []
    count = ss._task_count
    monkeypatch.setattr(
        ss, "_task_count", lambda s, n, rows: dealt.append((n, count(s, n, rows))) or count(s, n, rows)
    )
    want = store.get_historical_features(entity, ["v:x", "v:y", "src:q"])
    got = ss.get_historical_features(
        spark, path, spark.createDataFrame(entity), ["v:x", "v:y", "src:q"], buckets=12
    )
    assert got.rdd.getNumPartitions() == 4
    rows_equal(to_local(got, want).sort_by("row"), want)
    assert (7, 4) in dealt  # the 6 history files of v and the one of src: 7 parts dealt to 4 tasks
    assert all(tasks == min(n, 4) for n, tasks in dealt), dealt


def test_a_large_job_gets_more_tasks_than_two_per_core(spark, monkeypatch):
    import skewless.spark as ss

    # local[2,2]: two cores, so 4 tasks, unless a task would get more than _TASK_ROWS rows.
    assert ss._task_count(spark, 10, 10 * ss._TASK_ROWS) == 10
    assert ss._task_count(spark, 10, 6 * ss._TASK_ROWS) == 6
    assert ss._task_count(spark, 10, 5) == 4
    assert ss._task_count(spark, 3, 5) == 3
    assert ss._task_count(spark, 0, 0) == 1
