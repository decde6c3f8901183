"""The feature store: one folder holding definitions, the Parquet history and the LMDB online store.

``write`` feeds both halves from one call; ``get_historical_features`` builds training sets with the
as-of join engine; ``materialize`` brings the online store in line with the history; and
``get_online_features`` / ``online_reader`` serve the latest values, with each view's TTL applied at read
time, so the value served at instant t is the value a training set reconstructs for t.

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> user = Entity("user", join_keys=["user_id"], dtype=Int64)
    >>> fv = FeatureView("stats", entities=[user], schema=[Field("spend", Float64)], ttl=dt.timedelta(days=7))
    >>> _ = store.apply([user, fv])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> T = pa.timestamp("us", tz="UTC")
    >>> _ = store.write("stats", {"user_id": [1], "event_timestamp": pa.array([t], T),
    ...                           "spend": [9.5]})
    >>> store.get_online_features(["stats:spend"], {"user_id": [1, 2]}, as_of=t).to_dict()["spend"]
    [9.5, None]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import pyarrow as pa

from . import history, lineage, retrieval, transforms
from ._arrow import as_table, index_hint, name_list
from ._fs import TEMP_PREFIX
from .definitions import Entity, FeatureService, FeatureView
from .errors import InvalidArgumentError, MissingColumnError, UnknownFeatureError
from .events import push_with_history
from .explain import Explanation, explain
from .imputation import previous_rows
from .materialize import materialize_view
from .normalize import flag, instant_us, normalize_rows
from .offline import OfflineStore
from .online import OnlineStore
from .refs import output_names, resolve
from .registry import Registry, RegistryError
from .servelog import ServeLog, Sink, log_table, prune, read_log
from .serving import OnlineReader, OnlineResponse
from .skew import SkewReport, check_skew
from .statistics import Statistics, check_features, summarize

__all__ = ["FeatureStore", "WriteSummary"]


class WriteSummary(NamedTuple):
    """What ``FeatureStore.write`` did: rows appended to the history, rows that replaced an online value,
    rows the online store skipped as older than what it holds.

    Example:
        >>> WriteSummary(3, 2, 1).online_skipped
        1
    """

    rows: int
    online_written: int
    online_skipped: int


def _stamp(path: str) -> tuple[int, int]:
    # Every save renames a new file into place, so the inode changes even within one mtime tick.
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


class FeatureStore:
    """A feature store in the folder ``path`` (created with an empty registry when it does not exist).

    Example:
        >>> import tempfile
        >>> from skewless import FeatureStore
        >>> FeatureStore(tempfile.mkdtemp()).list_feature_views()
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = os.fspath(path)
        reg = os.path.join(self.path, "registry.json")
        if not os.path.exists(reg):
            if not create:
                raise RegistryError(f"no feature store at {self.path}: run `skewless init` there first")
            os.makedirs(self.path, exist_ok=True)
            with self._lock():
                if not os.path.exists(reg):
                    Registry.create(reg)
        self.registry = Registry.load(reg)
        self._reg_stamp = _stamp(reg)
        self.offline = OfflineStore(os.path.join(self.path, "offline"))
        self._clean_temp_files()
        self._online_store: Any = None
        self._readers: dict[Any, OnlineReader] = {}
        self._serve_log: ServeLog | None = None

    # ---- registry ---------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        # Another process (the CLI, a materializer) may have applied definitions since we loaded.
        reg = self.registry.path
        m = _stamp(reg)
        if m != self._reg_stamp:
            self.registry = Registry.load(reg)
            self._reg_stamp = m
            self._readers.clear()

    def _has_data(self, name: str) -> bool:
        if name.startswith("online:"):
            view = name[len("online:") :]
            return os.path.isdir(self._online_path()) and view in self._online().views()
        return self.offline.has_data(name) or self._has_data("online:" + name)

    def apply(
        self, objects: Iterable[Entity | FeatureView | FeatureService | transforms.TransformView]
    ) -> dict[str, list[str]]:
        """Validate and persist definitions in ``registry.json``; each changed one gets version + 1.

        A change that would make stored data unreadable (a feature's dtype, the keys, the feature list of
        a view with online data...) raises :class:`~skewless.errors.IncompatibleChangeError` and changes
        nothing. Returns the names created, updated and unchanged.

        Example:
            >>> import tempfile
            >>> from skewless import Entity, FeatureStore
            >>> FeatureStore(tempfile.mkdtemp()).apply([Entity("user")])["created"]
            ['user']
        """
        objs = list(objects)
        with self._lock():
            self._refresh()
            out = self.registry.apply(objs, self._has_data)
            self._reg_stamp = _stamp(self.registry.path)
            self._readers.clear()
        return out

    def list_entities(self) -> list[Entity]:
        self._refresh()
        return [self.registry.entity(n) for n in self.registry.names("entities")]

    def list_feature_views(self) -> list[FeatureView]:
        """Every registered feature view, by name."""
        self._refresh()
        return [self.registry.feature_view(n) for n in self.registry.names("feature_views")]

    def list_feature_services(self) -> list[FeatureService]:
        self._refresh()
        return [self.registry.feature_service(n) for n in self.registry.names("feature_services")]

    def get_entity(self, name: str) -> Entity:
        self._refresh()
        return self.registry.entity(name)

    def get_feature_view(self, name: str) -> FeatureView:
        """The registered view ``name`` (UnknownFeatureError if none)."""
        self._refresh()
        return self.registry.feature_view(name)

    def get_feature_service(self, name: str) -> FeatureService:
        self._refresh()
        return self.registry.feature_service(name)

    def version(self, name: str, kind: str = "feature_views") -> int:
        """The registry version of a definition (1 when first applied)."""
        self._refresh()
        try:
            return self.registry.version(kind, name)
        except KeyError:
            raise UnknownFeatureError(f"no {kind} entry {name!r}") from None

    # ---- statistics artifacts -----------------------------------------------------------------------------

    def compute_statistics(
        self,
        view: str,
        features: Sequence[str] | None = None,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> Statistics:
        """Summarize the view's history rows with ``start <= timestamp < end`` (None: open) and store the
        result as the view's next numbered, immutable statistics artifact (see :mod:`skewless.statistics`).

        Every history row in the range counts, every version of every value. Returns the artifact.

        Example: ``stats = store.compute_statistics("user_stats", ["income"]); stats.version``.
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        feats = check_features(fv, features)
        lo = None if start is None else instant_us(start, "start")
        hi = None if end is None else instant_us(end, "end")
        if lo is not None and hi is not None and lo >= hi:
            raise InvalidArgumentError(f"compute_statistics: start {start} is not before end {end}")
        with self._lock():
            self._refresh()
            cols = [fv.timestamp_field, *feats]
            if self.offline.files(fv.name, fv.source):
                batches = list(history.scan(self.offline, self.registry, fv, cols, lo, hi, False))
                table = history.to_stored(
                    self.registry, fv, pa.Table.from_batches(batches) if batches else None, cols
                )
            else:
                table = history.empty(self.registry, fv, cols)
            record = {
                "view_version": self.registry.version("feature_views", view),
                "created_at_us": instant_us(dt.datetime.now(dt.timezone.utc), "now"),
                "start_us": lo,
                "end_us": hi,
                "rows": table.num_rows,
                "features": summarize(table, feats),
            }
            version = self.registry.add_statistics(view, record)
            self._reg_stamp = _stamp(self.registry.path)
        return Statistics(view, self.registry.statistics(view, version))

    def get_statistics(self, view: str, version: int | None = None) -> Statistics:
        """A stored statistics artifact of ``view``: number ``version``, or the newest.

        Example: ``store.get_statistics("user_stats", 1)["income"]["median"]``.
        """
        self._refresh()
        self.registry.feature_view(view)
        return Statistics(view, self.registry.statistics(view, version))

    def list_statistics(self, view: str) -> list[int]:
        """The numbers of the view's statistics artifacts, oldest first."""
        self._refresh()
        return self.registry.statistics_versions(view)

    # ---- plumbing -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # One writer at a time per store folder, across processes (LMDB serializes its own writes; this
        # keeps history file numbering and the registry consistent).
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _clean_temp_files(self) -> None:
        """Remove the temp files (``.tmp-*``) of writes and compactions that were killed.

        Every temp file is made under the writer lock, so while this process holds it no live writer has
        one: cleaning under the lock can only remove leftovers. When another process holds the lock (a
        long write or materialize), opening does not wait for it; a later open cleans.
        """
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            folders = [self.path]
            if os.path.isdir(self.offline.root):
                folders += [e.path for e in os.scandir(self.offline.root) if e.is_dir(follow_symlinks=False)]
            for d in folders:
                for e in os.scandir(d):
                    if e.name.startswith(TEMP_PREFIX) and e.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(e.path)
        finally:
            os.close(fd)  # closing releases the lock

    def _online_path(self) -> str:
        return os.path.join(self.path, "online")

    def _online(self) -> OnlineStore:
        if self._online_store is None:
            self._online_store = OnlineStore(self._online_path())
        return self._online_store

    # ---- writing ------------------------------------------------------------------------------------------

    def write(self, view: str, data: Any) -> WriteSummary:
        """Append ``data`` to the view's history and upsert the online store, as one operation.

        ``data`` (pyarrow, polars DataFrame or LazyFrame, pandas DataFrame, a mapping of columns: the
        forms and conversions of ``skewless._arrow``; a pandas index is dropped) holds the join keys, the
        timestamp field(s) and every feature of the view, nothing else. Dictionary / categorical and view
        strings are stored as strings, dates as 00:00 UTC, booleans as 0/1 for an integer key.
        Everything is validated first; a bad input raises a typed error and writes nothing. If the online
        write fails, the history file just added is removed, so the store is as before. Should the
        process die between the two, ``materialize`` brings the online store back in line.

        Example:
            >>> import tempfile, datetime as dt
            >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
            >>> s = FeatureStore(tempfile.mkdtemp())
            >>> u = Entity("user")
            >>> _ = s.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
            >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
            >>> import pandas as pd
            >>> s.write("v", pd.DataFrame({"user_id": [1], "event_timestamp": [t], "x": [0.5]}))
            WriteSummary(rows=1, online_written=1, online_skipped=0)
        """
        what = f"data for {view!r}"
        raw = as_table(data, what)
        # Checked once without the lock, so bad input fails fast without waiting for other writers...
        self._refresh()
        for c in self.registry.feature_view(view).stored_columns:
            if c not in raw.column_names and index_hint(data, c):
                raise MissingColumnError(f"{what} lacks column {c!r} of view {view!r}. {index_hint(data, c)}")
        table, fixes = self._validate(view, raw, what)
        if table.num_rows == 0:
            return WriteSummary(0, 0, 0)
        with self._lock():
            # ...and again under it when another process changed the registry meanwhile (an apply that
            # changed a dtype, a first write that fixed the key types): what lands is checked against the
            # registry as it is while the lock is held.
            seen = self._reg_stamp
            self._refresh()
            if self._reg_stamp != seen:
                table, fixes = self._validate(view, raw, what)
            fv = self.registry.feature_view(view)
            if fixes:
                # The key types go to the registry before any row lands: a crash after this leaves a key
                # type and no data, never data whose key type a later write could contradict.
                self.registry.fix_key_dtypes(fixes)
                self._reg_stamp = _stamp(self.registry.path)
                self._readers.clear()
            try:
                written, skipped = table.num_rows, 0
                if fv.online and fv.is_event_view:
                    # The history file and the online merge run at once; the state commits once the
                    # file is durable (skewless.events.push_with_history).
                    push_with_history(self.offline, self._online(), fv, table)
                else:
                    path = self.offline.append(view, table)
                if fv.online and not fv.is_event_view:
                    try:
                        res = self._online().write(
                            view,
                            table,
                            keys=fv.join_keys,
                            timestamp=fv.timestamp_field,
                            created_timestamp=fv.created_timestamp_field,
                            also=previous_rows(fv, table),
                        )
                    except BaseException:
                        self.offline.remove(path)
                        raise
                    written, skipped = int(res.rows_written), int(res.rows_skipped)
            except BaseException:
                if fixes:
                    # Nothing was written: the key types this write fixed are not fixed either.
                    with contextlib.suppress(Exception):
                        self.registry.forget_key_dtypes(fixes)
                        self._reg_stamp = _stamp(self.registry.path)
                raise
        return WriteSummary(table.num_rows, written, skipped)

    def push(self, view: str, events: Any) -> WriteSummary:
        """Append raw ``events`` to an event view's history and merge them into its online window state,
        as one operation (``write`` does the same for an event view).

        ``events`` (any form ``write`` takes) holds the join keys, the timestamp field and every column of
        the view's schema. Everything is validated first: a bad input (a missing column, naive timestamps,
        a wrong type) raises a typed error and writes nothing. Late events (older than the newest pushed
        for their entity) are counted where they belong, offline and online. The history file and the
        merge into the online state run at once, and the state commits only once the file is durable
        (history first, as ``write``); should the process die between the two, ``materialize`` repairs
        the state.

        Example:
            >>> import tempfile, datetime as dt
            >>> import pyarrow as pa
            >>> from skewless import Aggregation, Entity, FeatureStore, FeatureView, Field, Float64
            >>> s = FeatureStore(tempfile.mkdtemp())
            >>> u = Entity("user")
            >>> txn = FeatureView("txn", [u], [Field("amount", Float64)],
            ...                   aggregations=[Aggregation("amount", "sum", window="1h")])
            >>> _ = s.apply([u, txn])
            >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
            >>> s.push("txn", {"user_id": [1, 1], "event_timestamp": [t, t], "amount": [2.0, 3.0]})
            WriteSummary(rows=2, online_written=2, online_skipped=0)
            >>> s.get_online_features(["txn:amount_sum_1h"], {"user_id": [1]}, as_of=t).to_dict()
            {'user_id': [1], 'amount_sum_1h': [5.0]}
        """
        self._refresh()
        if not self.registry.feature_view(view).is_event_view:
            raise InvalidArgumentError(
                f"feature view {view!r} has no aggregations; push is for event views, use write for it"
            )
        return self.write(view, events)

    def _validate(self, view: str, raw: pa.Table, what: str) -> tuple[pa.Table, dict[str, list[str]]]:
        fv = self.registry.feature_view(view)
        if fv.source is not None:
            raise InvalidArgumentError(
                f"feature view {view!r} reads its history from source={fv.source!r}; append to that data and "
                "run materialize instead of write"
            )
        return normalize_rows(fv, self.registry.key_types(fv), raw, what)

    def compact(self, view: str) -> int:
        """Rewrite a view's history as one file sorted by (join keys, timestamp, created timestamp).

        Point-in-time joins over a compacted history skip their sort; ``write`` keeps appending after it.
        Returns the number of rows. Example: ``store.compact("user_stats")``.
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        if fv.source is not None:
            raise InvalidArgumentError(
                f"feature view {view!r} reads source={fv.source!r}; skewless does not rewrite it"
            )
        keys = [(k, "ascending") for k in fv.tie_columns]
        with self._lock():
            return self.offline.compact(view, keys)

    # ---- reading history ---------------------------------------------------------------------------------

    def read_history(self, view: str, columns: Sequence[str] | None = None) -> pa.Table:
        """A view's whole history (or some of its columns), timestamps normalized, in write order.

        Example: ``store.read_history("user_stats", ["user_id", "spend"])``.
        """
        self._refresh()
        fv = self.registry.feature_view(view)
        cols = None if columns is None else name_list(columns, "columns")
        unknown = [c for c in cols or [] if c not in fv.stored_columns]
        if unknown:
            raise MissingColumnError(f"view {view!r} has no column(s) {unknown}; it has {fv.stored_columns}")
        return history.read(self.offline, self.registry, fv, cols)

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | FeatureService,
        *,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        imputed_flags: bool = False,
        strict: bool = False,
    ) -> pa.Table:
        """A point-in-time correct training set: ``entity_df``'s rows, in order, then the features.

        Features may be transform view outputs (``"tview:output"``, :mod:`skewless.transforms`), whose
        request-time inputs are columns of ``entity_df``. Imputed features are filled
        (:mod:`skewless.imputation`); ``imputed_flags=True`` adds a boolean ``<feature>__imputed`` column
        after each feature an imputation strategy may fill; ``strict=True`` raises
        :class:`~skewless.errors.MissingValueError` when a feature still has a missing value.

        For each row (keys k, time t) and each view, the value is the view's row for k with the greatest
        timestamp <= t and >= t - ttl, null when there is none. Ties: the latest created timestamp; among
        full ties the earliest write, and within it its last row (the online store's rule, so both
        agree). Rows sharing a key and time are all kept; duplicates stay duplicates. Each view reads only
        its keys, timestamps and the requested features, in the time range the rows need.

        ``entity_df``: any table form of ``skewless._arrow`` (pyarrow, polars DataFrame or LazyFrame,
        pandas DataFrame whose index is dropped, a mapping of columns); its time column may be a
        timezone-aware timestamp of any unit or a date (00:00 UTC); keys may be categorical, view strings,
        nullable integers (a null key gets nulls) or booleans (0/1 for an integer key).

        Example:
            >>> import tempfile, datetime as dt
            >>> import pyarrow as pa
            >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
            >>> s = FeatureStore(tempfile.mkdtemp())
            >>> u = Entity("user")
            >>> _ = s.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
            >>> T = pa.timestamp("us", tz="UTC")
            >>> hist = {"user_id": [1, 1], "event_timestamp": pa.array([10, 20], T), "x": [1.0, 2.0]}
            >>> _ = s.write("v", hist)
            >>> labels = {"user_id": [1, 1, 2], "event_timestamp": pa.array([15, 25, 25], T)}
            >>> s.get_historical_features(labels, ["v:x"]).column("x").to_pylist()
            [1.0, 2.0, None]
        """
        self._refresh()
        return retrieval.get_historical_features(
            self,
            entity_df,
            features,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
            imputed_flags=imputed_flags,
            strict=strict,
        )

    # ---- materialize ---------------------------------------------------------------------------------------

    def materialize(
        self, start: dt.datetime | None, end: dt.datetime, views: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Copy history rows with ``start <= timestamp < end`` (start inclusive, end exclusive; start None:
        from the beginning) into the online store, for every online view (or ``views``).

        The online store keeps the latest (timestamp, created) value per key, so rows older than what it
        holds change nothing; running it twice is harmless. Returns rows read per view. A progress line is
        drawn on stderr when it is a terminal.

        Example: ``store.materialize(None, datetime.now(timezone.utc))``.
        """
        self._refresh()
        lo = None if start is None else instant_us(start, "start")
        hi = instant_us(end, "end")
        if lo is not None and lo > hi:
            raise InvalidArgumentError(f"materialize: start {start} is after end {end}")
        names = name_list(views, "views") if views is not None else self.registry.names("feature_views")
        fvs = [self.registry.feature_view(n) for n in names]
        done: dict[str, int] = {}
        with self._lock():
            for fv in fvs:
                if not fv.online:
                    if views is not None:
                        raise InvalidArgumentError(f"feature view {fv.name!r} has online=False")
                    continue
                done[fv.name] = self._materialize_view(fv, lo, hi)
        return done

    def _materialize_view(self, fv: FeatureView, lo: int | None, hi: int) -> int:
        # A source that names no file raises here, before the online store is opened (or created).
        if not self.offline.files(fv.name, fv.source):
            return 0
        return materialize_view(self.offline, self.registry, self._online(), fv, lo, hi)

    def materialize_incremental(self, end: dt.datetime, views: Sequence[str] | None = None) -> dict[str, int]:
        """Materialize each online view from where its last incremental run ended (the whole history the
        first time) up to ``end`` (exclusive), and record ``end`` per view in the registry.

        Example: ``store.materialize_incremental(datetime.now(timezone.utc))``.
        """
        self._refresh()
        hi = instant_us(end, "end")
        names = name_list(views, "views") if views is not None else self.registry.names("feature_views")
        done: dict[str, int] = {}
        with self._lock():
            for name in names:
                fv = self.registry.feature_view(name)
                if not fv.online:
                    continue
                lo = self.registry.materialized_until(name)
                if lo is not None and lo >= hi:
                    done[name] = 0
                    continue
                done[name] = self._materialize_view(fv, lo, hi)
                self.registry.mark_materialized(name, hi)
            self._reg_stamp = _stamp(self.registry.path)
        return done

    # ---- serving ------------------------------------------------------------------------------------------

    def online_reader(
        self,
        features: Sequence[str] | FeatureService,
        *,
        full_feature_names: bool = False,
        strict: bool = False,
        log: bool = False,
    ) -> OnlineReader:
        """Compile a serving plan for ``features`` once (in the engine), to call many times.

        A view with no online data yet (nothing written or materialized) answers NOT_FOUND (null); the
        reader starts serving it as soon as any process writes it, with no extra cost per call after that.
        With ``log=True`` every answer goes to the served-feature log (:mod:`skewless.servelog`) for
        :meth:`check_skew`, transform view outputs and imputed values included (with their request-time
        inputs and the definitions that made them, :mod:`skewless.lineage`); ``reader.close()`` or a
        ``with`` block flushes it.

        Transform view outputs and imputation run inside the same engine call (UDFs in Python after it);
        ``strict=True``: a missing value no strategy fills raises
        :class:`~skewless.errors.MissingValueError`.

        Example: ``r = store.online_reader(["user_stats:spend"]); r.get_numpy({"user_id": [1, 2]})``.
        """
        self._refresh()
        full_feature_names = flag(full_feature_names, "full_feature_names")
        strict = flag(strict, "strict")
        compiled = transforms.compile_request(self.registry, features, full_feature_names)
        plan = compiled.plan if compiled is not None else resolve(self.registry, features)
        for fv, _ in plan:
            if not fv.online:
                raise InvalidArgumentError(f"feature view {fv.name!r} has online=False; it is not served")
        names = output_names(plan, full_feature_names or compiled is not None, [])
        versions = {fv.name: self.registry.version("feature_views", fv.name) for fv, _ in plan}
        if not flag(log, "log"):
            return OnlineReader(self._online(), plan, names, versions, compiled=compiled, strict=strict)
        key_types = {
            k: t for fv, _ in plan for k, t in zip(fv.join_keys, self.registry.key_types(fv), strict=True)
        }
        described = None if compiled is None else lineage.describe(self.registry, compiled)
        return OnlineReader(
            self._online(),
            plan,
            names,
            versions,
            self.serve_log,
            key_types,
            compiled=compiled,
            strict=strict,
            described=described,
        )

    def get_online_features(
        self,
        features: Sequence[str] | FeatureService,
        entity_rows: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
        *,
        full_feature_names: bool = False,
        as_of: dt.datetime | None = None,
        strict: bool = False,
        log: bool = False,
    ) -> OnlineResponse:
        """The latest value of each feature for each entity row, with each view's TTL applied at
        ``as_of`` (default: now): an expired value is null with status EXPIRED, and a value stored with a
        timestamp after ``as_of`` is never served (null, status NOT_YET_VALID).

        ``entity_rows``: a mapping of join key to values (lists, numpy arrays, pandas / polars Series,
        Arrow arrays), a table (pyarrow, pandas, polars), or a list of dicts as in Feast. A null key
        (None, ``<NA>``) is not found.

        With ``log=True`` the answer goes to the served-feature log (see :meth:`online_reader`).

        Example: ``store.get_online_features(["user_stats:spend"], [{"user_id": 1}]).to_dict()``.
        """
        self._refresh()
        refs = features.features if isinstance(features, FeatureService) else features
        key: tuple[Any, ...] | None
        try:
            key = (tuple(refs), full_feature_names, strict, log)
            hash(key)
        except TypeError:
            key = None  # not a list of names: online_reader says what is wrong with it
        r = self._readers.get(key) if key is not None else None
        if r is None:
            r = self.online_reader(features, full_feature_names=full_feature_names, strict=strict, log=log)
            if key is not None:
                self._readers[key] = r
        return r.get(entity_rows, as_of=as_of)

    # ---- served-feature log and skew checks (skewless.servelog, skewless.skew) -----------------------------

    @property
    def serve_log(self) -> ServeLog:
        """This process's served-feature log of the store (``<store>/logs/``), made on first use."""
        if self._serve_log is None:
            self._serve_log = ServeLog(os.path.join(self.path, "logs"))
        return self._serve_log

    def log_served(
        self,
        entity_rows: Any,
        values: Any,
        served_at: Any,
        *,
        source: str = "log_served",
        request_ids: Any = None,
        statuses: Mapping[str, Any] | None = None,
    ) -> int:
        """Log vectors a service computed some other way (a legacy path, another language), so
        :meth:`check_skew` checks them too; returns the rows queued.

        ``entity_rows``: the join key columns (a mapping or table; other columns are logged as
        request-time inputs, logged as ``request:<column>``); ``values``: ``"view:feature"`` or
        ``"transform_view:output"`` columns, one row per entity row;
        ``served_at``: one instant or one per row. ``source`` labels the rows (``check_skew(source=...)``).
        Everything is checked before anything is queued.

        Example: ``store.log_served({"user_id": [7]}, {"user_stats:spend": [12.5]}, now, source="legacy")``.
        """
        self._refresh()
        vals = as_table(values, "values")
        refs = list(vals.column_names)
        if not refs:
            raise InvalidArgumentError("values has no columns; give 'view:feature' columns")
        # Transform view outputs are checked against their definition (skewless.lineage); their keys
        # are those of the views they read.
        compiled = transforms.compile_request(self.registry, refs, True)
        plan = compiled.plan if compiled is not None else resolve(self.registry, refs)
        exact = (
            list(compiled.refs) if compiled is not None else [f"{fv.name}:{f}" for fv, fs in plan for f in fs]
        )
        if sorted(exact) != sorted(refs):
            raise InvalidArgumentError(
                f"values columns must be 'view:feature' or 'transform_view:output' references, got {refs}"
            )
        keys: dict[str, Any] = {}
        for fv, _ in plan:
            keys.update(zip(fv.join_keys, self.registry.key_types(fv), strict=True))
        types = [lineage.output_type(self.registry, r) for r in exact]
        sink = Sink(
            str(source), list(keys), list(keys.values()), exact, types, [1] * len(exact), {}, request=None
        )
        return log_table(
            self.serve_log,
            sink,
            entity_rows,
            vals.select(exact),
            served_at,
            request_ids=request_ids,
            statuses=statuses,
        )

    def flush_logs(self) -> int:
        """Write this process's queued log entries now; returns the segments written."""
        return self.serve_log.flush()

    def read_log(
        self,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        features: Sequence[str] | None = None,
        source: str | None = None,
    ) -> dict[str, pa.Table]:
        """The served-feature log, per ``"view:feature"``: every row logged with ``start <= served_at <
        end`` (see :func:`skewless.servelog.read_log` for the columns). Reads segments on disk only.

        Example: ``store.read_log(features=["user_stats:spend"])["user_stats:spend"].num_rows``.
        """
        lo = None if start is None else instant_us(start, "start")
        hi = None if end is None else instant_us(end, "end")
        feats = None if features is None else name_list(features, "features")
        return read_log(os.path.join(self.path, "logs"), start=lo, end=hi, features=feats, source=source)

    def prune_logs(self, before: dt.datetime) -> int:
        """Remove the log segments whose every row was served before ``before``; returns how many.

        Example: ``store.prune_logs(datetime.now(timezone.utc) - timedelta(days=30))``.
        """
        return prune(os.path.join(self.path, "logs"), instant_us(before, "before"))

    def check_skew(
        self,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        features: Sequence[str] | None = None,
        sample: int | None = None,
        source: str | None = None,
        atol: float = 0.0,
        rtol: float = 0.0,
        thresholds: Mapping[str, Any] | None = None,
    ) -> SkewReport:
        """Rebuild every logged vector served in ``[start, end)`` as the history knew it then, compare
        value by value and distribution by distribution, and raise alerts (see :mod:`skewless.skew`).

        ``sample``: check at most this many logged rows per feature (a seeded random sample);
        ``source``: only rows logged under that label; ``atol`` / ``rtol``: numeric tolerance (default
        exact); ``thresholds``: overrides of :data:`skewless.skew.DEFAULT_THRESHOLDS`, for every feature or
        per ``"view:feature"``. Reads only flushed segments (``flush_logs()`` first in the same process).

        Example: ``report = store.check_skew(start=yesterday); report.alerts``.
        """
        self._refresh()
        return check_skew(
            self,
            start=start,
            end=end,
            features=features,
            sample=sample,
            source=source,
            atol=atol,
            rtol=rtol,
            thresholds=thresholds,
        )

    def explain(
        self, feature: str, entity: Mapping[str, Any], at: dt.datetime, *, known_at: Any = None
    ) -> Explanation:
        """Why ``feature`` (``"view:feature"``) had its value for ``entity`` (join key to value) at ``at``:
        the history row and write behind it, the TTL decision, and what the log says was served then
        (see :mod:`skewless.explain`). ``known_at``: rebuild from the rows written by then only.

        Example: ``print(store.explain("user_stats:spend", {"user_id": 7}, at))``.
        """
        self._refresh()
        return explain(self, feature, entity, at, known_at=known_at)
