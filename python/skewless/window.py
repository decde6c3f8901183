"""Sliding-window aggregates: ``skewless.Aggregation`` and ``skewless.window_aggregate``.

For each label row (keys k, instant t), an aggregate over the events of key k whose time lies in
(t - window, t]: exact microseconds, no truncation to days or tiles. Nulls are skipped; an empty window
gives null (``count`` and ``count_distinct``: 0). Functions: ``sum, count, mean, min, max, first, last,
var_samp, var_pop, stddev_samp, stddev_pop, count_distinct`` (the ``_samp`` ones divide by n - 1,
the ``_pop`` ones by n; ``first``/``last`` follow the events' time, then ``sequence``, then input order).

The work happens in the Rust engine (``skewless._core.window_aggregate``). Float sums are exact and
rounded once, so a window's value does not depend on the order its events arrived in: the value computed
for a training set is the value computed one entity at a time, bit for bit.

Example:
    >>> import datetime as dt
    >>> import pyarrow as pa
    >>> import skewless
    >>> ts = pa.timestamp("s", tz="UTC")
    >>> events = pa.table({"user": [1, 1, 1], "t": pa.array([0, 3600, 7200], ts), "amount": [5.0, 1.0, 2.0]})
    >>> labels = pa.table({"user": [1, 1], "t": pa.array([3600, 7200], ts)})
    >>> aggs = [skewless.Aggregation("amount", "sum", window="1h"),
    ...         skewless.Aggregation("amount", "count", window="2h")]
    >>> out = skewless.window_aggregate(labels, events, on="t", by="user", aggregations=aggs)
    >>> out.column("amount_sum_1h").to_pylist(), out.column("amount_count_2h").to_pylist()
    ([1.0, 2.0], [2, 2])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from . import _core
from ._arrow import as_arrow
from .definitions import MICROSECOND
from .durations import to_micros
from .errors import InvalidArgumentError

__all__ = ["Aggregation", "window_aggregate", "FUNCTIONS"]

FUNCTIONS = (
    "sum",
    "count",
    "mean",
    "min",
    "max",
    "first",
    "last",
    "var_samp",
    "var_pop",
    "stddev_samp",
    "stddev_pop",
    "count_distinct",
)
#: The window lengths a definition may use.
MIN_WINDOW = dt.timedelta(seconds=1)
MAX_WINDOW = dt.timedelta(days=400)

_LABEL_UNITS = {
    "d": dt.timedelta(days=1),
    "h": dt.timedelta(hours=1),
    "m": dt.timedelta(minutes=1),
    "s": dt.timedelta(seconds=1),
}


def _window(window: Any, what: str) -> dt.timedelta:
    w = dt.timedelta(microseconds=to_micros(window, f"{what}: window"))
    if not MIN_WINDOW <= w <= MAX_WINDOW:
        raise InvalidArgumentError(
            f"{what}: window {w} is outside 1 second .. 400 days; pick one in that range"
        )
    return w


def _label(window: dt.timedelta) -> str:
    """The window as it appears in generated names: the largest unit of d, h, m, s that divides it."""
    for unit, step in _LABEL_UNITS.items():
        if window % step == dt.timedelta(0):
            return f"{window // step}{unit}"
    return f"{window // MICROSECOND}us"


class Aggregation:
    """``function`` of an event column over a sliding ``window`` (a ``timedelta`` or "90s", "30m",
    "1h", "7d", "4w"; 1 second to 400 days). Its output is named ``<column>_<function>_<window>``
    (e.g. ``amount_sum_7d``) unless ``name`` is given.

    Example:
        >>> import datetime as dt
        >>> Aggregation("amount", "sum", window=dt.timedelta(days=7)).name
        'amount_sum_7d'
        >>> Aggregation("amount", "mean", window="30d", name="avg_amount_30d").name
        'avg_amount_30d'
    """

    def __init__(self, column: str, function: str, window: Any, name: str | None = None) -> None:
        if not isinstance(column, str) or not column:
            raise InvalidArgumentError(f"Aggregation column must be a column name, not {column!r}")
        if function not in FUNCTIONS:
            raise InvalidArgumentError(
                f"aggregate function {function!r} is not one of {', '.join(FUNCTIONS)}"
            )
        what = f"aggregation {function}({column})"
        self.column = column
        self.function = function
        self.window = _window(window, what)
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidArgumentError(f"{what}: name must be a non-empty str, not {name!r}")
        self.name = name or f"{column}_{function}_{_label(self.window)}"

    @property
    def window_us(self) -> int:
        """The window in whole microseconds."""
        return self.window // MICROSECOND

    def _key(self) -> tuple[str, str, dt.timedelta, str]:
        return (self.column, self.function, self.window, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Aggregation) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        w = _label(self.window)
        return f"Aggregation({self.column!r}, {self.function!r}, window={w!r}, name={self.name!r})"


def window_aggregate(
    labels: Any,
    events: Any,
    *,
    on: str,
    by: str | Sequence[str] | None = None,
    aggregations: Sequence[Aggregation],
    sequence: str | None = None,
) -> pa.Table:
    """Every ``labels`` row, in order, then each aggregation over the ``events`` of the same ``by`` key
    in (t - window, t], t being the label's ``on``.

    ``on``: a timezone-aware timestamp column on both sides (any unit); ``by``: key column(s) on both
    sides (integer, string or binary). ``sequence``: an integer events column that orders events of
    equal time for ``first``/``last`` (a write sequence). A label whose key or time is null gets the
    empty window. Aggregated columns: float64 (float32 is widened), int64 (narrower integers are widened)
    or string; ``sum``/``mean``/variances need a number, ``count_distinct`` an integer or a string.
    Inputs: pyarrow, polars, pandas, mappings of columns, Arrow streams; no sorting needed.

    Example: see the module docstring.
    """
    if not isinstance(on, str):
        raise InvalidArgumentError(f"on must be a column name (str), got {type(on).__name__}")
    if by is None:
        by_list: list[str] = []
    elif isinstance(by, str):
        by_list = [by]
    else:
        by_list = list(by)
        if not all(isinstance(b, str) for b in by_list):
            raise InvalidArgumentError(f"by must be a column name or a list of column names, got {by!r}")
    aggs = list(aggregations)
    if not aggs or not all(isinstance(a, Aggregation) for a in aggs):
        raise InvalidArgumentError("aggregations must be a non-empty list of skewless.Aggregation")
    if sequence is not None and not isinstance(sequence, str):
        raise InvalidArgumentError(f"sequence must be a column name or None, got {type(sequence).__name__}")
    return _core.window_aggregate(
        as_arrow(labels, "labels"),
        as_arrow(events, "events"),
        on,
        by_list,
        sequence,
        [(a.column, a.function, a.window_us, a.name) for a in aggs],
    )
