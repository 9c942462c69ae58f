#!/usr/bin/env bash
# Embedding throughput: palate's local embedder against Python fastembed, on the same ONNX model
# (multilingual-e5-small, 4-bit), tokenizer, ONNX Runtime version (1.24.4), batch size, thread
# count and texts (the 1,680 sample reviews). Python fastembed goes into .cache/bench-venv.
#   scripts/bench_embed.sh [THREADS]       default 2; 3 rounds each
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
CACHE=${PALATE_CACHE:-.cache}
scripts/setup.sh embed > /dev/null
py=$(scripts/bench_venv.sh)
cargo build --release --locked --quiet
texts=$(mktemp --suffix .jsonl)
trap 'rm -f "$texts"' EXIT
cat data/reviews.jsonl > "$texts"
python3 -c 'import csv,json,sys
for r in csv.DictReader(open("data/reviews.csv", encoding="utf-8")): print(json.dumps({"text": r["text"]}, ensure_ascii=False))' >> "$texts"
echo "palate (fastembed-rs, texts sorted by length into batches):"
target/release/palate bench embedding --texts "$texts" --rounds 3 \
  --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4" \
  --job <(printf '[embed]\nbatch_size = 32\nthreads = %s\n' "$threads") 2>/dev/null
echo "Python fastembed 0.9.1 (reviews/s per round):"
"$py" scripts/bench_embed.py --model-dir "$CACHE/models/me5" --texts "$texts" \
  --threads "$threads" --batch 32 --rounds 3
