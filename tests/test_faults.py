"""Faults: a client that leaves frees its queued work; damaged model dirs fail at start-up;
slow or idle clients do not stall others (real uvicorn process)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossrank.runtime.service import parts_of
from crossrank.runtime.settings import Settings
from tests.fake import fake_scorer
from tests.helpers import ROOT, app_for, cuda_like, free_port, gated, start, wait_until


async def asgi_post(app: Any, path: str, body: dict[str, Any], leave: asyncio.Event) -> int:
    """POST through the ASGI interface; `leave` set means the client disconnects."""
    payload = json.dumps(body).encode()
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json")],
             "http_version": "1.1", "scheme": "http", "server": ("test", 80),
             "client": ("test", 1), "root_path": "", "app": app}
    await app(scope, receive, send)
    return status


@pytest.mark.parametrize("sliced", [False, True])
def test_disconnected_client_frees_its_queued_work(fake_model_dir: Path, sliced: bool) -> None:
    base = fake_scorer(fake_model_dir)
    # sliced: the CUDA profile's settings, so the leaving request is queued in several parts
    scorer, session = gated(cuda_like(base) if sliced else base)
    app = app_for(scorer, Settings())
    leaving = [f"b {i} " * (1 + i % 9) for i in range(100 if sliced else 7)]
    assert len(parts_of(leaving, scorer.policy)) == (4 if sliced else 1)
    stay_tokens = int(scorer.tokenizer.encode("q", ["a"]).lengths.sum())
    leave_tokens = int(scorer.tokenizer.encode("q", leaving).lengths.sum())

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(6000):  # a state to reach, polled; not a time to pass
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition never held")

    async def scenario() -> tuple[int, int]:
        stay, leave = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(asgi_post(app, "/score", {"query": "q", "chunks": ["a"]}, stay))
        await until(session.entered.is_set)  # the first request is at the (held) device
        second = asyncio.create_task(
            asgi_post(app, "/score", {"query": "q", "chunks": leaving}, leave))
        await until(lambda: scorer.engine.queued_tokens == stay_tokens + leave_tokens)
        leave.set()  # the second client goes away while its work is queued
        left = await second
        session.gate.set()
        return await first, left

    first, left = asyncio.run(scenario())
    assert first == 200 and left == 499  # client_disconnected: never counted as a bad request
    metrics = app.state.crossrank.metrics.requests
    assert metrics.labels("score", "499")._value.get() == 1
    assert metrics.labels("score", "422")._value.get() == 0
    assert wait_until(lambda: scorer.engine.queued_tokens == 0)
    assert session.rows == [1]  # the abandoned request's pairs never reached the model
    scorer.close()


def damaged(tiny_dir: Path, tmp_path: Path, how: str) -> Path:
    d = tmp_path / how
    shutil.copytree(tiny_dir, d)
    if how == "corrupt":
        (d / "model_int8.onnx").write_bytes(b"not an onnx file")
    elif how == "missing":
        (d / "model_int8.onnx").unlink()
    elif how == "tokenizer":
        (d / "tokenizer.json").unlink()
    elif how == "version":
        m = json.loads((d / "manifest.json").read_text())
        m["format_version"] = 0
        (d / "manifest.json").write_text(json.dumps(m))
    return d


@pytest.mark.parametrize(("how", "message"), [
    ("corrupt", "does not match the hash"),
    ("missing", "is missing"),
    ("tokenizer", "tokenizer.json is missing"),
    ("version", "manifest format 0"),
])
def test_damaged_model_dir_fails_at_start(tiny_dir: Path, tmp_path: Path, how: str,
                                          message: str) -> None:
    d = damaged(tiny_dir, tmp_path, how)
    port = str(free_port())
    r = subprocess.run([sys.executable, "-m", "crossrank.runtime", "--model-dir", str(d), "--port", port],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_slow_and_idle_clients_do_not_stall_others(tiny_dir: Path) -> None:
    proc, base = start(tiny_dir, "--variant", "fp32", "--max-connections", "64")
    host, port = base.removeprefix("http://").split(":")
    socks: list[socket.socket] = []
    try:
        for _ in range(30):  # idle connections
            socks.append(socket.create_connection((host, int(port))))
        slow = socket.create_connection((host, int(port)))  # a body sent a byte at a time
        slow.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        socks.append(slow)
        # Served while the slow body is still unfinished: nothing waits for it (the client's
        # own timeout is generous for a loaded machine; the check is that answers come at all).
        for _ in range(5):
            r = httpx.post(base + "/score", json={"query": "q", "chunks": ["a", "b"]}, timeout=60)
            assert r.status_code == 200
            slow.sendall(b" ")
        assert httpx.get(base + "/health", timeout=60).status_code == 200
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(60)
