#!/usr/bin/env bash
# Runs the test suite against the package as users install it: the wheel of scripts/build-wheels.sh,
# installed with its `test` extra into a fresh virtualenv whose PATH has no cargo or rustc (so pip cannot
# fall back to building from source), imported from that virtualenv and never from ./python.
#
# Usage: bash scripts/test-installed.sh [--floors | --smoke]
#   (default)  newest dependencies, the whole suite
#   --floors   the declared minimum versions (the `>=` bounds of pyproject.toml's dependencies and of the
#              pandas and polars extras, pinned with `==`), the whole suite
#   --smoke    no extras; imports the package and runs a short end-to-end check (for other interpreters)
# Environment: SKEWLESS_WHEELS=DIR uses the wheel already built in DIR (default: build one into
# target/wheels); PYTHON=python3.X picks the interpreter of the virtualenv (default: python3).
set -euo pipefail
mode=${1:-full}
case "$mode" in full | --floors | --smoke) ;; *) echo "usage: $0 [--floors | --smoke]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
repo=$PWD

wheels=${SKEWLESS_WHEELS:-}
if [ -z "$wheels" ]; then
    wheels=target/wheels
    bash scripts/build-wheels.sh "$wheels"
fi
wheel=$(ls "$wheels"/skewless-*-abi3-*x86_64*.whl 2>/dev/null | head -1 || true)
[ -n "$wheel" ] || { echo "no skewless wheel in $wheels" >&2; exit 1; }
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
constraints=$work/constraints.txt
: >"$constraints"
if [ "$mode" = --floors ]; then
    python3 - "$constraints" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["pandas"] + project["optional-dependencies"]["polars"]
pins = [re.sub(r"\s*>=\s*", "==", r) for r in reqs if ">=" in r]
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("floors:", " ".join(pins))
EOF
fi

"${PYTHON:-python3}" -m venv "$work/venv"
# The virtualenv first, then every PATH entry except those holding a Rust toolchain.
path=$work/venv/bin
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -n "$d" ] && [ ! -e "$d/cargo" ] && [ ! -e "$d/rustc" ] && path=$path:$d
done
export PATH=$path
unset VIRTUAL_ENV PYTHONPATH
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "cargo or rustc is still on PATH" >&2
    exit 1
fi
python -m pip install -q --disable-pip-version-check --upgrade pip
extra=$([ "$mode" = --smoke ] && echo "" || echo "[test]")
python -m pip install -q --disable-pip-version-check --only-binary skewless -c "$constraints" "$wheel$extra"
python -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(skewless|numpy|pyarrow|pandas|polars) '

# From an empty folder, so neither ./python nor the checkout's root is on sys.path.
cd "$work"
python - "$work/venv" <<'EOF'
import os, sys
import skewless
where = os.path.realpath(skewless.__file__)
print(f"skewless {skewless.__version__} imported from {where} (Python {sys.version.split()[0]})")
if not where.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit("skewless was not imported from the virtualenv")
EOF
skewless --version
if [ "$mode" = --smoke ]; then
    python - <<'EOF'
import datetime as dt, tempfile
import pyarrow as pa
import skewless as sk
t = [dt.datetime(2026, 1, d, tzinfo=dt.timezone.utc) for d in (1, 2)]
left = pa.table({"k": [1, 1], "t": [t[1], t[0]]})
right = pa.table({"k": [1], "t": [t[0]], "x": [2.5]})
assert sk.asof_join(left, right, on="t", by="k")["x"].to_pylist() == [2.5, 2.5]
store = sk.OnlineStore(tempfile.mkdtemp())
store.write("v", pa.table({"k": [1], "t": [t[0]], "x": [2.5]}), keys="k", timestamp="t")
values, status = store.reader("v").get_numpy([1, 2])
assert values[0, 0] == 2.5 and status.tolist() == [0, 1]
print("smoke test passed")
EOF
else
    python -m pytest -q -p no:cacheprovider -c "$repo/pyproject.toml" --rootdir "$repo" "$repo/tests"
    [ "$mode" = --floors ] || skewless demo --dir "$work/demo"
fi
