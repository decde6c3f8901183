"""Serving: prepared online lookups of feature vectors, and their answers.

``FeatureStore.online_reader(features)`` resolves the request once; each ``get`` / ``get_numpy`` then reads
the latest value of every feature for each entity row, with each view's TTL applied at the request
instant.

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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .definitions import FeatureView
from .errors import DtypeError, InvalidArgumentError, MissingColumnError
from .online import OnlineStore, Status

__all__ = ["OnlineReader", "OnlineResponse"]

#: The engine's status column in online lookups: no feature or key can take this name (definitions
#: refuse double underscores), so a feature may be called ``status``.
_STATUS = "__status__"


def _numeric(t: pa.DataType) -> bool:
    """Whether values of type ``t`` can be returned as float64 (``get_numpy``, ``to_numpy``)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def rows_to_columns(entity_rows: Any, keys: Sequence[str]) -> dict[str, list[Any]]:
    if isinstance(entity_rows, Mapping):
        cols = {k: list(v) for k, v in entity_rows.items()}
    elif isinstance(entity_rows, pa.Table):
        cols = {k: entity_rows.column(k).to_pylist() for k in entity_rows.column_names}
    else:
        rows = list(entity_rows)
        cols = {k: [r.get(k) if isinstance(r, Mapping) else None for r in rows] for k in keys}
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise InvalidArgumentError(
                "entity_rows must be a mapping of join key to values or a list of dicts"
            )
    for k in keys:
        if k not in cols:
            raise MissingColumnError(f"entity_rows has no join key {k!r}; it needs {list(keys)}")
    lens = {len(cols[k]) for k in keys}
    if len(lens) > 1:
        raise InvalidArgumentError(f"entity_rows: join key columns have different lengths {sorted(lens)}")
    return cols


class OnlineReader:
    """A prepared online lookup (from :meth:`FeatureStore.online_reader`): one engine reader per view.

    ``get`` returns an :class:`OnlineResponse`; ``get_numpy`` is the hot path: ``(values, status)`` with
    values float64 ``[n, features]`` (null as NaN) and status int8 ``[n, views]`` (0 present, 1 not
    found, 2 expired), views in the order of ``self.views``.
    """

    def __init__(
        self,
        online: OnlineStore,
        plan: Sequence[tuple[FeatureView, Sequence[str]]],
        names: Mapping[tuple[str, str], str],
    ) -> None:
        self._online = online
        self.views = [fv.name for fv, _ in plan]
        self.feature_names = [names[(fv.name, f)] for fv, fs in plan for f in fs]
        self.join_keys: list[str] = []
        for fv, _ in plan:
            self.join_keys.extend(k for k in fv.join_keys if k not in self.join_keys)
        # A view may have no online data yet (a service started before the first write or materialize):
        # its part has no engine reader and answers NOT_FOUND until one appears.
        self._parts: list[tuple[FeatureView, list[str], Any, dt.timedelta | None]] = [
            (fv, list(fs), None, fv.ttl) for fv, fs in plan
        ]
        self._resolve()

    def _resolve(self) -> None:
        """Open an engine reader for each view that has gained online data (from this process or
        another). Called per lookup only while some view has none, so it costs nothing afterwards."""
        for i, (fv, fs, r, ttl) in enumerate(self._parts):
            if r is None and self._online.schema(fv.name) is not None:
                self._parts[i] = (fv, fs, self._online.reader(fv.name, columns=fs), ttl)
        self._pending = any(p[2] is None for p in self._parts)
        ready = len(self._parts) == 1 and not self._pending
        self._single = self._parts[0] if ready else None
        self._single_key = (
            self._single[0].join_keys[0] if self._single and len(self._single[0].join_keys) == 1 else None
        )

    def _keys_arg(self, fv: FeatureView, cols: Mapping[str, Sequence[Any]]) -> Any:
        if len(fv.join_keys) == 1:
            return cols[fv.join_keys[0]]
        return {k: cols[k] for k in fv.join_keys}

    def get_numpy(
        self, entity_rows: Any, *, as_of: dt.datetime | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature values as float64 ``[n, features]`` and statuses int8 ``[n, views]``.

        ``entity_rows``: a mapping of join key to values; when every view has the same single join key,
        a plain sequence of key values is accepted too (the fastest call).
        """
        if self._pending:
            self._resolve()
        s = self._single
        if s is not None:
            if self._single_key is not None:
                keys = entity_rows.get(self._single_key) if isinstance(entity_rows, Mapping) else entity_rows
                if keys is None:
                    raise MissingColumnError(f"entity_rows has no join key {self._single_key!r}")
            else:
                keys = self._keys_arg(s[0], rows_to_columns(entity_rows, self.join_keys))
            vals, st = s[2].get_numpy(keys, as_of=as_of, ttl=s[3])
            return vals, st.reshape(-1, 1)
        if isinstance(entity_rows, Mapping) or len(self.join_keys) > 1:
            cols = rows_to_columns(entity_rows, self.join_keys)
        else:
            cols = {self.join_keys[0]: list(entity_rows)}
        n = len(cols[self.join_keys[0]])
        vs, sts = [], []
        for fv, fs, r, ttl in self._parts:
            if r is None:
                for f in fs:
                    t = fv.get_field(f).dtype.arrow
                    if not _numeric(t):
                        raise DtypeError(
                            f"get_numpy returns float64, but feature {f!r} of view {fv.name!r} is {t}; "
                            "use get(), or a reader of numeric features only"
                        )
                vs.append(np.full((n, len(fs)), np.nan))
                sts.append(np.full(n, Status.NOT_FOUND, np.int8))
                continue
            v, st = r.get_numpy(self._keys_arg(fv, cols), as_of=as_of, ttl=ttl)
            vs.append(v)
            sts.append(st)
        return np.hstack(vs), np.column_stack(sts)

    def get(self, entity_rows: Any, *, as_of: dt.datetime | None = None) -> OnlineResponse:
        """The entity columns then the features, as an :class:`OnlineResponse`."""
        if self._pending:
            self._resolve()
        cols = rows_to_columns(entity_rows, self.join_keys)
        out: dict[str, Any] = {k: cols[k] for k in self.join_keys}
        statuses: dict[str, np.ndarray] = {}
        it = iter(self.feature_names)
        n = len(cols[self.join_keys[0]])
        for fv, fs, r, ttl in self._parts:
            if r is None:
                missing = np.full(n, Status.NOT_FOUND, np.int8)
                for f in fs:
                    name = next(it)
                    out[name] = pa.nulls(n, fv.get_field(f).dtype.arrow)
                    statuses[name] = missing
                continue
            t = r.get(self._keys_arg(fv, cols), as_of=as_of, ttl=ttl, status_column=_STATUS)
            # The engine already reads missing and expired rows as null; the status says which.
            st = t.column(_STATUS).to_numpy()
            for f in fs:
                name = next(it)
                out[name] = t.column(f)
                statuses[name] = st
        return OnlineResponse(pa.table(out), self.feature_names, statuses)


class OnlineResponse:
    """The answer of an online lookup: entity columns and features, plus a status per value
    (``statuses[feature]``: int8 array, 0 present, 1 not found, 2 expired).

    Example: ``resp.to_dict()``, ``resp.to_pandas()``, ``resp.to_numpy()``, ``resp.to_arrow()``.
    """

    def __init__(
        self, table: pa.Table, feature_names: Sequence[str], statuses: Mapping[str, np.ndarray]
    ) -> None:
        self._table = table
        self.feature_names = list(feature_names)
        self.statuses = dict(statuses)

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_dict(self) -> dict[str, list[Any]]:
        return self._table.to_pydict()

    def to_pandas(self) -> Any:
        return self._table.to_pandas()

    def to_numpy(self) -> np.ndarray:
        """The features as float64 ``[n, features]`` (null as NaN); numeric features only."""
        cols = []
        for f in self.feature_names:
            c = self._table.column(f)
            if not _numeric(c.type):
                raise DtypeError(f"feature {f!r} is {c.type}; to_numpy needs numeric features, use to_arrow")
            cols.append(pc.fill_null(pc.cast(c, pa.float64()), np.nan).to_numpy())
        n = self._table.num_rows
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"OnlineResponse({self._table.num_rows} rows, features={self.feature_names})"
