"""skewless on Spark beside Spark SQL's own point-in-time join, and beside the local store, same run.

    python benches/compare_spark.py S [--buckets 8] [--no-check]

The standard workload (benches/_workload.py: feature rows, label rows, entities of the size), read from
its Parquet files by Spark in ``local[2]``, a 30-day-TTL backward join with ``created_timestamp`` as the
tie-breaker. Timed (each job runs to Spark's ``noop`` sink, so nothing is collected to the driver):

- ``skewless.spark.asof_join``: both sides bucketed by a hash of ``entity_id`` into ``--buckets``
  groups, packed per group into Arrow IPC streams by the tasks, moved by one repartition, each group
  through the Rust kernel (hot-key detection included: one aggregation over the labels);
- Spark SQL, window over the union: labels and feature rows in one table, ``last(struct, ignorenulls)``
  over each entity's rows ordered by (time, feature-before-label, created), the TTL applied to the
  match: one shuffle and one sort, where a range join (``entity_id`` equal, time within the TTL, then a
  row_number per label) first joins each label to every feature row of its TTL window (not measured);
- Spark's co-group of the rows themselves (``groupBy(bucket).cogroup(...).applyInArrow``) with tasks
  that return nothing: the floor of the row-by-row method skewless.spark used before it packed rows;
- ``skewless.spark.get_historical_features`` (its default, bucket order, and with the entity rows' order
  restored) on a store holding the same feature rows (one view of the five features), its history read
  by the tasks from the store's files, the packed rows exchanged through the store's staging folder
  (each call in a ``staging_scope``: removing the staged files is part of its time); the labels, a bare
  Parquet scan, are read by the tasks themselves (``skewless.spark_direct``), and once more as a
  DataFrame that is not (``labels.select('*')``), which Spark reads and hands to Python;
- the floors of any method running the join in Python tasks: the entity rows into Python (tasks that
  return nothing) and the result's rows out of Python (tasks that yield it, read in place from a file);
- the local ``FeatureStore.get_historical_features`` on that store and the local ``skewless.asof_join``
  on the tables in memory (the single-machine references).

Each row shows the wall seconds and the CPU seconds of all the run's processes (the driver, the JVM,
Spark's Python workers; from /proc): on a shared machine the wall time swings with the load, the CPU
time much less. The Spark SQL and skewless results are checked to agree value for value
(``--no-check`` skips it).
Each engine runs ``--repeat`` times (default 2: the first warms the JVM and the Python workers up) and
the best time is shown. Prints markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload  # noqa: E402
import skewless  # noqa: E402
import skewless.spark as ss  # noqa: E402
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64  # noqa: E402

FEATS = [f"f{i}" for i in range(_workload.N_FEATURES)]
TTL = dt.timedelta(days=_workload.TTL_DAYS)

WINDOW_SQL = """
WITH u AS (
    SELECT entity_id, event_timestamp AS ts, created_timestamp AS cr, 0 AS is_label,
           CAST(NULL AS TINYINT) AS label, struct(event_timestamp AS mts, {feats}) AS m
    FROM features
    UNION ALL
    SELECT entity_id, event_timestamp, NULL, 1, label, NULL FROM labels
), w AS (
    SELECT entity_id, ts, is_label, label,
           last(m, true) OVER (PARTITION BY entity_id ORDER BY ts, is_label, cr
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS m
    FROM u
)
SELECT entity_id, ts AS event_timestamp, label, {picked}
FROM w WHERE is_label = 1
"""


def sql_join(spark):  # type: ignore[no-untyped-def]
    picked = ", ".join(
        f"CASE WHEN m.mts >= ts - INTERVAL {_workload.TTL_DAYS} DAYS THEN m.{f} END AS {f}" for f in FEATS
    )
    return spark.sql(WINDOW_SQL.format(feats=", ".join(FEATS), picked=picked))


REPEAT = 2


def tree_processes(waited: bool = True) -> dict[int, tuple[float, str]]:
    """This process and every process under it (the JVM, Spark's Python workers), from /proc: pid ->
    (CPU seconds so far, command line). ``waited``: a process's CPU includes its children that exited
    and were waited for (so the time of finished workers is not lost); else only its own."""
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    cmd: dict[int, str] = {}
    clk = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd[int(name)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # After the command: state, ppid, ..., utime, stime, cutime, cstime (fields 14-17 of stat).
        parent[int(name)] = int(fields[1])
        used[int(name)] = sum(int(x) for x in fields[11 : 15 if waited else 13]) / clk
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, pp in parent.items():
            if pp in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return {pid: (used.get(pid, 0.0), cmd.get(pid, "")) for pid in mine}


def tree_cpu() -> float:
    """CPU seconds used so far by this process and every process under it (:func:`tree_processes`;
    Linux, NaN elsewhere). On a shared machine the wall time of a run swings with the load; its CPU time
    much less, so both are printed."""
    if not os.path.isdir("/proc"):
        return float("nan")
    return sum(cpu for cpu, _ in tree_processes().values())


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The best of REPEAT runs (the first also warms the JVM's code and the Python workers up): its
    wall seconds and CPU seconds (all processes of the run, :func:`tree_cpu`)."""
    best = (float("inf"), float("nan"))
    for _ in range(REPEAT):
        c = tree_cpu()
        t = time.perf_counter()
        fn()
        wall = time.perf_counter() - t
        if wall < best[0]:
            best = (wall, tree_cpu() - c)
    return best


def session(buckets: int, ui: bool = False):  # type: ignore[no-untyped-def]
    """The bench's Spark session: ``local[2]``, ``buckets`` shuffle partitions, 200k-row Arrow batches.
    ``ui``: Spark's UI on (on a free port), which ``scripts/profile_spark.py`` reads through its REST
    API; the bench has it off. Everything else is the same, so the profile times the bench's setup."""
    from pyspark.sql import SparkSession

    b = SparkSession.builder.master("local[2]").appName("skewless-bench")
    b = b.config("spark.ui.enabled", "true" if ui else "false")
    if ui:
        b = b.config("spark.ui.port", "0")
    spark = (
        b.config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.shuffle.partitions", str(buckets))
        # Larger Arrow batches to and from the Python workers (Spark's default is 10k rows).
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "200000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def noop(df) -> None:  # type: ignore[no-untyped-def]
    df.write.format("noop").mode("overwrite").save()


def drop_all(batches):  # type: ignore[no-untyped-def]
    for _ in batches:
        pass
    return iter(())


def emit_part(path: str, parts: int):  # type: ignore[no-untyped-def]
    """A task function yielding its share of the rows of the Arrow file at ``path`` (memory-mapped)."""

    def run(batches):  # type: ignore[no-untyped-def]
        with pa.memory_map(path) as f:
            t = pa.ipc.open_file(f).read_all()
        step = -(-t.num_rows // parts)
        for b in batches:
            for i in b.column(0).to_pylist():
                yield from t.slice(i * step, step).to_batches()

    return run


def sorted_rows(t: pa.Table) -> pa.Table:
    t = t.select(["entity_id", "event_timestamp", "label", *FEATS])
    t = t.cast(
        pa.schema(
            [
                f.with_type(pa.timestamp("us", tz="UTC")) if f.name == "event_timestamp" else f
                for f in t.schema
            ]
        )
    )
    return t.sort_by([(c, "ascending") for c in t.column_names])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size", choices=sorted(_workload.SIZES))
    ap.add_argument("--buckets", type=int, default=8)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--repeat", type=int, default=REPEAT, help="runs per engine; the best is shown")
    args = ap.parse_args()
    globals()["REPEAT"] = max(1, args.repeat)

    from pyspark import __version__ as pyspark_version

    fpath, lpath = _workload.ensure(args.size)
    spark = session(args.buckets)
    feats, labels = spark.read.parquet(str(fpath)), spark.read.parquet(str(lpath))
    feats.createOrReplaceTempView("features")
    labels.createOrReplaceTempView("labels")

    def kernel():  # type: ignore[no-untyped-def]
        return ss.asof_join(
            labels,
            feats,
            on="event_timestamp",
            by="entity_id",
            tolerance=TTL,
            tie_breaker="created_timestamp",
            buckets=args.buckets,
        ).select("entity_id", "event_timestamp", "label", *FEATS)

    def shuffle_only():  # type: ignore[no-untyped-def]
        # The same bucketing and co-grouping with a task that returns nothing: Spark's share of the time.
        from pyspark.sql import functions as F

        b = F.pmod(F.xxhash64("entity_id"), F.lit(args.buckets))
        lb, fb = labels.withColumn("b", b), feats.withColumn("b", b)
        empty = pa.table({"n": pa.array([], pa.int64())})
        return lb.groupBy("b").cogroup(fb.groupBy("b")).applyInArrow(lambda x, y: empty, "n long")

    rows: list[tuple[str, tuple[float, float], str]] = []
    rows.append(("Spark SQL: window over the union", timed(lambda: noop(sql_join(spark))), ""))
    rows.append(
        (
            "skewless.spark.asof_join (Rust kernel per bucket)",
            timed(lambda: noop(kernel())),
            "with the hot-key pass (one aggregation over the labels)",
        )
    )
    rows.append(
        (
            "Spark co-group of the rows alone (same buckets, tasks return nothing)",
            timed(lambda: noop(shuffle_only())),
            "the floor of the row-by-row method used before",
        )
    )

    if not args.no_check:
        a = sorted_rows(kernel().toArrow())
        b = sorted_rows(sql_join(spark).toArrow())
        assert a.num_rows == b.num_rows
        for c in a.column_names:
            assert a.column(c).equals(b.column(c)), f"skewless and Spark SQL disagree on {c}"

    folder = tempfile.mkdtemp(prefix="skewless-spark-bench-")
    try:
        ent = Entity("entity", join_keys=["entity_id"], dtype=Int64)
        view = FeatureView(
            "v",
            [ent],
            [Field(f, Float64) for f in FEATS],
            ttl=TTL,
            created_timestamp_field="created_timestamp",
        )
        store = FeatureStore(folder)
        store.apply([ent, view])
        local_feats, local_labels = pq.read_table(fpath), pq.read_table(lpath)
        store.write("v", local_feats)
        refs = [f"v:{f}" for f in FEATS]

        def spark_features(entity=labels, **kw):  # type: ignore[no-untyped-def]
            # The staging folder goes when the scope ends: its removal is part of the time.
            with ss.staging_scope():
                noop(ss.get_historical_features(spark, folder, entity, refs, buckets=args.buckets, **kw))

        rows.append(
            (
                "skewless.spark.get_historical_features (history read by the tasks)",
                timed(spark_features),
                "the default: bucket order; rows exchanged through the store's staging folder",
            )
        )
        rows.append(
            (
                "the same, entity rows read by Spark (not a bare scan: `labels.select('*')`)",
                timed(lambda: spark_features(entity=labels.select("*"))),
                "Spark reads the labels and hands them to Python as Arrow",
            )
        )
        rows.append(
            (
                "skewless.spark.get_historical_features, keep_order=True",
                timed(lambda: spark_features(keep_order=True)),
                "entity rows' order restored (one sort)",
            )
        )
        # The floors of any method that runs the join in Python tasks: the entity rows go from Spark into
        # Python once, and the result's rows from Python into Spark once.
        rows.append(
            (
                "floor: the entity rows into Python tasks (tasks return nothing)",
                timed(lambda: noop(labels.mapInArrow(drop_all, "n long"))),
                "",
            )
        )
        result = store.get_historical_features(local_labels, refs)
        result_path = os.path.join(folder, "result.arrow")
        with pa.OSFile(result_path, "wb") as f, pa.ipc.new_file(f, result.schema) as w:
            w.write_table(result)
        result_schema = ss.get_historical_features(spark, folder, labels.limit(0), refs).schema
        # As many tasks as the method's result job runs (at most two per core).
        tasks = ss._task_count(spark, args.buckets, result.num_rows)
        rows.append(
            (
                "floor: the result's rows out of Python tasks (read in place from a file)",
                timed(
                    lambda: noop(
                        spark.range(0, tasks, 1, tasks).mapInArrow(
                            emit_part(result_path, tasks), result_schema
                        )
                    )
                ),
                f"{tasks} tasks",
            )
        )
        rows.append(
            (
                "local FeatureStore.get_historical_features",
                timed(lambda: store.get_historical_features(local_labels, refs)),
                "same store, one process",
            )
        )
        rows.append(
            (
                "local skewless.asof_join (tables in memory)",
                timed(
                    lambda: skewless.asof_join(
                        local_labels,
                        local_feats,
                        on="event_timestamp",
                        by="entity_id",
                        tolerance=TTL,
                        tie_breaker="created_timestamp",
                    )
                ),
                "",
            )
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        spark.stop()

    n_f, n_l, n_e = _workload.SIZES[args.size]
    print(f"\n### Spark, size {args.size}: {n_f:,} feature rows x {n_l:,} label rows x {n_e:,} entities\n")
    print(
        f"pyspark {pyspark_version}, local[2], {args.buckets} buckets (= shuffle partitions), "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"best of {REPEAT} runs, `python benches/compare_spark.py {args.size} --buckets {args.buckets}`"
        + ("" if args.no_check else "; skewless and Spark SQL results checked equal")
        + "\n"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Load average (1 min) at the end: {load:.1f}\n")
    print("| engine | seconds | CPU seconds | note |\n| --- | ---: | ---: | --- |")
    for name, (secs, cpu), note in rows:
        print(f"| {name} | {secs:.2f} | {cpu:.1f} | {note} |")


if __name__ == "__main__":
    main()
