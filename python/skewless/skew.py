"""The consistency check: served vectors, rebuilt offline as they were known, compared feature by feature.

:func:`check_skew` (``store.check_skew``) reads the served-feature log (:mod:`skewless.servelog`) and
rebuilds every logged value at its ``served_at`` from the history **as known when it was served**: only
rows written at or before the lookup's ``known_at`` count (a row's write time is the history's
``__written_at__``, see offline.py "Write time"; for files without one, the created timestamp when the
view has one, else the row counts as always known). So a backfill written after a lookup never raises a
false alert. Among the known rows with timestamp <= served_at, the one with the greatest (timestamp,
created timestamp, write sequence) is the value, null when it is older than served_at - ttl: the
retrieval rule, and the online store's.

The rebuild is exact and vectorized. Rows known to every logged lookup (written by the earliest
``known_at``) go through one point-in-time join (:func:`skewless.asof_join`); rows written later, while
the log was being recorded, are paired with the logged lookups of their key by a hash join and filtered
by both instants, and the greater of the two candidates wins. The pairing costs the logged lookups of a
key times that key's late rows, which stays small unless a key is rewritten very often while serving.

Window features (event views, :mod:`skewless.events`) follow the same rule: each aggregate over the
events of the key with timestamp in (served_at - window, served_at] written at or before ``known_at``,
through the kernel serving and training use (:func:`skewless.events.window_features`), so the store's own
served values rebuild bit for bit. Every lookup is first computed from all events; the kernel's ``max``
of the events' write time over each lookup's widest window then finds the lookups that saw an event
written after their ``known_at``, and only those are recomputed, in one more kernel call over (lookup,
known event) pairs keyed by lookup. That pairing costs those lookups times their key's events in the
window.

Transform view outputs and imputed features (:func:`rebuild_staged`): the log records the definitions
each was served with (:mod:`skewless.lineage`); the rows served with one set of definitions are rebuilt
together: every view the output reads through :func:`rebuild` as above, then the compiled transform
stage of :func:`skewless.retrieval.get_historical_features` (imputation fills, built-ins, UDFs) over
those columns and the logged ``request:<column>`` inputs, compiled from the served definitions (rows
``log_served`` logged, which record none, from the registry's). So no transform is implemented twice,
and a transform view version, artifact or UDF that changed after serving neither hides a skew nor
raises a false alert; the report states the change (``changes``) and what was served (``served_with``).

A lookup served NOT_YET_VALID (the online store held a value from after ``served_at``, so it could not
answer for that instant) is not comparable and is counted apart.

Per feature: ``rows`` compared, ``mismatch_rate`` (value differs beyond ``atol + rtol * |offline|``, or
missing on one side only; null and NaN are both "missing"), ``null_online_only_rate`` and
``null_offline_only_rate``, ``max_abs_diff`` and ``mean_abs_diff`` (rows present on both sides), the
two-sample Kolmogorov-Smirnov statistic and p-value and the Wasserstein distance of the online and
offline values (scipy, the ``watchdog`` extra; None without it), the versions served, and for a
transform output or imputed feature ``served_with`` ({what made it: rows}) and ``changes`` (text).

Thresholds (:data:`DEFAULT_THRESHOLDS`) turn metrics into :class:`Alert` s: a metric above its threshold
alerts (``ks_pvalue``: below it); None disables one. ``thresholds=`` overrides them for every feature
(``{"mismatch_rate": 0.05}``) or one (``{"view:feature": {"mismatch_rate": 0.05}}``).

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user")
    >>> _ = store.apply([u, FeatureView("v", [u], [Field("x", Float64)])])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> T = pa.timestamp("us", "UTC")
    >>> _ = store.write("v", {"user_id": [1, 2], "event_timestamp": pa.array([t, t], T), "x": [0.5, 1.5]})
    >>> _ = store.log_served({"user_id": [1, 2]}, {"v:x": [0.5, 2.5]}, t, source="legacy")
    >>> _ = store.flush_logs()
    >>> report = store.check_skew()
    >>> report.features["v:x"]["mismatch_rate"], [a.metric for a in report.alerts][:1]
    (0.5, ['mismatch_rate'])
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core, history, lineage, transforms
from .asof import asof_join
from .definitions import TIMESTAMP_TYPE, FeatureView
from .errors import IncompatibleChangeError, InvalidArgumentError, UnknownFeatureError
from .events import aggregation, window_features
from .normalize import INT64_MIN, instant_us
from .offline import SEQ, WRITTEN, tie_rank
from .online import Status
from .refs import parse_ref, resolve
from .servelog import KNOWN_AT, REQUEST_ID, REQUEST_PREFIX, SERVED_AT, STATUS_SUFFIX

if TYPE_CHECKING:
    from .store import FeatureStore

__all__ = ["Alert", "SkewReport", "DEFAULT_THRESHOLDS", "check_skew", "rebuild", "known_history"]

#: Default alert thresholds. The store's own serving path rebuilds bit for bit, so any systematic
#: mismatch is a bug; the small allowance absorbs the one legitimate race (a lookup served in the few
#: milliseconds between a write's history file and its online commit). ``ks_statistic`` catches a
#: shifted distribution; p-values and Wasserstein distances depend on sample size and scale, so they are
#: reported without a default threshold.
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "mismatch_rate": 0.001,
    "null_online_only_rate": 0.001,
    "null_offline_only_rate": 0.001,
    "ks_statistic": 0.1,
    "ks_pvalue": None,
    "wasserstein": None,
    "max_abs_diff": None,
    "mean_abs_diff": None,
}
#: Metrics that alert when *below* their threshold.
_LOWER_IS_WORSE = {"ks_pvalue"}
#: Worst rows kept per feature.
WORST = 10


class Alert(NamedTuple):
    """One metric past its threshold for one feature (``feature`` is the ``"view:feature"`` reference).

    Example:
        >>> Alert("v:x", "mismatch_rate", 0.45, 0.001).feature
        'v:x'
    """

    feature: str
    metric: str
    value: float
    threshold: float


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(us))).isoformat()


# ---- rebuilding --------------------------------------------------------------------------------------------


def known_history(
    store: FeatureStore, fv: FeatureView, feats: Sequence[str], tmin: int, tmax: int
) -> pa.Table | None:
    """The view's history rows a lookup in ``[tmin, tmax]`` can use: keys, time columns, ``feats``
    (an event view: keys, timestamp and the raw columns its aggregates ``feats`` read), ``__seq__`` and
    ``__known__`` (int64: when the row became known; see the module docstring)."""
    sch = history.schema(store.registry, fv)
    if sch is None or not store.offline.files(fv.name, fv.source):
        return None
    cols = list(dict.fromkeys(history.join_columns(fv, feats)))
    own = fv.source is None
    if own:
        sch = sch.append(pa.field(WRITTEN, pa.int64()))
    lo = history.join_low(fv, tmin)
    batches = list(
        store.offline.scan(
            fv.name,
            fv.source,
            sch,
            cols + ([WRITTEN] if own else []),
            (fv.timestamp_field, lo, tmax, True),
            with_seq=True,
        )
    )
    if not batches:
        return None
    t = pa.Table.from_batches(batches)
    written = t.column(WRITTEN) if own else pa.nulls(t.num_rows, pa.int64())
    base = history.to_stored(store.registry, fv, t.select([*cols, SEQ]), [*cols, SEQ])
    known = written
    if fv.created_timestamp_field:
        known = pc.coalesce(written, pc.cast(base.column(fv.created_timestamp_field), pa.int64()))
    return base.append_column("__known__", pc.fill_null(known, INT64_MIN))


def no_history(store: FeatureStore, fv: FeatureView, feats: Sequence[str]) -> pa.Table:
    """:func:`known_history`'s table with no rows, for a view with none yet."""
    t = history.empty(store.registry, fv, history.join_columns(fv, feats))
    return t.append_column(SEQ, pa.array([], pa.int64())).append_column("__known__", pa.array([], pa.int64()))


def _ints(col: Any, fill: int = INT64_MIN) -> np.ndarray:
    # A writable copy: the rebuild updates its choices in place.
    return np.array(pc.fill_null(pc.cast(col, pa.int64()), fill).to_numpy(), dtype=np.int64)


def _choose(fv: FeatureView, hist: pa.Table, keys: pa.Table, t: np.ndarray, known: np.ndarray) -> np.ndarray:
    """For each lookup (keys, instant ``t``, knowledge instant ``known``): the index of the history row
    that answers it, -1 for none."""
    n = len(t)
    hts = _ints(hist.column(fv.timestamp_field))
    hcr = _ints(hist.column(fv.created_timestamp_field)) if fv.created_timestamp_field else np.zeros_like(hts)
    hrank = _ints(tie_rank(hist.column(SEQ)))
    hknown = _ints(hist.column("__known__"))
    ttl = fv.ttl_us
    kmin = int(known.min()) if n else 0
    base_mask = hknown <= kmin
    right_cols: dict[str, Any] = {k: hist.column(k) for k in fv.join_keys}
    right_cols[fv.timestamp_field] = hist.column(fv.timestamp_field)
    right_cols["__created__"] = pa.array(hcr)
    right_cols["__rank__"] = pa.array(hrank)
    right_cols["__hrow__"] = pa.array(np.arange(hist.num_rows, dtype=np.int64))
    right = pa.table(right_cols).filter(pa.array(base_mask))
    left_cols: dict[str, Any] = {k: keys.column(k) for k in fv.join_keys}
    left_cols[fv.timestamp_field] = pa.array(t).cast(TIMESTAMP_TYPE)
    joined = asof_join(
        pa.table(left_cols),
        right,
        on=fv.timestamp_field,
        by=fv.join_keys,
        tolerance=fv.ttl,
        tie_breaker="__created__",
        sequence="__rank__",
    )
    chosen = _ints(joined.column("__hrow__"), -1)
    late = np.nonzero(~base_mask)[0]
    if late.size and n:
        lt = pa.table({**{k: keys.column(k) for k in fv.join_keys}, "__li__": np.arange(n, dtype=np.int64)})
        rt = pa.table({**{k: hist.column(k).take(late) for k in fv.join_keys}, "__hr__": late})
        pairs = lt.join(rt, keys=fv.join_keys, join_type="inner")
        li, hr = _ints(pairs.column("__li__")), _ints(pairs.column("__hr__"))
        ok = (hts[hr] <= t[li]) & (hknown[hr] <= known[li])
        if ttl is not None:
            ok &= hts[hr] >= t[li] - ttl
        li, hr = li[ok], hr[ok]
        order = np.lexsort((hrank[hr], hcr[hr], hts[hr], li))
        li, hr = li[order], hr[order]
        last = np.r_[li[1:] != li[:-1], True] if li.size else np.zeros(0, bool)
        li, hr = li[last], hr[last]
        b = chosen[li]
        bb = np.maximum(b, 0)
        better = (
            (b < 0)
            | (hts[hr] > hts[bb])
            | (
                (hts[hr] == hts[bb])
                & ((hcr[hr] > hcr[bb]) | ((hcr[hr] == hcr[bb]) & (hrank[hr] > hrank[bb])))
            )
        )
        chosen[li[better]] = hr[better]
    return chosen


def _windows(
    fv: FeatureView, feats: Sequence[str], hist: pa.Table, keys: pa.Table, t: np.ndarray, known: np.ndarray
) -> list[pa.ChunkedArray]:
    """Each aggregate ``feats`` of event view ``fv`` for each lookup (keys, instant ``t``, knowledge
    instant ``known``) over the events of ``hist`` (:func:`known_history`) known then; see the module
    docstring for how."""
    n = len(t)
    ts = fv.timestamp_field
    left = pa.table({**{k: keys.column(k) for k in fv.join_keys}, ts: pa.array(t).cast(TIMESTAMP_TYPE)})
    events = hist.drop_columns(["__known__"])
    out = window_features(fv, left, events, feats, SEQ)
    hknown = _ints(hist.column("__known__"))
    if not n or not hist.num_rows or int(hknown.max()) <= int(known.min()):
        return out
    widest = max(aggregation(fv, f).window_us for f in feats)
    latest = _core.window_aggregate(
        left,
        hist.select([*fv.join_keys, ts, "__known__"]),
        ts,
        list(fv.join_keys),
        None,
        [("__known__", "max", widest, "__latest__")],
    )
    aff = np.nonzero(_ints(latest.column("__latest__")) > known)[0]
    if not aff.size:
        return out
    lt = pa.table({**{k: keys.column(k).take(aff) for k in fv.join_keys}, "__li__": aff})
    rt = pa.table({**{k: hist.column(k) for k in fv.join_keys}, "__hr__": np.arange(hist.num_rows)})
    pairs = lt.join(rt, keys=fv.join_keys, join_type="inner")
    li, hr = _ints(pairs.column("__li__")), _ints(pairs.column("__hr__"))
    hts = _ints(hist.column(ts))
    ok = (hts[hr] <= t[li]) & (hts[hr] > t[li] - widest) & (hknown[hr] <= known[li])
    li, hr = li[ok], hr[ok]
    ev = events.drop_columns(list(fv.join_keys)).take(pa.array(hr)).append_column("__li__", pa.array(li))
    lab = pa.table({"__li__": aff, ts: pa.array(t[aff]).cast(TIMESTAMP_TYPE)})
    redone = window_features(fv, lab, ev, feats, SEQ, by=["__li__"])
    # Row i of the answer: the first pass's, or for an affected lookup its recomputed value.
    pick = np.arange(n, dtype=np.int64)
    pick[aff] = n + np.arange(aff.size, dtype=np.int64)
    return [
        pa.chunked_array(pa.concat_arrays([a.combine_chunks(), b.combine_chunks()]).take(pa.array(pick)))
        for a, b in zip(out, redone, strict=True)
    ]


def rebuild(
    store: FeatureStore,
    view: str,
    feats: Sequence[str],
    lookups: pa.Table,
    hist: pa.Table | None | bool = False,
) -> tuple[dict[str, pa.ChunkedArray], np.ndarray, pa.Table | None]:
    """The offline values of ``view``'s ``feats`` for each lookup row of ``lookups`` (the view's join
    keys, ``__served_at__`` and ``__known_at__``), as known then: ``({feature: values}, chosen history row
    index or -1, the history read)``. ``hist``: the :func:`known_history` already read for these lookups
    (False: read it here). Plain feature views and event views (their window features; no single row
    answers, so the row index is -1) are rebuilt here; another kind of definition needs its own branch
    (its retrieval as of (served_at, known_at))."""
    fv = store.registry.feature_view(view)
    if type(fv) is not FeatureView:
        raise InvalidArgumentError(f"check_skew cannot rebuild {type(fv).__name__} {view!r} yet")
    t = _ints(lookups.column(SERVED_AT))
    known = _ints(lookups.column(KNOWN_AT))
    n = len(t)
    if hist is False:
        hist = known_history(store, fv, feats, int(t.min()), int(t.max())) if n else None
    assert hist is not True
    keys = pa.table({k: lookups.column(k) for k in fv.join_keys})
    if fv.is_event_view:
        events = no_history(store, fv, feats) if hist is None else hist
        vals = _windows(fv, feats, events, keys, t, known)
        return dict(zip(feats, vals, strict=True)), np.full(n, -1), events
    if hist is None or hist.num_rows == 0:
        return (
            {f: pa.chunked_array([pa.nulls(n, fv.get_field(f).dtype.arrow)]) for f in feats},
            np.full(n, -1),
            hist,
        )
    chosen = _choose(fv, hist, keys, t, known)
    idx = pa.array(chosen, mask=chosen < 0)
    return {f: hist.column(f).take(idx) for f in feats}, chosen, hist


# ---- transform outputs and imputed values ---------------------------------------------------------------


class _Histories:
    """Each view's :func:`known_history` for one check, read once per (view, features) over the
    instants of every logged row."""

    def __init__(self, store: FeatureStore, tmin: int, tmax: int) -> None:
        self.store, self.tmin, self.tmax = store, tmin, tmax
        self.read: dict[tuple[str, tuple[str, ...]], pa.Table | None] = {}

    def get(self, fv: FeatureView, feats: Sequence[str]) -> pa.Table | None:
        k = (fv.name, tuple(sorted(feats)))
        if k not in self.read:
            self.read[k] = known_history(self.store, fv, sorted(feats), self.tmin, self.tmax)
        return self.read[k]


def _groups(col: pa.ChunkedArray) -> list[tuple[str | None, np.ndarray]]:
    """Row indices per distinct value of a dictionary-encoded string column (``served_by``), read per
    chunk (a segment's chunk holds one value) without decoding every row."""
    keys: dict[str | None, int] = {}
    codes = []
    for ch in col.chunks:
        if not pa.types.is_dictionary(ch.type):
            ch = pc.dictionary_encode(ch)
        vals = ch.dictionary.to_pylist()
        idx = np.asarray(pc.fill_null(ch.indices, -1).to_numpy(zero_copy_only=False), np.int64)
        lut = np.array([keys.setdefault(v, len(keys)) for v in vals] + [keys.setdefault(None, len(keys))])
        codes.append(lut[idx])
    all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    return [(k, np.nonzero(all_codes == c)[0]) for k, c in keys.items() if (all_codes == c).any()]


def rebuild_staged(
    store: FeatureStore, ref: str, log: pa.Table, rec: Mapping[str, Any] | None, hists: _Histories
) -> tuple[pa.ChunkedArray, list[str], list[str]]:
    """``ref`` (a transform view output, or a feature with imputation) for each logged row of ``log``,
    as served by the definitions of record ``rec`` (:mod:`skewless.lineage`) and as known at each row's
    (served_at, known_at): every view the output reads is rebuilt by :func:`rebuild`, then the compiled
    transform stage of ``get_historical_features`` runs over those columns and the logged
    ``request:<column>`` inputs. Returns the values, the join keys and logged request columns read, and
    notes (an input the log lacks)."""
    c = lineage.compile_served(store.registry, ref, rec)
    cols: list[Any] = []
    keys: list[str] = []
    for fv, feats in c.plan:
        keys += [k for k in fv.join_keys if k not in keys]
        missing = [k for k in fv.join_keys if k not in log.column_names]
        if missing:
            raise UnknownFeatureError(
                f"the log of {ref!r} has no key column(s) {missing} of view {fv.name!r} it reads; the "
                "definition changed since: pass features= to skip it"
            )
        vals, _, _ = rebuild(store, fv.name, feats, log, hists.get(fv, feats))
        cols += [vals[f] for f in feats]
    cols += previous_inputs(store, c, log, hists)
    notes = []
    for name in c.request_columns:
        col = REQUEST_PREFIX + name
        if col in log.column_names:
            keys.append(col)  # the worst rows' explain call passes it back as a request input
            cols.append(log.column(col))
        else:
            notes.append(f"the log has no request-time input {col!r}: rebuilt with nulls for it")
            cols.append(pa.nulls(log.num_rows))
    stage_in = pa.Table.from_arrays(cols, names=[f"c{i}" for i in range(len(cols))])
    stage = c.program.run(stage_in, c.select, c.names, False)
    ((_, out),) = transforms.finish(c, stage, False)
    return out, keys, notes


def previous_inputs(
    store: FeatureStore, c: transforms.Compiled, log: pa.Table, hists: _Histories
) -> list[pa.ChunkedArray]:
    """The ``previous`` strategy's inputs of ``c`` (``c.previous``, in the order retrieval passes them)
    for each logged row of ``log``: the feature's last non-null value as known then, the same choice as
    :func:`rebuild` over the rows where it is not null."""
    out = []
    for fv, f in c.previous:
        hist = hists.get(fv, [f])
        known = None if hist is None else hist.filter(pc.is_valid(hist.column(f)))
        vals, _, _ = rebuild(store, fv.name, [f], log, known)
        out.append(vals[f])
    return out


def _rebuild_ref(
    store: FeatureStore, ref: str, log: pa.Table, hists: _Histories
) -> tuple[pa.ChunkedArray, list[str], dict[str, int], list[str]]:
    """``ref``'s offline values for every row of ``log``, each group of rows served by one set of
    definitions rebuilt with those (rows ``log_served`` logged, with none recorded, with the registry's
    current ones); the join keys; what was served with ({description: rows}); and what changed since."""
    now = lineage.served_by(store.registry, ref)
    parts: list[tuple[np.ndarray, pa.ChunkedArray]] = []
    served: dict[str, int] = {}
    notes: list[str] = []
    keys: list[str] = []
    for k, idx in _groups(log.column("served_by")):
        sub = log.take(pa.array(idx))
        rec = now if k is None else json.loads(k)
        label = lineage.text(ref, rec) + (
            "" if k is not None else " (not recorded: log_served; as defined now)"
        )
        served[label] = served.get(label, 0) + len(idx)
        if k is not None:
            for ch in lineage.changes(ref, rec, now):
                notes.append(
                    f"{ch}; the {len(idx)} row(s) served with it were rebuilt with the served definition"
                )
        if rec is None:
            view, feat = parse_ref(ref)
            fv = store.registry.feature_view(view)
            vals, _, _ = rebuild(store, view, [feat], sub, hists.get(fv, [feat]))
            out, ks, more = vals[feat], list(fv.join_keys), list[str]()
        else:
            try:
                out, ks, more = rebuild_staged(store, ref, sub, rec, hists)
            except (UnknownFeatureError, IncompatibleChangeError) as e:
                raise type(e)(
                    f"cannot rebuild {ref!r} as it was served ({lineage.text(ref, rec)}): {e}; pass "
                    "features= to skip it"
                ) from None
        keys += [x for x in ks if x not in keys]
        notes += [m for m in more if m not in notes]
        parts.append((idx, out))
    n = log.num_rows
    order = np.concatenate([i for i, _ in parts]) if parts else np.zeros(0, np.int64)
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n, dtype=np.int64)
    if not parts:
        return pa.chunked_array([], lineage.output_type(store.registry, ref)), keys, served, notes
    typ = parts[0][1].type
    cat = pa.concat_arrays([pa.chunked_array(p.chunks, typ).cast(typ).combine_chunks() for _, p in parts])
    return pa.chunked_array([cat.take(pa.array(inv))]), keys, served, notes


# ---- comparing ---------------------------------------------------------------------------------------------


def _numeric_type(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_decimal(t)
    )


def _as_float(col: Any) -> np.ndarray:
    c = pc.cast(col, pa.int64()) if pa.types.is_timestamp(col.type) else col
    c = pc.cast(c, pa.float64())
    return np.asarray(pc.fill_null(c, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _compare(on: Any, off: Any, atol: float, rtol: float) -> dict[str, Any]:
    """Row-level comparison: missing masks, mismatch mask, absolute differences (NaN where not both
    present), and the float values when numeric."""
    if _numeric_type(on.type) and _numeric_type(off.type):
        a, b = _as_float(on), _as_float(off)
        ma, mb = np.isnan(a), np.isnan(b)
        both = ~ma & ~mb
        with np.errstate(invalid="ignore"):
            diff = np.where(both, np.abs(a - b), np.nan)
            eq = (a == b) | (diff <= atol + rtol * np.abs(b))
        mismatch = (ma != mb) | (both & ~eq)
        return {"miss_on": ma, "miss_off": mb, "mismatch": mismatch, "diff": diff, "a": a, "b": b}
    if pa.types.is_fixed_size_list(on.type) and pa.types.is_fixed_size_list(off.type):
        size = on.type.list_size
        a2 = _as_float(pc.list_flatten(pc.fill_null(on, [np.nan] * size))).reshape(-1, size)
        b2 = _as_float(pc.list_flatten(pc.fill_null(off, [np.nan] * size))).reshape(-1, size)
        ma = np.asarray(pc.is_null(on).to_numpy(zero_copy_only=False), bool)
        mb = np.asarray(pc.is_null(off).to_numpy(zero_copy_only=False), bool)
        with np.errstate(invalid="ignore"):
            d = np.abs(a2 - b2)
            same = ((a2 == b2) | (d <= atol + rtol * np.abs(b2)) | (np.isnan(a2) & np.isnan(b2))).all(axis=1)
            diff = np.where(
                ~ma & ~mb, np.nanmax(np.where(np.isnan(d), 0, d), axis=1) if size else 0.0, np.nan
            )
        mismatch = (ma != mb) | (~ma & ~mb & ~same)
        return {"miss_on": ma, "miss_off": mb, "mismatch": mismatch, "diff": diff, "a": None, "b": None}
    ma = np.asarray(pc.is_null(on).to_numpy(zero_copy_only=False), bool)
    mb = np.asarray(pc.is_null(off).to_numpy(zero_copy_only=False), bool)
    try:
        off_c = pc.cast(off, on.type) if off.type != on.type else off
        eq = np.asarray(pc.fill_null(pc.equal(on, off_c), False).to_numpy(zero_copy_only=False), bool)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
        raise InvalidArgumentError(f"values of type {on.type} cannot be compared: {e}") from None
    mismatch = (ma != mb) | (~ma & ~mb & ~eq)
    return {
        "miss_on": ma,
        "miss_off": mb,
        "mismatch": mismatch,
        "diff": np.full(len(ma), np.nan),
        "a": None,
        "b": None,
    }


def _distribution(a: np.ndarray | None, b: np.ndarray | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {"ks_statistic": None, "ks_pvalue": None, "wasserstein": None}
    if a is None or b is None:
        return out
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not a.size or not b.size:
        return out
    try:
        from scipy import stats
    except ImportError:
        return out
    with warnings.catch_warnings():
        # Large samples fall back from the exact p-value to the asymptotic one; that is expected here.
        warnings.simplefilter("ignore", RuntimeWarning)
        ks = stats.ks_2samp(a, b)
    out["ks_statistic"] = float(ks.statistic)
    out["ks_pvalue"] = float(ks.pvalue)
    out["wasserstein"] = float(stats.wasserstein_distance(a, b))
    return out


def _thresholds(spec: Mapping[str, Any] | None, feature: str) -> dict[str, float | None]:
    th = dict(DEFAULT_THRESHOLDS)
    if not spec:
        return th
    for k, v in spec.items():
        if ":" in k:
            continue
        if k not in th:
            raise InvalidArgumentError(f"unknown threshold {k!r}; known: {sorted(th)}")
        th[k] = None if v is None else float(v)
    per = spec.get(feature)
    if per is not None:
        for k, v in per.items():
            if k not in th:
                raise InvalidArgumentError(f"unknown threshold {k!r} for {feature!r}; known: {sorted(th)}")
            th[k] = None if v is None else float(v)
    return th


def _py(v: Any) -> Any:
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _feature_report(
    ref: str,
    log: pa.Table,
    offline: pa.ChunkedArray,
    chosen: np.ndarray | None,
    keys: Sequence[str],
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    status = log.column(ref + STATUS_SUFFIX)
    st = _ints(status, -1)
    comparable = st != int(Status.NOT_YET_VALID)
    idx = np.nonzero(comparable)[0]
    on = log.column(ref).take(pa.array(idx))
    off = offline.take(pa.array(idx))
    c = _compare(on, off, atol, rtol)
    n = len(idx)
    rate = (lambda m: float(m.sum()) / n) if n else (lambda m: 0.0)
    both = ~np.isnan(c["diff"])
    out: dict[str, Any] = {
        "rows": n,
        "not_comparable": int((~comparable).sum()),
        "mismatches": int(c["mismatch"].sum()),
        "mismatch_rate": rate(c["mismatch"]),
        "null_online_only_rate": rate(c["miss_on"] & ~c["miss_off"]),
        "null_offline_only_rate": rate(c["miss_off"] & ~c["miss_on"]),
        "max_abs_diff": float(np.max(c["diff"][both])) if both.any() else None,
        "mean_abs_diff": float(np.mean(c["diff"][both])) if both.any() else None,
    }
    out.update(_distribution(c["a"], c["b"]))
    vers = log.column("version").take(pa.array(idx))
    counts = pc.value_counts(vers).to_pylist() if n else []
    out["versions"] = {
        ("unversioned" if d["values"] is None else str(d["values"])): d["counts"] for d in counts
    }
    sources = pc.value_counts(log.column("source").take(pa.array(idx))).to_pylist() if n else []
    out["sources"] = {d["values"]: d["counts"] for d in sources}
    # Worst rows: one-sided nulls first, then the largest differences, then other mismatches.
    bad = np.nonzero(c["mismatch"])[0]
    sev = np.where(np.isnan(c["diff"][bad]), np.inf, c["diff"][bad])
    worst = bad[np.argsort(-sev, kind="stable")][:WORST]
    rows = []
    view = parse_ref(ref)[0]
    for j in worst.tolist():
        i = int(idx[j])
        ent = {k.removeprefix(REQUEST_PREFIX): log.column(k)[i].as_py() for k in keys}
        at = int(_ints(log.column(SERVED_AT))[i])
        rows.append(
            {
                "request_id": log.column(REQUEST_ID)[i].as_py(),
                "entity": ent,
                "served_at": _iso(at),
                "online": _py(on[j].as_py()),
                "offline": _py(off[j].as_py()),
                "abs_diff": _py(float(c["diff"][j])),
                "source": log.column("source")[i].as_py(),
                "history_row": None if chosen is None else int(chosen[i]),
                "explain": f"store.explain({ref!r}, {ent!r}, {_iso(at)!r})",
            }
        )
    del view
    out["worst"] = rows
    # Transform outputs and imputed values: what made them, as served, and what changed since.
    out["served_with"] = {}
    out["changes"] = []
    out["_values"] = (c["a"], c["b"])
    return out


class SkewReport:
    """What :func:`check_skew` found: ``features[ref]`` (metrics of one feature, see the module
    docstring), ``alerts`` (a list of :class:`Alert`), ``thresholds`` used per feature, the window
    checked and the rows read. ``ok`` is True when there is no alert.

    Example: ``report.alerts``, ``report.to_markdown()``, ``report.to_html("skew.html")``.
    """

    def __init__(
        self,
        features: dict[str, dict[str, Any]],
        alerts: list[Alert],
        thresholds: dict[str, dict[str, float | None]],
        start: int | None,
        end: int | None,
        source: str | None,
    ) -> None:
        self._values = {f: m.pop("_values") for f, m in features.items()}
        self.features = features
        self.alerts = alerts
        self.thresholds = thresholds
        self.start = start
        self.end = end
        self.source = source

    @property
    def ok(self) -> bool:
        return not self.alerts

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return {
            "start": None if self.start is None else _iso(self.start),
            "end": None if self.end is None else _iso(self.end),
            "source": self.source,
            "ok": self.ok,
            "alerts": [a._asdict() for a in self.alerts],
            "features": self.features,
            "thresholds": self.thresholds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        """A summary table per feature, the alerts, and each alerting feature's worst rows."""
        lines = ["# Skew report", ""]
        win = f"{self.to_dict()['start'] or 'beginning'} to {self.to_dict()['end'] or 'now'}"
        lines.append(f"Served vectors from {win}" + (f", source {self.source}" if self.source else "") + ".")
        lines.append("")
        if not self.features:
            lines.append("No served vectors in the log for this window.")
        lines += [
            "| feature | rows | mismatch | null online only | null offline only | max abs diff | KS "
            "| versions |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for f, m in self.features.items():
            ks = "n/a" if m["ks_statistic"] is None else f"{m['ks_statistic']:.3f}"
            mad = "n/a" if m["max_abs_diff"] is None else f"{m['max_abs_diff']:.6g}"
            lines.append(
                f"| {f} | {m['rows']} | {m['mismatch_rate']:.2%} | {m['null_online_only_rate']:.2%} | "
                f"{m['null_offline_only_rate']:.2%} | {mad} | {ks} | {m['versions']} |"
            )
        lines.append("")
        made = {f: m for f, m in self.features.items() if m.get("served_with")}
        if made:
            lines += ["## Transforms and imputation served", ""]
            for f, m in made.items():
                for what, n in m["served_with"].items():
                    lines.append(f"- **{f}** ({n} rows): {what}")
                for ch in m["changes"]:
                    lines.append(f"  - changed since serving: {ch}")
            lines.append("")
        if not self.alerts:
            lines.append("No alert.")
        else:
            lines.append(f"## {len(self.alerts)} alert(s)")
            lines.append("")
            for a in self.alerts:
                lines.append(f"- **{a.feature}**: {a.metric} = {a.value:.6g} (threshold {a.threshold:g})")
            for f in dict.fromkeys(a.feature for a in self.alerts):
                lines += [
                    "",
                    f"### Worst rows of {f}",
                    "",
                    "| entity | served_at | online | offline | explain |",
                ]
                lines.append("| --- | --- | --- | --- | --- |")
                for r in self.features[f]["worst"]:
                    lines.append(
                        f"| {r['entity']} | {r['served_at']} | {r['online']} | {r['offline']} "
                        f"| `{r['explain']}` |"
                    )
        return "\n".join(lines) + "\n"

    def to_html(self, path: str) -> str:
        """Write one self-contained HTML page (histograms of online vs offline values of each alerting
        feature, inlined as PNG, and its worst rows); returns ``path``. Needs matplotlib (the
        ``watchdog`` extra)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ModuleNotFoundError(
                "to_html draws with matplotlib: pip install 'skewless[watchdog]'", name="matplotlib"
            ) from None
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>skewless skew report</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.bad{color:#b00}</style>",
            "</head><body>",
            "<h1>Skew report</h1>",
            f"<p>{'No alert.' if self.ok else f'<b class=bad>{len(self.alerts)} alert(s)</b>'}</p>",
            "<table><tr><th>feature</th><th>rows</th><th>mismatch</th><th>null online only</th>"
            "<th>null offline only</th><th>max abs diff</th><th>KS</th><th>Wasserstein</th></tr>",
        ]
        for f, m in self.features.items():
            cells = [
                str(m["rows"]),
                f"{m['mismatch_rate']:.2%}",
                f"{m['null_online_only_rate']:.2%}",
                f"{m['null_offline_only_rate']:.2%}",
                "n/a" if m["max_abs_diff"] is None else f"{m['max_abs_diff']:.6g}",
                "n/a" if m["ks_statistic"] is None else f"{m['ks_statistic']:.3f}",
                "n/a" if m["wasserstein"] is None else f"{m['wasserstein']:.6g}",
            ]
            parts.append(f"<tr><td>{e(f)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        made = {f: m for f, m in self.features.items() if m.get("served_with")}
        if made:
            parts.append("<h2>Transforms and imputation served</h2><ul>")
            for f, m in made.items():
                for what, n in m["served_with"].items():
                    parts.append(f"<li>{e(f)} ({n} rows): {e(what)}</li>")
                for ch in m["changes"]:
                    parts.append(f"<li class=bad>{e(f)}: changed since serving: {e(ch)}</li>")
            parts.append("</ul>")
        if self.alerts:
            parts.append("<ul>")
            for a in self.alerts:
                parts.append(
                    f"<li class=bad>{e(a.feature)}: {e(a.metric)} = {a.value:.6g} "
                    f"(threshold {a.threshold:g})</li>"
                )
            parts.append("</ul>")
        for f in dict.fromkeys(a.feature for a in self.alerts):
            parts.append(f"<h2>{e(f)}</h2>")
            a, b = self._values.get(f, (None, None))
            if a is not None and b is not None:
                fig, ax = plt.subplots(figsize=(7, 3.2))
                va, vb = a[~np.isnan(a)], b[~np.isnan(b)]
                both = np.concatenate([va, vb])
                bins: Any = np.histogram_bin_edges(both, bins=40) if both.size else 10
                ax.hist(vb, bins=bins, alpha=0.6, label="offline (rebuilt)")
                ax.hist(va, bins=bins, alpha=0.6, label="online (served)")
                ax.set_title(f)
                ax.legend()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
                plt.close(fig)
                img = base64.b64encode(buf.getvalue()).decode()
                parts.append(f"<img alt='histogram of {e(f)}' src='data:image/png;base64,{img}'>")
            parts.append(
                "<table><tr><th>entity</th><th>served_at</th><th>online</th><th>offline</th><th>explain</th></tr>"
            )
            for r in self.features[f]["worst"]:
                parts.append(
                    "<tr>"
                    + "".join(
                        f"<td>{e(str(r[k]))}</td>" for k in ("entity", "served_at", "online", "offline")
                    )
                    + f"<td><code>{e(r['explain'])}</code></td></tr>"
                )
            parts.append("</table>")
        parts.append("</body></html>")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(parts))
        return path

    def __repr__(self) -> str:
        return f"SkewReport({len(self.features)} features, {len(self.alerts)} alerts)"


def check_skew(
    store: FeatureStore,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    features: Sequence[str] | None = None,
    sample: int | None = None,
    source: str | None = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    thresholds: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> SkewReport:
    """:meth:`FeatureStore.check_skew`: see the module docstring."""
    lo = None if start is None else instant_us(start, "start")
    hi = None if end is None else instant_us(end, "end")
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 1):
        raise InvalidArgumentError(f"sample must be a positive number of rows, got {sample!r}")
    for name, v in (("atol", atol), ("rtol", rtol)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise InvalidArgumentError(f"{name} must be a non-negative number, got {v!r}")
    if thresholds is not None and not isinstance(thresholds, Mapping):
        raise InvalidArgumentError("thresholds must be a mapping of metric (or 'view:feature') to value")
    if features is not None and transforms.compile_request(store.registry, features, True) is None:
        resolve(store.registry, features)  # an unknown reference is an error, not an empty report
    logs = store.read_log(start=start, end=end, features=features, source=source)
    by_view: dict[str, list[str]] = {}
    # Transform view outputs and imputed features: rebuilt through the transform stage (rebuild_staged).
    staged: list[str] = []
    for ref in logs:
        view, feat = parse_ref(ref)
        try:
            recorded = logs[ref].column("served_by").null_count < logs[ref].num_rows
            if recorded or lineage.needs_stage(store.registry, ref):
                staged.append(ref)
                continue
            store.registry.feature_view(view).feature_dtype(feat)
        except UnknownFeatureError:
            raise UnknownFeatureError(
                f"the log holds {ref!r}, which the registry no longer defines; pass features= to skip it"
            ) from None
        by_view.setdefault(view, []).append(feat)
    reports: dict[str, dict[str, Any]] = {}
    alerts: list[Alert] = []
    used: dict[str, dict[str, float | None]] = {}
    rng = np.random.default_rng(seed)
    if staged:
        picked_logs = {}
        for ref in staged:
            log = logs[ref]
            if sample is not None and log.num_rows > sample:
                log = log.take(pa.array(np.sort(rng.choice(log.num_rows, sample, replace=False))))
            picked_logs[ref] = log
        instants = [_ints(lg.column(SERVED_AT)) for lg in picked_logs.values() if lg.num_rows]
        hists = _Histories(
            store,
            min((int(x.min()) for x in instants), default=0),
            max((int(x.max()) for x in instants), default=0),
        )
        for ref, log in picked_logs.items():
            offline, keys, served_with, notes = _rebuild_ref(store, ref, log, hists)
            m = _feature_report(ref, log, offline, None, keys, float(atol), float(rtol))
            m["served_with"] = served_with
            m["changes"] = notes
            _alert(reports, alerts, used, thresholds, ref, m)
    for view, feats in by_view.items():
        fv = store.registry.feature_view(view)
        picked = {}
        for f in feats:
            log = logs[f"{view}:{f}"]
            if sample is not None and log.num_rows > sample:
                log = log.take(pa.array(np.sort(rng.choice(log.num_rows, sample, replace=False))))
            picked[f] = log
        # One history read per view, for every feature's lookups; features logged by the same lookups
        # (one reader's) share one rebuild.
        served = [_ints(lg.column(SERVED_AT)) for lg in picked.values() if lg.num_rows]
        hist = None
        if served:
            first, last = min(int(x.min()) for x in served), max(int(x.max()) for x in served)
            hist = known_history(store, fv, feats, first, last)
        done: list[tuple[pa.ChunkedArray, np.ndarray]] = []
        for f, log in picked.items():
            ref = f"{view}:{f}"
            ids = log.column(REQUEST_ID)
            if fv.is_event_view:
                # A window value comes from many events, not one history row.
                vals, _, _ = rebuild(store, view, [f], log, hist)
                m = _feature_report(ref, log, vals[f], None, fv.join_keys, float(atol), float(rtol))
                _alert(reports, alerts, used, thresholds, ref, m)
                continue
            chosen = next((c for i, c in done if i.equals(ids)), None)
            if chosen is None:
                _, chosen, _ = rebuild(store, view, [f], log, hist)
                done.append((ids, chosen))
            if hist is None or hist.num_rows == 0:
                offline = pa.chunked_array([pa.nulls(log.num_rows, fv.get_field(f).dtype.arrow)])
            else:
                offline = hist.column(f).take(pa.array(chosen, mask=chosen < 0))
            m = _feature_report(ref, log, offline, chosen, fv.join_keys, float(atol), float(rtol))
            _alert(reports, alerts, used, thresholds, ref, m)
    return SkewReport(reports, alerts, used, lo, hi, source)


def _alert(
    reports: dict[str, dict[str, Any]],
    alerts: list[Alert],
    used: dict[str, dict[str, float | None]],
    thresholds: Mapping[str, Any] | None,
    ref: str,
    m: dict[str, Any],
) -> None:
    """Record feature ``ref``'s metrics ``m`` and the alerts its thresholds raise."""
    th = _thresholds(thresholds, ref)
    used[ref] = th
    reports[ref] = m
    if m["rows"] == 0:
        return
    for metric, limit in th.items():
        val = m.get(metric)
        if limit is None or val is None:
            continue
        if (val < limit) if metric in _LOWER_IS_WORSE else (val > limit):
            alerts.append(Alert(ref, metric, float(val), float(limit)))
