"""Which int8 instruction-set class this CPU belongs to (the exporter's recipes are per class)."""

from __future__ import annotations

import platform
from pathlib import Path

# avx512_vnni: VNNI dot products (AVX-512 VNNI or AVX-VNNI), u8 x s8 summed without saturation;
# avx2: x86 without VNNI (AVX2, or AVX-512 without VNNI), where u8 x s8 pairs are summed in int16
# and can saturate; arm64: ARM's int8 dot products.
ISAS = ("avx512_vnni", "avx2", "arm64")


def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """This CPU's class among ISAS (cpuinfo and machine are for tests)."""
    arch = (machine or platform.machine()).lower()
    if arch in ("arm64", "aarch64"):
        return "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx2"
