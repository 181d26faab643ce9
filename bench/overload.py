"""Overload: offer ~4x what the machine can score, on loopback, for a bounded time.

    python -m bench.overload [--factor 4] [--seconds 30]

Checks that the server answers 429 fast, that every accepted request gets the right answer,
that accepted latency stays bounded and that memory stays bounded. Prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from bench.loadgen import Req, RssSampler, Server, check, pct, pool
from bench.workload import EXPORTED, ROOT


async def run_load(base: str, reqs: list[Req], rate: float, seconds: float,
                   max_inflight: int) -> dict[str, Any]:
    ok_lat: list[float] = []
    rej_lat: list[float] = []
    wrong: list[str] = []
    other: list[int] = []
    sem = asyncio.Semaphore(max_inflight)
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one(req: Req) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(req.endpoint, json=req.body)
                except httpx.HTTPError as exc:
                    wrong.append(type(exc).__name__)
                    return
                dt = time.perf_counter() - t0
                if r.status_code == 429:
                    rej_lat.append(dt)
                elif r.status_code == 200:
                    ok_lat.append(dt)
                    problem = check(req, 200, r.json())
                    if problem:
                        wrong.append(problem)
                else:
                    other.append(r.status_code)

        tasks = []
        t_start = time.perf_counter()
        k = 0
        while time.perf_counter() - t_start < seconds:  # open loop: fixed arrival rate
            tasks.append(asyncio.create_task(one(reqs[k % len(reqs)])))
            k += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return {"sent": k, "ok": len(ok_lat), "rejected_429": len(rej_lat), "other_status": other,
            "wrong_or_lost": wrong, "ok_p50_s": pct(ok_lat, 50), "ok_p99_s": pct(ok_lat, 99),
            "ok_max_s": max(ok_lat, default=float("nan")),
            "429_p50_ms": pct(rej_lat, 50) * 1e3, "429_p99_ms": pct(rej_lat, 99) * 1e3}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload")
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--max-queued-tokens", type=int, default=60000)
    args = p.parse_args()
    from bench.models import standin

    standin()
    reqs = pool([20] * 8)
    server = Server(EXPORTED, "--max-queued-tokens", str(args.max_queued_tokens))
    try:
        # capacity: tokens/s for this request mix, measured here first
        with httpx.Client(base_url=server.base, timeout=120) as c:
            c.post(reqs[0].endpoint, json=reqs[0].body)
            t0 = time.perf_counter()
            for r in reqs:
                assert c.post(r.endpoint, json=r.body).status_code == 200
            per_request = (time.perf_counter() - t0) / len(reqs)
        rate = args.factor / per_request
        print(f"capacity ~{1 / per_request:.1f} requests/s of 20 chunks; offering {rate:.1f}/s "
              f"for {args.seconds:.0f}s", flush=True)
        with RssSampler(server) as rss:
            base_rss = server.rss_mb()
            res = asyncio.run(run_load(server.base, reqs, rate, args.seconds, 256))
        res.update({"capacity_rps": 1 / per_request, "offered_rps": rate,
                    "rss_start_mb": base_rss, "rss_peak_mb": rss.peak(),
                    "rss_end_mb": server.rss_mb(),
                    "max_queued_tokens": args.max_queued_tokens})
    finally:
        server.stop()
    print(json.dumps(res, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload-latest.json").write_text(json.dumps(res, indent=2))
    bad = res["wrong_or_lost"] or res["other_status"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
