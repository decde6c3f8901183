"""Fuzz the registry loader and the online value decoder with atheris (libFuzzer for Python).

    pip install atheris
    python scripts/fuzz.py registry -max_total_time=60
    python scripts/fuzz.py value -max_total_time=60     # or scripts/fuzz.sh SECONDS for both

``registry``: a valid registry is mutated (values at random places replaced by other JSON values), saved
and loaded, and every definition in it is built. Coverage-guided: atheris instruments the Python code
of the loader and the definitions.

``value``: the bytes of one stored online value (value layout 3; a view with integer, float, bool,
timestamp, string, binary and array columns) are overwritten in place in ``data.mdb``, and the value is
read back with ``get`` and ``get_numpy``. Three kinds of input: the whole value replaced, bytes of the
intact value xored, and bytes of its body xored with the checksum then recomputed (so the decoder behind
the checksum sees malformed values too, as a bug in a writer would make them). The decoder is Rust,
which atheris does not instrument: this target is mutation-driven without coverage feedback from the
decoder itself.

Either target accepts only success or an error from :mod:`skewless.errors` other than InternalError;
anything else (another exception, a panic, a crash) is a finding, written by libFuzzer to
``crash-<hash>``. The value target also fails when changed bytes whose checksum was not recomputed are
read without a StorageError (a damaged value served). Every finding becomes a regression test in
tests/test_hostile.py or tests/test_online_checksums.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
import tempfile
from typing import Any

import atheris

with atheris.instrument_imports():
    import pyarrow as pa
    from skewless import (
        Array,
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        Float32,
        Float64,
        Int64,
    )
    from skewless import String as StringT
    from skewless.errors import InternalError, SkewlessError
    from skewless.registry import Registry

# The CRC-32C oracle of the online checksum tests (written from the definition, independent of the store).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_online_checksums import crc32c  # noqa: E402

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def _allowed(e: BaseException) -> bool:
    return isinstance(e, SkewlessError) and not isinstance(e, InternalError)


# ---- registry ------------------------------------------------------------------------------------------


def _seed_registry(folder: str) -> dict[str, Any]:
    s = FeatureStore(folder)
    user = Entity("user", join_keys=["user_id"], dtype=Int64)
    anyone = Entity("anyone")
    fv = FeatureView(
        "v",
        [user, anyone],
        [Field("x", Float64), Field("s", StringT), Field("e", Array(Float32, 2))],
        ttl=dt.timedelta(days=1),
        created_timestamp_field="created",
        tags={"a": "b"},
    )
    s.apply([user, anyone, fv, FeatureService("svc", ["v:x", "v:*"])])
    with open(os.path.join(folder, "registry.json")) as f:
        data: dict[str, Any] = json.load(f)
    return data


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _value(fdp: atheris.FuzzedDataProvider) -> Any:
    pick = fdp.ConsumeIntInRange(0, 9)
    if pick == 0:
        return None
    if pick == 1:
        return fdp.ConsumeBool()
    if pick == 2:
        return fdp.ConsumeInt(9)  # up to 72-bit integers, both signs
    if pick == 3:
        return fdp.ConsumeRegularFloat()
    if pick in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if pick == 6:
        return [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if pick == 7:
        return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))}
    if pick == 8:
        return fdp.PickValueInList(
            ["Int64", "Array(Float32,2)", "Array(Int64,0)", "../x", "v", "user", "", "x:y"]
        )
    return fdp.PickValueInList([-(2**63), 2**63, 2**64, -1, 0, 10**30])


def fuzz_registry(folder: str, seed: dict[str, Any], data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    doc = copy.deepcopy(seed)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        paths = _paths(doc)
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if fdp.ConsumeBool() and isinstance(parent, dict):
            # Rename a key (how a crafted file files a definition under another name).
            name = fdp.PickValueInList(["../x", "v", "user", "", "a/b", "x" * 300, "svc"])
            new_key = name if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(12)
            parent[new_key] = parent.pop(path[-1])
        else:
            parent[path[-1]] = _value(fdp)
    p = os.path.join(folder, "registry.json")
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError):
        return  # a key json cannot write (a list as key): not a registry anyone can hand us
    with open(p, "w") as f:
        f.write(text)
    try:
        r = Registry.load(p)
        for n in r.names("entities"):
            r.entity(n)
            r.key_dtypes(n)
        for n in r.names("feature_views"):
            fv = r.feature_view(n)
            r.key_types(fv)
            r.materialized_until(n)
        for n in r.names("feature_services"):
            r.feature_service(n)
    except BaseException as e:  # noqa: BLE001 - classified right below
        if not _allowed(e):
            raise


# ---- online value --------------------------------------------------------------------------------------

MARKER = b"~fuzz-marker-end~"


def _seed_value(folder: str) -> tuple[str, int, int, Any, Any]:
    from skewless.online import OnlineStore

    store = OnlineStore(os.path.join(folder, "online"), map_size=1 << 22)
    ts_value = 1_767_225_600_123_457  # a stamp unlikely to appear elsewhere in the file
    data = pa.table(
        {
            "k": [7],
            "ts": pa.array([ts_value], TS),
            "i8": pa.array([-3], pa.int8()),
            "u32": pa.array([9], pa.uint32()),
            "f": [1.5],
            "b": [True],
            "at": pa.array([ts_value], TS),
            "bin": pa.array([b"\x00\x01"], pa.binary()),
            "emb": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2)),
            "s": [MARKER.decode()],
        }
    )
    store.write("v", data, keys="k", timestamp="ts")
    path = os.path.join(folder, "online", "data.mdb")
    with open(path, "rb") as f:
        blob = f.read()
    start = blob.find(b"\x03\x00" + ts_value.to_bytes(8, "little", signed=True))
    end = blob.find(MARKER, start) + len(MARKER) + 4  # the checksum follows the last string
    if start < 0 or end < len(MARKER):
        raise SystemExit("could not find the stored value in data.mdb")
    numeric = ["i8", "u32", "f", "b", "at"]
    return path, start, end - start, store.reader("v"), store.reader("v", columns=numeric)


def _checksum_start(original: bytes) -> int:
    """The CRC-32C state after the view's schema record and the value's key (value layout 3), found by
    building both from their documented formats; the one that reproduces the stored checksum."""
    cols = [("k", 4, 0, ""), ("i8", 1, 0, ""), ("u32", 7, 0, ""), ("f", 10, 0, ""), ("b", 11, 0, "")]
    cols += [("at", 14, 0, "UTC"), ("bin", 13, 0, ""), ("emb", 15, 2, ""), ("s", 12, 0, "")]
    record = bytes([2, 3]) + (1).to_bytes(2, "little") + (len(cols) - 1).to_bytes(2, "little")
    for name, tag, param, tz in cols:
        record += bytes([tag]) + param.to_bytes(4, "little") + len(name).to_bytes(2, "little") + name.encode()
        record += len(tz).to_bytes(2, "little") + tz.encode()
    key = (1 << 63 | 7).to_bytes(8, "big")
    for view_id in range(4):
        state = crc32c(record + view_id.to_bytes(4, "big") + key)
        if crc32c(original[:-4], state).to_bytes(4, "little") == original[-4:]:
            return state
    raise SystemExit("the harness does not reproduce the stored checksum (value layout 3 changed?)")


def fuzz_value(
    path: str, at: int, original: bytes, state: int, reader: Any, numeric: Any, data: bytes
) -> None:
    length = len(original)
    mode = data[0] % 3 if data else 1
    if mode == 0:
        buf = (data[1:] + bytes(length))[:length]  # the whole value replaced
    else:
        # Byte pairs (position, xor mask) edit the intact value: past the version check, into the
        # validity bits, stamps and string offsets.
        b = bytearray(original)
        for i in range(1, len(data) - 1, 2):
            b[data[i] % length] ^= data[i + 1]
        if mode == 2:  # body edits with a valid checksum: what only the decoder's own checks can catch
            b[-4:] = crc32c(bytes(b[:-4]), state).to_bytes(4, "little")
        buf = bytes(b)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, buf, at)  # the map is shared: readers see these bytes at once
    finally:
        os.close(fd)
    damaged = mode != 2 and buf != original
    for call in (lambda: reader.get([7]), lambda: numeric.get_numpy([7])):
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - classified right below
            if not _allowed(e):
                raise
            continue
        if damaged:
            raise AssertionError(f"a damaged value was served: {buf.hex()} (stored {original.hex()})")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("registry", "value"):
        raise SystemExit("usage: fuzz.py registry|value [libFuzzer flags, e.g. -max_total_time=60]")
    target = sys.argv.pop(1)
    folder = tempfile.mkdtemp(prefix=f"skewless-fuzz-{target}-")
    if target == "registry":
        seed = _seed_registry(folder)
        atheris.Setup(sys.argv, lambda d: fuzz_registry(folder, seed, d))
    else:
        path, at, length, reader, numeric = _seed_value(folder)
        with open(path, "rb") as f:
            f.seek(at)
            original = f.read(length)
        state = _checksum_start(original)
        # The intact value first: the harness must accept it, or every run would "find" a crash.
        fuzz_value(path, at, original, state, reader, numeric, b"")
        if reader.get([7]).column("s").to_pylist() != [MARKER.decode()]:
            raise SystemExit("the harness does not read the value it edits")
        atheris.Setup(sys.argv, lambda d: fuzz_value(path, at, original, state, reader, numeric, d))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
