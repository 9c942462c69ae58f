#!/usr/bin/env bash
# Ingest benchmark: builds a JSONL file of SIZE_MB from the sample reviews (new ids per copy), then
# times `palate ingest` on it and reports rows/s and peak memory (VmHWM), which should stay flat
# whatever the file size (rows are streamed; duplicate detection lives in SQLite's temp store).
#
#   scripts/bench_ingest.sh [SIZE_MB]   (default 256)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-256}
WORK=${BENCH_DIR:-out/bench-ingest}
mkdir -p "$WORK"
cargo build --release --locked -q
python3 - "$WORK/big.jsonl" "$SIZE_MB" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("data/reviews.jsonl", encoding="utf-8")]
out, limit, copy, written = open(sys.argv[1], "w", encoding="utf-8"), int(sys.argv[2]) << 20, 0, 0
while written < limit:
    for r in rows:
        r = dict(r, restaurant_id=f"{r['restaurant_id']}-{copy // 50}", review_id=f"{r['review_id']}-c{copy}")
        line = json.dumps(r, ensure_ascii=False) + "\n"
        out.write(line)
        written += len(line.encode())
    copy += 1
PY
rm -f "$WORK/bench.db"*
rows=$(wc -l < "$WORK/big.jsonl")
t0=$(date +%s.%N)
./target/release/palate ingest "$WORK/big.jsonl" --database "$WORK/bench.db" --rejects-dir "$WORK" &
pid=$!
peak=0
while kill -0 $pid 2>/dev/null; do
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
  [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
  sleep 0.2
done
wait $pid
t1=$(date +%s.%N)
awk -v mb="$SIZE_MB" -v rows="$rows" -v t0="$t0" -v t1="$t1" -v peak="$peak" 'BEGIN {
  s = t1 - t0; printf "bench ingest: %d MB, %d rows in %.1f s (%.0f rows/s, %.1f MB/s), peak RSS %.0f MB\n",
  mb, rows, s, rows / s, mb / s, peak / 1024 }' 
