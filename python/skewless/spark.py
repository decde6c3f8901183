"""Scale-out on Apache Spark: the same Rust kernels, run on buckets of keys inside Spark tasks.

Nothing is re-implemented in Spark SQL (a second implementation is the logical skew this project
removes). Spark only moves rows: each side gets a bucket number, a hash of its join keys, the two sides
are co-grouped by it (``groupBy(bucket).cogroup(...).applyInArrow``), and every bucket's rows go as
Arrow tables through the local code, :func:`skewless.asof_join` or :func:`skewless.retrieval.retrieve`.
Every row of a key lands in one bucket, so each bucket's answer is the local answer for its keys.

Skewed keys. A key with more than ``skew_rows`` left rows (entity rows) is split by time: its left rows
are cut at approximate quantiles of their time into sub-buckets of about ``skew_rows`` rows, each its
own group (its own task when the shuffle has partitions enough). Each of the key's right rows goes to
the sub-bucket of its own time; besides, a sub-bucket receives the rows at the latest time of the
nearest earlier sub-bucket that has right rows (all of them: a tie of timestamps is decided inside the
kernel), for ``backward`` and ``nearest``, and those at the earliest time of the nearest later one, for
``forward`` and ``nearest``. That is every row a match can come from, whatever the tolerance, so split
and unsplit runs agree exactly. Finding hot keys costs one aggregation over the left; ``skew_rows=None``
skips it (every key then stays whole in one bucket, whatever its size). The right side is not counted:
a key with few left rows but a huge history stays whole. The keys of an event view (window aggregates)
are never split: a sub-bucket would need every event of its windows, not only the boundary rows, so a hot
key of an event view runs in one task (split such a training set by time yourself, one Spark job per
range, if one entity dominates it).

Order. A Spark DataFrame has no row order of its own; :func:`asof_join`'s rows come bucket by bucket.
:func:`get_historical_features` sorts its result back into ``entity_df``'s order (``keep_order=True``,
one more sort), or leaves it in bucket order (``keep_order=False``).

Threads. In each task the Rust kernels run on ``spark.task.cpus`` threads (:mod:`skewless.threads`), not
on every core of the executor's machine, which the other tasks beside it share.

Errors. Arguments and the request are checked on the driver, before any Spark job, by running the local
code on empty tables of the inputs' schemas: the same :mod:`skewless.errors` exceptions as locally. An
error that depends on values (a key value that does not fit the view's key type) is raised in a task,
and reaches the driver as Spark's ``PythonException`` whose message names the skewless error.

Example (needs pyspark and Java; see the README, "Running on Spark")::

    from pyspark.sql import SparkSession
    import skewless.spark
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    labels = spark.read.parquet("labels.parquet")
    train = skewless.spark.get_historical_features(spark, "my_store", labels, ["user_stats:spend"])
    train.write.parquet("train.parquet")
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from functools import reduce
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import history
from .asof import asof_join as _local_asof_join
from .definitions import FeatureService, FeatureView
from .errors import (
    ColumnClashError,
    DtypeError,
    InvalidArgumentError,
    MissingColumnError,
    NaiveTimestampError,
    RegistryError,
)
from .normalize import column_name, flag
from .offline import SEQ, OfflineStore, corrupt
from .refs import resolve
from .registry import Registry
from .retrieval import retrieve
from .threads import num_threads, set_num_threads

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["asof_join", "get_historical_features", "DEFAULT_SKEW_ROWS"]

#: The bucket (co-group) number of a row. Reserved: an input with a column of this name is refused.
BUCKET = "__skewless_bucket__"
#: The entity row's position, carried through get_historical_features to restore the order.
ROW = "__skewless_row__"
_ON = "__skewless_on__"
_OFF = "__skewless_first_group__"
_BOUNDS = "__skewless_bounds__"
_SRC = "__skewless_src_on__"
_DST = "__skewless_dst__"
_SUB = "__skewless_sub__"
_RESERVED = (BUCKET, ROW, _ON, _OFF, _BOUNDS, _SRC, _DST, _SUB)

#: Default ``skew_rows``: a key with more left rows than this is split by time into sub-buckets.
DEFAULT_SKEW_ROWS = 1 << 20
#: percentile_approx's accuracy for the split points (relative rank error 1/accuracy).
_QUANTILE_ACCURACY = 10_000
_DAY_US = 86_400_000_000


def _spark() -> Any:
    try:
        import pyspark.sql.functions as functions
        import pyspark.sql.types as types
        from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    except ImportError as e:  # pragma: no cover - the extra is installed wherever this runs in CI
        raise ImportError(
            f"skewless.spark needs pyspark ({e}); install it with `pip install 'skewless[spark]'` and a Java "
            "runtime (17 or later) for Spark"
        ) from None

    class _Mod:
        F = functions
        T = types

    _Mod.from_arrow_type = staticmethod(from_arrow_type)  # type: ignore[attr-defined]
    _Mod.to_arrow_schema = staticmethod(to_arrow_schema)  # type: ignore[attr-defined]
    return _Mod


def _arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema Spark hands a task for ``df`` (timestamps as UTC instants)."""
    return _spark().to_arrow_schema(df.schema, timezone="UTC")


def _spark_type(t: pa.DataType, what: str) -> Any:
    if pa.types.is_fixed_size_list(t):
        t = pa.list_(t.value_type)
    try:
        return _spark().from_arrow_type(t, prefer_timestamp_ntz=False)
    except Exception as e:  # pyspark raises its own error classes for unsupported types
        raise DtypeError(f"{what} is {t}, which Spark has no type for ({e})") from None


def _size_threads() -> None:
    """In a task: run the kernels on the task's cores (``spark.task.cpus``), not on every core."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    want = tc.cpus() if tc is not None else None
    if want and num_threads() != want:
        set_num_threads(want)


def _check_free(df: DataFrame, what: str) -> None:
    taken = [c for c in df.columns if c in _RESERVED]
    if taken:
        raise ColumnClashError(f"{what} has column(s) {taken}, reserved by skewless.spark; rename them")


def _buckets(spark: SparkSession, buckets: Any) -> int:
    if buckets is None:
        return max(1, int(spark.conf.get("spark.sql.shuffle.partitions") or 200))
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise InvalidArgumentError(f"buckets must be a positive int (or None), got {buckets!r}")
    return buckets


def _skew_rows(skew_rows: Any) -> int | None:
    if skew_rows is None:
        return None
    if not isinstance(skew_rows, int) or isinstance(skew_rows, bool) or skew_rows < 1:
        raise InvalidArgumentError(
            f"skew_rows must be a positive int (or None: never split), got {skew_rows!r}"
        )
    return skew_rows


def _key(df: DataFrame, name: str) -> Column:
    """A key column in the form both sides hash alike: integers and booleans as bigint (the kernel
    compares int32 with int64, and booleans with integer keys as 0/1), the rest as it is."""
    S = _spark()
    t = df.schema[name].dataType
    if isinstance(t, (S.T.IntegralType, S.T.BooleanType)):
        return S.F.col(name).cast("long")
    return S.F.col(name)


def _micros(df: DataFrame, name: str) -> Column:
    """A time column as a number, in the same unit on both sides: timestamps and dates as UTC
    microseconds (a date is its 00:00 UTC, as locally), integers as they are."""
    S = _spark()
    t = df.schema[name].dataType
    c = S.F.col(name)
    if isinstance(t, S.T.DateType):
        return S.F.unix_date(c).cast("long") * _DAY_US
    if isinstance(t, (S.T.TimestampType, S.T.TimestampNTZType)):
        return S.F.unix_micros(c)
    return c.cast("long")


def _groups(
    left: DataFrame,
    right: DataFrame,
    keys: Sequence[str],
    left_on: str,
    right_on: str,
    direction: str,
    buckets: int,
    skew_rows: int | None,
) -> tuple[DataFrame, DataFrame]:
    """Both sides with their group number ``BUCKET`` (see the module docstring, "Skewed keys"): a hash
    of the keys modulo ``buckets``, or for a hot key one of its time sub-buckets, numbered from
    ``buckets`` on. Right rows with a null key are dropped (they match nothing); left rows with one are
    spread by their time (they match nothing either, wherever they go)."""
    S = _spark()
    F = S.F
    kn = [f"__skewless_k{i}__" for i in range(len(keys))]
    lk = left.withColumns({n: _key(left, k) for n, k in zip(kn, keys, strict=True)}).withColumn(
        _ON, _micros(left, left_on)
    )
    rk = right.withColumns({n: _key(right, k) for n, k in zip(kn, keys, strict=True)}).withColumn(
        _ON, _micros(right, right_on)
    )
    has_key = reduce(lambda a, b: a & b, [F.col(n).isNotNull() for n in kn])
    rk = rk.where(has_key)
    hashed = F.pmod(F.xxhash64(*[F.col(n) for n in kn]), F.lit(buckets))
    left_bucket = F.when(has_key, hashed).otherwise(F.pmod(F.xxhash64(F.col(_ON)), F.lit(buckets)))
    lcols, rcols = list(left.columns), list(right.columns)

    hot = _hot_keys(lk, kn, skew_rows)
    if hot is None:
        return (
            lk.withColumn(BUCKET, left_bucket).select(*lcols, BUCKET),
            rk.withColumn(BUCKET, hashed).select(*rcols, BUCKET),
        )
    spark = left.sparkSession
    table = spark.createDataFrame(
        [(*k, off, bounds) for k, (off, bounds) in hot.items()],
        S.T.StructType(
            [lk.schema[n] for n in kn]
            + [S.T.StructField(_OFF, S.T.LongType()), S.T.StructField(_BOUNDS, S.T.ArrayType(S.T.LongType()))]
        ),
    )
    # The sub-bucket of a row: how many of its key's split points are <= its time (0 for a null time).
    sub = F.size(F.filter(F.col(_BOUNDS), lambda b: b <= F.col(_ON)))
    group = F.lit(buckets) + F.col(_OFF) + sub
    lh = lk.join(F.broadcast(table), kn, "left")
    lout = lh.withColumn(BUCKET, F.when(F.col(_OFF).isNotNull(), group).otherwise(left_bucket))
    rh = rk.join(F.broadcast(table), kn, "left")
    rout = rh.withColumn(BUCKET, F.when(F.col(_OFF).isNotNull(), group).otherwise(hashed))

    # Each sub-bucket also needs the rows a match can come from outside its time range: the latest
    # tie of the nearest earlier sub-bucket with rows (backward, nearest), the earliest tie of the
    # nearest later one (forward, nearest).
    hot_right = rh.where(F.col(_OFF).isNotNull()).withColumn(_SUB, sub)
    ends = hot_right.groupBy(*kn, _SUB).agg(F.min(_ON).alias("lo"), F.max(_ON).alias("hi")).collect()
    filled: dict[tuple[Any, ...], dict[int, tuple[int, int]]] = {}
    for r in ends:
        if r["lo"] is not None:
            filled.setdefault(tuple(r[n] for n in kn), {})[r[_SUB]] = (r["lo"], r["hi"])
    extra = []
    for k, (off, bounds) in hot.items():
        have = sorted(filled.get(k, {}))
        subs = filled.get(k, {})
        for j in range(len(bounds) + 1):
            if direction in ("backward", "nearest"):
                before = [i for i in have if i < j]
                if before:
                    extra.append((*k, subs[before[-1]][1], buckets + off + j))
            if direction in ("forward", "nearest"):
                after = [i for i in have if i > j]
                if after:
                    extra.append((*k, subs[after[0]][0], buckets + off + j))
    if extra:
        links = spark.createDataFrame(
            extra,
            S.T.StructType(
                [lk.schema[n] for n in kn]
                + [S.T.StructField(_SRC, S.T.LongType()), S.T.StructField(_DST, S.T.LongType())]
            ),
        )
        copies = (
            hot_right.join(F.broadcast(links), [*kn], "inner")
            .where(F.col(_ON) == F.col(_SRC))
            .withColumn(BUCKET, F.col(_DST))
            .select(*rcols, BUCKET)
        )
        rfinal = rout.select(*rcols, BUCKET).unionByName(copies)
    else:
        rfinal = rout.select(*rcols, BUCKET)
    return lout.select(*lcols, BUCKET), rfinal


def split_points(quantiles: list[int], parts: int) -> list[int]:
    """The times that cut a hot key's rows into about ``parts`` sub-buckets of equal size, from its
    quantiles at ``i / g`` for ``i`` in ``1..g-1`` (``g`` = ``len(quantiles) + 1``; ``parts`` <= ``g``):
    the quantiles nearest to ``i / parts``, without repeats. A sub-bucket holds the times from one
    split point (inclusive) to the next, so equal times are never cut apart.

    Example:
        >>> split_points([10, 20, 30, 40, 50, 60, 70], 4)
        [20, 40, 60]
        >>> split_points([5, 5, 5], 4)  # one time holds most rows: it cannot be cut
        [5]
    """
    if not quantiles:
        return []
    grid = len(quantiles) + 1
    return sorted({quantiles[min(grid - 2, round(i * grid / parts) - 1)] for i in range(1, parts)})


def _hot_keys(
    lk: DataFrame, kn: list[str], skew_rows: int | None
) -> dict[tuple[Any, ...], tuple[int, list[int]]] | None:
    """{key: (its first sub-bucket number, its split points)} for every key with more than
    ``skew_rows`` left rows, or None when there is none."""
    if skew_rows is None:
        return None
    F = _spark().F
    has_key = reduce(lambda a, b: a & b, [F.col(n).isNotNull() for n in kn])
    counts = lk.where(has_key).groupBy(*kn).count().where(F.col("count") > skew_rows).collect()
    if not counts:
        return None
    parts = {tuple(r[n] for n in kn): math.ceil(r["count"] / skew_rows) for r in counts}
    grid = max(parts.values())
    fractions = [i / grid for i in range(1, grid)]  # every key's quantiles on one grid: one aggregation
    table = lk.sparkSession.createDataFrame([k for k in parts], lk.select(*kn).schema)
    qs = (
        lk.join(F.broadcast(table), kn, "inner")
        .groupBy(*kn)
        .agg(F.percentile_approx(_ON, fractions, _QUANTILE_ACCURACY).alias("q"))
        .collect()
    )
    out: dict[tuple[Any, ...], tuple[int, list[int]]] = {}
    off = 0
    for r in sorted(qs, key=lambda r: str([r[n] for n in kn])):
        k = tuple(r[n] for n in kn)
        bounds = split_points([v for v in (r["q"] or []) if v is not None], parts[k])
        out[k] = (off, bounds)
        off += len(bounds) + 1
    return out


def asof_join(
    left: DataFrame,
    right: DataFrame,
    *,
    on: str,
    by: str | Sequence[str],
    direction: str = "backward",
    tolerance: _dt.timedelta | int | str | None = None,
    allow_exact_matches: bool = True,
    tie_breaker: str | None = None,
    sequence: str | None = None,
    suffix: str | None = None,
    buckets: int | None = None,
    skew_rows: int | None = DEFAULT_SKEW_ROWS,
) -> DataFrame:
    """:func:`skewless.asof_join` on Spark DataFrames: the same arguments and the same rows (in bucket
    order: see the module docstring), computed by the same kernel on buckets of ``by`` keys.

    ``buckets``: how many hash buckets the keys are spread over (default: ``spark.sql.shuffle.partitions``);
    each is one call of the kernel and must fit a task's memory (both sides' rows of its keys).
    ``skew_rows``: a key with more left rows than this is split by time (module docstring, "Skewed
    keys"); None never splits. ``by`` is required: it is what spreads the work. Among full ties (key,
    ``on``, ``tie_breaker``) the greatest ``sequence`` wins; without a ``sequence`` the winner of such a
    tie depends on the order rows reach the task, which Spark does not fix.

    Example::

        out = skewless.spark.asof_join(labels_df, features_df, on="ts", by="user",
                                       tolerance="30d", tie_breaker="created")
    """
    S = _spark()
    by_list = [by] if isinstance(by, str) else list(by)
    if not by_list:
        raise InvalidArgumentError("by must name at least one key column: the buckets are hashes of it")
    _check_free(left, "the left DataFrame")
    _check_free(right, "the right DataFrame")
    spark = left.sparkSession
    nb = _buckets(spark, buckets)
    skew = _skew_rows(skew_rows)
    kwargs: dict[str, Any] = dict(
        on=on,
        by=by_list,
        direction=direction,
        tolerance=tolerance,
        allow_exact_matches=allow_exact_matches,
        tie_breaker=tie_breaker,
        sequence=sequence,
        suffix=suffix,
    )
    # The local join on empty tables of both schemas: every argument and type is checked here, with the
    # local errors, and it names the output columns.
    la, ra = _arrow_schema(left), _arrow_schema(right)
    probe = _local_asof_join(la.empty_table(), ra.empty_table(), **kwargs)
    dropped = {on, *by_list}
    right_fields = [f for f in right.schema.fields if f.name not in dropped]
    fields = list(left.schema.fields) + [
        S.T.StructField(name, f.dataType, True)
        for name, f in zip(probe.column_names[len(left.columns) :], right_fields, strict=True)
    ]
    out_schema = S.T.StructType(fields)
    target = S.to_arrow_schema(out_schema, timezone="UTC")

    def run(lt: pa.Table, rt: pa.Table) -> pa.Table:
        _size_threads()
        out = _local_asof_join(lt.drop_columns([BUCKET]), rt.drop_columns([BUCKET]), **kwargs)
        return out.cast(target)

    lg, rg = _groups(left, right, by_list, on, on, direction, nb, skew)
    return lg.groupBy(BUCKET).cogroup(rg.groupBy(BUCKET)).applyInArrow(run, out_schema)


def _read_history(
    spark: SparkSession,
    offline: OfflineStore,
    registry: Registry,
    fv: FeatureView,
    cols: list[str],
    tmin: int,
    tmax: int,
) -> DataFrame | None:
    """The view's history rows a label in [tmin, tmax] can match, as history.for_join reads them
    locally: ``cols`` and the write sequence ``__seq__`` (read, or derived from the file number and the
    row's position for files without it: offline.py, "Write sequence"). None when it has no files."""
    S = _spark()
    F = S.F
    numbered = offline.numbered_files(fv.name, fv.source)
    if not numbered:
        return None
    paths = [os.path.abspath(p) for _, p in numbered]
    schemas = []
    for p in paths:
        try:
            schemas.append(pq.read_schema(p))
        except (OSError, pa.ArrowException) as e:
            raise corrupt(fv.name, [p], e) from None
    # As the local read: the newest file's types (a store's own files all have the view's schema).
    newest = schemas[-1]
    ts = fv.timestamp_field
    if ts in newest.names:
        t = newest.field(ts).type
        if not pa.types.is_timestamp(t) or t.tz is None:
            raise NaiveTimestampError(
                f"history column {ts!r} of {fv.name!r} is {t}, not a timezone-aware timestamp; rewrite it "
                "with a zone (e.g. UTC)"
            )
    missing = [c for c in cols if c not in newest.names]
    if missing:
        raise MissingColumnError(f"the history of {fv.name!r} has no column(s) {missing}")
    fields = [S.T.StructField(c, _spark_type(newest.field(c).type, f"history column {c!r}")) for c in cols]
    fields.append(S.T.StructField(SEQ, S.T.LongType()))
    df = spark.read.schema(S.T.StructType(fields)).parquet(*paths)
    lo = history.join_low(fv, tmin)
    cond = F.col(ts) <= F.timestamp_micros(F.lit(tmax))
    if lo is not None:
        cond = cond & (F.col(ts) >= F.timestamp_micros(F.lit(lo)))
    legacy = [(n, p) for (n, _), p, s in zip(numbered, paths, schemas, strict=True) if SEQ not in s.names]
    if legacy:
        # Spark names a file by its URI (percent-encoded; '+' kept as it is); decode it back to the path.
        name = F.regexp_replace(
            F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), r"\+", "%2B")), "^file:", ""
        )
        number = F.element_at(F.create_map(*[F.lit(x) for n, p in legacy for x in (p, n)]), name)
        derived = F.when(
            number.isNull(),
            F.raise_error(
                F.concat(F.lit("skewless: a history file Spark read is not in the listing: "), name)
            ),
        ).otherwise(F.shiftleft(number.cast("long"), 32) + F.col("_metadata.row_index"))
        df = df.withColumn(SEQ, F.coalesce(F.col(SEQ), derived))
    return df.where(cond)


def _retrieve_task(
    registry: Registry,
    fv: FeatureView,
    feats: list[str],
    hist_cols: list[str],
    key_types: dict[str, list[pa.DataType | None]],
    full_feature_names: bool,
    timestamp_column: str,
    target: pa.Schema,
) -> Any:
    """What a task runs on one bucket of one view: the local retrieval of its entity rows."""

    def run(lt: pa.Table, rt: pa.Table) -> pa.Table:
        _size_threads()
        h = history.to_stored(registry, fv, rt.drop_columns([BUCKET]), hist_cols)
        out = retrieve(
            lt.drop_columns([BUCKET]),
            {fv.name: h},
            [(fv, feats)],
            key_types=key_types,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
        )
        return out.cast(target)

    return run


def get_historical_features(
    spark: SparkSession,
    store_path: str | os.PathLike[str],
    entity_df: DataFrame,
    features: Sequence[str] | FeatureService,
    *,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
    buckets: int | None = None,
    skew_rows: int | None = DEFAULT_SKEW_ROWS,
    keep_order: bool = True,
) -> DataFrame:
    """:meth:`FeatureStore.get_historical_features` on Spark: ``entity_df`` (a Spark DataFrame) with
    the features as of each row's time, the same values as the local call, computed by
    :func:`skewless.retrieval.retrieve` on buckets of each view's keys.

    Each view's history is read by Spark from the store's Parquet files (``store_path`` must be a folder
    the driver lists and every executor reads at the same path: a shared mount), only the rows in the
    time range the entity rows need, with each row's write sequence: TTL, ties (created timestamp, then
    write sequence, never file order) and the output types are the local ones. ``keep_order``: the
    result comes in ``entity_df``'s order (as ``monotonically_increasing_id`` numbers it); False leaves
    it in bucket order and saves a sort. ``buckets`` and ``skew_rows`` as in :func:`asof_join`.

    Example::

        train = skewless.spark.get_historical_features(spark, "/mnt/store", labels_df,
                                                       ["user_stats:spend", "user_stats:visits"])
    """
    S = _spark()
    F = S.F
    full_feature_names = flag(full_feature_names, "full_feature_names")
    keep_order = flag(keep_order, "keep_order")
    column_name(timestamp_column, "timestamp_column")
    nb = _buckets(spark, buckets)
    skew = _skew_rows(skew_rows)
    _check_free(entity_df, "entity_df")
    root = os.path.abspath(os.fspath(store_path))
    reg_path = os.path.join(root, "registry.json")
    if not os.path.exists(reg_path):
        raise RegistryError(f"no feature store at {root}: run `skewless init` there first")
    registry = Registry.load(reg_path)
    offline = OfflineStore(os.path.join(root, "offline"))
    plan = resolve(registry, features)
    key_types = {fv.name: registry.key_types(fv) for fv, _ in plan}
    # The local retrieval on an empty table of entity_df's schema checks the whole request (columns,
    # key types, time type, output names) with the local errors, before any Spark job.
    probe = retrieve(
        _arrow_schema(entity_df).empty_table(),
        {},
        plan,
        key_types=key_types,
        full_feature_names=full_feature_names,
        timestamp_column=timestamp_column,
    )
    out_names = probe.column_names[len(entity_df.columns) :]

    span = entity_df.agg(
        F.min(_micros(entity_df, timestamp_column)).alias("lo"),
        F.max(_micros(entity_df, timestamp_column)).alias("hi"),
    ).collect()[0]
    df = entity_df.withColumn(ROW, F.monotonically_increasing_id()) if keep_order else entity_df
    i = 0
    for fv, feats in plan:
        names = out_names[i : i + len(feats)]
        i += len(feats)
        types = [probe.schema.field(n).type for n in names]
        new = [
            S.T.StructField(n, _spark_type(t, f"feature {fv.name}:{f}"), True)
            for n, t, f in zip(names, types, feats, strict=True)
        ]
        cols = history.join_columns(fv, feats)
        hist = None
        if span["lo"] is not None:
            hist = _read_history(spark, offline, registry, fv, cols, span["lo"], span["hi"])
        if hist is None:
            df = df.withColumns({f.name: F.lit(None).cast(f.dataType) for f in new})
            continue
        out_schema = S.T.StructType(list(df.schema.fields) + new)
        target = S.to_arrow_schema(out_schema, timezone="UTC")
        hist_cols = [*cols, SEQ]

        run = _retrieve_task(
            registry, fv, feats, hist_cols, key_types, full_feature_names, timestamp_column, target
        )

        # A hot key's time sub-buckets carry only the boundary rows an as-of join needs, not a window's
        # events: an event view's keys are never split (see the module docstring, "Skewed keys").
        split = None if fv.is_event_view else skew
        lg, rg = _groups(df, hist, fv.join_keys, timestamp_column, fv.timestamp_field, "backward", nb, split)
        df = lg.groupBy(BUCKET).cogroup(rg.groupBy(BUCKET)).applyInArrow(run, out_schema)
    if keep_order:
        df = df.orderBy(ROW).drop(ROW)
    return df
