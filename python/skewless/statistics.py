"""Statistics artifacts: numbered, immutable summaries of a view's history that transforms and
imputation read instead of recomputing (a z-score or a median fill uses the numbers of one artifact,
in training and in serving alike).

``store.compute_statistics(view)`` summarizes every history row whose timestamp is in ``[start, end)``
(every version of every value, not only the latest) and stores the result in the registry under the
next number; ``store.get_statistics(view, version)`` reads one back. Computing again makes a new
number; an artifact is never changed.

Per feature (each value computed by pyarrow compute, no Python loop over rows):

- every dtype: ``count`` (non-null values), ``null_count``;
- integers and floats: ``mean``, ``stddev_samp`` (n - 1), ``stddev_pop`` (n), ``min``, ``max``,
  ``median`` and ``quantiles`` (exact, linear interpolation between the two nearest values, as numpy's
  default; keys "0.01" ... "0.99"). NaNs are counted in ``nan_count`` and left out of the others, like
  nulls; an empty feature has None for them;
- integers, booleans, strings, binary: ``mode`` (the most frequent value; the smallest among equally
  frequent ones) and ``distinct_count``;
- strings and timestamps: ``min`` and ``max`` (timestamps as UTC microseconds).

Example:
    >>> import tempfile
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> s = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = s.apply([u, FeatureView("v", [u], [Field("income", Float64)])])
    >>> T = pa.timestamp("us", tz="UTC")
    >>> _ = s.write("v", {"user_id": [1, 2, 3], "event_timestamp": pa.array([1, 2, 3], T),
    ...                   "income": [10.0, None, 30.0]})
    >>> stats = s.compute_statistics("v")
    >>> stats.version, stats["income"]["median"], stats["income"]["null_count"]
    (1, 20.0, 1)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .definitions import FeatureView

__all__ = ["Statistics", "QUANTILES", "summarize"]

#: The quantiles every numeric feature records.
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _py(s: pa.Scalar) -> Any:
    v = s.as_py()
    if isinstance(v, dt.datetime):
        return (v - _EPOCH) // dt.timedelta(microseconds=1)
    return v


def _mode(col: pa.ChunkedArray) -> Any:
    """The most frequent non-null value, the smallest among equally frequent ones (None if none)."""
    vc = pc.value_counts(col)
    values, counts = vc.field("values"), vc.field("counts")
    keep = pc.is_valid(values)
    values, counts = pc.filter(values, keep), pc.filter(counts, keep)
    if len(values) == 0:
        return None
    top = pc.filter(values, pc.equal(counts, pc.max(counts)))
    return _py(pc.min_max(top)["min"])


def summarize_column(col: pa.ChunkedArray) -> dict[str, Any]:
    """The statistics of one column (see the module docs for which apply to which type)."""
    t = col.type
    out: dict[str, Any] = {"count": len(col) - col.null_count, "null_count": col.null_count}
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = col
        if pa.types.is_floating(t):
            nan = pc.is_nan(col)
            out["nan_count"] = pc.sum(nan).as_py() or 0
            values = pc.filter(col, pc.invert(pc.fill_null(nan, True)))
        n = len(values) - values.null_count
        empty = n == 0
        out["mean"] = None if empty else pc.mean(values).as_py()
        out["stddev_samp"] = None if n < 2 else pc.stddev(values, ddof=1).as_py()
        out["stddev_pop"] = None if empty else pc.stddev(values, ddof=0).as_py()
        mm = pc.min_max(values)
        out["min"], out["max"] = _py(mm["min"]), _py(mm["max"])
        qs = [None] * len(QUANTILES) if empty else pc.quantile(values, q=list(QUANTILES)).to_pylist()
        out["quantiles"] = {str(q): v for q, v in zip(QUANTILES, qs, strict=True)}
        out["median"] = out["quantiles"]["0.5"]
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_binary(t):
        out["mode"] = _mode(col)
        out["distinct_count"] = pc.count_distinct(col, mode="only_valid").as_py()
    if pa.types.is_string(t) or pa.types.is_timestamp(t):
        mm = pc.min_max(col)
        out["min"], out["max"] = _py(mm["min"]), _py(mm["max"])
    return out


def summarize(table: pa.Table, features: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{feature: statistics}`` over every row of ``table``."""
    return {f: summarize_column(table.column(f)) for f in features}


class Statistics:
    """One statistics artifact (from :meth:`FeatureStore.compute_statistics` or
    :meth:`FeatureStore.get_statistics`): ``view``, ``version``, the time range it covers
    (``start``/``end``, None for open), the ``rows`` it read, the view's definition version, and per
    feature the numbers (``stats["income"]["median"]``, ``stats.to_dict()``).

    Example:
        >>> st = Statistics("v", {"version": 2, "view_version": 1, "start_us": None, "end_us": 10,
        ...                       "rows": 3, "created_at_us": 0, "features": {"x": {"count": 3}}})
        >>> st.version, st.end, st.to_dict()
        (2, datetime.datetime(1970, 1, 1, 0, 0, 0, 10, tzinfo=datetime.timezone.utc), {'x': {'count': 3}})
    """

    def __init__(self, view: str, record: Mapping[str, Any]) -> None:
        self.view = view
        self.version: int = int(record["version"])
        self.view_version: int = int(record["view_version"])
        self.rows: int = int(record["rows"])
        self._record = record

    @staticmethod
    def _instant(us: int | None) -> dt.datetime | None:
        return None if us is None else _EPOCH + dt.timedelta(microseconds=us)

    @property
    def start(self) -> dt.datetime | None:
        return self._instant(self._record["start_us"])

    @property
    def end(self) -> dt.datetime | None:
        return self._instant(self._record["end_us"])

    @property
    def created_at(self) -> dt.datetime | None:
        return self._instant(self._record["created_at_us"])

    @property
    def features(self) -> list[str]:
        return list(self._record["features"])

    def __getitem__(self, feature: str) -> dict[str, Any]:
        from .errors import UnknownFeatureError

        try:
            return dict(self._record["features"][feature])
        except KeyError:
            raise UnknownFeatureError(
                f"statistics {self.view!r} v{self.version} have no feature {feature!r}; they cover "
                f"{self.features}"
            ) from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{feature: {"count", "null_count", "mean", "stddev_samp", "stddev_pop", "min", "max",
        "median", ...}}`` (a copy)."""
        return {f: dict(v) for f, v in self._record["features"].items()}

    def __repr__(self) -> str:
        return (
            f"Statistics({self.view!r}, version={self.version}, rows={self.rows}, features={self.features})"
        )


def check_features(fv: FeatureView, features: Sequence[str] | None) -> list[str]:
    """The features to summarize: all of the view's when None (each must exist)."""
    if features is None:
        return fv.feature_names
    if isinstance(features, str):
        features = [features]
    return [fv.get_field(f).name for f in features]
