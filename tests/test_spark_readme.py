"""The README's Spark examples ("Running on Spark") run as written, on a small store, with the paths
and the ``features`` DataFrame they leave to the reader filled in, and give the local answers; the
staging example removes what it says it removes. Needs pyspark and Java: it runs in CI's Spark step
beside tests/test_spark.py (conftest.py leaves both out of the default suite)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from skewless import Entity, FeatureStore, FeatureView, Field, Float64, Int64, asof_join
from test_spark import rows_equal, spark  # noqa: F401  (the session fixture)

README = Path(__file__).resolve().parent.parent / "README.md"
TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000


def spark_blocks() -> list[str]:
    section = re.search(r"## Running on Spark\n(.*?)\n## ", README.read_text(), re.S)
    assert section is not None, "README lost its section 'Running on Spark'"
    blocks = re.findall(r"```py\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 2, "the README's Spark section should hold its usage and staging examples"
    return blocks


def filled(code: str, places: dict[str, str]) -> str:
    for old, new in places.items():
        assert old in code, f"the README's Spark example no longer uses {old!r}: update this test"
        code = code.replace(old, new)
    return code


def test_readme_spark_examples_run_and_match_the_local_calls(spark, tmp_path):  # noqa: F811
    store_path = tmp_path / "store"
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    view = FeatureView("user_stats", [user], [Field("spend", Float64)], ttl=dt.timedelta(days=30))
    store = FeatureStore(store_path)
    store.apply([user, view])
    day = 86_400 * SEC
    history = pa.table(
        {
            "user_id": pa.array([1, 1, 2, 3, 2], pa.int64()),
            "event_timestamp": pa.array([1 * day, 5 * day, 2 * day, 3 * day, 40 * day], TS),
            "spend": [1.0, 5.0, 2.0, None, 40.0],
        }
    )
    store.write("user_stats", history)
    times = pa.array([4 * day, 6 * day, 3 * day, 45 * day, 50 * day, 1 * day], TS)
    labels = pa.table(
        {
            "user_id": pa.array([1, 1, 2, 2, 3, 4], pa.int64()),
            "event_timestamp": times,
            "ts": times,  # the asof_join example's time column
        }
    )
    features = history.rename_columns(["user_id", "ts", "spend"]).append_column(
        "created", pa.array([0, 0, 0, 0, 0], TS)
    )
    pq.write_table(labels, tmp_path / "labels.parquet")
    train_dir = tmp_path / "train"
    usage, staging = spark_blocks()
    places = {
        '"s3a://bucket/labels/"': repr(str(tmp_path / "labels.parquet")),
        '"/mnt/store"': repr(str(store_path)),
        '"s3a://bucket/train/"': repr(str(train_dir)),
    }
    scope = {"features": spark.createDataFrame(features.to_pandas())}
    # The features DataFrame is the reader's own; the rest is the README's code as written.
    exec(compile(filled(usage, places), str(README), "exec"), scope)
    local = store.get_historical_features(labels, ["user_stats:spend"])
    key = [("user_id", "ascending"), ("event_timestamp", "ascending")]
    got = pq.read_table(train_dir).cast(local.schema).sort_by(key)
    rows_equal(got, local.sort_by(key))
    want = asof_join(labels, features, on="ts", by="user_id", tolerance="30d", tie_breaker="created").sort_by(
        key
    )
    out = scope["out"].toArrow().cast(want.schema).sort_by(key)
    rows_equal(out, want)

    stage_root = store_path / ".skewless-staging"
    before = set(os.listdir(stage_root)) if stage_root.exists() else set()
    staging_places = {
        '"/mnt/store"': places['"/mnt/store"'],
        '"s3a://bucket/train/"': repr(str(tmp_path / "train2")),
    }
    exec(compile(filled(staging, staging_places), str(README), "exec"), scope)
    rows_equal(pq.read_table(tmp_path / "train2").cast(local.schema).sort_by(key), local.sort_by(key))
    # The scope removed its call's folder, clear_staging this process's earlier call (the usage
    # example's), and nothing is left under the staging root.
    assert before, "the usage example's call should have left its staged files until clear_staging"
    assert not stage_root.exists() or not os.listdir(stage_root)
