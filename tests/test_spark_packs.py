"""The staging folder's pack reader (skewless.spark_staging.Packs) without Spark: slices of the mapped
file, never copies, and a removed call folder is a typed error."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skewless import spark_staging as stg
from skewless.errors import StorageError


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_a_slice_is_read_in_place_with_the_written_bytes(tmp_path_factory, data, draw):
    root = str(tmp_path_factory.mktemp("staging"))
    with stg.staging_scope():
        call = stg.new_call(root)
        with stg.pack_file(call, "s0-p0-a0") as (f, name):
            f.write(data)
        packs = stg.Packs(call)
        a = draw.draw(st.integers(0, len(data)))
        b = draw.draw(st.integers(a, len(data)))
        got = packs.read(name, a, b - a)
        assert isinstance(got, pa.Buffer) and got.to_pybytes() == data[a:b]
        # In place: every slice of one file points into the same mapping (a copy would not).
        whole = packs.read(name, 0, len(data))
        assert got.address == whole.address + a
        assert packs.read(name, a, b - a).address == got.address


def test_a_removed_call_folder_is_a_typed_error(tmp_path):
    root = str(tmp_path / "staging")
    call = stg.new_call(root)
    with stg.pack_file(call, "s0-p0-a0") as (f, name):
        f.write(b"abcdef")
    stg.remove_call(call)
    with pytest.raises(StorageError, match="removed"):
        stg.Packs(call).read(name, 0, 3)
    assert not os.path.exists(call)
