"""Shared test doubles: a gated session instead of test hooks in the engine, and condition waits
instead of sleeps."""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from crossrank.runtime import loader
from crossrank.runtime.core import batching
from crossrank.runtime.core.options import WindowLimits
from crossrank.runtime.core.profiles import PROFILES, BatchPolicy
from crossrank.runtime.execution.engine import Runner
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.settings import Settings, add_arguments, from_namespace
from crossrank.runtime.text.pairs import PairTokenizer
from crossrank.runtime.text.windows import Windows

ROOT = Path(__file__).resolve().parent.parent


class GatedSession:
    """Wraps a real session: every batch waits for `gate`, is recorded, and the batches named
    in `fail` (1-based) raise instead of running."""

    def __init__(self, inner: Runner, *, gated: bool = True, fail: Iterable[int] = ()) -> None:
        self.inner = inner
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()  # some batch has reached the "device"
        self.rows: list[int] = []  # real rows (filler rows not counted) of each batch that ran
        self.fail = set(fail)
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Batches that have reached the session so far (running, waiting or done)."""
        return self._calls

    def run(self, batch: batching.Batch) -> np.ndarray:
        with self._lock:
            self._calls += 1
            n = self._calls
        self.entered.set()
        if not self.gate.wait(60):
            raise RuntimeError("the test's gate never opened")
        if n in self.fail:
            raise RuntimeError("injected failure")
        self.rows.append(len(batch.positions))
        return self.inner.run(batch)


def reloaded(scorer: Scorer, *, runner: loader.RunnerSeam | None = None,
             policy: BatchPolicy | None = None, **config: Any) -> Scorer:
    """The scorer's model loaded again (its own engine and service) with some of its
    configuration changed, a runner seam, or this batch policy; the seams the scorer was loaded
    with carry over unless replaced."""
    return Scorer(loader.reload(scorer.runtime, runner=runner,
                                policy=None if policy is None else (lambda _: policy), **config))


def gated(scorer: Scorer, *, gated: bool = True, fail: Iterable[int] = (),
          **config: Any) -> tuple[Scorer, GatedSession]:
    """A scorer on the same model (configuration changes applied) whose batches go through a
    GatedSession."""
    made: list[GatedSession] = []

    def runner(open_session: Callable[[], Runner]) -> Runner:
        made.append(GatedSession(open_session(), gated=gated, fail=fail))
        return made[-1]

    held = reloaded(scorer, runner=runner, **config)
    return held, made[-1]


def cuda_like(scorer: Scorer, slices: int = 4) -> Scorer:
    """The CUDA profile's pipeline and shape rounding, on this CPU session, with small batches."""
    return reloaded(scorer, policy=replace(PROFILES["cuda"].batch, token_budget=2048,
                                           max_rows=16, slices=slices))


def app_for(scorer: Scorer, settings: Settings | None = None) -> Any:
    """The HTTP app on the scorer's runtime with these settings' HTTP fields (the runtime's own
    fields, such as window limits or the queue bound, are the scorer's: see `reloaded`)."""
    from crossrank.runtime.config import RuntimeConfig
    from crossrank.runtime.http.server import create_app

    settings = settings or Settings()
    runtime_fields = {f.name for f in fields(RuntimeConfig)}
    changed = [f.name for f in fields(Settings) if f.name in runtime_fields
               and getattr(settings, f.name) != getattr(Settings(), f.name)]
    assert not changed, f"runtime fields belong to the scorer (helpers.reloaded): {changed}"
    return create_app(scorer.runtime, settings)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll until the condition holds (a state to reach, not a time to pass); False on timeout."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


@functools.lru_cache(maxsize=8)
def library(tokenizer_file: Path) -> Any:
    """The tokenizers library's tokenizer for a file, without truncation or padding (cached:
    callers must not change its settings)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    return tok


def full_length(tokenizer_file: Path, pair: tuple[str, str]) -> int:
    """Tokens the pair has without truncation, by the library."""
    return len(library(tokenizer_file).encode(pair[0], pair[1]).ids)


def refused_int8_serves() -> str:
    """What an int8 refused with an error bound serves by default here: int8 behind the
    precision cascade on the CPU classes where the cascade runs faster than fp32, else fp32."""
    from crossrank.runtime.core import cpu
    from crossrank.runtime.core.profiles import PROFILES

    return "int8" if cpu.detect_isa() in PROFILES["cpu"].cascade_fallback_isas else "fp32"


def shipped_int8(model_dir: Path) -> dict[str, Any]:
    """The export's int8 entry when the exporter shipped it. Where its ranking check refused
    int8 on this CPU (the gate doing its job), assert that the refusal is recorded and that
    serving falls back to fp32, then skip what needs an int8 model."""
    import json

    import pytest

    from crossrank.runtime.core.cpu import detect_isa

    entry: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text())["variants"]["int8"]
    if not entry["shipped"]:
        assert entry["reason"] == "failed int8 verification" and entry["search"]
        assert entry["cascade_only"] and (model_dir / "model_int8.onnx").exists()
        info = Scorer.from_dir(model_dir, cascade_fallback=False).info
        assert info is not None and info.variant == "fp32"
        info = Scorer.from_dir(model_dir).info
        assert info is not None and info.variant == refused_int8_serves()
        rk = entry["verification"]["ranking"]
        pytest.skip(f"the exporter refused int8 on this {detect_isa()} CPU (check set: clear "
                    f"misses {rk['clear_misses']}, worst graded NDCG@10 "
                    f"{rk['worst_graded_ndcg']}, quality kept {rk['quality_kept']}): fp32 served")
    return entry


def row(rows: batching.Rows, i: int) -> tuple[list[int], list[int]]:
    """(ids, type_ids) of one row."""
    a, b = int(rows.offsets[i]), int(rows.offsets[i + 1])
    return rows.ids[a:b].tolist(), rows.type_ids[a:b].tolist()


def settings_from(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    """Settings as `crossrank serve` reads them: these flags, then this environment."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    return from_namespace(p.parse_args(argv), env or {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(model_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrank", "serve", "--model-dir", str(model_dir), "--port", str(port),
         *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CROSSRANK_LOG_LEVEL": "warning"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
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


def split(tokenizer: PairTokenizer, limits: WindowLimits, query: str, chunks: list[str],
          with_truncation: bool = False) -> batching.Encoded:
    """overflow="split" for one query, as the service does it: the pairs encoded, then the
    over-long ones as windows."""
    return Windows(tokenizer.library, tokenizer.max_length, limits).encode(
        query, chunks, tokenizer.encode(query, chunks, with_truncation))
