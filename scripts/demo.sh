#!/usr/bin/env bash
# The whole demo in one command on a fresh machine: install the real parts (scripts/setup.sh),
# build palate, start llama.cpp's server on the demo model, run the demo job on the bundled sample
# data, stop the server. Extra arguments go to `palate run` (e.g. --force).
#
#   scripts/demo.sh                          SmolLM2-135M (fast; poor judgement)
#   PALATE_DEMO_MODEL=qwen scripts/demo.sh   Qwen2.5-0.5B (sensible judgement; ~4x slower)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
PORT=${PALATE_DEMO_PORT:-8080}
case ${PALATE_DEMO_MODEL:-smollm2} in
  smollm2) GGUF=$CACHE/llm/smollm2-135m-instruct-q4_1.gguf; NAME=smollm2-135m-instruct ;;
  qwen) GGUF=$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; NAME=qwen2.5-0.5b-instruct ;;
  *) echo "PALATE_DEMO_MODEL must be smollm2 or qwen" >&2; exit 2 ;;
esac

scripts/setup.sh embed llm
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo build --release --locked

mkdir -p out
echo "demo: starting llama-server ($NAME) on port $PORT; log in out/llama-server.log" >&2
"$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$GGUF" --alias "$NAME" --port "$PORT" \
  --ctx 32768 --parallel 8 --threads "$(nproc)" --metrics > out/llama-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "llama-server exited; see out/llama-server.log" >&2; exit 1; }
  sleep 0.5
done

set +e
./target/release/palate run --job jobs/demo.toml --endpoint "http://127.0.0.1:$PORT/v1" --model "$NAME" "$@"
code=$?
set -e
if [ $code -eq 3 ]; then
  echo "demo: finished; some analyses failed validation and were stored as failed (see the summary above)" >&2
  code=0
fi
./target/release/palate report --job jobs/demo.toml --html out/report.html
echo "demo: results in out/demo.db (tables results, current_results, analysis_metrics, vllm_metrics);" \
  "charts in out/report.html" >&2
exit $code
