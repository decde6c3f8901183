#!/usr/bin/env bash
# Builds what gets published into OUTDIR: the x86_64 Linux wheel (abi3, so one wheel serves CPython 3.10
# and every later version; manylinux_2_17, so glibc 2.17+ systems such as Amazon Linux 2, RHEL/UBI 8 and
# Ubuntu 20.04 can install it; symbols stripped) and the sdist. The wheel is linked with zig against
# glibc 2.17 symbols, so no container and no old distribution is needed. auditwheel then checks that the
# tag the wheel claims is the tag its contents allow, and the sizes are printed.
# Needs Rust (see rust-version in Cargo.toml) and python3; the build tools go into target/build-venv.
# Usage: bash scripts/build-wheels.sh OUTDIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash scripts/build-wheels.sh OUTDIR" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."

# manylinux_2_17 rather than 2_28: the extension needs only glibc symbols old enough for 2.17 (auditwheel
# below proves it), and 2.17 is what Amazon Linux 2 and RHEL/CentOS 7 derivatives still ship.
policy=manylinux_2_17
target=x86_64-unknown-linux-gnu
tools=target/build-venv

if [ ! -x "$tools/bin/maturin" ] || [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/python-zig" ]; then
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check \
        'maturin==1.16.0' 'ziglang==0.17.1' 'auditwheel==6.8.2'
fi
export PATH="$PWD/$tools/bin:$PATH"
# Zip entries get the last commit's time, so two builds of one commit give the same archive members.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

rm -f "$out"/skewless-*.whl "$out"/skewless-*.tar.gz
start=$SECONDS
maturin build --release --strip --zig --target "$target" --compatibility "$policy" \
    --interpreter python3 --out "$out"
echo "wheel built in $((SECONDS - start)) s"
maturin sdist --out "$out"

status=0
for whl in "$out"/skewless-*.whl; do
    name=${whl##*/}
    claimed=${name%.whl}
    claimed=${claimed##*-} # the platform tags, dot-separated (maturin adds the manylinux2014 alias)
    shown=$(auditwheel show "$whl")
    echo "$shown"
    # The tag auditwheel derives from the symbols the library uses must be one the file name claims.
    got=$(tr '\n' ' ' <<<"$shown" | sed -n 's/.*consistent with the following platform tag: *"\([^"]*\)".*/\1/p')
    if [ -z "$got" ] || [[ ".$claimed." != *".$got."* ]]; then
        echo "ERROR: $name claims $claimed but auditwheel gives ${got:-no tag}" >&2
        status=1
    else
        echo "auditwheel: $name is $got, as claimed"
    fi
done
for f in "$out"/skewless-*; do
    printf '%s  %s bytes (%s)\n' "${f##*/}" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
done
exit $status
