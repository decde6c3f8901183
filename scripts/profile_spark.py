"""Where a warm ``skewless.spark.get_historical_features`` call spends its time, stage by stage.

    PYSPARK_PYTHON=$PWD/.venv/bin/python python scripts/profile_spark.py M --buckets 16 --calls 3

The workload and store of ``benches/compare_spark.py`` (one view of the five features, the labels read
by Spark from Parquet, ``local[2]``). The call runs ``--calls`` times (each in a ``staging_scope``, to
Spark's ``noop`` sink); the last one, warm, is reported:

- per Spark job and stage of the call (Spark's status API: the job group; the UI's REST API,
  ``/api/v1/applications/<app>/stages/<id>``): its wall time, tasks, the JVM task threads' run and CPU
  time (``executorRunTime``, ``executorCpuTime``; a Python task's own work is not in them: the JVM's
  thread waits for the worker) and the input bytes;
- per stage, the Python workers' time inside the tasks (timers installed in the workers, CPU from
  ``time.process_time`` of the worker process, its Rust threads included): receiving the input batches
  from the JVM, yielding the output batches to it, and the named steps (the local history read, the
  partitioning kernel, the stream writes, the retrieval, the rest of the result task: reading its streams
  in place and casting);
- the driver: wall time before the first job, between jobs and after the last one;
- the CPU seconds of each kind of process over the call (this Python driver, the JVM, Spark's Python
  workers, from /proc), and the JVM's by kind of thread (its JIT compilers, Spark's task threads, GC,
  the rest): from the second call on most of the JVM's time is its JIT compiling the code the call's
  jobs run.

The timers change nothing of the call's work (they wrap functions of ``skewless.spark`` in the driver
and in the workers). The session is the bench's (``compare_spark.session``) with Spark's UI on (the
REST API needs it), which the bench has off.
Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benches"))
import _workload  # noqa: E402
import compare_spark as cs  # noqa: E402
import skewless.spark as ss  # noqa: E402
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64  # noqa: E402

#: In a worker, the process-wide accumulator of the timers: {step: [cpu s, wall s, calls]}.
_ACC = "__skewless_profile_acc__"


def _acc() -> dict:
    mod = sys.modules.get(_ACC)
    if mod is None:
        import types

        mod = types.ModuleType(_ACC)
        mod.steps = {}  # type: ignore[attr-defined]
        sys.modules[_ACC] = mod
    return mod.steps  # type: ignore[attr-defined,no-any-return]


def _add(step: str, cpu: float, wall: float) -> None:
    s = _acc().setdefault(step, [0.0, 0.0, 0])
    s[0] += cpu
    s[1] += wall
    s[2] += 1


def _timed_fn(step: str, fn):  # type: ignore[no-untyped-def]
    def run(*a, **k):  # type: ignore[no-untyped-def]
        c, w = time.process_time(), time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            _add(step, time.process_time() - c, time.perf_counter() - w)

    run._profiled = True  # type: ignore[attr-defined]
    return run


def _timed_iter(step: str, it):  # type: ignore[no-untyped-def]
    """Iterates ``it``, the time spent inside its ``next`` counted under ``step``."""
    it = iter(it)
    while True:
        c, w = time.process_time(), time.perf_counter()
        try:
            x = next(it)
        except StopIteration:
            _add(step, time.process_time() - c, time.perf_counter() - w)
            return
        _add(step, time.process_time() - c, time.perf_counter() - w)
        yield x


def _timed_gen(step: str, fn):  # type: ignore[no-untyped-def]
    def run(*a, **k):  # type: ignore[no-untyped-def]
        return _timed_iter(step, fn(*a, **k))

    run._profiled = True  # type: ignore[attr-defined]
    return run


def _install_worker_timers() -> None:
    """Wraps, once per worker process, the module functions the tasks look up at call time."""
    import skewless.history as h
    import skewless.spark as m

    if getattr(m._write_streams, "_profiled", False):
        return
    m.partition_rows = _timed_fn("partition kernel", m.partition_rows)
    m.key_buckets = _timed_fn("bucket hash", m.key_buckets)
    m._write_streams = _timed_fn("stream writes", m._write_streams)
    h.scan = _timed_gen("history read (local reader)", h.scan)
    import pyarrow.parquet as pq_

    # The entity rows' own read when the tasks read them (skewless.spark_direct).
    pq_.ParquetFile.read_row_groups = _timed_fn("entity rows read (pyarrow)", pq_.ParquetFile.read_row_groups)
    h.to_stored = _timed_fn("history to stored layout", h.to_stored)


def _profiled_typed(original, out_dir: str):  # type: ignore[no-untyped-def]
    """``skewless.spark._typed`` with the task's timers: input, output, the whole task; one JSON line
    per task into ``out_dir``."""

    def typed(fn):  # type: ignore[no-untyped-def]
        inner = original(fn)

        def run(batches):  # type: ignore[no-untyped-def]
            from pyspark import TaskContext

            _install_worker_timers()
            _acc().clear()
            c0, w0 = time.process_time(), time.perf_counter()
            out = inner(_timed_iter("input from the JVM", batches))
            while True:
                try:
                    b = next(out)
                except StopIteration:
                    break
                c, w = time.process_time(), time.perf_counter()
                yield b
                _add("output to the JVM", time.process_time() - c, time.perf_counter() - w)
            tc = TaskContext.get()
            rec = {
                "stage": tc.stageId() if tc else -1,
                "partition": tc.partitionId() if tc else -1,
                "pid": os.getpid(),
                "cpu": time.process_time() - c0,
                "wall": time.perf_counter() - w0,
                "steps": dict(_acc()),
            }
            with open(os.path.join(out_dir, f"{os.getpid()}-{time.time_ns()}.json"), "w") as f:
                json.dump(rec, f)

        return run

    return typed


def _profiled_retrieve_task(original):  # type: ignore[no-untyped-def]
    def make(*a, **k):  # type: ignore[no-untyped-def]
        run = original(*a, **k)

        def group(unpack):  # type: ignore[no-untyped-def]
            c, w = time.process_time(), time.perf_counter()
            out = run(unpack)
            _add("result group (all)", time.process_time() - c, time.perf_counter() - w)
            return out

        return group

    return make


def _kinds() -> dict[str, float]:
    """CPU seconds so far of this process's tree by kind: this driver, the JVM, the Python workers."""
    out = {"driver (Python)": 0.0, "JVM": 0.0, "Python workers": 0.0, "other": 0.0}
    for pid, (cpu, c) in cs.tree_processes(waited=False).items():
        if pid == os.getpid():
            k = "driver (Python)"
        elif "java" in c.split(" ")[0]:
            k = "JVM"
        elif "pyspark" in c or "python" in c:
            k = "Python workers"
        else:
            k = "other"
        out[k] += cpu
    return out


#: The JVM's threads by kind, from the start of their names (Linux keeps 15 characters of a name).
_JVM_THREADS = (
    ("JIT compilers (C1, C2)", ("C1 CompilerThre", "C2 CompilerThre")),
    ("task threads", ("Executor task",)),
    ("GC", ("GC Thread", "G1 ", "VM Thread")),
)


def _jvm_threads() -> dict[str, float]:
    """CPU seconds so far of the JVM's threads (``/proc/<jvm>/task``) by kind (``_JVM_THREADS``, the rest
    "other"). A thread that ended between two samples takes its time with it; Spark's task threads are
    pooled, so they do not."""
    out = {name: 0.0 for name, _ in _JVM_THREADS}
    out["other"] = 0.0
    clk = os.sysconf("SC_CLK_TCK")
    for pid, (_, c) in cs.tree_processes(waited=False).items():
        if "java" not in c.split(" ")[0]:
            continue
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            used = sum(int(x) for x in stat.rsplit(")", 1)[1].split()[11:13]) / clk
            kind = next((k for k, starts in _JVM_THREADS if name.startswith(starts)), "other")
            out[kind] += used
    return out


def _rest(url: str):  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _ms(stamp: str) -> float:
    """Spark's REST time stamp (``2026-11-28T09:41:02.123GMT``) as epoch seconds."""
    import datetime as dt

    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%Z").replace(tzinfo=dt.timezone.utc).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size", choices=sorted(_workload.SIZES))
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--calls", type=int, default=3, help="calls in the process; the last is reported")
    args = ap.parse_args()

    fpath, lpath = _workload.ensure(args.size)
    spark = cs.session(args.buckets, ui=True)
    sc = spark.sparkContext
    api = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}"
    labels = spark.read.parquet(str(lpath))
    folder = tempfile.mkdtemp(prefix="skewless-spark-profile-")
    timers = os.path.join(folder, "timers")
    try:
        ent = Entity("entity", join_keys=["entity_id"], dtype=Int64)
        view = FeatureView(
            "v",
            [ent],
            [Field(f, Float64) for f in cs.FEATS],
            ttl=cs.TTL,
            created_timestamp_field="created_timestamp",
        )
        store_path = os.path.join(folder, "store")
        store = FeatureStore(store_path)
        store.apply([ent, view])
        store.write("v", pq.read_table(fpath))
        refs = [f"v:{f}" for f in cs.FEATS]
        ss._typed = _profiled_typed(ss._typed, timers)
        ss._retrieve_task = _profiled_retrieve_task(ss._retrieve_task)
        # The result tasks' closure takes the driver's binding of ``retrieve`` with it.
        ss.retrieve = _timed_fn("retrieval (local retrieve)", ss.retrieve)
        marks: list[tuple[str, float]] = []
        for i in range(args.calls):
            shutil.rmtree(timers, ignore_errors=True)
            os.makedirs(timers)
            group = f"call{i}"
            sc.setJobGroup(group, group)
            j0, k0, w0, t0 = _jvm_threads(), _kinds(), time.perf_counter(), time.time()
            with ss.staging_scope():
                df = ss.get_historical_features(spark, store_path, labels, refs, buckets=args.buckets)
                t_planned = time.time()
                cs.noop(df)
                t_ran = time.time()
            t1, w1, k1, j1 = time.time(), time.perf_counter(), _kinds(), _jvm_threads()
            marks = [
                ("call start", t0),
                ("result DataFrame returned", t_planned),
                ("result written", t_ran),
                ("scope closed", t1),
            ]
            print(
                f"call {i}: {w1 - w0:.2f} s, {sum(k1.values()) - sum(k0.values()):.2f} CPU s", file=sys.stderr
            )
        sc.setJobGroup("idle", "idle")
        time.sleep(1.5)  # the listener bus catches up with the last job
        jobs = sorted(sc.statusTracker().getJobIdsForGroup(group))
        load = os.getloadavg()
        report(api, jobs, marks, timers, k0, k1, w1 - w0, load, args, j0, j1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        spark.stop()


def report(api, jobs, marks, timers, k0, k1, wall, load, args, j0, j1) -> None:  # type: ignore[no-untyped-def]
    tasks = []
    for name in os.listdir(timers):
        with open(os.path.join(timers, name)) as f:
            tasks.append(json.load(f))
    t0 = marks[0][1]
    print(
        f"\n### One warm `get_historical_features` call, size {args.size}, {args.buckets} buckets, local[2]\n"
    )
    print(
        f"Call {wall:.2f} s wall, {sum(k1.values()) - sum(k0.values()):.2f} CPU s; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the end.\n"
    )
    print("| process kind | CPU s over the call |\n| --- | ---: |")
    for k in k1:
        print(f"| {k} | {k1[k] - k0[k]:.2f} |")
    print("\n| JVM thread kind | CPU s over the call |\n| --- | ---: |")
    for k in j1:
        print(f"| {k} | {j1[k] - j0[k]:.2f} |")
    print(
        "\n| job / stage | starts at (s) | wall s | tasks | JVM run s | JVM CPU s | input MB | "
        "Python task CPU s | Python task wall s |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    prev_end = t0
    gaps = []
    steps_by_stage: dict[int, dict[str, list[float]]] = {}
    for jid in jobs:
        j = _rest(f"{api}/jobs/{jid}")
        js, je = _ms(j["submissionTime"]), _ms(j["completionTime"])
        gaps.append((f"before job {jid}", js - prev_end))
        prev_end = je
        print(f"| job {jid}: {j['name'][:60]} | {js - t0:.2f} | {je - js:.2f} | {j['numTasks']} | | | | | |")
        for sid in sorted(j["stageIds"]):
            for st in _rest(f"{api}/stages/{sid}"):
                if st["status"] != "COMPLETE":
                    continue
                mine = [t for t in tasks if t["stage"] == sid]
                pc = sum(t["cpu"] for t in mine)
                pw = sum(t["wall"] for t in mine)
                ss_, se = _ms(st["submissionTime"]), _ms(st["completionTime"])
                print(
                    f"| stage {sid} | {ss_ - t0:.2f} | {se - ss_:.2f} | {st['numTasks']} | "
                    f"{st['executorRunTime'] / 1e3:.2f} | {st['executorCpuTime'] / 1e9:.2f} | "
                    f"{st['inputBytes'] / 1e6:.1f} | {pc:.2f} | {pw:.2f} |"
                )
                agg: dict[str, list[float]] = {}
                for t in mine:
                    for step, (c, w, n) in t["steps"].items():
                        a = agg.setdefault(step, [0.0, 0.0, 0])
                        a[0] += c
                        a[1] += w
                        a[2] += n
                steps_by_stage[sid] = agg
    gaps.append(("after the last job", marks[-1][1] - prev_end))
    print(
        "\n| stage | step in the Python tasks | CPU s | wall s | calls |\n| --- | --- | ---: | ---: | ---: |"
    )
    for sid, agg in steps_by_stage.items():
        for step, (c, w, n) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            print(f"| {sid} | {step} | {c:.3f} | {w:.3f} | {n} |")
    print("\n| driver, outside Spark jobs | wall s |\n| --- | ---: |")
    for name, g in gaps:
        print(f"| {name} | {g:.3f} |")
    for name, t in marks[1:]:
        print(f"| (mark) {name} at | {t - t0:.3f} |")


if __name__ == "__main__":
    main()
