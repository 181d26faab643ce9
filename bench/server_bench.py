"""Server benchmarks on loopback (bounded in requests and time): HTTP overhead, concurrency, 429s.

    python -m bench.server_bench

1. HTTP overhead: 1-chunk /score through uvicorn vs Scorer.score in process (p50 difference).
2. 16 concurrent clients x 20-chunk requests: aggregate tokens/s vs one 100-chunk request.
3. Overload: a burst against a server with a small queued-token bound: how fast 429s come back.
Prints a table and saves JSON under bench/results/.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.loadgen import Server, pct, save_results
from bench.workload import EXPORTED, QUERY, ROOT, chunks


def overhead(base: str, model_dir: Path = EXPORTED, doc: list[str] | None = None,
             n: int = 300) -> dict[str, float]:
    """p50 of a 1-chunk /score over HTTP minus p50 of the same call on a Scorer in process."""
    from crossrank.runtime.scorer import Scorer

    doc = doc or chunks(1, seed=11)
    scorer = Scorer.from_dir(model_dir)
    direct = []
    for _ in range(n):
        t0 = time.perf_counter()
        scorer.score(QUERY, doc)
        direct.append(time.perf_counter() - t0)
    http = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/score", json={"query": QUERY, "chunks": doc})
            http.append(time.perf_counter() - t0)
            assert r.status_code == 200
    return {"direct_p50_ms": pct(direct, 50) * 1e3, "http_p50_ms": pct(http, 50) * 1e3,
            "overhead_p50_ms": (pct(http, 50) - pct(direct, 50)) * 1e3,
            "http_p99_ms": pct(http, 99) * 1e3}


def concurrency(base: str, clients: int = 16, per_client: int = 3) -> dict[str, float]:
    single_docs = chunks(100, seed=0)
    from crossrank.runtime.text.pairs import PairTokenizer

    tok = PairTokenizer(EXPORTED / "tokenizer.json", 512)
    single_tokens = int(tok.encode(QUERY, single_docs).lengths.sum())
    with httpx.Client(base_url=base, timeout=120) as c:
        c.post("/score", json={"query": QUERY, "chunks": single_docs})
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            assert c.post("/score", json={"query": QUERY, "chunks": single_docs}).status_code == 200
            times.append(time.perf_counter() - t0)
    single_rate = single_tokens / float(np.median(times))
    requests = [[chunks(20, seed=100 + k * per_client + j) for j in range(per_client)]
                for k in range(clients)]
    total_tokens = sum(int(tok.encode(QUERY, d).lengths.sum()) for rs in requests for d in rs)
    errors: list[int] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            for docs in requests[k]:
                r = c.post("/score", json={"query": QUERY, "chunks": docs})
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    rate = total_tokens / elapsed
    return {"single_100_tokens_per_s": single_rate, "concurrent_tokens_per_s": rate,
            "ratio": rate / single_rate, "errors": float(len(errors)),
            "requests": float(clients * per_client)}


def while_busy(base: str, n: int = 30) -> dict[str, float]:
    """429 latency for requests arriving one by one while a big request fills the queue."""
    big = {"query": QUERY, "chunks": chunks(200, seed=9)}
    holder = threading.Thread(target=lambda: httpx.post(base + "/score", json=big, timeout=300))
    holder.start()
    time.sleep(0.5)
    lat: list[float] = []
    codes: list[int] = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/score", json={"query": QUERY, "chunks": chunks(20, seed=4)})
            codes.append(r.status_code)
            if r.status_code == 429:
                lat.append(time.perf_counter() - t0)
            time.sleep(0.02)
    holder.join()
    return {"requests": float(n), "rejected_429": float(codes.count(429)),
            "p50_429_ms": pct(lat, 50) * 1e3 if lat else float("nan"),
            "p99_429_ms": pct(lat, 99) * 1e3 if lat else float("nan")}


def tiny_model() -> Path:
    """The 2-layer model's fp32 export, built offline once and reused."""
    from crossrank.export.pipeline import Options, run
    from fixtures.tiny import build_tiny

    ckpt = ROOT / "models" / ".tiny-checkpoint"
    if not (ckpt / "config.json").is_file():
        build_tiny(ckpt)
    return run(Options(model=str(ckpt), out_dir=ROOT / "models" / "tiny-bench",
                       variants=("fp32",)))


def tiny_overhead() -> dict[str, float]:
    """Serving overhead with a 2-layer model: HTTP, JSON and the engine hand-off, little else."""
    out = tiny_model()
    with Server(out) as server:
        return overhead(server.base, out, ["Neil Armstrong was the first person to walk on the moon."])


def overload(base: str, burst: int = 40) -> dict[str, float]:
    docs = chunks(20, seed=3)
    codes: list[int] = []
    lat429: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post("/score", json={"query": QUERY, "chunks": docs})
            dt = time.perf_counter() - t0
            with lock:
                codes.append(r.status_code)
                if r.status_code == 429:
                    lat429.append(dt)

    threads = [threading.Thread(target=one) for _ in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": float(burst), "ok": float(codes.count(200)),
            "rejected_429": float(codes.count(429)),
            "other": float(len(codes) - codes.count(200) - codes.count(429)),
            "p50_429_ms": pct(lat429, 50) * 1e3 if lat429 else float("nan"),
            "max_429_ms": max(lat429) * 1e3 if lat429 else float("nan")}


def main() -> int:
    from bench.models import standin

    standin()
    extra = sys.argv[1:]  # passed to the server, e.g. --spin 0
    results: dict[str, Any] = {"server_args": extra}
    with Server(EXPORTED, *extra) as server:
        print("HTTP overhead (1 chunk) ...", flush=True)
        results["overhead"] = overhead(server.base)
        print("16 concurrent clients x 20 chunks ...", flush=True)
        results["concurrency"] = concurrency(server.base)
    with Server(EXPORTED, "--max-queued-tokens", "8000", *extra) as server:
        print("overload burst ...", flush=True)
        results["overload"] = overload(server.base)
        print("requests arriving while the queue is full ...", flush=True)
        results["while_busy"] = while_busy(server.base)
    print("serving overhead on a 2-layer model ...", flush=True)
    results["tiny_overhead"] = tiny_overhead()
    o, c, v = results["overhead"], results["concurrency"], results["overload"]
    w, t = results["while_busy"], results["tiny_overhead"]
    table = "\n".join([
        f"server benchmarks, stand-in L-12 int8, {os.cpu_count()} cores, loopback, "
        f"server args {' '.join(extra) or '(defaults)'}",
        "",
        "| measure | value | target |",
        "| --- | ---: | ---: |",
        f"| 1-chunk HTTP p50 / direct p50 | {o['http_p50_ms']:.2f} / {o['direct_p50_ms']:.2f} ms | |",
        f"| HTTP overhead p50 (L-12 int8; server and client share 2 cores) | "
        f"{o['overhead_p50_ms']:.2f} ms | <= 1 ms |",
        f"| HTTP overhead p50 (2-layer model: HTTP + JSON + hand-off, client included) | "
        f"{t['overhead_p50_ms']:.2f} ms | <= 1 ms |",
        f"| 16 clients x 20 chunks, aggregate | {c['concurrent_tokens_per_s']:,.0f} tok/s | |",
        f"| single 100-chunk request | {c['single_100_tokens_per_s']:,.0f} tok/s | |",
        f"| concurrent / single | {c['ratio']:.2f} | >= 0.90 |",
        f"| errors in {c['requests']:.0f} concurrent requests | {c['errors']:.0f} | 0 |",
        f"| overload burst: 200 / 429 / other | {v['ok']:.0f} / {v['rejected_429']:.0f} / "
        f"{v['other']:.0f} of {v['requests']:.0f} | |",
        f"| 429 latency in a 40-connection burst, p50 / max | {v['p50_429_ms']:.1f} / "
        f"{v['max_429_ms']:.1f} ms | < 50 ms |",
        f"| 429 latency, requests arriving while full, p50 / p99 ({w['rejected_429']:.0f} of "
        f"{w['requests']:.0f} rejected) | {w['p50_429_ms']:.1f} / {w['p99_429_ms']:.1f} ms | < 50 ms |",
    ])
    print("\n" + table)
    print(f"saved {save_results('server', results, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
