#!/usr/bin/env bash
# Calibrates the simulator against llama.cpp's server (Qwen2.5-0.5B, the demo's, 4 slots, 2
# threads) and checks the fit the way a user would: the demo job (jobs/demo.toml, 3 restaurants)
# run against llama-server, then against the simulator with the fitted profile, from the same
# work database, with no repair requests (a repair follows an answer refused at random, and on
# a 3-restaurant job the draws alone would move req/s by a third). Each side runs REPEATS times
# (default 3), each on a fresh server (llama.cpp's slots start empty, as the simulator's do);
# each simulator run replays the answer lengths of the llama-server run before it, each
# restaurant's own (palate names the restaurant in each request's X-Request-Id). The means of
# req/s and TTFT p50/p95 must agree within 15 %.
# This VM's speed drifts by 20-60 % within an hour, and the fit is minutes to half an hour older
# than each job run. So scripts/bench_probe.py times one fixed request before and after the sweep
# and before and after each llama-server job, and with DRIFT=1 each repeat also runs the simulator
# slowed by the ratio (--time-scale), reported as the check with the drift taken out. (The ratio:
# the mean of the probes around the job over the mean of those around the sweep. It is off by
# default: one short request tracks the machine's speed during a 3-minute job too loosely to
# correct for it, and `bench steps` below prices the job's own steps instead.)
# Each repeat's llama-server logs every step (--debug-log) to llama-server-I.log, and
# `palate bench steps` prices each of those steps with the fitted profile (steps-table.txt):
# the same steps on both sides, so which requests ran together does not enter.
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
llama() { # a fresh llama-server on a free port, logging to $OUT/$1 (every step with --debug-log as $2); its URL in $url
  local p; p=$(port)
  "$CACHE/llm/venv/bin/python" scripts/serve_llm.py --model "$CACHE/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
    --alias $MODEL --port "$p" --ctx 32768 --parallel 4 --threads 2 --metrics ${2:-} > "$OUT/$1" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$p/health" > /dev/null && break; sleep 0.5; done
  url=http://127.0.0.1:$p/v1
}
sim() { # the fitted simulator at time scale $2, replaying the answer lengths of work database $1's last run
  local p; p=$(port)
  $bin bench serve --profile "$OUT/profile-fitted.toml" --outputs-from "$1" --replay-outputs --time-scale "$2" \
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
probe() { scripts/bench_probe.py "$url" > "$1"; }
job=(--job "$OUT/calib-job.toml" --embed-model-dir "$CACHE/models/me5" --ort-dylib "$CACHE/onnxruntime/libonnxruntime.so.1.24.4")

# 1. The demo job once against llama-server: the reviews' vectors every later run starts from,
#    and the answer lengths and refusals the fit's profile takes. Then the sweep and the fit.
if [ "${REFIT:-1}" != 0 ] || [ ! -f "$OUT/profile-fitted.toml" ] || [ ! -f "$OUT/calib-base.db" ]; then
  rm -f "$OUT"/calib-*.db*
  echo "== the demo job against llama-server (vectors, answer lengths)" >&2
  llama llama-server.log
  run "${job[@]}" --database "$OUT/calib-base.db" --endpoint "$url" --force
  echo "== calibrating against llama-server" >&2
  probe "$OUT/probe-calibration-before.json"
  $bin bench calibrate --endpoint "$url" --model $MODEL \
    --max-num-seqs 4 --max-num-batched-tokens 2048 --kv-tokens 32768 --rounds 3 \
    --outputs-from "$OUT/calib-base.db" --out "$OUT/profile-fitted.toml" --json "$OUT/calibration.json" \
    2>/dev/null | tee "$OUT/calibration.txt"
  probe "$OUT/probe-calibration-after.json"
  python3 -c 'import json, sys; b, a = (json.load(open(f)) for f in sys.argv[1:3])
json.dump({"before": b, "after": a, "probe_ms": (b["probe_ms"] + a["probe_ms"]) / 2}, open(sys.argv[3], "w"))' \
    "$OUT/probe-calibration-before.json" "$OUT/probe-calibration-after.json" "$OUT/probe-calibration.json"
  stop
fi
[ -f "$OUT/probe-calibration.json" ] || { echo "no $OUT/probe-calibration.json: run with REFIT=1" >&2; exit 1; }
# 2. REPEATS times: the job against a fresh llama-server (the machine probed before and after),
#    then against the fitted simulator (with DRIFT=1 also slowed by the probes' ratio), each from
#    a copy of step 1's database (--force analyses its restaurants again).
for i in $(seq 1 "$REPEATS"); do
  echo "== repeat $i of $REPEATS: llama-server, then the fitted simulator" >&2
  rm -f "$OUT/calib-llama-$i".db* "$OUT/calib-sim-$i".db* "$OUT/calib-simd-$i".db*
  for d in llama sim; do copy "$OUT/calib-base.db" "$OUT/calib-$d-$i.db"; done
  llama "llama-server-$i.log" --debug-log
  probe "$OUT/probe-$i-before.json"
  run "${job[@]}" --database "$OUT/calib-llama-$i.db" --endpoint "$url" --force
  probe "$OUT/probe-$i-after.json"
  stop
  scale=$(python3 -c 'import json, sys; ms = lambda f: json.load(open(f))["probe_ms"]
print(round((ms(sys.argv[2]) + ms(sys.argv[3])) / 2 / ms(sys.argv[1]), 4))' \
    "$OUT/probe-calibration.json" "$OUT/probe-$i-before.json" "$OUT/probe-$i-after.json")
  echo "$scale" > "$OUT/probe-$i-scale.txt"
  sim "$OUT/calib-llama-$i.db" 1
  run "${job[@]}" --database "$OUT/calib-sim-$i.db" --endpoint "$url" --force
  stop
  if [ "${DRIFT:-0}" != 0 ]; then
    copy "$OUT/calib-base.db" "$OUT/calib-simd-$i.db"
    sim "$OUT/calib-llama-$i.db" "$scale"
    run "${job[@]}" --database "$OUT/calib-simd-$i.db" --endpoint "$url" --force
    stop
  fi
done
# 3. Every step of the llama-server runs against the fitted step cost, then the means of the repeats.
$bin bench steps $(for i in $(seq 1 "$REPEATS"); do echo "$OUT/llama-server-$i.log"; done) \
  --profile "$OUT/profile-fitted.toml" --json "$OUT/steps.json" > "$OUT/steps-table.txt"
python3 - "$OUT" "$REPEATS" <<'PY'
import json, math, os, sqlite3, statistics, sys
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
real = [figures(d) for d in real_dbs]
keys = ("requests_per_s", "ttft_p50_ms", "ttft_p95_ms")
def compare(sim_dbs):
    sim = [figures(d) for d in sim_dbs]
    c = {}
    for k in keys:
        a, b = statistics.mean(r[k] for r in real), statistics.mean(s[k] for s in sim)
        c[k] = {"llama_server": a, "simulator": b, "error": b / a - 1,
                "llama_server_runs": [r[k] for r in real], "simulator_runs": [s[k] for s in sim]}
    c["requests"] = {"llama_server": statistics.mean(r["requests"] for r in real),
                     "simulator": statistics.mean(s["requests"] for s in sim)}
    c["by_kind"] = {"llama_server": mean_kinds(real_dbs), "simulator": mean_kinds(sim_dbs)}
    c["within_15_percent"] = all(abs(c[k]["error"]) <= 0.15 for k in keys)
    return c
probe = lambda f: json.load(open(f"{out}/{f}"))
check = {"repeats": repeats, **compare([f"{out}/calib-sim-{i}.db" for i in range(1, repeats + 1)])}
drifted = [f"{out}/calib-simd-{i}.db" for i in range(1, repeats + 1)]
if all(os.path.exists(d) for d in drifted):
    check["drift_adjusted"] = compare(drifted)
check["probes"] = {"calibration_ms": probe("probe-calibration.json")["probe_ms"],
                   "runs": [{"before_ms": probe(f"probe-{i}-before.json")["probe_ms"],
                             "after_ms": probe(f"probe-{i}-after.json")["probe_ms"],
                             "time_scale": float(open(f"{out}/probe-{i}-scale.txt").read())}
                            for i in range(1, repeats + 1)]}
json.dump(check, open(f"{out}/calibration-check.json", "w"), indent=1)
def table(title, c):
    print(f"{title:16} {'llama-server':>14} {'simulator':>12} {'error':>8}   runs (llama-server | simulator)")
    for k in keys:
        runs = " ".join(f"{v:.3g}" for v in c[k]["llama_server_runs"]) + " | " + \
            " ".join(f"{v:.3g}" for v in c[k]["simulator_runs"])
        print(f"{k:16} {c[k]['llama_server']:>14.3f} {c[k]['simulator']:>12.3f} {100 * c[k]['error']:>+7.1f}%   {runs}")
    print(f"requests         {c['requests']['llama_server']:>14.1f} {c['requests']['simulator']:>12.1f}")
    print("within 15 %:", "yes" if c["within_15_percent"] else "NO")
table("raw", check)
p = check["probes"]
print(f"probe: {p['calibration_ms']:.0f} ms around the sweep; before/after each job: " +
      ", ".join(f"{r['before_ms']:.0f}/{r['after_ms']:.0f} (x{r['time_scale']:.3f})" for r in p["runs"]))
if "drift_adjusted" in check:
    table("drift taken out", check["drift_adjusted"])
PY
