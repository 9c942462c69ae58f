#!/usr/bin/env bash
# palate against the naive Python client on a real server: llama.cpp's (Qwen2.5-0.5B, the demo's,
# 4 slots, 2 threads), the same requests (3 restaurants x 16 reviews, one review per sentiment
# request as jobs/demo.toml asks of this model), REPEATS times each, alternating.
#   REPEATS=3 scripts/bench_llama.sh     appends to out/bench/llama.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
OUT=${PALATE_BENCH_OUT:-out/bench}
MODEL=qwen2.5-0.5b-instruct
scripts/setup.sh llm > /dev/null
cargo build --release --locked --quiet
bin=target/release/palate
py=$(scripts/bench_venv.sh)
mkdir -p "$OUT"
res=$OUT/llama.jsonl
: > "$res"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port/v1
server=
stop() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; true; }
trap stop EXIT
serve() { # a fresh server for every run: no prompt cached by the run before
  stop
  "$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
    --alias $MODEL --port "$port" --ctx 32768 --parallel 4 --threads 2 --metrics > "$OUT/llama-server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && return; sleep 0.5; done
  echo "llama-server did not start; see $OUT/llama-server.log" >&2; exit 1
}
work=(--endpoint "$url" --model $MODEL --restaurants 3 --reviews 16 --sentiment-batch 1 --max-tokens 640)
$bin bench scheduling "${work[@]}" --mode fifo --export-workload "$OUT/llama-workload.jsonl" > /dev/null
for r in $(seq 1 "${REPEATS:-3}"); do
  echo "== repeat $r" >&2
  serve
  $bin bench scheduling "${work[@]}" --mode sjf --concurrency 3 --max-in-flight 4 --max-num-seqs 4 \
    --json "$OUT/one.json" 2> /dev/null | sed -n 2p >&2
  python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readlines()[-1]); r["client"]="palate"; print(json.dumps(r))' "$OUT/one.json" >> "$res"
  rm -f "$OUT/one.json"
  serve
  "$py" scripts/bench_naive.py --endpoint "$url" --workload "$OUT/llama-workload.jsonl" --concurrency 4 \
    --json "$OUT/one.json" | sed -n 2p >&2
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["client"]="naive"; print(json.dumps(r))' "$OUT/one.json" >> "$res"
  rm -f "$OUT/one.json"
done
