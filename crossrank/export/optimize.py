"""Graph optimization with ONNX Runtime's transformer fusions, and the fp16 variant for CUDA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

def _optimize(src: Path, cfg: dict[str, Any], use_gpu: bool) -> Any:
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # The optimizer's symbolic shape inference copies the whole model for every If subgraph, on
    # every fusion that asks: on DeBERTa-v3 base (If nodes in its relative positions) [optimize]
    # ran past 10 minutes with 8 GB resident, against 7 s without it, with the same fusions.
    graph = onnx.load(str(src), load_external_data=False).graph
    options.enable_shape_inference = not any(n.op_type == "If" for n in graph.node)

    # ONNX Runtime's "bert" fusion patterns cover the encoder families cross-encoders use (BERT,
    # RoBERTa, XLM-R, ELECTRA, MiniLM); on anything else they fuse what matches and leave the
    # rest, and verification decides whether the result is faithful.
    return optimize_model(
        str(src),
        model_type="bert",
        num_heads=int(cfg.get("num_attention_heads", 0)),
        hidden_size=int(cfg.get("hidden_size", 0)),
        opt_level=0,  # python fusions only; ORT applies its own level at session creation
        use_gpu=use_gpu,
        optimization_options=options,
    )


def fuse_fp32(src: Path, dst: Path, cfg: dict[str, Any]) -> dict[str, int]:
    """Write the fused fp32 graph to dst; returns the fused-operator counts."""
    model = _optimize(src, cfg, use_gpu=False)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    _save(model, dst)
    return stats


def _save(model: Any, dst: Path) -> None:
    from crossrank.export import onnxfile

    onnxfile.data_of(dst).unlink(missing_ok=True)
    model.save_model_to_file(str(dst), use_external_data_format=onnxfile.external(model.model))


def fuse_fp16(src: Path, dst: Path, cfg: dict[str, Any]) -> dict[str, int]:
    """Write the fused graph for the CUDA provider in fp16 (inputs and logits stay as they were)."""
    model = _optimize(src, cfg, use_gpu=True)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    model.convert_float_to_float16(keep_io_types=True)
    _save(model, dst)
    return stats
