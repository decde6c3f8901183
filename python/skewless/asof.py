"""Point-in-time (as-of) joins: ``skewless.asof_join``.

The work happens in the Rust engine (``skewless._core.asof_join``); this module only normalizes
arguments. Nothing here loops over rows.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from . import _core
from ._arrow import as_arrow
from .errors import InvalidArgumentError

__all__ = ["asof_join"]

DIRECTIONS = ("backward", "forward", "nearest")
_U64_MAX = 2**64 - 1


def asof_join(
    left: Any,
    right: Any,
    *,
    on: str,
    by: str | Sequence[str] | None = None,
    direction: str = "backward",
    tolerance: _dt.timedelta | int | None = None,
    allow_exact_matches: bool = True,
    tie_breaker: str | None = None,
    suffix: str | None = None,
    sequence: str | None = None,
) -> pa.Table:
    """Join to each ``left`` row the ``right`` row with the same ``by`` key and the nearest earlier ``on``.

    ``direction="backward"`` (default) takes the right row with the greatest ``on`` <= the left row's
    (strictly < with ``allow_exact_matches=False``); ``"forward"`` the least ``on`` >= it; ``"nearest"``
    the closer of the two, the earlier one on equal distance. Among right rows with equal key and ``on``,
    the greatest ``tie_breaker`` wins (a null tie-breaker ranks below every value), then the greatest
    ``sequence`` (a right column, e.g. a write sequence; null ranks lowest), then the row that comes last
    in the input, in every direction. With a ``sequence`` unique per row the answer does not depend on
    the order of the right's rows. ``tolerance`` (inclusive) bounds how far the match may
    be: a ``datetime.timedelta`` for timestamp ``on`` (resolution: microseconds), an int for integer
    ``on``. A left row with no match, a null key or a null ``on`` gets nulls; no left row is ever dropped
    or repeated, and the output keeps the left's row order.

    Inputs: pyarrow Tables/RecordBatches, polars or pandas DataFrames, mappings of columns, or anything
    with ``__arrow_c_stream__``; they need not be sorted. ``on`` is a timezone-aware timestamp (any
    unit, units may differ between sides) or an integer column on both sides; ``by`` is one column or a
    list (integer, string or binary columns).

    Returns every left column (the left's own arrays), then every right column except ``on`` and ``by``;
    a right column whose name is taken raises ``ColumnClashError`` unless ``suffix`` is given.

    Example:
        >>> import datetime as dt
        >>> import pyarrow as pa
        >>> import skewless
        >>> ts = pa.timestamp("s", tz="UTC")
        >>> labels = pa.table({"user": [1, 2], "t": pa.array([100, 100], ts)})
        >>> feats = pa.table({"user": [1, 1, 2], "t": pa.array([10, 90, 200], ts), "x": [0.1, 0.9, 2.0]})
        >>> skewless.asof_join(labels, feats, on="t", by="user").column("x").to_pylist()
        [0.9, None]
        >>> skewless.asof_join(labels, feats, on="t", by="user",
        ...                    tolerance=dt.timedelta(seconds=5)).column("x").to_pylist()
        [None, None]
        >>> tied = pa.table({"user": [1, 1], "t": pa.array([90, 90], ts), "seq": [2, 1], "x": [0.2, 0.1]})
        >>> skewless.asof_join(labels, tied, on="t", by="user", sequence="seq").column("x").to_pylist()
        [0.2, None]
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
    if direction not in DIRECTIONS:
        raise InvalidArgumentError(
            f"direction {direction!r} is not valid; use one of {', '.join(repr(d) for d in DIRECTIONS)}"
        )
    kind, tol = _tolerance(tolerance)
    for name, value in (("tie_breaker", tie_breaker), ("suffix", suffix), ("sequence", sequence)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a str or None, got {type(value).__name__}")
    return _core.asof_join(
        as_arrow(left, "left"),
        as_arrow(right, "right"),
        on,
        by_list,
        direction,
        kind,
        tol,
        bool(allow_exact_matches),
        tie_breaker,
        suffix,
        sequence,
    )


def _tolerance(tolerance: Any) -> tuple[str | None, int | None]:
    if tolerance is None:
        return None, None
    if isinstance(tolerance, _dt.timedelta):
        micros = (tolerance.days * 86_400 + tolerance.seconds) * 1_000_000 + tolerance.microseconds
        kind = "timedelta"
    elif isinstance(tolerance, numbers.Integral) and not isinstance(tolerance, bool):
        micros = int(tolerance)
        kind = "int"
    else:
        raise InvalidArgumentError(
            f"tolerance must be a datetime.timedelta (timestamp `on`) or an int (integer `on`), "
            f"got {type(tolerance).__name__}"
        )
    if micros < 0:
        raise InvalidArgumentError(f"tolerance must not be negative, got {tolerance!r}")
    # Differences of 64-bit times never exceed 2**64 - 1, so a larger tolerance means "no limit".
    return kind, min(micros, _U64_MAX)
