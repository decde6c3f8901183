"""Materialization: bringing the online store in line with the history.

The online store keeps the latest (timestamp, created) value per key, so replaying history rows older
than what it holds changes nothing, and running a materialization twice is harmless. Files are replayed
in write order (by their smallest write sequence, not their names), one online write per file (or per
tie-free chunk of a sorted file): the online store's tie rule (last row within a write, first write
across writes) then picks what retrieval picks (offline.py, "Tie order"). An event view's window state
is rebuilt (``start`` None) or merged with the rows in range instead (``skewless.events``).

Example:
    >>> import tempfile, datetime as dt
    >>> import pyarrow as pa
    >>> from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64
    >>> s = FeatureStore(tempfile.mkdtemp())
    >>> u = Entity("user", dtype=Int64)
    >>> fv = FeatureView("v", [u], [Field("x", Float64)])
    >>> _ = s.apply([u, fv])
    >>> T = pa.timestamp("us", tz="UTC")
    >>> rows = pa.table({"user_id": [1], "event_timestamp": pa.array([10], T), "x": [1.5]})
    >>> _ = s.offline.append("v", rows)  # history only, as a process that died before its online write
    >>> materialize_view(s.offline, s.registry, s._online(), fv, None, 11)
    1
"""

from __future__ import annotations

import sys
import time

import pyarrow as pa

from . import history
from .definitions import FeatureView
from .events import materialize_events
from .imputation import previous_rows
from .normalize import normalize_rows
from .offline import OfflineStore
from .online import OnlineStore
from .registry import Registry

__all__ = ["materialize_view", "MATERIALIZE_BATCH"]

#: Rows per online write of a sorted (compacted) file during materialize: large enough to amortize
#: the commit, small enough to bound memory.
MATERIALIZE_BATCH = 1 << 20


def materialize_view(
    offline: OfflineStore, registry: Registry, online: OnlineStore, fv: FeatureView, lo: int | None, hi: int
) -> int:
    """Write the view's history rows with ``lo <= timestamp < hi`` to the online store; returns the
    rows read. The caller holds the store's writer lock."""
    files = offline.write_order(fv.name, fv.source)
    if not files:
        return 0
    if fv.is_event_view:
        return materialize_events(offline, registry, online, fv, lo, hi)
    cols = fv.stored_columns
    bar = _Progress(f"materialize {fv.name}") if sys.stderr.isatty() else None
    n = 0
    for path in files:
        scan = history.scan(offline, registry, fv, cols, lo, hi, False, files=[path])
        batches = [b for b in scan if b.num_rows]
        if not batches:
            continue
        t = history.to_stored(registry, fv, pa.Table.from_batches(batches), cols)
        if fv.source is not None:
            t, _ = normalize_rows(fv, registry.key_types(fv), t, f"source {fv.source!r}")
        chunks = _tie_free_chunks(t, fv) if offline.is_sorted(path) else [t]
        for c in chunks:
            online.write(
                fv.name,
                c,
                keys=fv.join_keys,
                timestamp=fv.timestamp_field,
                created_timestamp=fv.created_timestamp_field,
                also=previous_rows(fv, c),
            )
            n += c.num_rows
            if bar:
                bar.update(n)
    if bar:
        bar.close(n)
    return n


def _tie_free_chunks(t: pa.Table, fv: FeatureView) -> list[pa.Table]:
    """Split a table sorted by (keys, ts, created, tie rank) into chunks of about MATERIALIZE_BATCH rows,
    never between two rows of one full tie (they must meet in one online write, where the last one, the
    winner, wins)."""
    tie_cols = fv.tie_columns
    out, start, n = [], 0, t.num_rows
    while n - start > MATERIALIZE_BATCH:
        cut = start + MATERIALIZE_BATCH
        # Ties are adjacent in a sorted file and rare: step over the few rows equal to the one before.
        while cut < n and all(t.column(c)[cut] == t.column(c)[cut - 1] for c in tie_cols):
            cut += 1
        out.append(t.slice(start, cut - start))
        start = cut
    out.append(t.slice(start))
    return out


class _Progress:
    """A one-line progress display for terminals (no dependency)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.perf_counter()

    def update(self, n: int) -> None:
        dt_ = time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.label}: {n:,} rows ({n / max(dt_, 1e-9):,.0f} rows/s)")
        sys.stderr.flush()

    def close(self, n: int) -> None:
        self.update(n)
        sys.stderr.write("\n")
