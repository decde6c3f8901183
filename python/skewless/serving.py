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
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core, transforms
from ._arrow import as_column, as_table
from .definitions import FeatureView
from .errors import DtypeError
from .events import output_type, window_spec
from .imputation import previous_store
from .lineage import Described
from .online import OnlineStore, Status
from .servelog import ServeLog, Sink, logged_get_numpy

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
    to the registry version of the definition the plan was compiled from. With ``log=True``
    (:mod:`skewless.servelog`), ``get_numpy`` is the engine's method wrapped by one closure that queues
    its inputs and outputs, and ``get`` queues its answer; ``close()`` (or leaving a ``with`` block)
    flushes the log.

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
        log: ServeLog | None = None,
        key_types: Mapping[str, pa.DataType | None] | None = None,
        compiled: transforms.Compiled | None = None,
        strict: bool = False,
        described: Described | None = None,
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
        # The 'previous' strategy's last non-null values: one part each, after the plan's (its inputs
        # follow the plan's features in the program), with the view's TTL and key.
        parts += [
            (
                previous_store(fv.name, f),
                list(fv.join_keys),
                [f],
                fv.ttl_us,
                int(versions[fv.name]),
                [fv.get_field(f).dtype.arrow],
                None,
            )
            for fv, f in (compiled.previous if compiled is not None else [])
        ]
        self._counts = [len(fs) for _, fs in plan]
        self._compiled = compiled
        self._strict = strict
        post = None
        if compiled is not None:
            post = (compiled.program, compiled.n_features, compiled.select, compiled.source, compiled.names)
            self.feature_names = [n for n, _, _ in compiled.final]
        self._plan = _core.ServingPlan(online._inner, parts, post)
        self.join_keys: list[str] = list(self._plan.key_names)
        # The hot path is the engine's own method: no Python frame between the caller and the plan. Only
        # request-time inputs, UDFs and strict checks need Python around it.
        self.get_numpy: Callable[..., tuple[np.ndarray, np.ndarray]] = self._plan.get_numpy
        # The served-feature log (skewless.servelog): None, or the store's log and what this plan writes.
        self.log = log
        self._sink: Sink | None = None
        if log is not None:
            kt = key_types or {}
            if compiled is None:
                self._sink = Sink(
                    "online_reader",
                    self.join_keys,
                    [kt.get(k) for k in self.join_keys],
                    [f"{fv.name}:{f}" for fv, fs in plan for f in fs],
                    [
                        output_type(fv, f) if fv.is_event_view else fv.get_field(f).dtype.arrow
                        for fv, fs in plan
                        for f in fs
                    ],
                    self._counts,
                    self.versions,
                    self.feature_names,
                    [fv.is_event_view for fv, _ in plan],
                )
            else:
                # A transform stage's answer: one status per output; its values stand whatever the
                # status (filled, or computed from request values); lineage records what made them.
                assert described is not None
                w = len(described.refs)
                self._sink = Sink(
                    "online_reader",
                    self.join_keys,
                    [kt.get(k) for k in self.join_keys],
                    described.refs,
                    described.types,
                    [1] * w,
                    described.versions,
                    self.feature_names,
                    [True] * w,
                    compiled.request_columns,
                    described.served_by,
                )
            self.get_numpy = logged_get_numpy(self._plan, log, self._sink)
        self._lookup = self.get_numpy
        self._plain = compiled is None and not strict and log is None
        if strict or (compiled is not None and (compiled.request_columns or compiled.udfs)):
            self.get_numpy = self._get_numpy

    def _request(self, entity_rows: Any, raw: bool = False) -> list[Any] | None:
        """The request-time columns the transforms read, as pyarrow arrays; with ``raw``, a mapping's own
        lists as given (the engine reads lists of numbers itself, the hot path of a service)."""
        c = self._compiled
        if c is None or not c.request_columns:
            return None
        if type(entity_rows) is dict:
            # Only the request columns are converted; the keys are read by the engine, which also checks
            # that every column has one value per row.
            transforms.require_request_columns(c, entity_rows)
            cols = [entity_rows[name] for name in c.request_columns]
            if raw:
                return cols
            names = c.request_columns
            what = "entity_rows column"
            return [as_column(v, f"{what} {n!r}").combine_chunks() for n, v in zip(names, cols, strict=True)]
        if isinstance(entity_rows, Sequence) and entity_rows and isinstance(entity_rows[0], Mapping):
            rows = pa.Table.from_pylist(list(entity_rows))
        else:
            rows = as_table(entity_rows, "entity_rows")
        return [col.combine_chunks() for col in transforms.request_table(c, rows)]

    def _get_numpy(self, entity_rows: Any, as_of: dt.datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
        c = self._compiled
        if c is not None and c.udfs:
            resp = self.get(entity_rows, as_of=as_of)
            st = resp.statuses
            status = np.column_stack([st[n] for n in resp.feature_names]) if resp.feature_names else None
            return resp.to_numpy(), status if status is not None else np.zeros((len(resp), 0), np.int8)
        values, status = self._lookup(entity_rows, as_of, self._request(entity_rows, raw=True))
        if self._strict and np.isnan(values).any():
            # NaN is also a stored NaN, a value: the Arrow answer tells nulls apart (and is not logged
            # again: the lookup above was).
            self._get(entity_rows, as_of, False).to_arrow()
        return values, status

    def get(self, entity_rows: Any, *, as_of: dt.datetime | None = None) -> OnlineResponse:
        """The entity columns then the features, as an :class:`OnlineResponse` (with ``served_at``)."""
        if self._plain:
            # No transforms, strict checks or log: one engine call and the response (a Python frame
            # less was a visible part of a one-entity get).
            served = self._plan.get(entity_rows, as_of, None)
            return OnlineResponse(served, self.feature_names, self._counts, self.versions)
        return self._get(entity_rows, as_of, True)

    def _get(self, entity_rows: Any, as_of: dt.datetime | None, log: bool) -> OnlineResponse:
        request = self._request(entity_rows)
        served = self._plan.get(entity_rows, as_of, request)
        counts = self._counts if self._compiled is None else [1] * len(self._compiled.select)
        resp = OnlineResponse(served, self.feature_names, counts, self.versions, self._compiled)
        if self._strict:
            resp.to_arrow()
            transforms.check_strict((n, resp.to_arrow().column(n)) for n in self.feature_names)
        if log and self.log is not None:
            if self._compiled is None:
                self.log.put(("served", self._sink, next(self.log.calls), served, time.time_ns() // 1000))
            else:
                # The flusher makes the response's columns (UDFs included) and logs the request inputs.
                req = dict(zip(self._compiled.request_columns, request or [], strict=True))
                self.log.put(
                    ("served", self._sink, next(self.log.calls), served, time.time_ns() // 1000, resp, req)
                )
        return resp

    def close(self) -> None:
        """Flush the served-feature log (with ``log=True``); the reader stays usable."""
        if self.log is not None:
            self.log.flush()

    def __enter__(self) -> OnlineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OnlineResponse:
    """The answer of an online lookup: entity columns and features (Arrow types of the stored values:
    a null is null and a NaN is NaN), a status per value (``statuses[feature]``: int8, see
    :class:`skewless.online.Status`), the instant it was served at (``served_at``, a UTC datetime: the
    ``as_of`` given or the clock) and the definition version of every view (``versions``).

    Example: ``resp.to_dict()``, ``resp.to_pandas()``, ``resp.to_numpy()``, ``resp.to_arrow()``,
    ``resp.served_at``, ``resp.versions``.
    """

    __slots__ = ("_served", "_table", "feature_names", "_counts", "versions", "_compiled")

    def __init__(
        self,
        served: Any,
        feature_names: Sequence[str],
        counts: Sequence[int],
        versions: Mapping[str, int],
        compiled: transforms.Compiled | None = None,
    ) -> None:
        self._served = served
        self._table: pa.Table | None = None
        self.feature_names = list(feature_names)
        self._counts = counts
        self.versions = versions
        self._compiled = compiled

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
        """The status of each feature's values (its view's status column; with transforms or imputation,
        the feature's own, ``IMPUTED`` where filled)."""
        st = self.status
        c = self._compiled
        if c is not None:
            per: dict[str, np.ndarray] = {}
            for name, j, _ in c.final:
                if j >= 0:
                    per[name] = st[:, j]
                else:
                    # A UDF output: IMPUTED where an input was, else the first input status that is not
                    # PRESENT (a missing input), else PRESENT.
                    idx = c.udfs[-1 - j][1]
                    ins = st[:, idx]
                    worst = np.where(ins != Status.PRESENT, ins, 127).min(axis=1)
                    worst = np.where(worst == 127, Status.PRESENT, worst)
                    per[name] = np.where((ins == Status.IMPUTED).any(axis=1), Status.IMPUTED, worst).astype(
                        np.int8
                    )
            return per
        out: dict[str, np.ndarray] = {}
        names = iter(self.feature_names)
        for i, n in enumerate(self._counts):
            for _ in range(n):
                out[next(names)] = st[:, i]
        return out

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            c = self._compiled
            if c is None:
                self._table = self._served.table(self.feature_names)
            else:
                stage = self._served.table(c.names)
                n_keys = stage.num_columns - len(c.names)
                cols = transforms.finish(c, stage.select(range(n_keys, stage.num_columns)), False)
                self._table = pa.Table.from_arrays(
                    stage.columns[:n_keys] + [col for _, col in cols],
                    names=stage.column_names[:n_keys] + [n for n, _ in cols],
                )
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
