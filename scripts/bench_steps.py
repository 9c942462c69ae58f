"""Each step llama-server ran during a demo job, against the fitted simulator's step cost.

Reads `perf script` output of llama-server's sendto/recvfrom (scripts/bench_steps.sh records
it) and the job's work database. A step's tokens go out together, so a burst of token chunks
ends a step and the gap from the burst before is its duration; each request is matched to its
`vllm_metrics` row by arrival order, which gives every step's decoding sequences (and their
context) and the prompts it computed. The prediction is `LatencyModel::step_of`
(src/sim/cost.rs), mirrored here. Steps of a prompt that spanned several steps are left out.

usage: bench_steps.py PERF_SCRIPT.txt WORK.db PROFILE.toml
"""
import collections, datetime, re, sqlite3, statistics, sys, tomllib

perf_txt, db_path, profile_path = sys.argv[1:4]
profile = tomllib.load(open(profile_path, "rb"))
L = profile["engine"]["latency"]
mask_of = {k: o.get("mask_ms", L.get("mask_ms", 0.0)) for k, o in profile.get("outputs", {}).items()}


def pairs(c, t):
    return t * c + t * (t + 1) // 2


def step(prefill=0, decoding=0, running=0, sequences=0, mask=0.0, context=0, pr=0):
    tokens = prefill + decoding
    tile = L.get("tile", 0)
    compute = (L["token_ms"] * tokens + L.get("row_ms", 0.0) * (tokens % tile if tile > 1 else 0)
               + L["attention_us"] / 1000 * pr)
    memory = L["weights_ms"] + L["kv_token_us"] / 1000 * context
    mix = L.get("mix_us", 0.0) / 1000 * tokens * max(sequences - 1, 0)
    return L["step_ms"] + L["seq_ms"] * running + mask + mix + max(compute, memory)


def step_of(work, running, mask):
    """work: (context, tokens, decoding) per sequence."""
    if not L.get("split_equal") or len(work) < 2:
        ctx = sum(c for c, _, d in work if d)
        return step(sum(t for _, t, d in work if not d), sum(1 for w in work if w[2]), running,
                    len(work), mask, ctx, ctx + sum(pairs(c, t) for c, t, d in work if not d))
    done, ms = [0] * len(work), L["seq_ms"] * running + mask
    while True:
        live = [i for i, w in enumerate(work) if done[i] < w[1]]
        if not live:
            return ms
        m = min(work[i][1] - done[i] for i in live)
        p = d = ctx = pr = 0
        for i in live:
            c = work[i][0] + done[i]
            if work[i][2]:
                d, ctx, pr = d + 1, ctx + c, pr + c
            else:
                p, pr = p + m, pr + pairs(c, m)
            done[i] += m
        ms += step(p, d, 0, len(live), 0.0, ctx, pr)


# Requests as the server saw them: a recvfrom (arrival), a short send (headers, at launch),
# then a chunk per token, then short sends (the end of the stream).
line = re.compile(r"^\s*\d+\s+([\d.]+):\s+syscalls:sys_enter_(\w+):\s+fd: (0x[0-9a-f]+)(?:, buff: \S+, len: (0x[0-9a-f]+))?")
requests, current, last_recv = [], {}, {}
for raw in open(perf_txt):
    m = line.match(raw)
    if not m:
        continue
    t, call, fd, n = float(m[1]), m[2], int(m[3], 16), int(m[4] or "0", 16)
    if call == "recvfrom":
        last_recv[fd] = t
        continue
    r = current.get(fd)
    if 150 <= n < 200 and (r is None or r["done"]):
        r = current[fd] = {"arrival": last_recv.get(fd, t), "launch": t, "chunks": [], "done": False}
        requests.append(r)
    elif r is None:
        continue
    elif n >= 200:
        r["chunks"].append(t)
    else:
        r["done"] = True
requests = sorted((r for r in requests if r["chunks"]), key=lambda r: r["arrival"])
db = sqlite3.connect(db_path)
rows = db.execute("""select kind, started_at, queue_ms, prompt_tokens, coalesce(cached_tokens, 0),
    completion_tokens from vllm_metrics where run_id = (select max(run_id) from vllm_metrics)""").fetchall()
rows = sorted(({"kind": k, "t": datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() + q / 1000,
                "prompt": p, "cached": c, "out": o} for k, s, q, p, c, o in rows), key=lambda r: r["t"])
if len(rows) != len(requests):
    sys.exit(f"bench_steps: {len(requests)} requests in the recording, {len(rows)} in {db_path}")
offset = rows[0]["t"] - requests[0]["arrival"]
for r, row in zip(requests, rows):
    r.update(row)
    r["tokens"] = r["chunks"][: r["out"]]  # the last chunk carries the usage, no token
skew = max(abs(r["t"] - offset - r["arrival"]) for r in requests)
if skew > 0.5:
    sys.exit(f"bench_steps: requests do not match the database (skew {skew:.1f} s)")

sends = sorted((t, i) for i, r in enumerate(requests) for t in r["tokens"])
bursts = []
for t, i in sends:
    if bursts and t - bursts[-1][0][-1] < 0.008:
        bursts[-1][0].append(t)
        bursts[-1][1].add(i)
    else:
        bursts.append(([t], {i}))
steps, prev = [], None
for times, ids in bursts:
    end = times[0]
    if prev is not None:
        decoding, prompts = [], []
        for i in ids:
            r = requests[i]
            j = next(k for k, x in enumerate(r["tokens"]) if prev < x <= times[-1])
            (prompts.append(r) if j == 0 else decoding.append((r, r["prompt"] + j)))
        # A prompt launched before this step ended whose first token comes later: it spans steps.
        held = sum(1 for r in requests if r["launch"] < end - 0.004 and r["tokens"][0] > times[-1])
        whole = held == 0 and all(r["launch"] < end - 0.004 for r in prompts)
        if whole:
            work = [(c, 1, True) for _, c in decoding] + [(r["cached"], r["prompt"] - r["cached"], False) for r in prompts]
            predicted = step_of(work, len(ids), sum(mask_of.get(r["kind"], 0.0) for r, _ in decoding))
            kind = ("decode" if not prompts else f"{len(prompts)} prompt(s) beside") + f" {len(decoding)} decoding"
            steps.append((kind, (end - prev) * 1000, predicted))
    prev = times[-1]

groups = collections.defaultdict(list)
for kind, observed, predicted in steps:
    groups[kind].append((observed, predicted))
print(f"{'step':34} {'steps':>6} {'observed, s':>12} {'predicted, s':>13} {'median obs':>11} {'median pred':>12}")
for kind in sorted(groups):
    g = groups[kind]
    print(f"{kind:34} {len(g):6} {sum(o for o, _ in g) / 1000:12.1f} {sum(p for _, p in g) / 1000:13.1f}"
          f" {statistics.median(o for o, _ in g):8.1f} ms {statistics.median(p for _, p in g):9.1f} ms")
o, p = sum(s[1] for s in steps) / 1000, sum(s[2] for s in steps) / 1000
print(f"{'all':34} {len(steps):6} {o:12.1f} {p:13.1f}   ({100 * (p - o) / o:+.1f} %; "
      f"{len(bursts) - 1 - len(steps)} steps of a prompt over several steps left out)")
