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

- ``"previous"``: the feature's last non-null value within the view's TTL, as of the same instant (a
  row whose value is null does not hide an older non-null one; with no non-null value within the TTL the
  value stays missing). Declared on a feature view only: the online store keeps, per key, the last
  non-null value of each such feature beside the latest row (:func:`previous_store`), written in the
  same transaction; a transform view refuses it. Offline it is a second point-in-time join against the
  rows where the feature is not null, with the view's TTL and tie order. Adding it to a view that
  already has data: run ``materialize`` over the history to fill its online records.

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

import pyarrow as pa
import pyarrow.compute as pc

from .errors import DtypeError, InvalidArgumentError

__all__ = ["Impute", "STRATEGIES", "fit_value", "previous_store", "previous_features", "previous_rows"]

#: The strategies that read a statistics artifact, and the artifact field each reads.
FROM_STATS = {"mean": "mean", "median": "median", "mode": "mode"}
PREVIOUS = "previous"
STRATEGIES = ("constant", *FROM_STATS, PREVIOUS)
#: The suffix of a ``previous`` strategy's online records (see :func:`previous_store`).
PREVIOUS_SUFFIX = "__previous__"


def previous_store(view: str, feature: str) -> str:
    """The online-store name of the last non-null values of ``feature`` of ``view`` (the ``previous``
    strategy). Stored layout, version 1: an online view of its own with the view's join keys and one
    value column, ``feature``, written as the view's rows are (same keys, timestamps and tie rule) but
    from the rows where ``feature`` is not null only, in the same LMDB transaction as the view's latest
    rows (``OnlineStore.write(..., also=...)``), so the two never disagree after a crash. Served with the
    view's TTL; a value from after the request instant is never served.

    Example:
        >>> previous_store("user", "income")
        'user__previous__income'
    """
    return f"{view}{PREVIOUS_SUFFIX}{feature}"


def previous_features(fv: Any) -> list[str]:
    """The features of feature view ``fv`` imputed with ``previous``, in declared order.

    Example:
        >>> from skewless import Entity, FeatureView, Field, Float64
        >>> fv = FeatureView("v", [Entity("u")], [Field("x", Float64)], impute=[Impute("x", "previous")])
        >>> previous_features(fv)
        ['x']
    """
    return [i.feature for i in fv.impute if i.strategy == PREVIOUS]


def previous_rows(fv: Any, table: pa.Table) -> list[tuple[str, pa.Table]]:
    """What a write of ``table`` (the view's stored columns) adds to the ``previous`` records of ``fv``:
    per such feature, its :func:`previous_store` and the rows where it is not null (keys, time columns,
    the feature); none for a feature null in every row.

    Example:
        >>> from skewless import Entity, FeatureView, Field, Float64
        >>> fv = FeatureView("v", [Entity("u")], [Field("x", Float64)], impute=[Impute("x", "previous")])
        >>> t = pa.table({"u_id": [1, 2], "event_timestamp": [0, 0], "x": [None, 2.5]})
        >>> [(name, rows.column("x").to_pylist()) for name, rows in previous_rows(fv, t)]
        [('v__previous__x', [2.5])]
    """
    out = []
    for f in previous_features(fv):
        rows = table.select([*fv.tie_columns, f])
        if rows.column(f).null_count:
            rows = rows.filter(pc.is_valid(rows.column(f)))
        if rows.num_rows:
            out.append((previous_store(fv.name, f), rows))
    return out


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
        elif strategy == PREVIOUS:
            if value is not None or stats is not None:
                raise InvalidArgumentError(
                    f"Impute({feature!r}, 'previous') takes the feature's own last non-null value: give "
                    "no value and no stats"
                )
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
        if s["strategy"] not in STRATEGIES or (s["value"] is None) != (s["strategy"] == PREVIOUS):
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
