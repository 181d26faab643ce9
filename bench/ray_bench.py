"""Ray Serve against `crossrank serve` on this machine, same run: per-request overhead (2-layer
model, 1 chunk) and requests/s with 1 and 2 replicas (stand-in L-12 int8, 8 clients x 10-chunk
requests). A local Ray instance is started and stopped here.

    python -m bench.ray_bench [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

import httpx

from bench.loadgen import Server, free_port, pct, save_results
from bench.server_bench import tiny_model
from bench.workload import EXPORTED, QUERY, chunks


def latency(base: str, doc: list[str], n: int) -> dict[str, float]:
    with httpx.Client(base_url=base, timeout=60) as c:
        for _ in range(20):
            c.post("/score", json={"query": QUERY, "chunks": doc})
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post("/score", json={"query": QUERY, "chunks": doc})
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}


def throughput(base: str, seconds: float, clients: int = 8) -> dict[str, float]:
    docs = [chunks(10, seed=300 + k) for k in range(clients)]
    done: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                r = c.post("/score", json={"query": QUERY, "chunks": docs[k]})
                with lock:
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        done.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests_per_s": len(done) / wall, "p50_ms": pct(done, 50) * 1e3,
            "p99_ms": pct(done, 99) * 1e3, "codes": codes}  # type: ignore[dict-item]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ray_bench")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    import ray
    from ray import serve

    from bench.models import standin
    from crossrank.rayserve import RayServeConfig, deployment

    standin()
    tiny = tiny_model()
    doc = ["Neil Armstrong was the first person to walk on the moon."]
    results: dict[str, Any] = {"cores": os.cpu_count()}
    print("crossrank serve: overhead (2-layer model) and throughput (L-12 int8) ...", flush=True)
    with Server(tiny) as s:
        results["serve_tiny"] = latency(s.base, doc, 300)
    with Server(EXPORTED) as s:
        results["serve_l12"] = throughput(s.base, args.seconds)
    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    try:
        cores = os.cpu_count() or 2
        runs = [("ray_tiny", tiny, 1, cores), ("ray_l12_1", EXPORTED, 1, cores),
                ("ray_l12_2", EXPORTED, 2, max(1, cores // 2))]
        for name, model, replicas, cpus in runs:
            print(f"Ray Serve: {name} ({replicas} replica(s), {cpus} cores each) ...", flush=True)
            cfg = RayServeConfig.from_args({"model_dir": str(model), "replicas": replicas,
                                            "num_cpus": cpus})
            serve.run(deployment(cfg).bind(), name="crossrank", route_prefix="/")
            results[name] = (latency(base, doc, 300) if name == "ray_tiny"
                             else throughput(base, args.seconds))
            serve.delete("crossrank")
    finally:
        serve.shutdown()
        ray.shutdown()
    r = results
    table = "\n".join([
        f"Ray Serve vs crossrank serve, {os.cpu_count()} cores, loopback, same run",
        "",
        "| measure | crossrank serve | Ray Serve |",
        "| --- | ---: | ---: |",
        f"| 1-chunk request, 2-layer model, p50 / p99 | {r['serve_tiny']['p50_ms']:.2f} / "
        f"{r['serve_tiny']['p99_ms']:.2f} ms | {r['ray_tiny']['p50_ms']:.2f} / "
        f"{r['ray_tiny']['p99_ms']:.2f} ms |",
        f"| per-request overhead Ray adds (p50) | | "
        f"{r['ray_tiny']['p50_ms'] - r['serve_tiny']['p50_ms']:.2f} ms |",
        f"| 8 clients x 10 chunks, L-12 int8, requests/s (p50 latency) | "
        f"{r['serve_l12']['requests_per_s']:.2f} ({r['serve_l12']['p50_ms']:.0f} ms) | "
        f"1 replica: {r['ray_l12_1']['requests_per_s']:.2f} ({r['ray_l12_1']['p50_ms']:.0f} ms); "
        f"2 replicas: {r['ray_l12_2']['requests_per_s']:.2f} ({r['ray_l12_2']['p50_ms']:.0f} ms) |",
    ])
    print("\n" + table)
    print(f"saved {save_results('ray', results, table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
