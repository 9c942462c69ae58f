"""The naive baseline of palate's scheduling benchmark: the client the original system would have
written, in Python `asyncio` with the official `openai` package (AsyncOpenAI).

It replays a workload exported by `palate bench scheduling --export-workload FILE` (one chat
request per line: restaurant, kind, cohort, est_prefill_tokens, body). It is naive on purpose:
every request of a restaurant is sent the moment the restaurant is released, all behind one
`asyncio.Semaphore` (FIFO, in file order), with no prefix-first ordering, no shortest-job-first,
no server priority (dropped unless --keep-priority), no validation repairs and no retries
(`max_retries=0`, a generous timeout): a failure is counted by its exception class, not hidden.

Closed loop (default): all restaurants released at t = 0. Open loop (--arrival-rate R):
restaurants arrive as a seeded Poisson process of R per second. Measured client-side per request:
TTFT (first chunk with content) and end-to-end latency, both from the moment the request is
ready (its wait for the semaphore included, as palate counts its own queue), prompt and
completion tokens (the final usage chunk), and whether the answer parses as JSON; per
restaurant, its last answer minus its release.
Prints a short table and writes the same summary as one JSON object to --json.
"""
import argparse, asyncio, json, math, random, time, urllib.request
from collections import Counter

from openai import AsyncOpenAI

# Body fields the typed `chat.completions.create` parameters take; the rest go in `extra_body`.
TYPED = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n",
         "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
         "response_format", "user"}


def time_scale(endpoint):
    """palate's simulator runs at a time scale it states on /metrics (real seconds per simulated
    second); every time here is divided by it, as palate's own benchmark does. 1 elsewhere."""
    base = endpoint.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("palate_sim_time_scale "):
                    return float(line.split()[1]) or 1.0
    except (OSError, ValueError):
        pass
    return 1.0


def pct(values, p):
    """Nearest-rank percentile: sorted(v)[ceil(p*n)-1]; None when empty."""
    v = sorted(values)
    return v[max(math.ceil(p * len(v)), 1) - 1] if v else None


async def one(client, sem, req, a, t0):
    body = dict(req["body"])
    for k in ("stream", "stream_options"):
        body.pop(k, None)
    if a.drop_priority:
        body.pop("priority", None)
    model = a.model or body.pop("model")
    body.pop("model", None)
    messages = body.pop("messages")
    typed = {k: body.pop(k) for k in list(body) if k in TYPED}
    r = {"restaurant": req["restaurant"], "cohort": req.get("cohort"), "ok": False,
         "ttft": None, "e2e": None, "prompt_tokens": 0, "completion_tokens": 0,
         "valid_json": False, "error": None}
    start = time.perf_counter()  # ready: the wait for the semaphore counts, as palate's queue does
    async with sem:
        try:
            stream = await client.chat.completions.create(
                model=model, messages=messages, stream=True,
                stream_options={"include_usage": True}, extra_body=body or None, **typed)
            parts = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if r["ttft"] is None:
                        r["ttft"] = time.perf_counter() - start
                    parts.append(chunk.choices[0].delta.content)
                if chunk.usage:
                    r["prompt_tokens"] = chunk.usage.prompt_tokens or 0
                    r["completion_tokens"] = chunk.usage.completion_tokens or 0
            r["e2e"] = time.perf_counter() - start
            r["ok"] = True
            try:
                json.loads("".join(parts))
                r["valid_json"] = True
            except ValueError:
                pass
        except Exception as e:  # counted, never fatal
            r["error"] = type(e).__name__
    r["done"] = time.perf_counter() - t0
    return r


async def restaurant(client, sem, reqs, release, a, t0):
    if release > 0:
        await asyncio.sleep(max(0.0, release - (time.perf_counter() - t0)))
    results = await asyncio.gather(*(one(client, sem, q, a, t0) for q in reqs))
    return max(r["done"] for r in results) - release, results


def load(path):
    groups = {}  # restaurant -> its requests, in file order (dicts keep insertion order)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                req = json.loads(line)
                groups.setdefault(req["restaurant"], []).append(req)
    return list(groups.values())


async def run(a):
    groups = load(a.workload)
    a.scale = time_scale(a.endpoint)
    if a.arrival_rate:
        rng, t, releases = random.Random(a.seed), 0.0, []
        for _ in groups:  # first arrival after one gap, as palate's own open loop
            t += rng.expovariate(a.arrival_rate)
            releases.append(t * a.scale)
    else:
        releases = [0.0] * len(groups)
    client = AsyncOpenAI(base_url=a.endpoint, api_key=a.api_key, max_retries=0, timeout=a.timeout)
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.perf_counter()
    done = await asyncio.gather(*(restaurant(client, sem, g, rel, a, t0)
                                  for g, rel in zip(groups, releases)))
    wall = time.perf_counter() - t0
    await client.close()
    return summarise(a, done, wall)


def summarise(a, done, wall):
    """The figures, in the server's time (real time divided by its time scale)."""
    k = a.scale
    wall /= k
    done = [(c / k, [{**r, "ttft": None if r["ttft"] is None else r["ttft"] / k,
                      "e2e": None if r["e2e"] is None else r["e2e"] / k} for r in rs])
            for c, rs in done]
    reqs = [r for _, rs in done for r in rs]
    ok = [r for r in reqs if r["ok"]]
    ms = lambda v: None if v is None else round(v * 1000, 1)
    ttft = lambda rs: [r["ttft"] for r in rs if r["ttft"] is not None]
    e2e = lambda rs: [r["e2e"] for r in rs]
    out_tokens = sum(r["completion_tokens"] for r in ok)
    s = {
        "requests": len(reqs), "ok": len(ok), "errors": len(reqs) - len(ok),
        "errors_by_class": dict(Counter(r["error"] for r in reqs if r["error"])),
        "valid_json": sum(r["valid_json"] for r in reqs),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(ok) / wall, 3) if wall else None,
        "output_tokens_per_s": round(out_tokens / wall, 1) if wall else None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in ok), "completion_tokens": out_tokens,
        "ttft_p50_ms": ms(pct(ttft(ok), .5)), "ttft_p95_ms": ms(pct(ttft(ok), .95)),
        "e2e_p50_ms": ms(pct(e2e(ok), .5)), "e2e_p95_ms": ms(pct(e2e(ok), .95)),
    }
    for c in ("small", "large"):
        rs = [r for r in ok if r["cohort"] == c]
        s[c] = {"requests": len(rs),
                "ttft_p50_ms": ms(pct(ttft(rs), .5)), "ttft_p95_ms": ms(pct(ttft(rs), .95)),
                "e2e_p50_ms": ms(pct(e2e(rs), .5)), "e2e_p95_ms": ms(pct(e2e(rs), .95))}
    comp = [c for c, _ in done]
    s.update({
        "restaurant_completion_p50_s": None if not comp else round(pct(comp, .5), 3),
        "restaurant_completion_p95_s": None if not comp else round(pct(comp, .95), 3),
        "restaurants": len(done), "mode": "open" if a.arrival_rate else "closed",
        "arrival_rate": a.arrival_rate, "concurrency": a.concurrency, "time_scale": k,
    })
    return s


def show(s):
    f = lambda v: "-" if v is None else f"{v:.0f}" if isinstance(v, float) else str(v)
    rate = f", {s['arrival_rate']} restaurants/s" if s["arrival_rate"] else ""
    print(f"naive asyncio+openai, {s['mode']} loop{rate}, concurrency {s['concurrency']}: "
          f"{s['restaurants']} restaurants, {s['requests']} requests in {s['wall_s']:.2f} s")
    by = f" {s['errors_by_class']}" if s["errors"] else ""
    print(f"  ok {s['ok']}, errors {s['errors']}{by}, "
          f"valid JSON {s['valid_json']}; {s['requests_per_s']} req/s, "
          f"{s['output_tokens_per_s']} output tok/s")
    print(f"  {'':8}{'n':>6}{'ttft p50':>10}{'p95':>8}{'e2e p50':>10}{'p95':>8}  (ms)")
    rows = [("all", {**s, "requests": s["ok"]})] + [(c, s[c]) for c in ("small", "large")]
    for name, d in rows:
        print(f"  {name:8}{d['requests']:>6}{f(d['ttft_p50_ms']):>10}{f(d['ttft_p95_ms']):>8}"
              f"{f(d['e2e_p50_ms']):>10}{f(d['e2e_p95_ms']):>8}")
    print(f"  restaurant completion p50 {s['restaurant_completion_p50_s']} s, "
          f"p95 {s['restaurant_completion_p95_s']} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--workload", required=True, help="JSONL from --export-workload")
    ap.add_argument("--model", help="overrides every body's model")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight (semaphore)")
    ap.add_argument("--arrival-rate", type=float, help="open loop: restaurants per second")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--drop-priority", dest="drop_priority", action="store_true", default=True,
                    help="remove the body's `priority` field (the default)")
    ap.add_argument("--keep-priority", dest="drop_priority", action="store_false")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="httpx timeout, seconds: connect and each read (not the whole stream)")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--json", help="write the summary here as one JSON object")
    a = ap.parse_args()
    s = asyncio.run(run(a))
    show(s)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(s) + "\n")


if __name__ == "__main__":
    main()
