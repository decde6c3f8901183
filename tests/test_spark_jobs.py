"""How skewless.spark runs a job of its own tasks and collects their index rows (``_run_tasks``): an RDD
job under classic pyspark, a ``range(...).mapInArrow`` collected with ``toArrow`` where there is no
SparkContext (Spark Connect). Both give the rows the tasks yield, in task order, and a task's skewless
error reaches the driver typed. Needs pyspark and Java: it runs in CI's Spark step (conftest.py,
SPARK_TESTS)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import test_spark
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spark import SLOW

spark = test_spark.spark  # the session's fixture


class NoContext:
    """A session as Spark Connect's looks to ``_run_tasks``: no SparkContext, ``range`` as the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real

    @property
    def sparkContext(self) -> Any:  # noqa: N802 - pyspark's name
        raise RuntimeError("Spark Connect has no SparkContext")

    def range(self, *a: Any) -> Any:
        return self.real.range(*a)


class NoQueries:
    """A classic session whose DataFrame side refuses to run: ``_run_tasks`` must not need it."""

    def __init__(self, real: Any) -> None:
        self.sparkContext = real.sparkContext

    def range(self, *a: Any) -> Any:
        raise AssertionError("the classic path ran a DataFrame job")


def rows_maker() -> Any:
    """``index_rows(task, sizes)``: the ``_STAGED`` batches task ``task`` yields, one of each size,
    numbers made from the task (a nested function: the tasks unpickle it without this module)."""

    def index_rows(task: int, sizes: list[int]) -> list[pa.RecordBatch]:
        import skewless.spark as ss

        out = []
        for j, n in enumerate(sizes):
            base = task * 1000 + j * 100
            out.append(
                pa.RecordBatch.from_pydict(
                    {
                        "group": [task + i for i in range(n)],
                        "part": [j - 1] * n,
                        "file": [f"s{task}-{j}"] * n,
                        "offset": [base + i for i in range(n)],
                        "length": [i for i in range(n)],
                        "rows": [n] * n,
                        "lo": [None if i % 3 == 0 else base - i for i in range(n)],
                        "hi": [None if i % 3 == 0 else base + i for i in range(n)],
                    },
                    schema=ss._STAGED_SCHEMA,
                )
            )
        return out

    return index_rows


@settings(max_examples=5, **SLOW)
@given(st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=4))
def test_both_ways_collect_what_the_tasks_yield_in_task_order(spark, plan: list[list[int]]) -> None:
    import skewless.spark as ss

    index_rows = rows_maker()

    def run(task: int) -> Any:
        return iter(index_rows(task, plan[task]))

    want = pa.Table.from_batches(
        [b for t in range(len(plan)) for b in index_rows(t, plan[t])], schema=ss._STAGED_SCHEMA
    )
    classic = ss._run_tasks(NoQueries(spark), len(plan), run)
    connect = ss._run_tasks(NoContext(spark), len(plan), run)
    assert classic.schema == want.schema == connect.schema
    assert classic.equals(want)
    assert connect.equals(want)


def test_a_task_error_reaches_the_driver_typed_both_ways(spark) -> None:
    import skewless.spark as ss
    from skewless.errors import StorageError

    ss._install_typed_errors()
    index_rows = rows_maker()

    def run(task: int) -> Any:
        if task == 1:
            raise StorageError("part 1 of the history failed to decode; run materialize")
        return iter(index_rows(task, [2]))

    for session in (NoQueries(spark), NoContext(spark)):
        with pytest.raises(StorageError) as e:
            ss._run_tasks(session, 2, run)
        assert str(e.value) == "part 1 of the history failed to decode; run materialize"
    # An error that is not skewless's stays Spark's own.

    def boom(task: int) -> Any:
        raise ValueError("not ours")

    with pytest.raises(Exception, match="not ours") as e:
        ss._run_tasks(NoQueries(spark), 1, boom)
    assert not isinstance(e.value, StorageError)
