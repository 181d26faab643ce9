"""The benchmark's stand-in: an L-12 checkpoint (for the seed's PyTorch scorer) and its export."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bench.workload import CKPT, EXPORTED
from crossrank.export.pipeline import Options, run
from crossrank.export.standin import build_standin

log = logging.getLogger(__name__)


def standin() -> tuple[Path, Path]:
    """(checkpoint dir, exported model dir), built offline once and reused (seeded, so stable)."""
    if not (CKPT / "config.json").is_file():
        log.info("building the L-12 stand-in checkpoint in %s", CKPT)
        build_standin(CKPT)
    from crossrank.runtime.execution import ovsession
    from crossrank.runtime.modeldir import DEFAULT_VARIANTS

    # bf16 (OpenVINO's) where openvino is installed, for bench.compare's fourth contender
    extra = ("bf16",) if ovsession.available() else ()
    out = run(Options(model=str(CKPT), out_dir=EXPORTED, variants=(*DEFAULT_VARIANTS, *extra)))
    return CKPT, out


def gpu_standin(work: Path, tokenizer_dir: Path, dry_run: bool = False) -> tuple[Path, Path]:
    """For the GPU scripts, in a fresh `work` dir: (the L-12 stand-in checkpoint with the carried
    tokenizer, its fp32 + fp16 export). The GPU box has no optimum, so `auto` picks torch.onnx
    there; a CPU dry run names it."""
    shutil.rmtree(work, ignore_errors=True)
    ckpt = build_standin(work / "standin-ckpt", tokenizer_dir=tokenizer_dir)
    model = run(Options(model=str(ckpt), out_dir=work / "standin", variants=("fp32", "fp16"),
                        exporter="torch" if dry_run else "auto"))
    return ckpt, model
