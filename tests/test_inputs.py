"""Inputs as pandas and polars users hold them (issue 8): each converted exactly, checked against pandas'
``merge_asof`` or polars' ``join_asof``. Runs under pandas 2 and pandas 3 alike (CI runs both)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import skewless
from skewless._arrow import as_table
from skewless.errors import DtypeError, InvalidArgumentError, MissingColumnError

TS = pa.timestamp("us", tz="UTC")
T0 = pd.Timestamp("2026-01-01", tz="UTC")
PANDAS_MAJOR = int(pd.__version__.split(".")[0])


def ts(*seconds):
    return pd.DatetimeIndex([T0 + pd.Timedelta(seconds=s) for s in seconds])


def oracle(left: pd.DataFrame, right: pd.DataFrame, on: str, by=None, **kw) -> pd.DataFrame:
    """pandas merge_asof on sorted copies, back in the left's order, index reset (skewless reads columns)."""
    left = left.reset_index(drop=True).assign(_pos=lambda d: np.arange(len(d)))
    right = right.reset_index(drop=True)
    srt = {"kind": "stable"}  # ties: the last right row in input order wins, in both
    out = pd.merge_asof(left.sort_values(on, **srt), right.sort_values(on, **srt), on=on, by=by, **kw)
    return out.sort_values("_pos").drop(columns="_pos").reset_index(drop=True)


def same(table: pa.Table, expected: pd.DataFrame, cols):
    for c in cols:
        got = table.column(c).to_pylist()
        want = [None if pd.isna(v) else v for v in expected[c].tolist()]
        assert got == want, c


# ---- the bug: pandas indexes -----------------------------------------------------------------------


def test_pandas_version_is_2_or_3():
    # This file runs under both majors (see .ci/run); the index rule below must hold for each.
    assert PANDAS_MAJOR in (2, 3)


def test_non_default_pandas_indexes_are_dropped_not_joined_as_columns():
    times = ts(1, 2, 3)
    left = pd.DataFrame({"t": times[[1]]}, index=[7])
    right = pd.DataFrame({"t": times, "v": [1, 2, 3]}, index=[10, 11, 12])
    out = skewless.asof_join(left, right, on="t")
    assert out.column_names == ["t", "v"]
    same(out, oracle(left, right, "t"), ["v"])


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d[d["k"] != 3],  # filtered: gaps in the index
        lambda d: d.iloc[::-1],  # reversed: index out of order
        lambda d: d.set_index(pd.Index([f"r{i}" for i in range(len(d))], name="row")),  # named string index
        lambda d: d.set_index(d["t"].rename("when")),  # DatetimeIndex, a copy of a column
        lambda d: d.set_index(["k", "t"], drop=False),  # MultiIndex of column copies
    ],
    ids=["filtered", "reversed", "named", "datetime", "multi"],
)
def test_indexed_frames_join_like_merge_asof(make):
    rng = np.random.default_rng(5)
    n = 40
    base = pd.DataFrame({"k": rng.integers(0, 5, n), "t": ts(*rng.integers(0, 100, n)), "x": rng.random(n)})
    right = make(base.rename(columns={"x": "f"}))
    left = make(
        pd.DataFrame({"k": rng.integers(0, 5, n), "t": ts(*rng.integers(0, 100, n)), "x": rng.random(n)})
    )
    out = skewless.asof_join(left, right, on="t", by="k")
    assert out.column_names == ["k", "t", "x", "f"]
    same(out, oracle(left, right, "t", by="k"), ["k", "x", "f"])


def test_the_same_rule_for_store_writes_and_entity_frames(tmp_path):
    from skewless import Entity, FeatureStore, FeatureView, Field, Float64

    store = FeatureStore(tmp_path)
    user = Entity("user")
    store.apply([user, FeatureView("v", [user], [Field("x", Float64)])])
    data = pd.DataFrame({"user_id": [1, 2], "event_timestamp": ts(0, 0), "x": [0.5, 1.5]}, index=[4, 9])
    assert store.write("v", data).rows == 2
    labels = pd.DataFrame({"user_id": [2, 1], "event_timestamp": ts(5, 5)}, index=pd.Index([3, 1], name="i"))
    got = store.get_historical_features(labels, ["v:x"])
    assert got.column_names == ["user_id", "event_timestamp", "x"]
    assert got.column("x").to_pylist() == [1.5, 0.5]


def test_an_index_named_as_on_says_to_reset_it():
    left = pd.DataFrame({"x": [1]}, index=pd.DatetimeIndex(ts(1), name="t"))
    right = pd.DataFrame({"t": ts(0), "v": [1]})
    with pytest.raises(MissingColumnError, match="reset_index"):
        skewless.asof_join(left, right, on="t")
    out = skewless.asof_join(left.reset_index(), right, on="t")
    assert out.column("v").to_pylist() == [1]


# ---- table forms -------------------------------------------------------------------------------------


def frames(n=30, seed=1):
    rng = np.random.default_rng(seed)
    left = pd.DataFrame({"k": rng.integers(0, 4, n), "t": ts(*rng.integers(0, 60, n)), "y": np.arange(n)})
    right = pd.DataFrame({"k": rng.integers(0, 4, n), "t": ts(*rng.integers(0, 60, n)), "f": rng.random(n)})
    return left, right


def test_polars_lazyframes_are_collected():
    left, right = frames()
    out = skewless.asof_join(pl.from_pandas(left).lazy(), pl.from_pandas(right).lazy(), on="t", by="k")
    same(out, oracle(left, right, "t", by="k"), ["y", "f"])


def test_named_series_are_one_column_tables():
    left, right = frames()
    for s in (left["t"], pl.from_pandas(left)["t"]):
        out = skewless.asof_join(s, right, on="t")
        same(out, oracle(left[["t"]], right.drop(columns="k"), "t"), ["f"])
    for unnamed in (pd.Series([1]), pl.Series([1])):
        with pytest.raises(DtypeError, match="name"):
            skewless.asof_join(unnamed, right, on="t")


def test_chunked_columns_with_empty_chunks_and_sliced_tables():
    left, right = frames(60)
    lt, rt = (
        pa.Table.from_pandas(left, preserve_index=False),
        pa.Table.from_pandas(right, preserve_index=False),
    )
    want = oracle(left.iloc[10:50], right, "t", by="k")

    def rechunk(t: pa.Table, cuts) -> pa.Table:
        # Every column its own chunking, with empty chunks at the start, between and at the end.
        cols = {}
        for c in t.column_names:
            a = t.column(c).combine_chunks()
            pieces = (
                [a.slice(0, 0)]
                + [a.slice(s, e - s) for s, e in zip(cuts, cuts[1:], strict=False)]
                + [a.slice(0, 0)]
            )
            cols[c] = pa.chunked_array(pieces, a.type)
        return pa.table(cols)

    edges = [0, 7, 7, 31, 60]
    for l_in in (lt.slice(10, 40), rechunk(lt, edges).slice(10, 40)):
        for r_in in (rt, rechunk(rt, edges), rt.slice(0, 60)):
            same(skewless.asof_join(l_in, r_in, on="t", by="k"), want, ["y", "f"])
    # A mapping of chunked arrays, one with no chunk at all.
    empty = {
        "k": pa.chunked_array([], pa.int64()),
        "t": pa.chunked_array([], TS),
        "f": pa.chunked_array([], pa.float64()),
    }
    out = skewless.asof_join(rechunk(lt, edges), empty, on="t", by="k")
    assert out.num_rows == 60 and out.column("f").null_count == 60


def test_mapping_values_of_every_everyday_kind():
    left, right = frames()
    got = as_table(
        {"a": pd.Series([1, None], dtype="Int64"), "b": pl.Series([1.5, None]), "c": np.array([1, 2])}, "d"
    )
    assert got.to_pydict() == {"a": [1, None], "b": [1.5, None], "c": [1, 2]}
    with pytest.raises(DtypeError, match="lengths"):
        as_table({"a": [1], "b": [1, 2]}, "data")
    with pytest.raises(InvalidArgumentError):
        as_table({1: [1]}, "data")


# ---- `on` ----------------------------------------------------------------------------------------------


def test_dates_are_instants_at_midnight_utc():
    days = [dt.date(2026, 1, d) for d in (1, 3, 5)]
    right = pl.DataFrame({"d": days, "v": [1, 2, 3]})
    left = pl.DataFrame({"d": [dt.date(2026, 1, d) for d in (2, 3, 6, 1)]})
    got = skewless.asof_join(left, right, on="d")
    want = left.sort("d").join_asof(right, on="d")  # polars compares dates as dates
    want_by_day = dict(zip(want["d"].to_list(), want["v"].to_list(), strict=True))
    assert got.column("v").to_pylist() == [want_by_day[d] for d in left["d"].to_list()]
    assert got.column("d").type == pa.date32()  # the left's own column comes back
    # Against timestamps: a date is 00:00 UTC of its day, exactly.
    stamps = pa.table(
        {
            "d": pa.array(
                [
                    dt.datetime(2026, 1, 3, tzinfo=dt.timezone.utc) - dt.timedelta(microseconds=1),
                    dt.datetime(2026, 1, 3, tzinfo=dt.timezone.utc),
                ],
                TS,
            ),
            "v": [1, 2],
        }
    )
    for typ in (pa.date32(), pa.date64()):
        left = pa.table({"d": pa.array([dt.date(2026, 1, 3)], typ)})
        assert skewless.asof_join(left, stamps, on="d").column("v").to_pylist() == [2]
        assert skewless.asof_join(left, stamps, on="d", allow_exact_matches=False).column(
            "v"
        ).to_pylist() == [1]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/St_Johns"])
def test_timestamps_of_any_unit_and_zone(unit, tz):
    left, right = frames()
    lt = pa.Table.from_pandas(
        left.assign(t=left["t"].dt.tz_convert(tz).astype(f"datetime64[{unit}, {tz}]")), preserve_index=False
    )
    same(skewless.asof_join(lt, right, on="t", by="k"), oracle(left, right, "t", by="k"), ["f"])


def test_signed_and_unsigned_on_compare_exactly_when_one_type_holds_both():
    left = pa.table({"t": pa.array([5, 10, 2**40], pa.int64())})
    right = pa.table({"t": pa.array([4, 10, 2**40 - 1], pa.uint64()), "v": [1, 2, 3]})
    for l_in, r_in in ((left, right), (right.select(["t"]), left.append_column("v", pa.array([7, 8, 9])))):
        plain = skewless.asof_join(
            l_in.cast(pa.schema([("t", pa.int64())] + [f for f in l_in.schema][1:])),
            r_in.set_column(0, "t", r_in.column("t").cast(pa.int64())),
            on="t",
        )
        assert skewless.asof_join(l_in, r_in, on="t").column("v") == plain.column("v")
    # uint64 values above int64's range against non-negative int64 values: both as uint64.
    big = pa.table({"t": pa.array([2**63 + 5], pa.uint64()), "v": [1]})
    assert skewless.asof_join(
        pa.table({"t": pa.array([0, 2**63 - 1], pa.int64())}), big, on="t", direction="forward"
    ).column("v").to_pylist() == [1, 1]
    with pytest.raises(DtypeError, match="negative"):
        skewless.asof_join(pa.table({"t": pa.array([-1], pa.int64())}), big, on="t")


# ---- `by` ------------------------------------------------------------------------------------------------


def keyed(n=50, seed=3, keys=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    left = pd.DataFrame({"k": rng.choice(keys, n), "t": ts(*rng.integers(0, 60, n)), "y": np.arange(n)})
    right = pd.DataFrame({"k": rng.choice(keys, n), "t": ts(*rng.integers(0, 60, n)), "f": rng.random(n)})
    return left, right


def test_categorical_keys_are_decoded():
    left, right = keyed()
    want = oracle(left, right, "t", by="k")
    cat = pd.CategoricalDtype(["c", "b", "a", "unused"])
    # pandas category (dictionary<int8, string>) against plain strings and against a categorical.
    for l_in, r_in in (
        (left.astype({"k": cat}), right),
        (left, right.astype({"k": cat})),
        (left.astype({"k": cat}), right.astype({"k": "category"})),
    ):
        out = skewless.asof_join(l_in, r_in, on="t", by="k")
        same(out, want, ["y", "f"])
        assert out.column("k").type == as_table(l_in, "l").column("k").type  # the left's column back
    pleft, pright = pl.from_pandas(left), pl.from_pandas(right)
    enum = pl.Enum(["a", "b", "c"])
    for l_in, r_in in (
        (pleft.with_columns(pl.col("k").cast(pl.Categorical)), pright),
        (pleft.with_columns(pl.col("k").cast(enum)), pright.with_columns(pl.col("k").cast(enum))),
    ):
        same(skewless.asof_join(l_in, r_in, on="t", by="k"), want, ["y", "f"])


def test_string_layouts_match_each_other():
    left, right = keyed()
    want = oracle(left, right, "t", by="k")
    lt, rt = (
        pa.Table.from_pandas(left, preserve_index=False),
        pa.Table.from_pandas(right, preserve_index=False),
    )
    layouts = [pa.string(), pa.large_string()]
    try:
        pa.array(["a"]).cast(pa.string_view())
        layouts.append(pa.string_view())
    except pa.ArrowNotImplementedError:
        pass  # pyarrow 16 (the floor) has the type but cannot cast to it, so no such input can be made
    for a in layouts:
        for b in layouts:
            l_in = lt.set_column(0, "k", lt.column("k").cast(a))
            r_in = rt.set_column(0, "k", rt.column("k").cast(b))
            same(skewless.asof_join(l_in, r_in, on="t", by="k"), want, ["y", "f"])


def test_fixed_size_binary_keys():
    left, right = keyed(keys=("aa", "bb", "cc"))
    want = oracle(left, right, "t", by="k")
    lt, rt = (
        pa.Table.from_pandas(left, preserve_index=False),
        pa.Table.from_pandas(right, preserve_index=False),
    )
    fixed = lambda c: pc.cast(pc.cast(c, pa.binary()), pa.binary(2))  # noqa: E731
    l_in = lt.set_column(0, "k", fixed(lt.column("k")))
    r_in = rt.set_column(0, "k", pc.cast(rt.column("k"), pa.binary()))
    out = skewless.asof_join(l_in, r_in, on="t", by="k")
    same(out, want, ["y", "f"])
    assert out.column("k").type == pa.binary(2)


def test_boolean_keys():
    left, right = keyed(keys=(True, False))
    left["k"], right["k"] = left["k"].astype(bool), right["k"].astype(bool)
    want = oracle(left, right, "t", by="k")
    same(skewless.asof_join(left, right, on="t", by="k"), want, ["k", "y", "f"])
    with pytest.raises(DtypeError, match="bool"):
        skewless.asof_join(left, right.astype({"k": "int64"}), on="t", by="k")


def test_nullable_integer_keys_with_na_never_match():
    left, right = keyed(keys=(1, 2, 3))
    left["k"] = pd.array(left["k"], dtype="Int64")
    left.loc[::4, "k"] = pd.NA
    right["k"] = pd.array(right["k"], dtype="Int64")
    out = skewless.asof_join(left, right, on="t", by="k")
    f = out.column("f").to_pylist()
    assert all(f[i] is None for i in range(0, len(left), 4))
    want = oracle(left.dropna(), right, "t", by="k")
    assert [f[i] for i in range(len(left)) if i % 4] == [None if pd.isna(v) else v for v in want["f"]]


def test_signed_and_unsigned_keys_match_on_equal_values():
    left = pa.table({"k": pa.array([-1, 1, 2, None], pa.int64()), "t": pa.array([5] * 4, TS)})
    right = pa.table(
        {"k": pa.array([1, 2, 2**64 - 1], pa.uint64()), "t": pa.array([1] * 3, TS), "f": [1.0, 2.0, 3.0]}
    )
    assert skewless.asof_join(left, right, on="t", by="k").column("f").to_pylist() == [None, 1.0, 2.0, None]
    assert skewless.asof_join(left, right.slice(0, 2), on="t", by="k").column("f").to_pylist() == [
        None,
        1.0,
        2.0,
        None,
    ]


def test_by_accepts_any_sequence_of_names():
    left, right = frames()
    want = skewless.asof_join(left, right, on="t", by=["k"])
    for by in (("k",), np.array(["k"]), pd.Index(["k"]), pd.Series(["k"]), pl.Series(["k"])):
        assert skewless.asof_join(left, right, on="t", by=by).equals(want)


# ---- tolerance ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tol",
    [
        dt.timedelta(seconds=90),
        pd.Timedelta(seconds=90),
        np.timedelta64(90, "s"),
        np.timedelta64(90_000, "ms"),
        np.timedelta64(90_000_000_000, "ns"),
        np.timedelta64(90_000_000, "us"),
        "90s",
        "1m30s",
        "90000ms",
    ],
)
def test_every_tolerance_form_means_the_same(tol):
    left, right = frames(80)
    right["t"] = right["t"] - pd.Timedelta(seconds=60)
    out = skewless.asof_join(left, right, on="t", by="k", tolerance=tol)
    same(out, oracle(left, right, "t", by="k", tolerance=pd.Timedelta(seconds=90)), ["f"])


@pytest.mark.parametrize("tol", [np.timedelta64(3, "ns"), pd.Timedelta(nanoseconds=1500), "1500ns"])
def test_sub_microsecond_tolerance_is_refused_not_rounded(tol):
    left, right = frames()
    with pytest.raises(InvalidArgumentError, match="microsecond"):
        skewless.asof_join(left, right, on="t", tolerance=tol)


# ---- findings of issue 8, each as it was reported ------------------------------------------------------


@pytest.mark.skipif(not hasattr(pl, "Int128"), reason="this polars has no Int128 (polars 1.0 does not)")
def test_polars_int128_names_the_column_instead_of_not_arrow_data():
    df = pl.DataFrame({"t": pl.Series([1, 2], dtype=pl.Int128)})
    with pytest.raises(DtypeError, match=r"'t' \(Int128\)"):
        skewless.asof_join(df, df.with_columns(v=pl.lit(1)), on="t")


def test_allow_exact_matches_no_is_refused_not_true():
    with pytest.raises(InvalidArgumentError, match="allow_exact_matches"):
        skewless.asof_join({"t": [1]}, {"t": [1], "v": [2]}, on="t", allow_exact_matches="no")
    got = skewless.asof_join({"t": [1]}, {"t": [1], "v": [2]}, on="t", allow_exact_matches=np.bool_(False))
    assert got.column("v").to_pylist() == [None]


def test_a_named_pandas_series_is_a_table_not_a_c_data_struct_error():
    out = skewless.asof_join(pd.Series([1, 5], name="t"), {"t": [1], "v": [2]}, on="t")
    assert out.to_pydict() == {"t": [1, 5], "v": [2, 2]}


def test_numpy_timedelta64_is_a_duration_never_a_tick_count():
    left, right = {"t": pa.array([10_000_000], TS)}, {"t": pa.array([9_000_000], TS), "v": [1]}
    # 1 s: the match 1 s earlier is within it (was a bare TypeError).
    assert skewless.asof_join(left, right, on="t", tolerance=np.timedelta64(1, "s")).column(
        "v"
    ).to_pylist() == [1]
    # 3 ns on integer `on` was silently 3 ticks; a duration is refused for an integer `on`.
    with pytest.raises(InvalidArgumentError):
        skewless.asof_join({"t": [10]}, {"t": [8], "v": [1]}, on="t", tolerance=np.timedelta64(3, "ns"))


# ---- the store: the same conversions for write, training sets and online reads ---------------------------


@pytest.fixture()
def store(tmp_path):
    from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, String

    s = FeatureStore(tmp_path)
    user = Entity("user", dtype=Int64)
    city = Entity("city", dtype=String)
    s.apply(
        [
            user,
            city,
            FeatureView("u", [user], [Field("x", Float64), Field("tag", String)], ttl="7d"),
            FeatureView("c", [city], [Field("y", Float64)], ttl=np.timedelta64(7, "D")),
        ]
    )
    return s


def test_store_write_takes_polars_and_pandas_everyday_dtypes(store):
    days = [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    # polars: strings are string_view, Categorical a dictionary of string_view, Date a date32.
    pdata = pl.DataFrame(
        {
            "city_id": pl.Series(["paris", "oslo"], dtype=pl.Categorical),
            "event_timestamp": days,
            "y": [1.0, 2.0],
        }
    )
    assert store.write("c", pdata).rows == 2
    pandas_data = pd.DataFrame(
        {
            "user_id": pd.array([True, False]),  # booleans for an Int64 key: 1 and 0
            "event_timestamp": pd.DatetimeIndex(days).tz_localize("UTC"),
            "x": pd.array([0.5, None], dtype="Float64"),
            "tag": pd.Categorical(["a", "b"]),
        },
        index=[10, 20],
    )
    assert store.write("u", pandas_data).rows == 2
    hist = store.read_history("u")
    assert hist.column("user_id").to_pylist() == [1, 0]
    assert hist.column("tag").to_pylist() == ["a", "b"] and hist.column("tag").type == pa.string()
    assert hist.column("event_timestamp").to_pylist()[0] == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert store.read_history("c").column("city_id").to_pylist() == ["paris", "oslo"]


def test_store_entity_frames_and_online_rows_in_everyday_forms(store):
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    store.write(
        "u", {"user_id": [1, 2], "event_timestamp": pa.array([t, t], TS), "x": [0.5, 1.5], "tag": ["a", "b"]}
    )
    store.write("c", {"city_id": ["oslo"], "event_timestamp": pa.array([t], TS), "y": [9.0]})
    labels = pl.DataFrame(
        {
            "user_id": pl.Series([2, None, 1], dtype=pl.Int64),
            "city_id": pl.Series(["oslo", "oslo", "rome"], dtype=pl.Enum(["oslo", "rome"])),
            "event_timestamp": [dt.date(2026, 1, 2)] * 3,  # dates: 00:00 UTC
        }
    ).lazy()
    got = store.get_historical_features(labels, ["u:x", "c:y"])
    assert got.column("x").to_pylist() == [1.5, None, 0.5]
    assert got.column("y").to_pylist() == [9.0, 9.0, None]
    # Online: Series with <NA> (not found), categorical keys, polars frames, a plain list.
    as_of = t + dt.timedelta(hours=1)
    rows = {
        "user_id": pd.Series([2, None, 7], dtype="Int64"),
        "city_id": pd.Categorical(["oslo", "rome", "oslo"]),
    }
    resp = store.get_online_features(["u:x", "c:y"], rows, as_of=as_of)
    assert resp.to_dict()["x"] == [1.5, None, None] and resp.to_dict()["y"] == [9.0, None, 9.0]
    assert resp.statuses["x"].tolist() == [0, 1, 1]
    reader = store.online_reader(["u:x"])
    for keys in (
        [2, 1],
        pd.Series([2, 1]),
        pl.Series([2, 1]),
        pa.array([2, 1]),
        {"user_id": pl.Series([2, 1])},
    ):
        values, status = reader.get_numpy(keys, as_of=as_of)
        assert values[:, 0].tolist() == [1.5, 0.5] and status[:, 0].tolist() == [0, 0]
    values, status = reader.get_numpy(pd.Series([2, None], dtype="Int64"), as_of=as_of)
    assert status[:, 0].tolist() == [0, 1]
    assert reader.get(pl.DataFrame({"user_id": [1]}), as_of=as_of).to_dict()["x"] == [0.5]


def test_store_index_rule_and_bad_forms_write_nothing(store):
    t = pd.Timestamp("2026-01-01", tz="UTC")
    data = pd.DataFrame(
        {"x": [0.5], "tag": ["a"], "event_timestamp": [t]}, index=pd.Index([1], name="user_id")
    )
    with pytest.raises(MissingColumnError, match="reset_index"):
        store.write("u", data)
    with pytest.raises(DtypeError, match="name"):
        store.write("u", pd.Series([1]))
    assert store.read_history("u").num_rows == 0
    assert store.write("u", data.reset_index()).rows == 1


def test_the_conversion_rules_examples_run():
    # _arrow is private (tests/test_docs.py runs the public modules) but states the rules the public
    # docstrings point to; its examples run here.
    import doctest

    import skewless._arrow

    result = doctest.testmod(skewless._arrow, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_a_lazyframe_that_fails_to_collect_is_a_typed_error():
    lazy = pl.LazyFrame({"t": [1]}).with_columns(pl.col("missing") + 1)
    with pytest.raises(InvalidArgumentError, match="LazyFrame"):
        skewless.asof_join(lazy, {"t": [1], "v": [1]}, on="t")
