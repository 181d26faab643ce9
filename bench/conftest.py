"""Benchmark fixtures: the exported stand-in L-12 model and the seeded workload."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bench.models import standin
from crossrank.runtime.scorer import Scorer


@pytest.fixture(scope="session")
def standin_dirs() -> tuple[Path, Path]:
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    return standin()


@pytest.fixture(scope="session")
def scorer(standin_dirs: tuple[Path, Path]) -> Scorer:
    return Scorer.from_dir(standin_dirs[1])
