#!/usr/bin/env bash
# palate's own cost per request: CPU seconds and peak RSS of the whole `palate run` path
# (restaurant pages from SQLite, selection, prompts, token counting, the client, validation,
# result and metric writes) against a zero-cost simulated vLLM server in a separate process, over
# synthetic catalogues of growing size. Embedding is left out: `palate bench catalogue` stores
# random vectors, so the run loads no embedding model.
#   scripts/bench_cost.sh [RESTAURANTS...]      default: 1000 10000; 3 runs each
#   RUNS=1 REVIEWS=10 scripts/bench_cost.sh 100000   fewer runs, fewer reviews per restaurant
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ $# -gt 0 ] || sizes=(1000 10000)
cargo build --release --locked --quiet
bin=target/release/palate
work=$(mktemp -d)
trap 'kill $sim 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
$bin bench serve --zero-cost --addr 127.0.0.1:$port > "$work/sim.log" 2>&1 &
sim=$!
sleep 1
cat > "$work/job.toml" <<JOB
[job]
name = "bench-cost"
database = "$work/bench.db"
rejects_dir = "$work/rejects"
restaurant_concurrency = 64
[llm]
endpoints = ["http://127.0.0.1:$port/v1"]
model = "sim"
max_in_flight = 256
[plan]
language = "english"
[metrics]
scrape_interval_s = 0
JOB
# Peak RSS counts the pages of the database file that SQLite's memory map touched (shared page
# cache, up to its 256 MiB mmap_size); anon_mb is the peak of the process's own memory
# (RssAnon, sampled every 100 ms).
printf '%-12s %-4s %10s %10s %12s %10s %12s %9s\n' restaurants run requests cpu_s cpu_ms_per_req wall_s peak_rss_mb anon_mb
for n in "${sizes[@]}"; do
  rm -f "$work"/bench.db*
  $bin bench catalogue --restaurants "$n" --reviews "${REVIEWS:-40}" --job "$work/job.toml" > /dev/null 2>&1
  for run in $(seq 1 "${RUNS:-3}"); do
    force=""; [ "$run" -gt 1 ] && force="--force"
    /usr/bin/time -f "%U %S %e %M" -o "$work/time" $bin run --job "$work/job.toml" $force \
      --log-format json > /dev/null 2> "$work/run.log" &
    timer=$!
    anon=0
    while kill -0 $timer 2>/dev/null; do
      for p in $(pgrep -P $timer); do
        a=$(awk '/^RssAnon/ {print $2}' /proc/$p/status 2>/dev/null || echo 0)
        [ "${a:-0}" -gt "$anon" ] && anon=$a
      done
      sleep 0.1
    done
    # 3 is a run that finished with some analyses failed (the profile's refusals): its cost
    # counts like any other's.
    rc=0; wait $timer || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] || { tail -5 "$work/run.log"; exit 1; }
    # The last line: GNU time puts "Command exited with non-zero status 3" before it.
    read -r user sys wall rss < <(tail -1 "$work/time")
    run_id=$(sqlite3 "$work/bench.db" "SELECT max(run_id) FROM runs")
    reqs=$(sqlite3 "$work/bench.db" "SELECT count(*) FROM vllm_metrics WHERE run_id = $run_id")
    awk -v n="$n" -v r="$run" -v q="$reqs" -v u="$user" -v s="$sys" -v w="$wall" -v m="$rss" -v a="$anon" \
      'BEGIN { printf "%-12s %-4s %10d %10.2f %12.3f %10.1f %12.1f %9.1f\n", n, r, q, u+s, (u+s)*1000/q, w, m/1024, a/1024 }'
  done
done
