"""The imputation registry: how a missing value of a feature is filled, declared once, applied alike in
training sets and served vectors.

``Impute(feature, strategy, value=None, *, stats=None)`` on a view (``FeatureView(..., impute=[...])``,
``feature`` a feature name of the view) or a transform view (``TransformView(..., impute=[...])``,
``feature`` one of its inputs, ``"view:feature"`` or ``"request:column"``). Strategies:

- ``"constant"``: ``value``;
- ``"mean"``, ``"median"``, ``"mode"``: that number of the statistics artifact ``stats`` (a version of
  the feature's view's artifacts, see :mod:`skewless.statistics`), read once, when ``apply`` stores the
  definition; the value is written into the registry with the definition, so serving never computes a
  statistic. ``mean`` is the mean of non-null, non-NaN values, ``median`` the 0.5 quantile
  (interpolated), ``mode`` the most frequent value.

A value is missing whatever made it so: a null in the history, an entity with no row, a value past its
TTL. Every missing value of a feature with a strategy is filled (online with status ``IMPUTED``); a
missing value of a feature without one stays null (never a silent zero), and ``strict=True``
on a retrieval or a reader raises :class:`skewless.errors.MissingValueError` naming the feature.
A NaN is a value, not a missing one: it is not filled. Online, a stored value from after the request
instant (``NOT_YET_VALID``) is not filled either: the training set at that instant holds an older value
the online store no longer has, and a fill would differ from it silently.

The value must fit the feature's dtype exactly (a mean of 2.5 cannot fill an integer feature: ``apply``
raises :class:`skewless.errors.DtypeError`; use ``median``, ``mode`` or a ``constant`` instead).

Not available: ``"previous"`` (the last non-null value within the TTL) needs the online store to keep
a second value per key; it is refused with an error saying so.

Example:
    >>> Impute("income", "median", stats=3).to_spec()
    {'feature': 'income', 'strategy': 'median', 'stats': 3, 'value': None}
    >>> Impute("city", "constant", "unknown").value
    'unknown'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DtypeError, InvalidArgumentError

__all__ = ["Impute", "STRATEGIES", "fit_value"]

#: The strategies that read a statistics artifact, and the artifact field each reads.
FROM_STATS = {"mean": "mean", "median": "median", "mode": "mode"}
STRATEGIES = ("constant", *FROM_STATS)


@dataclass(frozen=True)
class Impute:
    """How missing values of one feature are filled (see the module docs).

    Example:
        >>> Impute("income", "mean", stats=1).strategy
        'mean'
    """

    feature: str
    strategy: str
    value: Any = None
    stats: int | None = None

    def __init__(self, feature: str, strategy: str, value: Any = None, *, stats: int | None = None) -> None:
        if not isinstance(feature, str) or not feature:
            raise InvalidArgumentError(f"Impute: feature must be a feature name, got {feature!r}")
        if strategy == "previous":
            raise InvalidArgumentError(
                "Impute: the 'previous' strategy is not available in this version (the online store keeps "
                "one value per key); use constant, mean, median or mode"
            )
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"Impute({feature!r}): strategy {strategy!r} is not one of {STRATEGIES}"
            )
        if strategy == "constant":
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise InvalidArgumentError(
                    f"Impute({feature!r}, 'constant'): give the value to fill with (not None or NaN)"
                )
            if stats is not None:
                raise InvalidArgumentError(f"Impute({feature!r}, 'constant') reads no statistics artifact")
        else:
            if value is not None:
                raise InvalidArgumentError(
                    f"Impute({feature!r}, {strategy!r}): the value comes from the statistics artifact; "
                    "pass stats=N, not a value (or use 'constant')"
                )
            if not isinstance(stats, int) or isinstance(stats, bool) or stats < 1:
                raise InvalidArgumentError(
                    f"Impute({feature!r}, {strategy!r}): name the statistics artifact it reads with stats=N "
                    "(store.compute_statistics(view).version); serving never recomputes a statistic"
                )
        object.__setattr__(self, "feature", feature)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "stats", stats)

    def to_spec(self) -> dict[str, Any]:
        return {"feature": self.feature, "strategy": self.strategy, "stats": self.stats, "value": self.value}

    @classmethod
    def from_spec(cls, s: Mapping[str, Any]) -> Impute:
        """An Impute as stored: the value of a statistics strategy already read from its artifact."""
        if s["strategy"] not in STRATEGIES or s["value"] is None:
            raise ValueError(f"stored imputation {dict(s)!r} has no value")
        imp = object.__new__(cls)
        for k in ("feature", "strategy", "value", "stats"):
            object.__setattr__(imp, k, s[k])
        return imp


def fit_value(value: Any, dtype: Any, what: str) -> Any:
    """``value`` as a value of the skewless ``dtype`` (a :class:`skewless.definitions.DType`), exactly,
    or a DtypeError saying why it does not fit."""
    name = dtype.name
    if name in ("Float32", "Float64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DtypeError(f"{what}: {value!r} is not a number, the feature is {name}")
        return float(value)
    if name in ("Int32", "Int64"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DtypeError(
                f"{what}: {value!r} is not an integer, the feature is {name}; use median, mode or a constant "
                "integer"
            )
        bits = 31 if name == "Int32" else 63
        if not -(1 << bits) <= value < 1 << bits:
            raise DtypeError(f"{what}: {value!r} does not fit {name}")
        return value
    if name == "Bool":
        if not isinstance(value, bool):
            raise DtypeError(f"{what}: {value!r} is not a bool, the feature is Bool")
        return value
    if name == "String":
        if not isinstance(value, str):
            raise DtypeError(f"{what}: {value!r} is not a str, the feature is String")
        return value
    raise DtypeError(f"{what}: features of dtype {dtype!r} cannot be imputed")
