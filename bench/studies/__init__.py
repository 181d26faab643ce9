"""Research studies: how the int8 recipes, the int8 gate and the CUDA overlap were chosen (bench/README.md)."""

from __future__ import annotations

import logging
import platform


def machine() -> dict[str, object]:
    """The machine a study's figures come from: the CPU, crossrank's int8 class (from
    /proc/cpuinfo) and what CPUID tells libraries, which is what ONNX Runtime picks its kernels
    by (the two differ under tools/avx2/run.sh, where CPUID hides AVX-512 and VNNI)."""
    import importlib

    from crossrank.runtime.core.cpu import detect_isa

    seen = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__
    return {"cpu": platform.processor() or platform.machine(), "isa": detect_isa(),
            "cpuid": {f: bool(seen.get(f)) for f in ("AVX2", "AVX512F", "AVX512VNNI")}}


def start(progress: int = logging.INFO) -> dict[str, object]:
    """Log the study's progress (not the exporter's or the quantizer's notes) and name the
    machine its figures come from (machine())."""
    logging.basicConfig(level=progress, format="%(message)s")
    for noisy in ("crossrank", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return machine()
