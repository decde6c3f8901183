"""Canaries: run new feature logic beside the old on live inputs, serve the old, measure the difference.

``Canary(name, old, new)`` is called like ``old`` and returns what ``old`` returns. It also calls ``new``
on the same arguments and compares the two answers value by value, so a rewrite (a feature moved into a
transform, a legacy path replaced by the store) is checked on real traffic before it serves anything.
``new`` can never break the caller: an exception in it is counted, not raised.

What is compared: scalars, sequences, numpy arrays, pyarrow arrays, pandas Series, and mappings of
feature name to any of those (then each feature is reported too). Two numbers agree when
``|new - old| <= atol + rtol * |old|``; NaN agrees with NaN, and a null (None, NaN in a nullable
column, a pyarrow null) on one side only is a null disagreement, counted apart from mismatches.
Non-numeric values agree when equal. The median absolute difference is taken over a uniform sample
of at most ``SAMPLE`` differences, so a canary's memory stays bounded however long it runs.

Example:
    >>> from skewless import Canary
    >>> avg = Canary("avg_basket", old=lambda xs: sum(xs) / len(xs), new=lambda xs: sum(xs) / max(len(xs), 1))
    >>> avg([2.0, 4.0])
    3.0
    >>> avg.ok, avg.report()["mismatches"]
    (True, 0)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["Canary", "SAMPLE"]

#: The most absolute differences a canary keeps for its median (a uniform sample beyond that).
SAMPLE = 100_000


def _flat(v: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values, null mask, numeric) of one answer, flattened."""
    if hasattr(v, "is_null") and hasattr(v, "to_pylist"):  # pyarrow Array / ChunkedArray
        nulls = np.asarray(v.is_null().to_pylist(), bool)
        v = v.to_pylist()
    elif hasattr(v, "is_null") and hasattr(v, "to_list"):  # polars Series
        nulls = np.asarray(v.is_null().to_list(), bool)
        v = v.to_list()
    elif hasattr(v, "isna") and hasattr(v, "to_numpy"):  # pandas Series
        nulls = np.asarray(v.isna().to_numpy(), bool)
        v = v.to_numpy(dtype=object)
    else:
        nulls = None
    arr = np.asarray(v, dtype=object).reshape(-1)
    if nulls is None:
        nulls = np.array([x is None for x in arr], bool)
    numeric = all(
        isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
        for x, n in zip(arr, nulls, strict=True)
        if not n
    )
    if numeric:
        out = np.array([math.nan if n else float(x) for x, n in zip(arr, nulls, strict=True)], float)
        return out, nulls, True
    return arr, nulls, False


class _Tally:
    """Running comparison counts for one feature (or the whole answer)."""

    def __init__(self, seed: int) -> None:
        self.values = 0
        self.mismatches = 0
        self.null_disagreements = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.numeric_pairs = 0
        self.seen = 0
        self.sample = np.empty(0)
        self.rng = np.random.default_rng(seed)

    def add(self, old: Any, new: Any, rtol: float, atol: float) -> None:
        a, an, a_num = _flat(old)
        b, bn, b_num = _flat(new)
        if a.shape != b.shape:
            # Answers of different lengths disagree everywhere.
            self.values += max(len(a), len(b))
            self.mismatches += max(len(a), len(b))
            return
        self.values += len(a)
        one_null = an != bn
        self.null_disagreements += int(one_null.sum())
        both = ~an & ~bn
        if a_num and b_num:
            x, y = a[both], b[both]
            nan_x, nan_y = np.isnan(x), np.isnan(y)
            # Infinities of one sign agree; a NaN agrees only with a NaN.
            equal_special = (np.isinf(x) & (x == y)) | (nan_x & nan_y)
            with np.errstate(invalid="ignore"):
                diff = np.where(equal_special, 0.0, np.abs(x - y))
                bad = ~(equal_special | (diff <= atol + rtol * np.abs(x)))
            self.mismatches += int(bad.sum())
            finite = np.isfinite(diff)
            d = diff[finite]
            if len(d):
                self.max_abs = max(self.max_abs, float(d.max()))
                self.sum_abs += float(d.sum())
                self.numeric_pairs += len(d)
                self._keep(d)
        else:
            self.mismatches += int(sum(1 for p, q in zip(a[both], b[both], strict=True) if p != q))

    def _keep(self, d: np.ndarray) -> None:
        # Reservoir sampling (algorithm R), one batch at a time.
        room = SAMPLE - len(self.sample)
        take, rest = d[:room], d[room:]
        if len(take):
            self.sample = np.concatenate([self.sample, take])
        self.seen += len(take)
        if len(rest):
            seen = self.seen + np.arange(1, len(rest) + 1)
            slots = (self.rng.random(len(rest)) * seen).astype(np.int64)
            hit = slots < SAMPLE
            self.sample[slots[hit]] = rest[hit]
            self.seen += len(rest)

    def report(self) -> dict[str, Any]:
        n = self.values
        return {
            "values": n,
            "mismatches": self.mismatches,
            "mismatch_rate": self.mismatches / n if n else 0.0,
            "null_disagreements": self.null_disagreements,
            "max_abs_diff": self.max_abs if self.numeric_pairs else None,
            "mean_abs_diff": self.sum_abs / self.numeric_pairs if self.numeric_pairs else None,
            "median_abs_diff": float(np.median(self.sample)) if len(self.sample) else None,
        }


class Canary:
    """Serve ``old``, shadow it with ``new``, and tally how they differ (see the module docs).

    ``rtol``/``atol``: the tolerance of a numeric comparison (``|new - old| <= atol + rtol * |old|``).
    ``report()`` returns the tallies; ``ok`` is True once at least one call compared equal everywhere
    and ``new`` never failed.

    Example:
        >>> c = Canary("clip", old=lambda x: min(x, 10.0), new=lambda x: max(min(x, 10.0), 0.0))
        >>> [c(v) for v in (5.0, 20.0, -3.0)]
        [5.0, 10.0, -3.0]
        >>> c.report()["mismatches"], c.ok
        (1, False)
    """

    def __init__(
        self,
        name: str,
        old: Callable[..., Any],
        new: Callable[..., Any],
        rtol: float = 1e-5,
        atol: float = 0.0,
    ) -> None:
        from .errors import InvalidArgumentError

        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Canary name must be a non-empty str, not {name!r}")
        if not callable(old) or not callable(new):
            raise InvalidArgumentError("Canary old and new must be callables taking the same arguments")
        for what, v in (("rtol", rtol), ("atol", atol)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise InvalidArgumentError(f"Canary {what} must be a number >= 0, not {v!r}")
        self.name, self.old, self.new = name, old, new
        self.rtol, self.atol = float(rtol), float(atol)
        self._lock = threading.Lock()
        self._all = _Tally(0)
        self._features: dict[str, _Tally] = {}
        self.calls = 0
        self.new_errors = 0
        self.last_new_error: str | None = None
        self._old_s = 0.0
        self._new_s = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.old(*args, **kwargs)
        t1 = time.perf_counter()
        try:
            shadow = self.new(*args, **kwargs)
            failed: str | None = None
        except Exception as e:  # the new path must never break the served one
            shadow, failed = None, f"{type(e).__name__}: {e}"
        t2 = time.perf_counter()
        with self._lock:
            self.calls += 1
            self._old_s += t1 - t0
            self._new_s += t2 - t1
            if failed is not None:
                self.new_errors += 1
                self.last_new_error = failed
            elif isinstance(out, Mapping) and isinstance(shadow, Mapping):
                for k in out.keys() | shadow.keys():
                    t = self._features.setdefault(str(k), _Tally(len(self._features) + 1))
                    t.add(out.get(k), shadow.get(k), self.rtol, self.atol)
                    self._all.add(out.get(k), shadow.get(k), self.rtol, self.atol)
            else:
                self._all.add(out, shadow, self.rtol, self.atol)
        return out

    def report(self) -> dict[str, Any]:
        """The tallies: calls, values compared, mismatches and their rate, null disagreements, max / mean /
        median absolute difference, errors of ``new``, mean seconds per call of each, and per feature when
        the answers are mappings."""
        with self._lock:
            out = {"name": self.name, "calls": self.calls, **self._all.report()}
            out["new_errors"] = self.new_errors
            out["last_new_error"] = self.last_new_error
            out["old_seconds_mean"] = self._old_s / self.calls if self.calls else None
            out["new_seconds_mean"] = self._new_s / self.calls if self.calls else None
            if self._features:
                out["features"] = {k: t.report() for k, t in sorted(self._features.items())}
            return out

    @property
    def ok(self) -> bool:
        """Whether ``new`` has answered every call, equal to ``old`` everywhere (at least one call)."""
        r = self.report()
        return bool(r["calls"]) and not (r["mismatches"] or r["null_disagreements"] or r["new_errors"])

    def __repr__(self) -> str:
        r = self.report()
        return f"Canary({self.name!r}, calls={r['calls']}, mismatches={r['mismatches']}, ok={self.ok})"
