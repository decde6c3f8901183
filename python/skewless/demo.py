"""``skewless demo``: a card-payments feature store built end to end, with timings.

It makes users and merchants, a few hundred thousand transactions over 90 days ending now, and three
feature views: ``user_profile`` and ``user_txn_1d`` (written with ``store.write``, which feeds the history
and the online store in one call) and ``merchant_risk`` (a ``source=`` Parquet folder another job writes,
brought online by ``materialize``). Then it builds a point-in-time training set for a fraud model from
every transaction, serves lookups the way a scoring service would, and checks that the values served
equal the values a training set reconstructs for the same instant. Last, the skew watchdog: a fourth
view, ``user_basket`` (a 30-day average basket), is served by the store and by a hand-written legacy path
with the chapter's bug (a lifetime average); both are logged and ``check_skew`` names the feature the
legacy path gets wrong, while the store's own served vectors raise no alert.

Example:
    >>> import tempfile
    >>> from skewless.demo import run
    >>> summary = run(tempfile.mkdtemp(), events=5_000, say=lambda *a: None)
    >>> summary["training_rows"]
    5000
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .definitions import Entity, FeatureService, FeatureView, Field, Float64, Int64, String
from .errors import InvalidArgumentError
from .store import FeatureStore
from .window import Aggregation, window_aggregate

__all__ = ["run", "definitions"]

US = 1_000_000
DAY = 86_400 * US
TS = pa.timestamp("us", tz="UTC")


def definitions(merchant_source: str) -> list[Any]:
    """The demo's entities, views and model feature list."""
    user = Entity("user", join_keys=["user_id"], dtype=Int64, description="a card holder")
    merchant = Entity("merchant", join_keys=["merchant_id"], dtype=Int64, description="a shop")
    profile = FeatureView(
        "user_profile",
        [user],
        [Field("age", Int64), Field("credit_limit", Float64), Field("country", String)],
        ttl=None,
        description="slowly changing customer attributes",
        owner="kyc-team",
    )
    txn = FeatureView(
        "user_txn_1d",
        [user],
        [Field("txn_count_1d", Int64), Field("amount_sum_1d", Float64), Field("amount_max_1d", Float64)],
        ttl=dt.timedelta(days=7),
        created_timestamp_field="created_timestamp",
        description="a user's spending over the last completed day",
        owner="fraud-team",
    )
    risk = FeatureView(
        "merchant_risk",
        [merchant],
        [Field("fraud_rate_1d", Float64), Field("merchant_txn_1d", Int64)],
        ttl=dt.timedelta(days=30),
        source=merchant_source,
        description="daily merchant fraud rate, written by the risk team's batch job",
        owner="risk-team",
    )
    basket = FeatureView(
        "user_basket",
        [user],
        [Field("avg_basket_30d", Float64)],
        ttl=dt.timedelta(days=7),
        description="mean payment amount over the 30 days before each completed day (the definition)",
        owner="growth-team",
    )
    svc = FeatureService(
        "fraud_model",
        [
            "user_profile:age",
            "user_profile:credit_limit",
            "user_txn_1d:txn_count_1d",
            "user_txn_1d:amount_sum_1d",
            "user_txn_1d:amount_max_1d",
            "merchant_risk:fraud_rate_1d",
            "merchant_risk:merchant_txn_1d",
        ],
    )
    return [user, merchant, profile, txn, risk, basket, svc]


def _daily(events: pa.Table, key: str, aggs: list[tuple[str, str]], day0: int, now: int) -> pa.Table:
    """Per (key, day) aggregates, stamped at the end of the day; today is not over, so it is left out."""
    day = pc.divide(pc.subtract(pc.cast(events.column("ts"), pa.int64()), day0), DAY)
    t = events.append_column("day", day).group_by([key, "day"]).aggregate(aggs)
    end = pc.add(pc.multiply(pc.add(t.column("day"), 1), DAY), day0)
    t = t.append_column("event_timestamp", pc.cast(end, TS))
    return t.filter(pc.less_equal(end, now))


def run(
    folder: str, events: int = 300_000, *, seed: int = 42, say: Callable[..., None] = print
) -> dict[str, Any]:
    """Build the demo store in ``folder`` (replacing a previous demo there) and report with ``say``."""
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    n_users, n_merchants = max(events // 15, 10), max(events // 150, 5)
    now = int(time.time()) * US
    day0 = (now // DAY - 90) * DAY

    marker = os.path.join(folder, ".skewless-demo")
    if os.path.exists(os.path.join(folder, "registry.json")):
        if not os.path.exists(marker):
            raise InvalidArgumentError(
                f"{folder} holds a feature store the demo did not make; pick another --dir"
            )
        shutil.rmtree(folder)  # a previous demo run: start afresh
    os.makedirs(folder, exist_ok=True)
    open(marker, "w").close()
    # Recorded relative to the store folder, so the store reads it from wherever it is opened.
    rel_src = os.path.join("sources", "merchant_risk")
    src = os.path.join(folder, rel_src)
    os.makedirs(src)

    t = time.perf_counter()
    ts = np.sort(rng.integers(day0, now, events))
    # A third of the payments come from the busiest 5% of users.
    heavy = rng.random(events) < 0.33
    user_id = np.where(
        heavy, rng.integers(0, max(n_users // 20, 1), events), rng.integers(0, n_users, events)
    )
    merchant_id = rng.integers(0, n_merchants, events)
    amount = np.round(rng.lognormal(3.0, 1.0, events), 2)
    risky = rng.random(n_merchants) < 0.05
    fraud = rng.random(events) < np.where(risky[merchant_id], 0.08, 0.004)
    txns = pa.table(
        {
            "user_id": pa.array(user_id, pa.int64()),
            "merchant_id": pa.array(merchant_id, pa.int64()),
            "ts": pa.array(ts, TS),
            "amount": pa.array(amount),
            "is_fraud": pa.array(fraud),
        }
    )
    timings["generate"] = time.perf_counter() - t
    say(
        f"generated {events:,} transactions, {n_users:,} users, {n_merchants:,} merchants over 90 days "
        f"({timings['generate']:.2f} s)"
    )

    # The risk team's job writes its own Parquet; skewless reads it through source=.
    risk = _daily(
        txns.append_column("fraud_i", pc.cast(txns.column("is_fraud"), pa.int64())),
        "merchant_id",
        [("fraud_i", "mean"), ("fraud_i", "count")],
        day0,
        now,
    )
    risk = pa.table(
        {
            "merchant_id": risk.column("merchant_id"),
            "event_timestamp": risk.column("event_timestamp"),
            "fraud_rate_1d": risk.column("fraud_i_mean"),
            "merchant_txn_1d": risk.column("fraud_i_count"),
        }
    )
    pq.write_table(risk, os.path.join(src, "part-0.parquet"))

    store = FeatureStore(folder)
    t = time.perf_counter()
    report = store.apply(definitions(rel_src))
    say(f"applied definitions: {', '.join(report['created'])} ({time.perf_counter() - t:.3f} s)")

    # Profiles: one per user at sign-up, plus updates (credit limit raises) for a tenth of them.
    signup = day0 - rng.integers(DAY, 400 * DAY, n_users)
    upd = rng.random(n_users) < 0.1
    prof_ids = np.concatenate([np.arange(n_users), np.nonzero(upd)[0]])
    prof_ts = np.concatenate([signup, rng.integers(day0, now, int(upd.sum()))])
    profiles = pa.table(
        {
            "user_id": pa.array(prof_ids, pa.int64()),
            "event_timestamp": pa.array(prof_ts, TS),
            "age": pa.array(rng.integers(18, 90, prof_ids.size), pa.int64()),
            "credit_limit": pa.array(np.round(rng.choice([500.0, 1000.0, 2500.0, 5000.0], prof_ids.size))),
            "country": pa.array(rng.choice(["EE", "FI", "DE", "FR", "US"], prof_ids.size)),
        }
    )
    daily = _daily(txns, "user_id", [("amount", "count"), ("amount", "sum"), ("amount", "max")], day0, now)
    stats = pa.table(
        {
            "user_id": daily.column("user_id"),
            "event_timestamp": daily.column("event_timestamp"),
            # The nightly job lands a few minutes after the day closes.
            "created_timestamp": pc.add(daily.column("event_timestamp"), pa.scalar(dt.timedelta(minutes=7))),
            "txn_count_1d": daily.column("amount_count"),
            "amount_sum_1d": daily.column("amount_sum"),
            "amount_max_1d": daily.column("amount_max"),
        }
    )
    t = time.perf_counter()
    w1 = store.write("user_profile", profiles)
    w2 = store.write("user_txn_1d", stats)
    timings["write"] = time.perf_counter() - t
    nw = w1.rows + w2.rows
    say(
        f"store.write: {nw:,} rows into history + online store in {timings['write']:.2f} s "
        f"({nw / timings['write']:,.0f} rows/s)"
    )

    t = time.perf_counter()
    n_mat = store.materialize(None, dt.datetime.fromtimestamp(now / US + 1, dt.timezone.utc))
    timings["materialize"] = time.perf_counter() - t
    say(
        f"materialize: {sum(n_mat.values()):,} history rows -> online in {timings['materialize']:.2f} s "
        f"({', '.join(f'{k}={v:,}' for k, v in n_mat.items())})"
    )

    labels = txns.select(["user_id", "merchant_id", "ts", "amount", "is_fraud"]).rename_columns(
        ["user_id", "merchant_id", "event_timestamp", "amount", "is_fraud"]
    )
    svc = store.get_feature_service("fraud_model")
    t = time.perf_counter()
    train = store.get_historical_features(labels, svc)
    timings["training_set"] = time.perf_counter() - t
    covered = {
        f: 1 - train.column(f).null_count / train.num_rows for f in ("age", "txn_count_1d", "fraud_rate_1d")
    }
    say(
        f"get_historical_features: {train.num_rows:,} label rows x {len(svc.features)} features "
        f"from 3 views in "
        f"{timings['training_set']:.2f} s; non-null share: "
        + ", ".join(f"{k} {v:.0%}" for k, v in covered.items())
    )
    say("  (a transaction sees only days completed before it: no leakage; the 7-day TTL nulls stale stats)")

    reader = store.online_reader(svc)
    users = labels.column("user_id").to_numpy()[-1000:]
    merchants = labels.column("merchant_id").to_numpy()[-1000:]
    lat = []
    for u, m in zip(users.tolist(), merchants.tolist(), strict=False):
        s0 = time.perf_counter_ns()
        reader.get_numpy({"user_id": [u], "merchant_id": [m]})
        lat.append(time.perf_counter_ns() - s0)
    p50 = float(np.percentile(lat, 50)) / 1000
    s0 = time.perf_counter_ns()
    batch = reader.get_numpy({"user_id": users[:100].tolist(), "merchant_id": merchants[:100].tolist()})
    t100 = (time.perf_counter_ns() - s0) / 1000
    timings["online_p50_us"] = p50
    say(f"online_reader (7 features, 3 views): one entity p50 {p50:.1f} us; 100 entities {t100:.0f} us")
    sample = store.get_online_features(
        svc, {"user_id": users[:3].tolist(), "merchant_id": merchants[:3].tolist()}
    )
    for i, row in enumerate(sample.to_arrow().to_pylist()):
        say(
            f"  lookup {i}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )

    # Serving and training agree: reconstruct the served values offline at the same instant.
    as_of = dt.datetime.fromtimestamp(now / US, dt.timezone.utc)
    probe = {"user_id": users[:100].tolist(), "merchant_id": merchants[:100].tolist()}
    served, _ = reader.get_numpy(probe, as_of=as_of)
    ent = pa.table(
        {
            **{k: pa.array(v, pa.int64()) for k, v in probe.items()},
            "event_timestamp": pa.array([now] * 100, TS),
        }
    )
    offline = store.get_historical_features(ent, svc)
    off = np.column_stack(
        [
            pc.fill_null(pc.cast(offline.column(f), pa.float64()), np.nan).to_numpy()
            for f in reader.feature_names
        ]
    )
    same = int(np.sum(np.all((served == off) | (np.isnan(served) & np.isnan(off)), axis=1)))
    say(f"online == offline at the same instant for {same}/100 entity rows")
    del batch
    watch = _skew_watch(store, txns, daily, now, say)
    return {"training_rows": train.num_rows, "agree": same, "timings": timings, "written": nw, **watch}


def _skew_watch(
    store: FeatureStore, txns: pa.Table, daily: pa.Table, now: int, say: Callable[..., None]
) -> dict[str, Any]:
    """The chapter's ``avg_basket_size`` incident, caught from data: the store serves the defined 30-day
    average; a hand-written legacy path computes a lifetime average from the raw payments. Both log what
    they served, and ``check_skew`` names the feature only the legacy path gets wrong."""
    ref = "user_basket:avg_basket_30d"
    # The definition, computed by the window kernel at the end of each user's active days.
    labels = daily.select(["user_id", "event_timestamp"])
    events = txns.select(["user_id", "ts", "amount"]).rename_columns(["user_id", "event_timestamp", "amount"])
    win = window_aggregate(
        labels,
        events,
        on="event_timestamp",
        by="user_id",
        aggregations=[Aggregation("amount", "mean", window="30d")],
    )
    store.write(
        "user_basket",
        {
            "user_id": labels.column("user_id"),
            "event_timestamp": labels.column("event_timestamp"),
            "avg_basket_30d": win.column("amount_mean_30d"),
        },
    )
    as_of = dt.datetime.fromtimestamp(now / US, dt.timezone.utc)
    users = np.unique(txns.column("user_id").to_numpy()[-2000:])[:500]
    # The store's own serving path, logged.
    with store.online_reader([ref, "user_txn_1d:amount_sum_1d"], log=True) as reader:
        for u in users.tolist():
            reader.get_numpy([u], as_of=as_of)
    # The legacy path: its own code over the raw payments up to the last completed day, with the
    # incident's bug (every payment ever, where the definition says the last 30 days).
    cutoff = pa.scalar((now // DAY) * DAY, pa.int64())
    done = txns.filter(pc.less(pc.cast(txns.column("ts"), pa.int64()), cutoff))
    lifetime = done.group_by("user_id").aggregate([("amount", "mean")])
    probe = pa.table({"user_id": pa.array(users, pa.int64()), "i": np.arange(users.size)})
    legacy = probe.join(lifetime, "user_id", join_type="left outer").sort_by("i")
    store.log_served(
        {"user_id": legacy.column("user_id")}, {ref: legacy.column("amount_mean")}, as_of, source="legacy"
    )
    store.flush_logs()
    t = time.perf_counter()
    own = store.check_skew(source="online_reader")
    old = store.check_skew(source="legacy")
    secs = time.perf_counter() - t
    say(
        f"check_skew over {users.size} logged lookups per path in {secs:.2f} s: the store's own serving path "
        f"{'raises no alert' if own.ok else f'raises {len(own.alerts)} alert(s)!'}; "
        f"the legacy path raises {len(old.alerts)}:"
    )
    for a in old.alerts:
        say(f"  ALERT {a.feature}: {a.metric} = {a.value:.3g} (threshold {a.threshold:g})")
    worst = old.features[ref]["worst"][:1]
    for w in worst:
        shown = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in (w["online"], w["offline"])]
        say(f"  worst row: {w['entity']} was served {shown[0]}; the definition gives {shown[1]}")
        say(f"  {w['explain']}")
    return {
        "own_alerts": [a.feature for a in own.alerts],
        "legacy_alerts": sorted({a.feature for a in old.alerts}),
        "legacy_mismatch_rate": old.features[ref]["mismatch_rate"],
    }
