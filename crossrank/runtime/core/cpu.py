"""Which int8 instruction-set class this CPU belongs to (the exporter's recipes are per class)."""

from __future__ import annotations

import json
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


AT_HWCAP, AT_HWCAP2 = 16, 26


def _hwcaps() -> list[int]:
    """The kernel's HWCAP words (on ARM they name the int8 features ONNX Runtime picks kernels
    by; qemu-user reports its emulated CPU's here, not the host's)."""
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return []
    vals = {int.from_bytes(raw[i:i + 8], "little"): int.from_bytes(raw[i + 8:i + 16], "little")
            for i in range(0, len(raw) - 15, 16)}  # (type, value) pairs of 64-bit words
    return [vals.get(AT_HWCAP, 0), vals.get(AT_HWCAP2, 0)]


def signature() -> str:
    """What decides this CPU's int8 numbers: machine, CPU flags and HWCAPs, and the ONNX Runtime
    version (its kernels). Two machines with the same signature compute the same int8 scores."""
    from importlib import metadata

    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = sorted(set(line.partition(":")[2].split()))
                break
    except OSError:
        pass
    ort = "none"
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            ort = f"{dist} {metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            continue
    return json.dumps({"machine": platform.machine(), "flags": flags, "hwcap": _hwcaps(),
                       "onnxruntime": ort}, sort_keys=True)
