"""How history files encode their columns (``skewless.offline._write_parquet``): floating-point and
timestamp columns (mostly distinct values) in plain pages, without a dictionary; keys, strings and the
write time with one; the write sequence delta-encoded. The files stay ordinary Parquet: read back
unchanged."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import skewless as sk

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_a_pushed_history_file_has_dictionaries_only_where_values_repeat(tmp_path):
    user = sk.Entity("user", dtype=sk.Int64)
    view = sk.FeatureView(
        "ev",
        [user],
        [sk.Field("amount", sk.Float64), sk.Field("shop", sk.String)],
        aggregations=[sk.Aggregation("amount", "sum", "1h")],
    )
    s = sk.FeatureStore(str(tmp_path))
    s.apply([user, view])
    n = 1000
    events = pa.table(
        {
            "user_id": pa.array([i % 7 for i in range(n)], pa.int64()),
            "event_timestamp": pa.array([T0 + dt.timedelta(seconds=i) for i in range(n)], TS),
            "amount": pa.array([i * 0.37 for i in range(n)], pa.float64()),
            "shop": pa.array([f"s{i % 3}" for i in range(n)]),
        }
    )
    s.push("ev", events)
    (path,) = (tmp_path / "offline" / "ev").glob("part-*.parquet")
    meta = pq.read_metadata(path)
    group = meta.row_group(0)
    dictionary = {
        group.column(i).path_in_schema: group.column(i).has_dictionary_page for i in range(meta.num_columns)
    }
    assert dictionary == {
        "user_id": True,
        "event_timestamp": False,
        "amount": False,
        "shop": True,
        "__seq__": False,
        "__written_at__": True,
    }
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(meta.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["__seq__"]
    assert "PLAIN" in encodings["amount"] and "PLAIN" in encodings["event_timestamp"]
    back = s.read_history("ev")
    assert back.select(events.column_names).equals(events)
