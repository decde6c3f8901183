"""Stored formats stay readable: a store written by the previous format (online schema records v1, the
value layout recorded once per store) is opened by this build, and history, registry and online reads give
the answers that version gave (recorded below as literals; the fixture and how it was made:
``tests/fixtures/make_store_v1.py``)."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from skewless import FeatureStore
from skewless.online import OnlineStore

# The stored fixture's history holds null Array rows, which pyarrow before 26 cannot read back.
OLD_PYARROW = pytest.mark.skipif(
    int(pa.__version__.split(".")[0]) < 26, reason="pyarrow < 26 cannot read null Array rows back"
)

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", "UTC")


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    # Opening writes LMDB's lock file (and a write updates the data): work on a copy.
    dst = tmp_path / "store"
    shutil.copytree(FIXTURE, dst)
    return dst


@OLD_PYARROW
def test_the_registry_and_the_history_read_as_before(old_store: Path) -> None:
    s = FeatureStore(old_store)
    assert [fv.name for fv in s.list_feature_views()] == ["shop_sales", "user_stats"]
    assert s.version("user_stats") == 1
    assert s.version("shop_sales") == 2
    assert s.get_feature_view("user_stats").ttl == dt.timedelta(hours=12)
    # Rows compared as a set of tuples: the order of history files in a read is not part of the format (and
    # changed when history got its write sequence), the rows are.
    h = _rows(s.read_history("user_stats"))
    assert h == sorted(
        zip(
            [1, 2, 1, 1, 2, 3],
            [at(5), at(5), at(5), at(0), at(0), at(1)],
            [at(5), at(6), at(7), at(0), at(0), at(1)],
            [11.0, 20.0, 12.0, 10.5, None, 3.25],
            [5, None, 6, 4, 7, None],
            ["b", "c", "d", "a", "bé", None],
            [[0.0, 0.0, 0.0], [9.0, 8.0, 7.0], [1.5, 2.5, 3.5], [1.0, 2.0, 3.0], None, [0.5, -0.5, 0.0]],
            strict=True,
        ),
        key=repr,
    )
    h = _rows(s.read_history("shop_sales"))
    nan = [r for r in h if isinstance(r[3], float) and math.isnan(r[3])]
    assert nan == [r for r in h if r[:3] == ("us", 1, at(0))] and nan[0][4:] == (3, "z")
    assert [r for r in h if r not in nan] == sorted(
        zip(
            ["eu", "us", "eu", "eu"],
            [2, 1, 1, 2],
            [at(3), at(2), at(0), at(0)],
            [250.0, 50.0, 100.0, 200.0],
            [None, 4, 1, 2],
            [None, "w", "x", ""],
            strict=True,
        ),
        key=repr,
    )


def _rows(t: pa.Table) -> list[tuple]:
    """The user-visible columns of a history table as sorted tuples (internal columns left out)."""
    cols = [c for c in t.column_names if not c.startswith("__")]
    return sorted(zip(*(t.column(c).to_pylist() for c in cols), strict=True), key=repr)


@OLD_PYARROW
def test_point_in_time_retrieval_answers_as_before(old_store: Path) -> None:
    s = FeatureStore(old_store)
    ent = pa.table(
        {"user_id": [1, 2, 3, 1, 4], "event_timestamp": pa.array([at(h) for h in [2, 2, 2, 6, 6]], TS)}
    )
    got = s.get_historical_features(
        ent, ["user_stats:spend", "user_stats:clicks", "user_stats:label", "user_stats:emb"]
    ).to_pydict()
    assert got["spend"] == [10.5, None, 3.25, 12.0, None]
    assert got["clicks"] == [4, 7, None, 6, None]
    assert got["label"] == ["a", "bé", None, "d", None]
    assert got["emb"] == [[1.0, 2.0, 3.0], None, [0.5, -0.5, 0.0], [1.5, 2.5, 3.5], None]
    ent = pa.table(
        {
            "region": ["eu", "eu", "us", "xx"],
            "shop_id": pa.array([1, 2, 1, 1], pa.int32()),
            "event_timestamp": pa.array([at(4)] * 4, TS),
        }
    )
    got = s.get_historical_features(
        ent, ["shop_sales:revenue", "shop_sales:orders", "shop_sales:note"]
    ).to_pydict()
    assert got["revenue"] == [100.0, 250.0, 50.0, None]
    assert got["orders"] == [1, None, 4, None]
    assert got["note"] == ["x", None, "w", None]


FEATURES = [
    "user_stats:spend",
    "user_stats:clicks",
    "user_stats:label",
    "user_stats:emb",
    "shop_sales:revenue",
    "shop_sales:orders",
    "shop_sales:note",
]
ROWS = {"user_id": [1, 2, 3, 4], "region": ["eu", "eu", "us", "xx"], "shop_id": [1, 2, 1, 1]}


def test_online_reads_answer_as_before_and_new_writes_land_beside_old_values(old_store: Path) -> None:
    s = FeatureStore(old_store)
    r = s.get_online_features(FEATURES, ROWS, as_of=at(14))
    got = r.to_dict()
    assert got["spend"] == [12.0, 20.0, None, None]
    assert got["clicks"] == [6, None, None, None]
    assert got["label"] == ["d", "c", None, None]
    assert got["emb"] == [[1.5, 2.5, 3.5], [9.0, 8.0, 7.0], None, None]
    assert got["revenue"] == [100.0, 250.0, 50.0, None]
    assert got["orders"] == [1, None, 4, None]
    assert got["note"] == ["x", None, "w", None]
    st = {k: v.tolist() for k, v in r.statuses.items()}
    assert st["spend"] == [0, 0, 2, 1] and st["note"] == [0, 0, 0, 1]
    o = OnlineStore(old_store / "online")
    assert o.views() == ["shop_sales", "user_stats"]
    assert o.reader("shop_sales").get([("eu", 2), ("us", 1), ("eu", 9)], as_of=at(14)).to_pydict() == {
        "region": ["eu", "us", "eu"],
        "shop_id": [2, 1, 9],
        "revenue": [250.0, 50.0, None],
        "orders": [None, 4, None],
        "note": [None, "w", None],
        "status": [0, 0, 1],
    }
    # This build writes into the old views (their layout stays version 1) and adds a new view.
    s.write(
        "user_stats",
        {
            "user_id": [3],
            "event_timestamp": pa.array([at(10)], TS),
            "created": pa.array([at(10)], TS),
            "spend": [1.0],
            "clicks": [1],
            "label": ["n"],
            "emb": pa.array([[1.0, 1.0, 1.0]], pa.list_(pa.float32(), 3)),
        },
    )
    o.write("fresh", {"k": [1], "ts": pa.array([at(0)], TS), "x": [2.0]}, keys="k", timestamp="ts")
    got = s.get_online_features(FEATURES, ROWS, as_of=at(14)).to_dict()
    assert got["spend"] == [12.0, 20.0, 1.0, None]
    assert got["note"] == ["x", None, "w", None]
    assert o.reader("fresh").get_numpy([1], as_of=at(1))[0].tolist() == [[2.0]]
