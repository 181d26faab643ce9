"""Soak: mixed sizes and endpoints, some bad inputs, some cancellations, for a bounded time.

    python -m bench.soak [--seconds 600] [--clients 4] [--server-args "--pipeline on"]

Every answer is checked against a direct Scorer call; RSS is sampled and its growth after a
warm-up (the first 10% of the run) must stay under 10%. Prints a summary; exit 1 on any lost or
wrong answer or on memory growth.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx

from bench.loadgen import RssSampler, Server, check, pct, pool
from bench.workload import EXPORTED, ROOT

BAD = [
    (b'{"query": "q", "chunks": [', 400),
    (b'{"chunks": ["a"]}', 422),
    (b'{"query": "q", "chunks": [1, 2]}', 422),
    (b'\xff\xfe', 400),
]


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak")
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--server-args", default="",
                   help="extra flags for the server, e.g. '--pipeline on' to soak the CUDA "
                        "path's tokenizing in runs on a CPU")
    args = p.parse_args()
    from bench.models import standin

    standin()
    reqs = pool([1, 5, 10, 20, 50, 1, 10, 100, 3, 30, 200, 8], seed=500)
    stats: Counter[str] = Counter()
    latencies: list[float] = []
    problems: list[str] = []
    lock = threading.Lock()
    server = Server(EXPORTED, *shlex.split(args.server_args))
    deadline = time.monotonic() + args.seconds

    def client(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=server.base, timeout=120) as c:
            while time.monotonic() < deadline:
                roll = rng.random()
                if roll < 0.05:  # bad input: a clear 4xx, and the server keeps serving
                    body, want = rng.choice(BAD)
                    r = c.post("/score", content=body,
                               headers={"content-type": "application/json"})
                    with lock:
                        stats["bad_input"] += 1
                        if r.status_code != want or "error_type" not in r.json():
                            problems.append(f"bad input answered {r.status_code}")
                    continue
                req = rng.choice(reqs)
                if roll < 0.10:  # cancellation: the client gives up mid-request
                    try:
                        c.post(req.endpoint, json=req.body, timeout=0.05)
                    except httpx.TimeoutException:
                        pass
                    with lock:
                        stats["cancelled"] += 1
                    continue
                t0 = time.perf_counter()
                r = c.post(req.endpoint, json=req.body)
                dt = time.perf_counter() - t0
                problem = check(req, r.status_code, r.json() if r.status_code == 200 else None)
                with lock:
                    stats["scored"] += 1
                    stats[f"status_{r.status_code}"] += 1
                    latencies.append(dt)
                    if problem:
                        problems.append(f"{req.endpoint}: {problem}")

    try:
        with RssSampler(server, every=1.0) as rss:
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        warm = [m for t, m in rss.samples if t >= args.seconds * 0.1]
        after_warmup = warm[0] if warm else float("nan")
        end = warm[-1] if warm else float("nan")
        growth = (max(warm) - after_warmup) / after_warmup if warm else float("nan")
        health = httpx.get(server.base + "/health", timeout=5).status_code
    finally:
        code = server.stop()
    summary: dict[str, Any] = {
        "seconds": args.seconds, "clients": args.clients, **stats,
        "wrong_or_lost": len(problems), "problems": problems[:20],
        "p50_s": pct(latencies, 50), "p99_s": pct(latencies, 99),
        "rss_after_warmup_mb": after_warmup, "rss_peak_after_warmup_mb": max(warm, default=0),
        "rss_end_mb": end, "rss_growth_after_warmup": growth,
        "health_at_end": health, "exit_code": code,
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak-latest.json").write_text(json.dumps(summary, indent=2))
    failed = problems or not growth < 0.10 or health != 200
    print("SOAK", "FAILED" if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
