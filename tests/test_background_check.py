"""The int8 self-check beside fp32 (int8_check_background): fp32 answers at once, int8 takes
over when its check passes, and fp32 stays when it fails; the HTTP app follows the switch. On the
fake runner (tests/fake.py): no torch, no ONNX."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from crossrank.runtime import loader
from crossrank.runtime.config import RuntimeConfig
from crossrank.runtime.execution.engine import Runner
from crossrank.runtime.http.server import create_app
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.settings import Settings
from tests.fake import FakeRunner, fake_int8_dir

QUERY = "what does package 3 do"
CHUNKS = ["package 3 parses and scores text", "an unrelated sentence about the sea"]


def held_runner(release: threading.Event) -> tuple[Callable[[Callable[[], Runner]], Runner],
                                                   list[int]]:
    """A runner seam whose second session (the background int8) waits for release."""
    opened: list[int] = []

    def runner(_open: Callable[[], Runner]) -> Runner:
        opened.append(1)
        if len(opened) == 2:
            assert release.wait(30)
        return FakeRunner()

    return runner, opened


def config(d: Path, **kw: Any) -> RuntimeConfig:
    return RuntimeConfig(model_dir=str(d), provider="cpu", int8_check_background=True, **kw)


def test_fp32_serves_while_int8_is_checked_then_int8_takes_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="crossrank")
    d = fake_int8_dir(tmp_path / "m")
    release = threading.Event()
    runner, opened = held_runner(release)
    rt = loader.load(config(d), runner=runner)
    try:
        s = Scorer(rt)
        assert rt.info.variant == "fp32" and rt.info.int8_check is not None
        assert rt.info.int8_check["status"] == "pending"
        before = s.logits(QUERY, CHUNKS)  # answered while the check waits
        fp32_engine = rt.engine
        release.set()
        assert rt.background is not None
        rt.background.join(30)
        assert rt.info.variant == "int8" and rt.info.int8_check["status"] == "passed"
        assert rt.info.int8_check["how"] == "reproduced"
        assert rt.engine is not fp32_engine and len(opened) == 2
        assert list(s.logits(QUERY, CHUNKS)) == list(before)  # the fake scores both alike
        assert fp32_engine.healthy  # retired later, so requests that hold it finish
        assert "now serving fake-reranker as int8" in caplog.text
    finally:
        rt.close()
    assert not fp32_engine.healthy and not rt.engine.healthy  # close stops the retired one too
    # the verdict is cached: the next start checks nothing in the background and serves int8
    again = loader.load(config(d), runner=lambda _open: FakeRunner())
    try:
        assert again.background is None and again.info.variant == "int8"
        assert again.info.int8_check is not None and again.info.int8_check["cached"]
    finally:
        again.close()


def test_a_failed_background_check_leaves_fp32_serving_with_the_verdict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = fake_int8_dir(tmp_path / "m", drift=0.4)
    rt = loader.load(config(d), runner=lambda _open: FakeRunner())
    try:
        assert rt.background is not None
        rt.background.join(30)
        assert rt.info.variant == "fp32" and rt.info.int8_check is not None
        assert rt.info.int8_check["status"] == "failed"
        assert "serving fp32 on" in caplog.text
        assert len(Scorer(rt).logits(QUERY, CHUNKS)) == 2
    finally:
        rt.close()


def test_the_app_follows_the_switch_in_info_and_metrics(tmp_path: Path) -> None:
    d = fake_int8_dir(tmp_path / "m")
    release = threading.Event()
    runner, _ = held_runner(release)
    rt = loader.load(config(d), runner=runner)
    try:
        with TestClient(create_app(rt, Settings())) as client:
            info = client.get("/info").json()
            assert info["variant"] == "fp32" and info["int8_check"]["status"] == "pending"
            assert 'crossrank_int8_check{cached="false",how="background",status="pending"} 1.0' \
                in client.get("/metrics").text
            assert client.post("/score", json={"query": QUERY, "chunks": CHUNKS}).status_code == 200
            release.set()
            assert rt.background is not None
            rt.background.join(30)
            info = client.get("/info").json()
            assert info["variant"] == "int8" and info["int8_check"]["status"] == "passed"
            metrics = client.get("/metrics").text
            assert 'status="passed"' in metrics and 'status="pending"' not in metrics
            r = client.post("/score", json={"query": QUERY, "chunks": CHUNKS})
            assert r.status_code == 200 and [i for i, _ in r.json()] == [0, 1]
            # the engine's hooks (the app's metrics) moved to the int8 engine
            assert 'crossrank_pairs_total 4.0' in client.get("/metrics").text
    finally:
        rt.close()


def test_background_is_not_used_with_the_cascade_or_without_the_check(tmp_path: Path) -> None:
    d = fake_int8_dir(tmp_path / "m")
    fake = lambda _open: FakeRunner()  # noqa: E731
    off = loader.load(config(d, int8_check=False), runner=fake)
    try:
        assert off.background is None and off.info.variant == "int8"
        assert off.info.int8_check is not None and off.info.int8_check["status"] == "skipped"
    finally:
        off.close()
    cascade = loader.load(config(d, cascade=10), runner=fake)  # checked before serving
    try:
        assert cascade.background is None and cascade.info.variant == "int8"
        assert cascade.info.int8_check is not None
        assert cascade.info.int8_check["status"] == "passed"
    finally:
        cascade.close()


def test_the_setting_is_a_serve_flag() -> None:
    import argparse

    from crossrank.runtime import settings

    p = argparse.ArgumentParser()
    settings.add_arguments(p)
    s = settings.from_namespace(p.parse_args(["--int8-check-background", "on"]), env={})
    assert s.int8_check_background and s.runtime_config().int8_check_background
    with pytest.raises(Exception, match="int8-check-background"):
        settings.from_namespace(p.parse_args(["--int8-check-background", "maybe"]), env={})
