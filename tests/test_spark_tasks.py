"""How skewless.spark deals its units of work (history parts, groups) to fewer tasks than units:
``_balance`` against a brute-force check of what a deal must be. No Spark."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless.spark import _balance


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(0, 10**9), max_size=60), tasks=st.integers(1, 12))
def test_every_item_goes_to_one_task_and_loads_stay_within_one_item_of_even(
    weights: list[int], tasks: int
) -> None:
    w = np.array(weights, dtype=np.int64)
    deal = _balance(w, tasks)
    assert len(deal) == tasks
    dealt = sorted(i for d in deal for i in d)
    assert dealt == list(range(len(weights)))
    loads = [int(w[d].sum()) if d else 0 for d in deal]
    # Greedy to the lightest task: no task ends more than its own last (smallest) item above the mean.
    if weights:
        mean = sum(weights) / tasks
        for d, load in zip(deal, loads, strict=True):
            if d:
                assert load <= mean + min(weights[i] for i in d) + 1e-6 * max(1, mean)
    assert _balance(w, tasks) == deal  # deterministic: the same deal on every call


def test_heaviest_items_go_to_different_tasks() -> None:
    deal = _balance(np.array([1, 100, 1, 90, 1, 80]), 3)
    assert sorted(d[0] for d in deal) == [1, 3, 5]
