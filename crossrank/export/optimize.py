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
    # The rotary fusion matches decoder rerankers (Qwen3's sequence-classification form) and
    # writes a RotaryEmbedding whose position ids have one row, which ONNX Runtime refuses for any
    # batch of two or more pairs; no encoder family it serves has a rotary form it matches.
    options.enable_rotary_embeddings = False
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
    """Write the fused fp32 graph (the CPU's: fp32 and, from it, int8) to dst; returns the
    fused-operator counts."""
    model = _optimize(src, cfg, use_gpu=False)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    split = split_skip_norms(model.model)
    if split:
        stats["SkipLayerNormalization split for the CPU"] = split
    _save(model, dst)
    return stats


# The residual-and-norm pairs the transformer fusions make into SkipLayerNormalization are written
# back out as Add nodes and one LayerNormalization for the CPU: ONNX Runtime's CPU kernel for the
# fused node ran ~4x slower than the ONNX LayerNormalization and two Adds it stands for (2-core
# Xeon, 250 tokens: 278 against 67 us a node) and took ~17% of int8's time; split, the stand-in
# L-12 scored the 100-chunk request 1.16x faster in int8 and 1.09x in fp32 (docs/performance.md).
# The CPU profile turns off ONNX Runtime's own SkipLayerNormFusion, which would undo this at load;
# CUDA keeps it (its fused kernel is the fast one, and the fp16 file is fused separately).
_SPLIT_MIN_OPSET = 17  # ONNX LayerNormalization


def split_skip_norms(model: Any) -> int:
    """Replace each SkipLayerNormalization in model (an onnx ModelProto, changed in place) by
    Add(input, bias), Add(_, skip) and LayerNormalization(_, gamma, beta) (the bias first, so
    ONNX Runtime can fold it into the MatMul before it). Left fused: a node whose mean or
    inverse-deviation outputs are read, and every node where the graph's opset has no
    LayerNormalization. Returns how many were split."""
    import onnx

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < _SPLIT_MIN_OPSET:
        return 0
    graph = model.graph
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    nodes: list[Any] = []
    split = 0
    for n in graph.node:
        outs = list(n.output) + [""] * (4 - len(n.output))
        if (n.op_type != "SkipLayerNormalization" or n.domain != "com.microsoft"
                or len(n.input) < 3 or any(o and o in read for o in outs[1:3])):
            nodes.append(n)
            continue
        x, skip, gamma = n.input[0], n.input[1], n.input[2]
        beta = n.input[3] if len(n.input) > 3 else ""
        bias = n.input[4] if len(n.input) > 4 else ""
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
        name = n.name or n.output[0]
        if bias:
            nodes.append(onnx.helper.make_node("Add", [x, bias], [f"{name}_biased"],
                                               name=f"{name}_bias"))
            x = f"{name}_biased"
        total = outs[3] or f"{name}_sum"  # the residual sum, where the graph reads it
        nodes.append(onnx.helper.make_node("Add", [x, skip], [total], name=f"{name}_residual"))
        nodes.append(onnx.helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []),
                                           [n.output[0]], name=f"{name}_norm", axis=-1, epsilon=eps))
        split += 1
    if split:
        del graph.node[:]
        graph.node.extend(nodes)
    return split


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
