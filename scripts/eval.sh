#!/usr/bin/env bash
# Measures palate's analyses on the sample data's ratings (docs/quality.md has the figures):
# installs what it needs, starts llama.cpp's server on the model, runs `palate eval`, and runs the
# VADER word-list baseline on the same English reviews.
#
#   scripts/eval.sh [qwen|smollm2] [palate eval options...]
#
# Writes out/eval-MODEL.md (the tables), out/eval-MODEL.json (every figure, per restaurant too)
# and out/vader.json. Qwen2.5-0.5B over all 35 restaurants takes about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
PORT=${PALATE_EVAL_PORT:-8090}
MODEL=${1:-qwen}; shift || true
case $MODEL in
  smollm2) GGUF=$CACHE/llm/smollm2-135m-instruct-q4_1.gguf; NAME=smollm2-135m-instruct ;;
  qwen) GGUF=$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; NAME=qwen2.5-0.5b-instruct ;;
  *) echo "model must be qwen or smollm2" >&2; exit 2 ;;
esac
scripts/setup.sh embed llm
"$CACHE/llm/venv/bin/python" -m pip install -q --disable-pip-version-check vaderSentiment==3.3.2
cargo build --release --locked
mkdir -p out
"$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$GGUF" --alias "$NAME" --port "$PORT" \
  --ctx 32768 --parallel 4 --threads "$(nproc)" --metrics > "out/llama-server-eval.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "llama-server exited; see out/llama-server-eval.log" >&2; exit 1; }
  sleep 0.5
done
./target/release/palate eval --job jobs/eval.toml --endpoint "http://127.0.0.1:$PORT/v1" --model "$NAME" \
  --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4" \
  --json "out/eval-$MODEL.json" "$@" | tee "out/eval-$MODEL.md"
"$CACHE/llm/venv/bin/python" scripts/vader_baseline.py | tee out/vader.json
