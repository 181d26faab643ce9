"""The benchmark's stand-in: an L-12 checkpoint (for the seed's PyTorch scorer) and its export."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.workload import CKPT, EXPORTED
from export.pipeline import Options, run
from export.standin import build_standin

log = logging.getLogger(__name__)


def standin() -> tuple[Path, Path]:
    """(checkpoint dir, exported model dir), built offline once and reused (seeded, so stable)."""
    if not (CKPT / "config.json").is_file():
        log.info("building the L-12 stand-in checkpoint in %s", CKPT)
        build_standin(CKPT)
    out = run(Options(model=str(CKPT), out_dir=EXPORTED))
    return CKPT, out
