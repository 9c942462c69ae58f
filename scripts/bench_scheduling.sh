#!/usr/bin/env bash
# The scheduling benchmark: palate's client modes and the naive Python client on the same
# requests, each against a fresh simulated vLLM server in its own process (the built-in profile,
# Qwen2.5-7B-Instruct on one H100; an empty prefix cache every run), REPEATS times each.
#   scripts/bench_scheduling.sh                 all of it into out/bench/scheduling.jsonl
#   REPEATS=3 TIME_SCALE=0.25 RESTAURANTS=200 scripts/bench_scheduling.sh
#   PHASES="open sweeps" OPEN_REPEATS=1 SWEEP_REPEATS=1 APPEND=1 scripts/bench_scheduling.sh
#     some phases only (closed, open, sweeps), fewer repeats of the long ones, added to the file
#     (SEED_OFFSET=2: a third open-loop repeat draws new arrivals rather than repeat 1's)
# Closed loop: 64 restaurants at a time (palate), every request at once under a 256 semaphore
# (naive). Open loop: Poisson arrivals at 70 % of the ceiling's restaurant rate. Sweeps (SJF,
# closed loop, 100 restaurants): max_in_flight, sentiment batch, prompt length, output length.
# The naive client needs ~36 ms of CPU per request (the openai package parses every streamed
# chunk): at a time scale of 0.25 its own CPU would be the bottleneck, which a real server never
# makes it, so it runs against a real-time server (scale 1), beside palate SJF at scale 1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
OPEN_REPEATS=${OPEN_REPEATS:-$REPEATS}
SWEEP_REPEATS=${SWEEP_REPEATS:-$REPEATS}
PHASES=" ${PHASES:-closed open sweeps} "
SCALE=${TIME_SCALE:-0.25}
N=${RESTAURANTS:-200}
OUT=${PALATE_BENCH_OUT:-out/bench}
PROFILE=${PROFILE:-}
cargo build --release --locked --quiet
bin=target/release/palate
py=$(scripts/bench_venv.sh)
mkdir -p "$OUT"
res=$OUT/scheduling.jsonl
[ -n "${APPEND:-}" ] || : > "$res"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port/v1
sim=
stop() { [ -n "$sim" ] && kill "$sim" 2>/dev/null && wait "$sim" 2>/dev/null; sim=; true; }
trap stop EXIT
serve() { # a fresh server: serve [bench serve flags]
  stop
  $bin bench serve --addr "127.0.0.1:$port" --time-scale "${scale:-$SCALE}" ${PROFILE:+--profile "$PROFILE"} "$@" \
    > "$OUT/sim.log" 2>&1 &
  sim=$!
  for _ in $(seq 1 100); do curl -sf "$url/models" > /dev/null && return; sleep 0.1; done
  echo "the simulator did not start; see $OUT/sim.log" >&2; exit 1
}
# palate TAG [bench scheduling flags]: one palate run, tagged, appended to $res.
palate() {
  local tag=$1; shift
  $bin bench scheduling --endpoint "$url" --json "$OUT/one.json" "$@" > "$OUT/one.txt" 2> "$OUT/one.log" \
    || { cat "$OUT/one.log" >&2; exit 1; }
  sed -n 2p "$OUT/one.txt" >&2
  python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readlines()[-1]); r["tag"]=sys.argv[2]; r["client"]="palate"; print(json.dumps(r))' \
    "$OUT/one.json" "$tag" >> "$res"
  rm -f "$OUT/one.json" "$OUT/one.txt" "$OUT/one.log"
}
# naive TAG [bench_naive.py flags]
naive() {
  local tag=$1; shift
  "$py" scripts/bench_naive.py --endpoint "$url" --workload "$OUT/workload.jsonl" --json "$OUT/one.json" "$@" \
    > "$OUT/one.txt"
  sed -n 2p "$OUT/one.txt" >&2
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["tag"]=sys.argv[2]; r["client"]="naive"; print(json.dumps(r))' \
    "$OUT/one.json" "$tag" >> "$res"
  rm -f "$OUT/one.json"
}
$bin bench scheduling --endpoint "$url" --mode fifo --restaurants "$N" --export-workload "$OUT/workload.jsonl" > /dev/null
per_restaurant=$(python3 -c "print(sum(1 for _ in open('$OUT/workload.jsonl')) / $N)")

[[ $PHASES == *" closed "* ]] && for r in $(seq 1 "$REPEATS"); do
  echo "== repeat $r of $REPEATS: closed loop" >&2
  serve; palate ceiling --mode ceiling --restaurants "$N"
  serve; palate closed --mode sequential --restaurants 10
  serve; palate closed --mode fifo --restaurants "$N"
  serve; palate closed --mode sjf --restaurants "$N"
  serve --priority; palate closed --mode priority --restaurants "$N"
  scale=1 serve; naive closed --concurrency 256
  scale=1 serve; palate closed-1x --mode sjf --restaurants "$N"
done
# Open loop at 70 % of the ceiling's restaurant rate (mean of the ceiling runs).
if [[ $PHASES == *" open "* ]]; then
rate=$(python3 -c "
import json
c=[json.loads(l) for l in open('$res') if '\"tag\": \"ceiling\"' in l]
print(round(0.7 * sum(x['requests_per_s'] for x in c) / len(c) / $per_restaurant, 3))")
for r in $(seq 1 "$OPEN_REPEATS"); do
  echo "== repeat $r of $OPEN_REPEATS: open loop, $rate restaurants/s" >&2
  serve; palate open --mode fifo --restaurants "$N" --arrival-rate "$rate" --seed "$((r + ${SEED_OFFSET:-0}))"
  serve; palate open --mode sjf --restaurants "$N" --arrival-rate "$rate" --seed "$((r + ${SEED_OFFSET:-0}))"
  serve --priority; palate open --mode priority --restaurants "$N" --arrival-rate "$rate" --seed "$((r + ${SEED_OFFSET:-0}))"
  scale=1 serve; naive open --concurrency 256 --arrival-rate "$rate" --seed "$((r + ${SEED_OFFSET:-0}))"
  scale=1 serve; palate open-1x --mode sjf --restaurants "$N" --arrival-rate "$rate" --seed "$((r + ${SEED_OFFSET:-0}))"
done
fi
half=$((N / 2))
[[ $PHASES == *" sweeps "* ]] && for r in $(seq 1 "$SWEEP_REPEATS"); do
  echo "== repeat $r of $SWEEP_REPEATS: sweeps" >&2
  for m in 8 32 128 512 2048; do serve; palate "in_flight=$m" --mode sjf --restaurants "$half" --max-in-flight "$m"; done
  for b in 4 8 16 32; do serve; palate "batch=$b" --mode sjf --restaurants "$half" --sentiment-batch "$b"; done
  for p in 0.5 1 2; do serve; palate "prompt=$p" --mode sjf --restaurants "$half" --review-scale "$p"; done
  for o in 0.5 1 2; do serve --output-scale "$o"; palate "output=$o" --mode sjf --restaurants "$half"; done
done
echo "$(wc -l < "$res") runs in $res" >&2
