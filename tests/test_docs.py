"""The documented examples run: every module's docstring examples, and the as-of example script."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import skewless

REPO = Path(__file__).resolve().parent.parent
# Every public module of the package (private ones, _name, hold no API).
MODULES = sorted(
    m.name for m in pkgutil.iter_modules(skewless.__path__) if not m.name.startswith("_") and m.name != "cli"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # some examples make stores in the working directory
    result = doctest.testmod(importlib.import_module(f"skewless.{name}"), verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_asof_example_script_runs_end_to_end():
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "asof_demo.py"), "20000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "asof_join: 2,000 labels x 20,000 feature rows -> 2,000 rows" in out
