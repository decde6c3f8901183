"""The ``skewless`` command: init, apply, materialize, ls, describe, get, check-skew, verify, demo.

Example (shell)::

    skewless --store ./fs init
    skewless --store ./fs apply definitions.py
    skewless --store ./fs materialize            # incremental, up to now
    skewless --store ./fs get user_stats:spend 42
    skewless --store ./fs check-skew --since 1d --html skew.html   # exit 1 on an alert
    skewless --store ./fs verify                 # LMDB's pages of the online store; exit 2 on damage
    skewless demo --dir ./demo-store
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import runpy
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .definitions import Entity, FeatureService, FeatureView
from .errors import InvalidArgumentError, SkewlessError, UnknownFeatureError
from .transforms import TransformView, spec_outputs

__all__ = ["main"]


def _parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"{text!r} is not an ISO 8601 time like 2026-01-31T00:00:00+00:00"
        ) from None
    if t.tzinfo is None:
        from .errors import NaiveTimestampError

        raise NaiveTimestampError(f"{text!r} has no timezone; add one, e.g. {text}+00:00")
    return t


def _open(args: argparse.Namespace, create: bool = False) -> Any:
    from .store import FeatureStore

    return FeatureStore(args.store, create=create)


def cmd_init(args: argparse.Namespace) -> int:
    existed = os.path.exists(os.path.join(args.store, "registry.json"))
    _open(args, create=True)
    print(f"{'store already at' if existed else 'initialized store in'} {os.path.abspath(args.store)}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    store = _open(args)
    if not os.path.isfile(args.file):
        raise InvalidArgumentError(f"no file {args.file!r}")
    found = runpy.run_path(args.file)
    objs = [v for v in found.values() if isinstance(v, (Entity, FeatureView, TransformView, FeatureService))]
    if not objs:
        raise InvalidArgumentError(
            f"{args.file} defines no Entity, FeatureView, TransformView or FeatureService"
        )
    # Several module names may refer to one object: apply each once.
    uniq = list({(type(o).__name__, o.name): o for o in objs}.values())
    rep = store.apply(uniq)
    for k in ("created", "updated", "unchanged"):
        if rep[k]:
            print(f"{k}: {', '.join(rep[k])}")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    store = _open(args)
    end = _parse_time(args.end) if args.end else dt.datetime.now(dt.timezone.utc)
    views = args.views.split(",") if args.views else None
    t = time.perf_counter()
    if args.start:
        done = store.materialize(_parse_time(args.start), end, views)
    else:
        done = store.materialize_incremental(end, views)
    secs = time.perf_counter() - t
    n = sum(done.values())
    for v, c in done.items():
        print(f"{v}: {c:,} rows")
    print(f"materialized {n:,} rows in {secs:.2f} s ({n / max(secs, 1e-9):,.0f} rows/s)")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    store = _open(args)
    for e in store.list_entities():
        print(f"entity   {e.name} (v{store.version(e.name, 'entities')}): keys {e.join_keys}")
    for fv in store.list_feature_views():
        ents = [e.name for e in fv.entities]
        if fv.is_event_view:
            # An event view serves its aggregates; its schema is the raw event columns.
            what = f"event view, aggregates {[a.name for a in fv.aggregations]}, entities {ents}"
        else:
            ttl = "none" if fv.ttl is None else str(fv.ttl)
            what = f"{len(fv.schema)} features, entities {ents}, ttl {ttl}"
        print(
            f"view     {fv.name} (v{store.version(fv.name)}): {what}"
            f"{', source ' + fv.source if fv.source else ''}"
        )
    for name, tv in sorted(store.registry.data.get("transform_views", {}).items()):
        print(f"tview    {name} (v{tv['version']}): outputs {spec_outputs(tv['spec'])}")
    for fv in store.list_feature_views():
        for v in store.list_statistics(fv.name):
            st = store.get_statistics(fv.name, v)
            span = f"[{st.start or '-'}, {st.end or '-'})"
            print(f"stats    {fv.name} v{v}: {st.rows:,} rows in {span}, features {st.features}")
    for s in store.list_feature_services():
        print(f"service  {s.name} (v{store.version(s.name, 'feature_services')}): {len(s.features)} features")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    store = _open(args)
    fv = store.get_feature_view(args.view)
    n_files, rows = store.offline.row_count(fv.name, fv.source)
    info = {
        "version": store.version(fv.name),
        **fv.to_spec(),
        "history": {"files": n_files, "rows": rows},
        "materialized_until_us": store.registry.materialized_until(fv.name),
    }
    print(json.dumps(info, indent=2))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    store = _open(args)
    view, _, feat = args.feature.partition(":")
    if not feat:
        raise InvalidArgumentError(f"{args.feature!r} is not VIEW:FEATURE")
    fv = store.get_feature_view(view)
    if len(args.key) != len(fv.join_keys):
        raise InvalidArgumentError(
            f"view {view!r} has join keys {fv.join_keys}: give {len(fv.join_keys)} KEY value(s)"
        )
    types = store.registry.key_types(fv)
    row: dict[str, list[Any]] = {}
    for k, v, t in zip(fv.join_keys, args.key, types, strict=False):
        if t is not None and str(t).startswith(("int", "uint")):
            try:
                row[k] = [int(v)]
            except ValueError:
                raise InvalidArgumentError(f"key {k!r} is an integer; {v!r} is not") from None
        elif t is not None and str(t) == "binary":
            row[k] = [v.encode()]
        else:
            row[k] = [v]
    resp = store.get_online_features([args.feature], row)
    from .online import Status

    status = Status(int(resp.statuses[feat][0])).name.lower()
    val = resp.to_dict()[feat][0]
    print(json.dumps({"feature": args.feature, "key": row, "value": val, "status": status}, default=str))
    return 0 if status == "present" else 1


def cmd_verify(args: argparse.Namespace) -> int:
    # Opening the online store checks its pages already (rust/src/online/verify.rs); verify() says what
    # was checked. A damaged store raises StorageError, which main() prints with its repair (exit 2).
    store = _open(args)
    online = os.path.join(store.path, "online")
    if not os.path.isdir(online):
        print(json.dumps({"online": "absent"}))
        return 0
    from .online import OnlineStore

    print(json.dumps({"online": "ok", **OnlineStore(online).verify()}))
    return 0


def cmd_check_skew(args: argparse.Namespace) -> int:
    from .durations import to_micros

    store = _open(args)
    start = None
    if args.since:
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(microseconds=to_micros(args.since, "--since"))
    features = args.features.split(",") if args.features else None
    report = store.check_skew(start=start, features=features, sample=args.sample, source=args.source)
    if args.html:
        report.to_html(args.html)
    print(report.to_json() if args.json else report.to_markdown(), end="" if not args.json else "\n")
    return 1 if report.alerts else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    t = time.perf_counter()
    print(f"skewless demo: building a fraud-detection feature store in {os.path.abspath(args.dir)}")
    run(args.dir, events=args.events)
    print(f"done in {time.perf_counter() - t:.1f} s. Try: skewless --store {args.dir} ls")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skewless", description="An embedded feature store: one folder, one definition."
    )
    p.add_argument("--store", default=".", help="the store folder (default: the current directory)")
    p.add_argument("--version", action="version", version=f"skewless {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init", help="create an empty store").set_defaults(fn=cmd_init)
    a = sub.add_parser("apply", help="register the definitions a Python file makes")
    a.add_argument("file")
    a.set_defaults(fn=cmd_apply)
    m = sub.add_parser("materialize", help="copy history into the online store (incremental without --start)")
    m.add_argument("--start", help="inclusive ISO time; without it, continue from the last incremental run")
    m.add_argument("--end", help="exclusive ISO time (default: now)")
    m.add_argument("--views", help="comma-separated view names (default: every online view)")
    m.set_defaults(fn=cmd_materialize)
    sub.add_parser("ls", help="list entities, views and services").set_defaults(fn=cmd_ls)
    d = sub.add_parser("describe", help="a view's definition, version and history size")
    d.add_argument("view")
    d.set_defaults(fn=cmd_describe)
    g = sub.add_parser("get", help="look one feature up in the online store")
    g.add_argument("feature", metavar="VIEW:FEATURE")
    g.add_argument("key", nargs="+", metavar="KEY")
    g.set_defaults(fn=cmd_get)
    c = sub.add_parser(
        "check-skew", help="rebuild the logged served vectors offline and compare (exit 1 on an alert)"
    )
    c.add_argument("--since", help="only vectors served in this last duration, e.g. 1d, 12h (default: all)")
    c.add_argument("--features", help="comma-separated VIEW:FEATURE references (default: every logged one)")
    c.add_argument("--source", help="only vectors logged under this source label")
    c.add_argument("--sample", type=int, help="check at most this many logged rows per feature")
    c.add_argument("--html", help="also write a self-contained HTML report to this file")
    c.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
    c.set_defaults(fn=cmd_check_skew)
    sub.add_parser(
        "verify", help="check the online store's LMDB pages, as opening it does (exit 2 on damage)"
    ).set_defaults(fn=cmd_verify)
    de = sub.add_parser("demo", help="build a demo store end to end and print timings")
    de.add_argument(
        "--dir", default="skewless-demo", help="folder for the demo store (default: ./skewless-demo)"
    )
    de.add_argument("--events", type=int, default=300_000, help="number of transactions (default 300000)")
    de.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a skewless error, with its message)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (SkewlessError, UnknownFeatureError) as e:
        print(f"skewless: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `skewless describe v | head`: the reader left, nothing more to say
        return 0


if __name__ == "__main__":
    sys.exit(main())
