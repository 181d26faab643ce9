"""Shared pieces of the overload and soak scripts: a server process on loopback, its memory,
a fixed pool of requests with their expected answers, and the answer checks.

Traffic goes only to 127.0.0.1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.workload import EXPORTED, QUERY, ROOT, chunks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`crossrank serve` on a free loopback port, stopped on exit."""

    def __init__(self, model_dir: Path = EXPORTED, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crossrank", "serve", "--model-dir", str(model_dir), "--port",
             str(self.port), "--log-level", "warning", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("the server did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RssSampler:
    """Samples the server's RSS every `every` seconds on a thread."""

    server: Server
    every: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        t0 = time.monotonic()

        def loop() -> None:
            while not self._stop.wait(self.every):
                self.samples.append((time.monotonic() - t0, self.server.rss_mb()))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> float:
        return max((m for _, m in self.samples), default=math.nan)


@dataclass(frozen=True)
class Req:
    """One request of the pool and the logits its chunks must get."""

    endpoint: str
    body: dict[str, Any]
    logits: np.ndarray


def pool(sizes: list[int], seed: int = 0) -> list[Req]:
    """Requests over every endpoint with expected logits from a direct Scorer call."""
    from crossrank.runtime.scorer import Scorer

    scorer = Scorer.from_dir(EXPORTED)
    out = []
    endpoints = ["/score", "/rerank", "/v1/rerank", "/v2/rerank"]
    for k, n in enumerate(sizes):
        docs = chunks(n, seed=seed + k)
        logits = scorer.logits(QUERY, docs)
        ep = endpoints[k % len(endpoints)]
        key = {"/score": "chunks", "/rerank": "texts"}.get(ep, "documents")
        body: dict[str, Any] = {"query": QUERY, key: docs}
        if ep == "/rerank":
            body["raw_scores"] = True
        out.append(Req(ep, body, logits))
    return out


def check(req: Req, status: int, payload: Any, tol: float = 1e-4) -> str | None:
    """None if the answer is right, else what is wrong."""
    if status != 200:
        return f"status {status}"
    exp = req.logits.astype(np.float64)
    sig = 1 / (1 + np.exp(-exp))
    if req.endpoint == "/score":
        got = {int(i): float(s) for i, s in payload}
        want = exp
    elif req.endpoint == "/rerank":
        got = {int(o["index"]): float(o["score"]) for o in payload}
        want = exp
    else:
        got = {int(o["index"]): float(o["relevance_score"]) for o in payload["results"]}
        want = sig
    if sorted(got) != list(range(len(exp))):
        return "wrong or missing indices"
    if max(abs(got[i] - want[i]) for i in got) > tol:
        return "wrong scores"
    return None


def save_results(kind: str, payload: dict[str, Any], table: str) -> Path:
    """bench/results/<kind>-latest.json and .md (the latest run only), and a line in
    history.jsonl for trends; returns the JSON's path."""
    from datetime import datetime, timezone

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{kind}-latest.json"
    path.write_text(json.dumps({"created": stamp, **payload}, indent=2))
    (out / f"{kind}-latest.md").write_text(table + "\n")
    append_history(kind, {"created": stamp, **payload})
    return path


def append_history(kind: str, row: dict[str, Any]) -> None:
    """One JSON line per benchmark run in bench/results/history.jsonl: the trend the latest
    files do not keep."""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "history.jsonl").open("a") as f:
        f.write(json.dumps({"benchmark": kind, **row}, default=str) + "\n")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else math.nan
