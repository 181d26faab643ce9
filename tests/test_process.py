"""Real server processes: `crossrank serve` with uvicorn on a loopback port, SIGTERM, bad starts."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import ROOT, free_port, start, wait_until


def test_seed_example_then_sigterm(realistic_dir: Path) -> None:
    from crossrank.runtime.scorer import Scorer

    query = "Who was the first person to walk on the moon?"
    chunks = ["The moon orbits the Earth.",
              "Neil Armstrong was the first person to walk on the moon in 1969.",
              "Bread needs flour."]
    direct = Scorer.from_dir(realistic_dir, variant="fp32").score(query, chunks)
    proc, base = start(realistic_dir, "--variant", "fp32")
    try:
        r = httpx.post(base + "/score", json={"query": query, "chunks": chunks}, timeout=60)
        assert r.status_code == 200
        body = r.json()
        assert [i for i, _ in body] == [i for i, _ in direct]
        assert max(abs(a[1] - b) for a, (_, b) in zip(body, direct, strict=True)) <= 1e-5
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after a clean shutdown, to exit "by SIGTERM"
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


class Gated:
    """tests/gated_server.py in a process: inference waits for a file; its log is collected."""

    def __init__(self, model_dir: Path, gate: Path, grace_s: float) -> None:
        self.gate = gate
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gated_server", str(model_dir), str(port), str(gate),
             str(grace_s)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{port}"
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()
        self.seen = ""
        assert self.wait_for("Application startup complete"), self.seen

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> bool:
        end = time.monotonic() + timeout
        while text not in self.seen:
            try:
                self.seen += self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return False
        return True

    def post_in_background(self, result: dict[str, Any]) -> threading.Thread:
        def post() -> None:
            result["r"] = httpx.post(self.base + "/score", json={"query": "moon", "chunks":
                                                                ["the moon", "the sea"]},
                                     timeout=120)

        t = threading.Thread(target=post)
        t.start()
        assert wait_until(lambda: (self.gate / "entered").exists(), 120)
        return t


def test_sigterm_lets_the_request_in_flight_finish(realistic_dir: Path, tmp_path: Path) -> None:
    server = Gated(realistic_dir, tmp_path, grace_s=60)
    try:
        result: dict[str, Any] = {}
        t = server.post_in_background(result)  # held at the "device"
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_for("Shutting down"), server.seen
        (tmp_path / "open").touch()  # the device finishes after the signal
        t.join(120)
        assert result["r"].status_code == 200 and len(result["r"].json()) == 2
        assert server.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_request_outliving_the_graceful_window_gets_a_clear_503(realistic_dir: Path,
                                                              tmp_path: Path) -> None:
    server = Gated(realistic_dir, tmp_path, grace_s=2)
    try:
        result: dict[str, Any] = {}
        t = server.post_in_background(result)  # held, and never released
        server.proc.send_signal(signal.SIGTERM)
        t.join(120)
        r = result["r"]
        assert r.status_code == 503, r.text
        assert r.json()["error_type"] == "unavailable" and "shutting down" in r.json()["error"]
        assert server.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_bad_model_dir_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "crossrank.runtime", "--model-dir", str(tmp_path / "none")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "crossrank export" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_flag_value(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "crossrank.runtime", "--port", "eighty"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a valid int" in r.stderr and "Traceback" not in r.stderr
