#!/usr/bin/env python3
"""How fast this machine runs llama-server right now: the same fixed request (a prompt of about 300 tokens
prefilled with no cached prefix, then 64 tokens decoded) sent alone ROUNDS times, timed by the
server itself (llama.cpp's `timings`). The calibration check (scripts/bench_calibrate.sh) probes
right after the calibration sweep and around each job run, and reports the check a second time
with the simulator slowed by the ratio, because this VM's speed drifts by 20-60 % within an hour.

    scripts/bench_probe.py URL [ROUNDS]    URL: the server's base, http://127.0.0.1:PORT/v1

Prints one JSON object: the median probe time and its prefill and decode parts, in ms.
"""
import json
import statistics
import sys
import urllib.request

SENTENCE = "The broth was rich and deep, the noodles springy, and the staff kind but slow. "


def once(base):
    body = {"prompt": SENTENCE * 16, "n_predict": 64, "ignore_eos": True,
            "cache_prompt": False, "temperature": 0}
    rq = urllib.request.Request(base + "/completion", json.dumps(body).encode(),
                                {"Content-Type": "application/json"})
    with urllib.request.urlopen(rq, timeout=300) as r:
        t = json.load(r)["timings"]
    return t["prompt_n"], t["prompt_ms"], t["predicted_n"], t["predicted_ms"]


def main():
    base = sys.argv[1].rstrip("/").removesuffix("/v1")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    runs = [once(base) for _ in range(rounds)]
    prefill = statistics.median(r[1] for r in runs)
    decode = statistics.median(r[3] for r in runs)
    print(json.dumps({"prompt_tokens": runs[0][0], "output_tokens": runs[0][2],
                      "prefill_ms": prefill, "decode_ms": decode,
                      "probe_ms": statistics.median(r[1] + r[3] for r in runs),
                      "runs_ms": [r[1] + r[3] for r in runs]}))


if __name__ == "__main__":
    main()
