#!/usr/bin/env bash
# Calibrates the simulator against llama.cpp's server (Qwen2.5-0.5B, the demo's, 4 slots, 2
# threads) and checks the fit the way a user would: the demo job (jobs/demo.toml, 3 restaurants)
# run against llama-server, then against the simulator with the fitted profile, from the same
# work database, with no repair requests (a repair follows an answer refused at random, and on
# a 3-restaurant job the draws alone would move req/s by a third). Their req/s and TTFT p50/p95
# must agree within 15 %.
#   scripts/bench_calibrate.sh          writes out/bench/calibration.{json,txt}, the profile
#                                       out/bench/profile-fitted.toml and calibration-check.json
#   REFIT=0 scripts/bench_calibrate.sh  keeps the profile already fitted, and only checks it
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
OUT=${PALATE_BENCH_OUT:-out/bench}
MODEL=qwen2.5-0.5b-instruct
scripts/setup.sh embed llm > /dev/null
cargo build --release --locked --quiet
bin=target/release/palate
mkdir -p "$OUT"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
llama_port=$(port)
"$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
  --alias $MODEL --port "$llama_port" --ctx 32768 --parallel 4 --threads 2 --metrics > "$OUT/llama-server.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$llama_port/health" > /dev/null && break; sleep 0.5; done
sed 's/^\[llm\]$/[llm]\nrepairs = 0/' jobs/demo.toml > "$OUT/calib-job.toml"
grep -q '^repairs = 0' "$OUT/calib-job.toml"
# Exit 3 (some analyses failed: with no repairs, a refused answer fails its analysis) is a result.
run() { $bin run "$@" > /dev/null || [ $? -eq 3 ]; }
job=(--job "$OUT/calib-job.toml" --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4")

# 1. The demo job against llama-server (its embeddings first, so both runs start from them).
rm -f "$OUT"/calib-*.db*
echo "== the demo job against llama-server" >&2
run "${job[@]}" --database "$OUT/calib-llama.db" --endpoint "http://127.0.0.1:$llama_port/v1" --force
# 2. The sweep and the fit; answer lengths and refusals from that run.
if [ "${REFIT:-1}" != 0 ] || [ ! -f "$OUT/profile-fitted.toml" ]; then
echo "== calibrating against llama-server" >&2
$bin bench calibrate --endpoint "http://127.0.0.1:$llama_port/v1" --model $MODEL \
  --max-num-seqs 4 --max-num-batched-tokens 2048 --kv-tokens 32768 --rounds 3 \
  --outputs-from "$OUT/calib-llama.db" --out "$OUT/profile-fitted.toml" --json "$OUT/calibration.json" \
  2>/dev/null | tee "$OUT/calibration.txt"
fi
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
# 3. The same job against the simulator with the fitted profile, from a copy of the database
#    before step 1's analyses (its reviews and vectors; --force analyses them again).
sim_port=$(port)
$bin bench serve --profile "$OUT/profile-fitted.toml" --replay-outputs --model $MODEL --addr "127.0.0.1:$sim_port" > "$OUT/sim.log" 2>&1 &
pids+=($!)
sleep 1
echo "== the demo job against the fitted simulator" >&2
cp "$OUT/calib-llama.db" "$OUT/calib-sim.db"
run "${job[@]}" --database "$OUT/calib-sim.db" --endpoint "http://127.0.0.1:$sim_port/v1" --force
# 4. Compare the last run of each.
python3 - "$OUT/calib-llama.db" "$OUT/calib-sim.db" "$OUT/calibration-check.json" <<'PY'
import json, math, sqlite3, sys
from datetime import datetime
def figures(db):
    c = sqlite3.connect(db)
    run = c.execute("select max(run_id) from vllm_metrics").fetchone()[0]
    rows = c.execute("select started_at, e2e_ms, ttft_ms from vllm_metrics where run_id = ? and status = 'ok'", (run,)).fetchall()
    t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    start = min(t(r[0]) for r in rows); end = max(t(r[0]) + r[1] / 1000 for r in rows)
    ttft = sorted(r[2] for r in rows if r[2] is not None)
    pct = lambda p: ttft[max(math.ceil(p * len(ttft)), 1) - 1]
    return {"requests": len(rows), "wall_s": end - start, "requests_per_s": len(rows) / (end - start),
            "ttft_p50_ms": pct(0.5), "ttft_p95_ms": pct(0.95)}
real, sim = figures(sys.argv[1]), figures(sys.argv[2])
check = {k: {"llama_server": real[k], "simulator": sim[k], "error": sim[k] / real[k] - 1}
         for k in ("requests_per_s", "ttft_p50_ms", "ttft_p95_ms")}
check["requests"] = {"llama_server": real["requests"], "simulator": sim["requests"]}
def kinds(db):
    c = sqlite3.connect(db)
    run = c.execute("select max(run_id) from vllm_metrics").fetchone()[0]
    return {k: {"requests": n, "ttft_ms": t, "tpot_ms": p, "completion_tokens": o} for k, n, t, p, o in c.execute(
        "select kind, count(*), avg(ttft_ms), avg(tpot_ms), avg(completion_tokens) from vllm_metrics "
        "where run_id = ? and status = 'ok' group by kind", (run,))}
check["by_kind"] = {"llama_server": kinds(sys.argv[1]), "simulator": kinds(sys.argv[2])}
check["within_15_percent"] = all(abs(check[k]["error"]) <= 0.15 for k in ("requests_per_s", "ttft_p50_ms", "ttft_p95_ms"))
json.dump(check, open(sys.argv[3], "w"), indent=1)
print(f"{'':16} {'llama-server':>14} {'simulator':>12} {'error':>8}")
for k in ("requests_per_s", "ttft_p50_ms", "ttft_p95_ms"):
    print(f"{k:16} {real[k]:>14.3f} {sim[k]:>12.3f} {100 * check[k]['error']:>+7.1f}%")
print(f"requests         {real['requests']:>14} {sim['requests']:>12}")
print("within 15 %:", "yes" if check["within_15_percent"] else "NO")
PY
