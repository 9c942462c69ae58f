#!/usr/bin/env bash
# The whole demo in one command on a fresh machine: install the real parts (scripts/setup.sh),
# build palate, start llama.cpp's server on the demo model, run the demo job, print one
# restaurant's analysis, write the results and metrics pages, stop the server.
#
#   scripts/demo.sh                          3 restaurants, Qwen2.5-0.5B (sensible judgement)
#   scripts/demo.sh --full                   all 35 restaurants of the sample data
#   PALATE_DEMO_MODEL=smollm2 scripts/demo.sh  SmolLM2-135M (fast, poor judgement: most of its
#                                            answers fail validation, which the summary shows)
# Other arguments go to `palate run` (e.g. --force).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
PORT=${PALATE_DEMO_PORT:-8080}
SHOW=${PALATE_DEMO_SHOW:-mapo-galbi-house}
case ${PALATE_DEMO_MODEL:-qwen} in
  smollm2) GGUF=$CACHE/llm/smollm2-135m-instruct-q4_1.gguf; NAME=smollm2-135m-instruct ;;
  qwen) GGUF=$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; NAME=qwen2.5-0.5b-instruct ;;
  *) echo "PALATE_DEMO_MODEL must be qwen or smollm2" >&2; exit 2 ;;
esac
ARGS=()
for a in "$@"; do
  if [ "$a" = --full ]; then ARGS+=(--input data/reviews.jsonl,data/reviews.csv); else ARGS+=("$a"); fi
done

if [ "${PALATE_DEMO_MODEL:-qwen}" = qwen ]; then scripts/setup.sh embed llm; else PALATE_SKIP_QWEN=1 scripts/setup.sh embed llm; fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo build --release --locked

mkdir -p out
echo "demo: starting llama-server ($NAME) on port $PORT; log in out/llama-server.log" >&2
"$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$GGUF" --alias "$NAME" --port "$PORT" \
  --ctx 32768 --parallel 4 --threads "$(nproc)" --metrics > out/llama-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "llama-server exited; see out/llama-server.log" >&2; exit 1; }
  sleep 0.5
done

P=./target/release/palate
# The embedding assets where scripts/setup.sh put them (PALATE_CACHE may move them).
JOB=(--job jobs/demo.toml --endpoint "http://127.0.0.1:$PORT/v1" --model "$NAME"
  --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4")
set +e
$P run "${JOB[@]}" ${ARGS[@]+"${ARGS[@]}"}
code=$?
set -e
if [ $code -eq 3 ]; then
  echo "demo: finished; some analyses failed validation and were stored as failed (see the summary above)" >&2
  code=0
fi
echo >&2
$P analyze "$SHOW" "${JOB[@]}" ${ARGS[@]+"${ARGS[@]}"} --log-format json 2>/dev/null | sed '/^restaurants:/,$d' || true
$P report --job jobs/demo.toml --html out/report.html --results out/results.html > /dev/null
echo
echo "demo: every restaurant's analysis is in out/results.html and the run's metrics in out/report.html;" \
  "the data is in out/demo.db (tables results, current_results, analysis_metrics, vllm_metrics)."
exit $code
