"""Research studies: how the int8 recipes, the int8 gate and the CUDA overlap were chosen (bench/README.md)."""

from __future__ import annotations

import logging
import platform


def start(progress: int = logging.INFO) -> dict[str, str]:
    """Log the study's progress (not the exporter's or the quantizer's notes) and name the
    machine its figures come from: the CPU and crossrank's int8 class."""
    logging.basicConfig(level=progress, format="%(message)s")
    for noisy in ("crossrank", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from crossrank.runtime.core.cpu import detect_isa

    return {"cpu": platform.processor() or platform.machine(), "isa": detect_isa()}
