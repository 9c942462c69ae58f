#!/usr/bin/env bash
# Every benchmark, then docs/benchmarks.md regenerated from their results (out/bench/). About two
# hours on 2 cores; run it on an otherwise idle machine.
#   scripts/bench_all.sh            QDRANT_URL=http://… also times the Qdrant backend's selection
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${PALATE_BENCH_OUT:-out/bench}
mkdir -p "$OUT"
scripts/bench_calibrate.sh
REPEATS=${REPEATS:-3} scripts/bench_llama.sh
REPEATS=${REPEATS:-3} scripts/bench_scheduling.sh
cargo build --release --locked --quiet ${QDRANT_URL:+--features qdrant}
target/release/palate bench selection --json "$OUT/selection.json" ${QDRANT_URL:+--qdrant "$QDRANT_URL"} > /dev/null
scripts/bench_embed.sh > "$OUT/embed.txt"
scripts/bench_cost.sh 1000 10000 > "$OUT/cost.txt"
RUNS=1 REVIEWS=10 scripts/bench_cost.sh 1000 10000 100000 > "$OUT/cost-scale.txt"
# palate analyze of a restaurant whose results are current (the calibration's llama-server run).
restaurant=$(python3 -c "import sqlite3; print(sqlite3.connect('$OUT/calib-base.db').execute('select restaurant_id from current_results limit 1').fetchone()[0])")
for _ in 1 2 3; do
  /usr/bin/time -f "%e s, peak RSS %M KB" target/release/palate analyze "$restaurant" --job jobs/demo.toml \
    --database "$OUT/calib-base.db" --log-format json > /dev/null 2>> "$OUT/analyze.raw" || true
done
grep -E '^[0-9.]+ s, peak RSS' "$OUT/analyze.raw" > "$OUT/analyze.txt"; rm -f "$OUT/analyze.raw"
python3 scripts/bench_docs.py "$OUT" > docs/benchmarks.md
echo "docs/benchmarks.md regenerated from $OUT" >&2
