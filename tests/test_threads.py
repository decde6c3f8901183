"""skewless.threads: the size of the pool the Rust kernels run in, per process."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from skewless import asof_join
from skewless.errors import InvalidArgumentError
from skewless.threads import num_threads, set_num_threads


@pytest.fixture(autouse=True)
def default_pool():
    yield
    set_num_threads(None)


def test_the_pool_size_holds_for_later_kernel_calls_and_none_restores_the_default():
    set_num_threads(1)
    assert num_threads() == 1
    left = pa.table({"k": [1, 2] * 50_000, "t": list(range(100_000))})
    right = pa.table({"k": [1, 2] * 50_000, "t": list(range(100_000)), "x": [1.0] * 100_000})
    one = asof_join(left, right, on="t", by="k")
    set_num_threads(3)
    assert num_threads() == 3
    assert asof_join(left, right, on="t", by="k").equals(one)
    set_num_threads(None)
    assert num_threads() == int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 10**6])
def test_a_bad_thread_count_is_a_typed_error_and_changes_nothing(bad):
    set_num_threads(2)
    with pytest.raises(InvalidArgumentError, match="threads"):
        set_num_threads(bad)
    assert num_threads() == 2
