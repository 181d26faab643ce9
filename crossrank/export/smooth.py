"""Outlier smoothing before int8 (SmoothQuant-style): move activation outliers into the weights.

Dynamic int8 quantizes a pair's activations with one scale per tensor, so a few outlier channels
(BERT's LayerNorm outputs have channels 10-15x the median) set the step for every other channel.
For each quantized node y = x W, a per-input-channel factor s rewrites it as
y = (x / s) (diag(s) W): the same fp32 function, with flatter activations and slightly less even
weights (which are quantized per output channel). s_j = max|x_j|^alpha / max|W_j|^(1 - alpha),
from the fp32 model's activations on calibration pairs (Xiao et al., SmoothQuant, 2023).

In this post-LayerNorm encoder a LayerNorm output is also the residual, so the 1/s cannot go into
the LayerNorm: it becomes an explicit Mul in front of the quantized node. For the attention output
projection the 1/s folds into the value columns of the fused Attention's weights and bias
instead (attention is linear in V), at no cost at run time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_FLOOR = 1e-5


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def activation_maxima(model_file: Path, tensors: Sequence[str],
                      feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each named tensor over the feeds (one pair per feed), from the fp32
    model with those tensors added as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_file))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                         None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Fusions could remove the tensors asked for; the graph is already fused.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        outs = sess.run(list(tensors), {k: v for k, v in feed.items() if k in names})
        for name, arr in zip(tensors, outs, strict=True):
            m = np.abs(arr.reshape(-1, arr.shape[-1])).max(axis=0)
            maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
    return maxima


def smooth(src: Path, dst: Path, roles: Mapping[str, list[str]], alpha: Mapping[str, float],
           feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write src with the nodes of each role in alpha smoothed at that alpha; returns the
    record for the manifest. roles maps a role to its node names (quantize.matmul_roles)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    uses = _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    chosen = {n: role for role, names in roles.items() if alpha.get(role) for n in names}
    tensors = sorted({nodes[n].input[0] for n in chosen})
    maxima = activation_maxima(src, tensors, feeds)
    # Every factor from the original weights first, so the result does not depend on order.
    factors: dict[str, np.ndarray] = {}
    for name, role in chosen.items():
        x, w_name = nodes[name].input[0], nodes[name].input[1]
        if w_name not in inits or len(uses.get(w_name, [])) != 1:
            log.debug("%s: its weight is not a constant of its own; left as it is", name)
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        a = float(alpha[role])
        x_max = np.maximum(maxima[x].astype(np.float64), _FLOOR)
        w_max = np.maximum(np.abs(w).max(axis=1), _FLOOR)
        factors[name] = np.clip(x_max**a / w_max ** (1.0 - a), _FLOOR, None)
    new_inits: list[Any] = []
    muls: list[tuple[int, Any]] = []
    folded = 0
    for name, s in factors.items():
        node = nodes[name]
        x, w_name = node.input[0], node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        inits[w_name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32),
                                                       w_name))
        src_node = producer.get(x)
        if (src_node is not None and src_node.op_type == "Attention"
                and len(uses.get(x, [])) == 1 and _fold_into_values(src_node, inits, s)):
            folded += 1
            continue
        inv = f"{name}_smooth_inv"
        new_inits.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        out = f"{x}_smoothed_for_{name}"
        mul = onnx.helper.make_node("Mul", [x, inv], [out], name=f"{name}_Smooth")
        node.input[0] = out
        muls.append((list(graph.node).index(node), mul))
    for idx, mul in sorted(muls, key=lambda t: -t[0]):
        graph.node.insert(idx, mul)
    graph.initializer.extend(new_inits)
    onnx.save(model, str(dst))
    log.info("smoothed %d nodes (%d folded into the attention values, %d Mul nodes)",
             len(factors), folded, len(muls))
    return {"alpha": {k: float(v) for k, v in alpha.items() if v}, "nodes": len(factors),
            "mul_nodes": len(muls), "folded": folded, "calibration_pairs": len(feeds)}


def _fold_into_values(attn: Any, inits: dict[str, Any], s: np.ndarray) -> bool:
    """Divide the value columns of a fused Attention's packed QKV weight and bias by s."""
    from onnx import numpy_helper

    if len(attn.input) < 3 or attn.input[1] not in inits or attn.input[2] not in inits:
        return False
    qkv = numpy_helper.to_array(inits[attn.input[1]]).astype(np.float64)
    bias = numpy_helper.to_array(inits[attn.input[2]]).astype(np.float64)
    hidden = qkv.shape[1] // 3
    if qkv.shape[1] != 3 * hidden or len(s) != hidden or bias.shape != (3 * hidden,):
        return False
    qkv[:, 2 * hidden:] /= s[None, :]
    bias[2 * hidden:] /= s
    inits[attn.input[1]].CopyFrom(numpy_helper.from_array(qkv.astype(np.float32),
                                                          attn.input[1]))
    inits[attn.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32),
                                                          attn.input[2]))
    return True
