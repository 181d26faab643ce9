"""Dynamic int8 quantization for CPUs, with presets per instruction set."""

from __future__ import annotations

import logging
from pathlib import Path

from crossrank.export import ExportError
from crossrank.runtime.cpu import ISAS, detect_isa

__all__ = ["ISAS", "detect_isa", "quantize"]

log = logging.getLogger(__name__)

def quantize(src: Path, dst: Path, isa: str) -> dict[str, object]:
    """Per-channel dynamic int8 (signed weights, unsigned activations); returns the recipe used.

    avx2 without VNNI uses reduced-range weights (7 bits): u8*s8 products summed in pairs would
    otherwise saturate int16 in the vpmaddubsw kernels.
    """
    if isa not in ISAS:
        raise ExportError(f"Unknown instruction set {isa!r}; choose one of {', '.join(ISAS)}.")
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = isa == "avx2"
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
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
    }
