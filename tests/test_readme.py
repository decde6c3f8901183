"""The README's usage example runs as written and gives the point-in-time answer it describes."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README lost its usage example"
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code.group(1), str(README), "exec"), scope)
    train = scope["train"].to_pydict()  # type: ignore[attr-defined]
    # The label one hour after the first write sees the first values; the one at the second write's
    # instant sees the second (boundary inclusive).
    assert train["amount_7d"] == [120.0, 80.5]
    assert train["txn_count_7d"] == [3, 2]
    assert "80.5" in capsys.readouterr().out


def test_readme_serving_example_is_the_benchmarked_app():
    """The FastAPI example in the README is benches/serve_app.py without its comments and docstring."""
    code = re.search(r"## Serving from a Python service.*?```py\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README lost its serving example"
    app = (README.parent / "benches" / "serve_app.py").read_text()
    app = re.sub(r'^""".*?"""\n', "", app, flags=re.S)  # module docstring

    def lines(text: str) -> list[str]:
        out = [ln.split("  #")[0].rstrip() for ln in text.splitlines()]
        return [ln for ln in out if ln.strip() and not ln.lstrip().startswith(("#", "from __future__"))]

    assert lines(code.group(1)) == lines(app)


def test_readme_window_example(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next((b for b in blocks if "window_aggregate" in b), None)
    assert code is not None, "README lost its window example"
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)
    out = scope["windows"].to_pydict()  # type: ignore[attr-defined]
    assert out["amount_sum_7d"] == [8.5, 1.0]
    assert out["amount_count_2d"] == [1, 0]
