"""Dynamic int8 quantization for CPUs, with presets per instruction set."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

from crossrank.export import ExportError

log = logging.getLogger(__name__)

ISAS = ("avx512_vnni", "avx2", "arm64")


def detect_isa() -> str:
    """The instruction set the int8 kernels will run on, read from this CPU."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx2"


def ffn_output_matmuls(model_file: Path) -> list[str]:
    """Names of the feed-forward output projections (intermediate -> hidden) in an encoder graph."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul")
            and "/attention/" not in n.name]


def quantize(src: Path, dst: Path, isa: str, keep_ffn_out_fp32: bool = False) -> dict[str, object]:
    """Per-channel dynamic int8 (signed weights, unsigned activations); returns the recipe used.

    avx2 without VNNI uses reduced-range weights (7 bits): u8*s8 products summed in pairs would
    otherwise saturate int16 in the vpmaddubsw kernels.
    """
    if isa not in ISAS:
        raise ExportError(f"Unknown instruction set {isa!r}; choose one of {', '.join(ISAS)}.")
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = isa == "avx2"
    exclude = ffn_output_matmuls(src) if keep_ffn_out_fp32 else []
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=exclude,
        # Fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference;
        # their outputs are float tensors.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    return {
        "method": "dynamic",
        "isa": isa,
        "per_channel": True,
        "reduce_range": reduce_range,
        "weights": "int8",
        "activations": "uint8",
        "ops": ["MatMul", "Attention"],
        "fp32_nodes": len(exclude),
    }
