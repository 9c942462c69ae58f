#!/usr/bin/env bash
# Calibrates the simulator against llama.cpp's server (Qwen2.5-0.5B, the demo's, 4 slots, 2
# threads) and checks the fit the way a user would: the demo job (jobs/demo.toml, 3 restaurants)
# run against llama-server, then against the simulator with the fitted profile, from the same
# work database, with no repair requests (a repair follows an answer refused at random, and on
# a 3-restaurant job the draws alone would move req/s by a third). Each side runs REPEATS times
# (default 3), each on a fresh server (llama.cpp's slots start empty, as the simulator's do);
# each simulator run replays the answer lengths of the llama-server run before it. The means of
# req/s and TTFT p50/p95 must agree within 15 %.
#   scripts/bench_calibrate.sh          writes out/bench/calibration.{json,txt}, the profile
#                                       out/bench/profile-fitted.toml and calibration-check.json
#   REFIT=0 scripts/bench_calibrate.sh  keeps the profile and step 1's database, and only checks
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PALATE_CACHE:-$PWD/.cache}
OUT=${PALATE_BENCH_OUT:-out/bench}
REPEATS=${REPEATS:-3}
MODEL=qwen2.5-0.5b-instruct
scripts/setup.sh embed llm > /dev/null
cargo build --release --locked --quiet
bin=target/release/palate
mkdir -p "$OUT"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
llama() { # a fresh llama-server on a free port; its URL in $url
  local p; p=$(port)
  "$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
    --alias $MODEL --port "$p" --ctx 32768 --parallel 4 --threads 2 --metrics > "$OUT/llama-server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$p/health" > /dev/null && break; sleep 0.5; done
  url=http://127.0.0.1:$p/v1
}
sim() { # the fitted simulator, replaying the answer lengths of work database $1's last run
  local p; p=$(port)
  $bin bench serve --profile "$OUT/profile-fitted.toml" --outputs-from "$1" --replay-outputs \
    --model $MODEL --addr "127.0.0.1:$p" > "$OUT/sim.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/v1/models" > /dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$p/v1/models" > /dev/null || { cat "$OUT/sim.log" >&2; exit 1; }
  url=http://127.0.0.1:$p/v1
}
# A work database copied whole: after a run the newest pages may still be in its write-ahead log.
copy() { python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$1" "$2"; }
sed 's/^\[llm\]$/[llm]\nrepairs = 0/' jobs/demo.toml > "$OUT/calib-job.toml"
grep -q '^repairs = 0' "$OUT/calib-job.toml"
# Exit 3 (some analyses failed: with no repairs, a refused answer fails its analysis) is a result.
run() { $bin run "$@" > /dev/null || [ $? -eq 3 ]; }
job=(--job "$OUT/calib-job.toml" --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4")

# 1. The demo job once against llama-server: the reviews' vectors every later run starts from,
#    and the answer lengths and refusals the fit's profile takes. Then the sweep and the fit.
if [ "${REFIT:-1}" != 0 ] || [ ! -f "$OUT/profile-fitted.toml" ] || [ ! -f "$OUT/calib-base.db" ]; then
  rm -f "$OUT"/calib-*.db*
  echo "== the demo job against llama-server (vectors, answer lengths)" >&2
  llama
  run "${job[@]}" --database "$OUT/calib-base.db" --endpoint "$url" --force
  echo "== calibrating against llama-server" >&2
  $bin bench calibrate --endpoint "$url" --model $MODEL \
    --max-num-seqs 4 --max-num-batched-tokens 2048 --kv-tokens 32768 --rounds 3 \
    --outputs-from "$OUT/calib-base.db" --out "$OUT/profile-fitted.toml" --json "$OUT/calibration.json" \
    2>/dev/null | tee "$OUT/calibration.txt"
  stop
fi
# 2. REPEATS times: the job against a fresh llama-server, then against the fitted simulator,
#    each from a copy of step 1's database (--force analyses its restaurants again).
for i in $(seq 1 "$REPEATS"); do
  echo "== repeat $i of $REPEATS: llama-server, then the fitted simulator" >&2
  rm -f "$OUT/calib-llama-$i".db* "$OUT/calib-sim-$i".db*
  copy "$OUT/calib-base.db" "$OUT/calib-llama-$i.db"
  copy "$OUT/calib-base.db" "$OUT/calib-sim-$i.db"
  llama
  run "${job[@]}" --database "$OUT/calib-llama-$i.db" --endpoint "$url" --force
  stop
  sim "$OUT/calib-llama-$i.db"
  run "${job[@]}" --database "$OUT/calib-sim-$i.db" --endpoint "$url" --force
  stop
done
# 3. Compare the means of the repeats.
python3 - "$OUT" "$REPEATS" <<'PY'
import json, math, sqlite3, statistics, sys
from datetime import datetime
out, repeats = sys.argv[1], int(sys.argv[2])
def last_run(c):
    return c.execute("select max(run_id) from vllm_metrics").fetchone()[0]
def figures(db):
    c = sqlite3.connect(db)
    rows = c.execute("select started_at, e2e_ms, ttft_ms from vllm_metrics where run_id = ? and status = 'ok'",
                     (last_run(c),)).fetchall()
    t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    start = min(t(r[0]) for r in rows); end = max(t(r[0]) + r[1] / 1000 for r in rows)
    ttft = sorted(r[2] for r in rows if r[2] is not None)
    pct = lambda p: ttft[max(math.ceil(p * len(ttft)), 1) - 1]
    return {"requests": len(rows), "wall_s": end - start, "requests_per_s": len(rows) / (end - start),
            "ttft_p50_ms": pct(0.5), "ttft_p95_ms": pct(0.95)}
def kinds(db):
    c = sqlite3.connect(db)
    return {k: {"requests": n, "ttft_ms": t, "tpot_ms": p, "completion_tokens": o} for k, n, t, p, o in c.execute(
        "select kind, count(*), avg(ttft_ms), avg(tpot_ms), avg(completion_tokens) from vllm_metrics "
        "where run_id = ? and status = 'ok' group by kind", (last_run(c),))}
def mean_kinds(dbs):
    per = [kinds(d) for d in dbs]
    return {k: {f: statistics.mean(p[k][f] for p in per if k in p and p[k][f] is not None)
                for f in ("requests", "ttft_ms", "tpot_ms", "completion_tokens")}
            for k in per[0]}
real_dbs = [f"{out}/calib-llama-{i}.db" for i in range(1, repeats + 1)]
sim_dbs = [f"{out}/calib-sim-{i}.db" for i in range(1, repeats + 1)]
real, sim = [figures(d) for d in real_dbs], [figures(d) for d in sim_dbs]
keys = ("requests_per_s", "ttft_p50_ms", "ttft_p95_ms")
check = {"repeats": repeats}
for k in keys:
    a, b = statistics.mean(r[k] for r in real), statistics.mean(s[k] for s in sim)
    check[k] = {"llama_server": a, "simulator": b, "error": b / a - 1,
                "llama_server_runs": [r[k] for r in real], "simulator_runs": [s[k] for s in sim]}
check["requests"] = {"llama_server": statistics.mean(r["requests"] for r in real),
                     "simulator": statistics.mean(s["requests"] for s in sim)}
check["by_kind"] = {"llama_server": mean_kinds(real_dbs), "simulator": mean_kinds(sim_dbs)}
check["within_15_percent"] = all(abs(check[k]["error"]) <= 0.15 for k in keys)
json.dump(check, open(f"{out}/calibration-check.json", "w"), indent=1)
print(f"{'':16} {'llama-server':>14} {'simulator':>12} {'error':>8}   runs (llama-server | simulator)")
for k in keys:
    runs = " ".join(f"{v:.3g}" for v in check[k]["llama_server_runs"]) + " | " + \
        " ".join(f"{v:.3g}" for v in check[k]["simulator_runs"])
    print(f"{k:16} {check[k]['llama_server']:>14.3f} {check[k]['simulator']:>12.3f} {100 * check[k]['error']:>+7.1f}%   {runs}")
print(f"requests         {check['requests']['llama_server']:>14.1f} {check['requests']['simulator']:>12.1f}")
print("within 15 %:", "yes" if check["within_15_percent"] else "NO")
PY
