#!/usr/bin/env python3
"""A day of an LLM server's demand, one observation a minute, as an always-on server would see it:
the nightly `palate run` at 02:00 (72 minutes), six ad hoc `palate analyze` calls of two minutes
during the day, five minutes of another client's requests at 10:20, idle otherwise (GPU at
0-2 %). For `palate watchdog --replay` (README, tests/monitoring.rs).
    python3 scripts/watchdog_day.py > data/watchdog/day.jsonl"""
import json
import random

DAY = 1764547200  # 2026-12-01 00:00 UTC
STARTED = DAY - 6 * 3600  # the server has been up since the evening before
rng = random.Random(20261201)
NIGHTLY = range(120, 192)
AD_HOC = [9 * 60 + 14, 11 * 60 + 2, 13 * 60 + 47, 15 * 60 + 30, 17 * 60 + 5, 20 * 60 + 41]
OTHER = range(10 * 60 + 20, 10 * 60 + 25)
tokens = 2_500_000
for m in range(24 * 60 + 1):
    o = {"t": DAY + 60 * m, "up": True, "started_at": STARTED, "running": 0, "waiting": 0,
         "gpu_util_pct": round(rng.uniform(0, 2), 1), "palate_running": False}
    if m in NIGHTLY:
        o.update(running=rng.randint(48, 64), waiting=rng.randint(0, 120),
                 gpu_util_pct=round(rng.uniform(88, 97), 1), palate_running=True)
        tokens += rng.randint(55_000, 65_000)
    elif any(a <= m < a + 2 for a in AD_HOC):
        o.update(running=3, gpu_util_pct=round(rng.uniform(55, 70), 1), palate_running=True)
        tokens += rng.randint(2_500, 3_500)
    elif m in OTHER:
        o.update(running=rng.randint(1, 2), gpu_util_pct=round(rng.uniform(30, 40), 1))
        tokens += rng.randint(800, 1_200)
    o["tokens_total"] = tokens
    print(json.dumps(o))
