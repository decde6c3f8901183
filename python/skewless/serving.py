"""Serving: prepared online lookups of feature vectors, and their answers.

``FeatureStore.online_reader(features)`` compiles a serving plan once, in the engine; each ``get`` /
``get_numpy`` is then one engine call: one read transaction over every view, each entity's key encoded
once per key signature (checked against the stored key types: a key that does not fit raises
:class:`~skewless.errors.DtypeError`), each view's TTL applied at the request instant ``served_at``
(``as_of``, or the clock read once), and a status per (row, view) from :class:`skewless.online.Status`.
A stored value from after ``served_at`` is never served (``NOT_YET_VALID``): the online store keeps the
latest value only, so it cannot answer for an earlier instant. An event view's aggregates are evaluated
at ``served_at`` from its online window state (statuses: ``rust/src/window/state.rs``; an entity with no
events is ``NOT_FOUND`` with the empty window's values, count 0).

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = store.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> _ = store.write("v", {"user_id": [1], "event_timestamp": pa.array([t], pa.timestamp("us", "UTC")),
    ...                       "x": [0.5]})
    >>> values, status = store.online_reader(["v:x"]).get_numpy({"user_id": [1, 2]}, as_of=t)
    >>> values[:, 0].tolist(), status[:, 0].tolist()
    ([0.5, nan], [0, 1])
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .definitions import FeatureView
from .errors import DtypeError
from .events import output_type, window_spec
from .online import OnlineStore

__all__ = ["OnlineReader", "OnlineResponse"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _numeric(t: pa.DataType) -> bool:
    """Whether values of type ``t`` can be returned as float64 (``get_numpy``, ``to_numpy``)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


class OnlineReader:
    """A prepared online lookup (from :meth:`FeatureStore.online_reader`): one compiled engine plan.

    ``get(entity_rows, as_of=None)`` returns an :class:`OnlineResponse`; ``get_numpy(entity_rows,
    as_of=None)`` is the hot path (the engine's method itself): ``(values, status)`` with values float64
    ``[n, features]`` (null as NaN) and status int8 ``[n, views]``
    (:class:`skewless.online.Status`), views in the order of ``self.views``. ``versions`` maps each view
    to the registry version of the definition the plan was compiled from.

    ``entity_rows``: a mapping of join key to values (lists, numpy arrays, Series, Arrow arrays), a
    pyarrow Table, a list of dicts as in Feast, or, when the plan has a single join key, a plain sequence
    of key values (the fastest call). A view with no online data yet answers NOT_FOUND (null) until any
    process writes it.

    Example:
        >>> import tempfile, datetime as dt
        >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
        >>> store = FeatureStore(tempfile.mkdtemp())
        >>> u = Entity("user")
        >>> _ = store.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
        >>> r = store.online_reader(["v:x"])
        >>> dict(r.versions), r.get_numpy([7])[1].tolist()
        ({'v': 1}, [[1]])
    """

    def __init__(
        self,
        online: OnlineStore,
        plan: Sequence[tuple[FeatureView, Sequence[str]]],
        names: Mapping[tuple[str, str], str],
        versions: Mapping[str, int],
    ) -> None:
        self.views = [fv.name for fv, _ in plan]
        self.feature_names = [names[(fv.name, f)] for fv, fs in plan for f in fs]
        self.versions: Mapping[str, int] = types.MappingProxyType({v: int(versions[v]) for v in self.views})
        parts = [
            (
                fv.name,
                list(fv.join_keys),
                list(fs),
                fv.ttl_us,
                int(versions[fv.name]),
                [output_type(fv, f) if fv.is_event_view else fv.get_field(f).dtype.arrow for f in fs],
                window_spec(fv, fs),
            )
            for fv, fs in plan
        ]
        self._counts = [len(fs) for _, fs in plan]
        self._plan = _core.ServingPlan(online._inner, parts)
        self.join_keys: list[str] = list(self._plan.key_names)
        # The hot path is the engine's own method: no Python frame between the caller and the plan.
        self.get_numpy: Callable[..., tuple[np.ndarray, np.ndarray]] = self._plan.get_numpy

    def get(self, entity_rows: Any, *, as_of: dt.datetime | None = None) -> OnlineResponse:
        """The entity columns then the features, as an :class:`OnlineResponse` (with ``served_at``)."""
        return OnlineResponse(
            self._plan.get(entity_rows, as_of), self.feature_names, self._counts, self.versions
        )


class OnlineResponse:
    """The answer of an online lookup: entity columns and features (Arrow types of the stored values:
    a null is null and a NaN is NaN), a status per value (``statuses[feature]``: int8, see
    :class:`skewless.online.Status`), the instant it was served at (``served_at``, a UTC datetime: the
    ``as_of`` given or the clock) and the definition version of every view (``versions``).

    Example: ``resp.to_dict()``, ``resp.to_pandas()``, ``resp.to_numpy()``, ``resp.to_arrow()``,
    ``resp.served_at``, ``resp.versions``.
    """

    __slots__ = ("_served", "_table", "feature_names", "_counts", "versions")

    def __init__(
        self, served: Any, feature_names: Sequence[str], counts: Sequence[int], versions: Mapping[str, int]
    ) -> None:
        self._served = served
        self._table: pa.Table | None = None
        self.feature_names = list(feature_names)
        self._counts = counts
        self.versions = versions

    @property
    def served_at(self) -> dt.datetime:
        """The request instant the values were served at (UTC)."""
        return _EPOCH + dt.timedelta(microseconds=self._served.served_at_us)

    @property
    def status(self) -> np.ndarray:
        """Statuses int8 ``[n, views]``, views in the reader's order."""
        return np.asarray(self._served.status)

    @property
    def statuses(self) -> dict[str, np.ndarray]:
        """The status of each feature's values (its view's status column)."""
        st = self.status
        out: dict[str, np.ndarray] = {}
        names = iter(self.feature_names)
        for i, n in enumerate(self._counts):
            for _ in range(n):
                out[next(names)] = st[:, i]
        return out

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            self._table = self._served.table(self.feature_names)
        return self._table

    def to_dict(self) -> dict[str, list[Any]]:
        return self.to_arrow().to_pydict()

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_numpy(self) -> np.ndarray:
        """The features as float64 ``[n, features]`` (null as NaN); numeric features only."""
        t = self.to_arrow()
        cols = []
        for f in self.feature_names:
            c = t.column(f)
            if not _numeric(c.type):
                raise DtypeError(f"feature {f!r} is {c.type}; to_numpy needs numeric features, use to_arrow")
            cols.append(pc.fill_null(pc.cast(c, pa.float64()), np.nan).to_numpy())
        return np.column_stack(cols) if cols else np.zeros((len(self), 0))

    def __len__(self) -> int:
        return len(self._served)

    def __repr__(self) -> str:
        return f"OnlineResponse({len(self)} rows, features={self.feature_names})"
