"""A real server process: `python -m runtime` with uvicorn on a loopback port, then SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(model_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrank.runtime", "--model-dir", str(model_dir), "--port", str(port),
         *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CROSSRANK_LOG_LEVEL": "warning"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become healthy in 60 s")


def test_seed_example_then_graceful_sigterm(realistic_dir: Path) -> None:
    from crossrank.runtime.scorer import Scorer

    query = "Who was the first person to walk on the moon?"
    chunks = ["The moon orbits the Earth.",
              "Neil Armstrong was the first person to walk on the moon in 1969.",
              "Bread needs flour."]
    direct = Scorer.from_dir(realistic_dir, variant="fp32").score(query, chunks)
    proc, base = start(realistic_dir, "--variant", "fp32")
    try:
        r = httpx.post(base + "/score", json={"query": query, "chunks": chunks}, timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert [i for i, _ in body] == [i for i, _ in direct]
        assert max(abs(a[1] - b) for a, (_, b) in zip(body, direct, strict=True)) <= 1e-5
        # A request that takes a while, then SIGTERM while it runs: it must complete.
        result: dict[str, Any] = {}

        def long_request() -> None:
            chunks = ["Neil Armstrong walked on the moon. " * 40] * 150
            result["r"] = httpx.post(base + "/score", json={"query": "moon", "chunks": chunks},
                                     timeout=120)

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert result["r"].status_code == 200 and len(result["r"].json()) == 150
        # uvicorn finishes in-flight work, then re-raises the signal to exit "by SIGTERM".
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_model_dir_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "crossrank.runtime", "--model-dir", str(tmp_path / "none")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "make export" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_flag_value(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "crossrank.runtime", "--port", "eighty"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a valid int" in r.stderr and "Traceback" not in r.stderr
