"""Point-in-time (as-of) joins: ``skewless.asof_join``.

The work happens in the Rust engine (``skewless._core.asof_join``); this module only normalizes
arguments. Nothing here loops over rows.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from . import _core
from ._arrow import as_table, check_columns, join_pair, name_list
from .durations import to_micros
from .errors import InvalidArgumentError
from .normalize import column_name, flag

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
    tolerance: _dt.timedelta | int | str | None = None,
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
    ``sequence`` (a right integer column, e.g. a write sequence; null ranks lowest), then the row that
    comes last in the input, in every direction: with a ``sequence`` unique per row the answer does not
    depend on the order of the right's rows. ``tolerance`` (inclusive) bounds how far the match may
    be: for a timestamp ``on`` a duration (``datetime.timedelta``, ``pandas.Timedelta``,
    ``numpy.timedelta64`` of any unit, or a string like ``"90s"``, ``"1h30m"``, ``"7d"``: see
    :mod:`skewless.durations`; a whole number of microseconds), for an integer ``on`` an int. A left row
    with no match, a null key or a null ``on`` gets nulls; no left row is ever dropped or repeated, and
    the output keeps the left's row order.

    Inputs (see :mod:`skewless._arrow` for the exact rules): pyarrow Tables/RecordBatches, polars
    DataFrames or LazyFrames, pandas DataFrames (their columns: the index is dropped, as ``merge_asof``
    does by default; ``reset_index()`` to join on it), named Series, mappings of columns, or anything with
    ``__arrow_c_stream__``; they need not be sorted. ``on`` is a timezone-aware timestamp (any unit and
    zone, units may differ between sides), a date (the instant 00:00 UTC) or an integer column on both
    sides (signed and unsigned mix when their values fit one type); ``by`` is one column or a list
    (integers, booleans, strings, also dictionary-encoded / categorical, binary). Every argument is
    checked: a wrong one raises a :mod:`skewless.errors` exception naming it.

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
    column_name(on, "on")
    by_list = [] if by is None else name_list(by, "by")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise InvalidArgumentError(
            f"direction {direction!r} is not valid; use one of {', '.join(repr(d) for d in DIRECTIONS)}"
        )
    kind, tol = _tolerance(tolerance)
    exact = flag(allow_exact_matches, "allow_exact_matches")
    for name, value in (("tie_breaker", tie_breaker), ("suffix", suffix), ("sequence", sequence)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a str or None, got {value!r}")
    lt, rt = as_table(left, "left"), as_table(right, "right")
    check_columns(left, lt, [on, *by_list], "the left table")
    ranks = [c for c in (tie_breaker, sequence) if c]
    check_columns(right, rt, [on, *by_list, *ranks], "the right table")
    # The engine compares `on` and `by` as it receives them; convert both sides where types differ in
    # form only (dictionary strings, dates, mixed signedness...), and give the output the left's own
    # columns back.
    restore: dict[int, pa.ChunkedArray] = {}
    for name, role in [(on, "on")] + [(b, "by") for b in by_list]:
        lc, rc = join_pair(lt.column(name), rt.column(name), name, role)
        if lc is not lt.column(name):
            i = lt.schema.get_field_index(name)
            restore[i] = lt.column(i)
            lt = lt.set_column(i, lt.field(i).with_type(lc.type), lc)
        if rc is not rt.column(name):
            i = rt.schema.get_field_index(name)
            rt = rt.set_column(i, rt.field(i).with_type(rc.type), rc)
    out = _core.asof_join(lt, rt, on, by_list, direction, kind, tol, exact, tie_breaker, suffix, sequence)
    for i, col in restore.items():
        out = out.set_column(i, out.field(i).with_type(col.type), col)
    return out


def _tolerance(tolerance: Any) -> tuple[str | None, int | None]:
    if tolerance is None:
        return None, None
    # numpy.timedelta64 is a numpy integer too: a duration first, never a count of ticks.
    if isinstance(tolerance, numbers.Integral) and not isinstance(
        tolerance, (bool, np.bool_, np.timedelta64)
    ):
        micros = int(tolerance)
        kind = "int"
        if micros < 0:
            raise InvalidArgumentError(f"tolerance must not be negative, got {tolerance!r}")
    else:
        try:
            micros = to_micros(tolerance, "tolerance")
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{e} (or an int, for an integer `on`)") from None
        kind = "timedelta"
    # Differences of 64-bit times never exceed 2**64 - 1, so a larger tolerance means "no limit".
    return kind, min(micros, _U64_MAX)
