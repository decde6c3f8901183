"""Lengths of time as arguments: one parser for tolerances, TTLs and window lengths.

:func:`to_micros` turns every accepted form into an exact whole number of microseconds (the store's
time resolution), or raises :class:`~skewless.errors.InvalidArgumentError` naming the argument and
the forms it accepts. Accepted forms:

- ``datetime.timedelta``;
- ``pandas.Timedelta`` (its nanoseconds are kept, then checked like any other remainder);
- ``numpy.timedelta64`` of any fixed unit (``W D h m s ms us ns ps fs as``); ``NaT`` is refused, and
  so are the calendar units ``Y`` and ``M`` (a month has no fixed length);
- a string of one or more ``<integer><unit>`` terms, optionally signed as a whole: ``"90s"``, ``"30m"``,
  ``"1h30m"``, ``"7d"``, ``"4w"``, ``"250ms"``, ``"10us"``, ``"-5m"``. Units: ``w`` (7 days), ``d``
  (24 hours; no daylight-saving jumps: durations measure instants), ``h``, ``m`` (minutes), ``s``,
  ``ms``, ``us`` (or ``µs``), ``ns``. ``mo`` and ``y`` are refused for the same reason as above.

A value that is not a whole number of microseconds (``numpy.timedelta64(3, "ns")``, ``"1500ns"``) is
refused rather than rounded, so no two spellings of a duration silently differ. A bare number is refused:
it has no unit. Negative durations are refused unless the caller allows them.

Example:
    >>> import datetime as dt
    >>> import numpy as np
    >>> from skewless.durations import to_micros
    >>> to_micros("1h30m", "ttl"), to_micros(np.timedelta64(2, "s"), "ttl")
    (5400000000, 2000000)
    >>> to_micros(dt.timedelta(days=7), "ttl") == to_micros("1w", "ttl")
    True
    >>> to_micros(np.timedelta64(3, "ns"), "tolerance")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skewless.errors.InvalidArgumentError: tolerance numpy.timedelta64(3,'ns') is not a whole number of ...
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["FORMS", "to_micros", "to_timedelta"]

#: The accepted forms, for error messages of every caller.
FORMS = (
    "a datetime.timedelta, a pandas.Timedelta, a numpy.timedelta64, or a string such as "
    "'90s', '30m', '1h30m', '7d', '4w' (units w d h m s ms us ns)"
)

# Lengths in attoseconds, the finest numpy unit, so every conversion is exact integer arithmetic.
_AS = {
    "as": 1,
    "fs": 10**3,
    "ps": 10**6,
    "ns": 10**9,
    "us": 10**12,
    "ms": 10**15,
    "s": 10**18,
    "m": 60 * 10**18,
    "h": 3600 * 10**18,
    "D": 86_400 * 10**18,
    "W": 7 * 86_400 * 10**18,
}
_PER_US = _AS["us"]
# String units (polars/pandas spelling) -> numpy unit names above.
_TEXT_UNITS = {
    "w": "W",
    "d": "D",
    "h": "h",
    "m": "m",
    "s": "s",
    "ms": "ms",
    "us": "us",
    "µs": "us",
    "ns": "ns",
}
_TERM = re.compile(r"(\d+)(ms|us|µs|ns|w|d|h|m|s)")
_CALENDAR = re.compile(r"\d+(mo|y)")


def to_micros(value: Any, what: str, *, allow_negative: bool = False) -> int:
    """``value`` (one of :data:`FORMS`) as an exact integer number of microseconds.

    ``what`` names the argument in error messages. Raises InvalidArgumentError for anything else, for a
    sub-microsecond remainder, and for a negative duration unless ``allow_negative``.

    Example:
        >>> to_micros("250ms", "window")
        250000
    """
    attos = _attoseconds(value, what)
    if attos % _PER_US:
        raise InvalidArgumentError(
            f"{what} {_show(value)} is not a whole number of microseconds (the store's time resolution); "
            "round it to microseconds"
        )
    us = attos // _PER_US
    if us < 0 and not allow_negative:
        raise InvalidArgumentError(f"{what} {_show(value)} is negative; pass a duration >= 0")
    return us


def to_timedelta(value: Any, what: str, *, allow_negative: bool = False) -> _dt.timedelta:
    """Like :func:`to_micros`, as a ``datetime.timedelta`` (InvalidArgumentError beyond its range).

    Example:
        >>> to_timedelta("36h", "ttl")
        datetime.timedelta(days=1, seconds=43200)
    """
    us = to_micros(value, what, allow_negative=allow_negative)
    try:
        return _dt.timedelta(microseconds=us)
    except OverflowError:
        raise InvalidArgumentError(
            f"{what} {_show(value)} is longer than the longest datetime.timedelta "
            f"({_dt.timedelta.max}); pass a shorter duration"
        ) from None


def _attoseconds(value: Any, what: str) -> int:
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.Timedelta):
        # A timedelta subclass whose nanoseconds the timedelta fields leave out.
        value = value.to_timedelta64()
    if isinstance(value, np.timedelta64):
        unit, count = np.datetime_data(value.dtype)
        if np.isnat(value):
            raise InvalidArgumentError(f"{what} is NaT, not a duration; pass {FORMS}")
        if unit not in _AS:
            why = "a calendar unit, with no fixed length" if unit in ("Y", "M") else "not a unit of time"
            raise InvalidArgumentError(f"{what} {_show(value)}: {unit!r} is {why}; pass {FORMS}")
        return int(value.astype(np.int64)) * count * _AS[unit]
    if isinstance(value, _dt.timedelta):
        return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * _PER_US
    if isinstance(value, str):
        return _parse(value, what)
    raise InvalidArgumentError(f"{what} must be {FORMS}; got {_show(value)} ({type(value).__name__})")


def _parse(text: str, what: str) -> int:
    s = text.strip()
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    pos, total = 0, 0
    for m in _TERM.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _AS[_TEXT_UNITS[m.group(2)]]
        pos = m.end()
    if not s or pos != len(s):
        hint = " (months and years have no fixed length)" if _CALENDAR.search(s) else ""
        raise InvalidArgumentError(f"{what} {text!r} is not a duration{hint}; pass {FORMS}")
    return sign * total


def _show(value: Any) -> str:
    if isinstance(value, np.timedelta64):
        unit, count = np.datetime_data(value.dtype)
        u = unit if count == 1 else f"{count}{unit}"
        return f"numpy.timedelta64({int(value.astype(np.int64))},{u!r})"
    return repr(value)
