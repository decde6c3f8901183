#!/usr/bin/env bash
# The benchmark suite at one size (S by default): the pytest-benchmark cases, then the side-by-side
# comparisons with the peers. Prints tables; a slow run never fails. Usage: bash benches/run.sh [S|M|L]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-S}
export SKEWLESS_BENCH_SIZE=$size

python -m pytest benches -q -p no:cacheprovider --benchmark-only \
    --benchmark-columns=min,median,max,rounds --benchmark-sort=name
python benches/compare_peers.py "$size"
python benches/compare_online.py
python benches/compare_store.py "$size"
python benches/serve_http.py --requests 2000
python benches/compare_servelog.py 20000
