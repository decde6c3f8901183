#!/usr/bin/env bash
# Bounded fuzzing of the registry loader and the online value decoder (atheris; see scripts/fuzz.py).
#   scripts/fuzz.sh [SECONDS per target, default 60]
# A finding is written as a crash-* file in the current directory, and the script exits non-zero.
set -uo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
python -c "import atheris" 2>/dev/null || python -m pip install -q atheris
status=0
for target in registry value; do
    log="$(mktemp)"
    if python "$here/fuzz.py" "$target" -max_total_time="$secs" >"$log" 2>&1; then
        echo "fuzz $target: $(grep -E '^Done' "$log" | tail -1)"
    else
        status=1
        echo "fuzz $target: FINDING"
        grep -vE '^(INFO|WARNING|#[0-9]+)' "$log" | tail -30
    fi
    rm -f "$log"
done
exit $status
