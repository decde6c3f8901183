"""The documented examples run: asof_join's docstring and the README's main job (examples/asof_demo.py)."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import skewless.asof

REPO = Path(__file__).resolve().parent.parent


def test_asof_join_docstring_example():
    result = doctest.testmod(skewless.asof, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_demo_runs_end_to_end():
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "asof_demo.py"), "20000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "asof_join: 2,000 labels x 20,000 feature rows -> 2,000 rows" in out
