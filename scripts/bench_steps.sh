#!/usr/bin/env bash
# Every step llama-server runs during the demo job, against the fitted simulator's step cost:
# records llama-server's socket writes with `perf` while the job of scripts/bench_calibrate.sh
# runs against a fresh server, then prints observed and predicted step time by kind of step
# (scripts/bench_steps.py). Unlike the job check, this compares the same steps of one run, so
# the machine's speed drifting between the calibration and the run does not enter.
#   scripts/bench_steps.sh     after scripts/bench_calibrate.sh (its profile and base database)
# Needs `perf` with syscall tracepoints (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
OUT=${PALATE_BENCH_OUT:-out/bench}
MODEL=qwen2.5-0.5b-instruct
command -v perf > /dev/null || { echo "bench_steps: needs perf (linux-perf)" >&2; exit 2; }
for f in profile-fitted.toml calib-base.db calib-job.toml; do
  [ -f "$OUT/$f" ] || { echo "bench_steps: $OUT/$f missing: run scripts/bench_calibrate.sh first" >&2; exit 2; }
done
cargo build --release --locked --quiet
p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
  --alias $MODEL --port "$p" --ctx 32768 --parallel 4 --threads 2 --metrics > "$OUT/steps-server.log" 2>&1 &
pid=$! perf_pid=
trap 'kill $perf_pid $pid 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$p/health" > /dev/null && break; sleep 0.5; done
perf record -q -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom -p "$pid" -o "$OUT/steps.perf" 2> /dev/null &
perf_pid=$!
sleep 1
rm -f "$OUT"/steps-job.db*
python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$OUT/calib-base.db" "$OUT/steps-job.db"
target/release/palate run --job "$OUT/calib-job.toml" --embed-model-dir "$CACHE/models/me5" \
  --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4" --database "$OUT/steps-job.db" \
  --endpoint "http://127.0.0.1:$p/v1" --force > /dev/null 2> "$OUT/steps-job.log" || [ $? -eq 3 ]
kill -INT $perf_pid; wait $perf_pid || true; perf_pid=
perf script -i "$OUT/steps.perf" -F tid,time,event,trace 2> /dev/null > "$OUT/steps.txt"
python3 scripts/bench_steps.py "$OUT/steps.txt" "$OUT/steps-job.db" "$OUT/profile-fitted.toml" | tee "$OUT/steps-table.txt"
