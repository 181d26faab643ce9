"""Outlier smoothing before int8 (SmoothQuant-style): move activation outliers into the weights.

Dynamic int8 quantizes a pair's activations with one scale per tensor, so a few outlier channels
(BERT's LayerNorm outputs have channels 10-15x the median) set the step for every other channel.
For each quantized node y = x W, a per-input-channel factor s rewrites it as
y = (x / s) (diag(s) W): the same fp32 function, with flatter activations and slightly less even
weights (which are quantized per output channel). s_j = max|x_j|^alpha / max|W_j|^(1 - alpha),
from the fp32 model's activations on calibration pairs (Xiao et al., SmoothQuant, 2023).

In a post-LayerNorm encoder (BERT, XLM-R, ELECTRA, DeBERTa) a LayerNorm output is also the
residual, so the 1/s cannot go into the LayerNorm: it becomes an explicit Mul in front of the
quantized node. In a pre-LayerNorm one (ModernBERT) the norm's output feeds only the projection,
so the 1/s folds into the norm's scale. For the attention output projection the 1/s folds into the
value columns of the fused Attention's weights and bias instead (attention is linear in V), at no
cost at run time. Nodes that share an input or a weight (DeBERTa's q, k, v; DeBERTa-v3's shared
attention keys) share one factor.

Outliers also come per token: a few tokens' feed-forward activations (after GELU) are tens of
times the median token's, and they set the one activation range dynamic int8 takes per tensor,
so every other token's step is coarse (measured on the trained fixture, layer 0's feed-forward
output: a typical token's int8 error was 9% of its output). No per-channel factor can flatten
that. `per_token_scales` gives each token its own range with ONNX Runtime's int8 kernels as they
are: y = (x / r) W = (1/r) (x W) for any positive per-row r, so the node becomes
r = max|x| per row, y = MatMul(x / r, W) * r: the same fp32 function, and after quantization every
row of x / r spans the same range.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.export import onnxfile

log = logging.getLogger(__name__)

_FLOOR = 1e-5


def consumers(graph: Any) -> dict[str, list[Any]]:
    """The nodes that read each tensor, by name (a node once per input that reads it)."""
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

    if not tensors:  # a session asked for no outputs would return all of them
        return {}
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
    maxima: dict[str, np.ndarray] = {}
    # a model over 2 GB cannot be passed as bytes: it is written, with its data, to scratch
    with tempfile.TemporaryDirectory(dir=model_file.parent) as scratch:
        sess = ort.InferenceSession(onnxfile.session_input(model, Path(scratch)), opts,
                                    providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        for feed in feeds:
            outs = sess.run(list(tensors), {k: v for k, v in feed.items() if k in names})
            for name, arr in zip(tensors, outs, strict=True):
                m = np.abs(arr.reshape(-1, arr.shape[-1])).max(axis=0)
                maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
        del sess
    return maxima


def _groups(chosen: Mapping[str, str], nodes: Mapping[str, Any],
            uses: Mapping[str, list[Any]], inits: Mapping[str, Any]) -> list[list[str]]:
    """The chosen nodes in groups that must share one factor: nodes that read the same input
    (DeBERTa's query, key and value projections) or the same weight (DeBERTa-v3's share_att_key
    uses each layer's query and key weights on its relative positions too). A node whose weight
    is not a constant, or is read by something that is not a chosen node, is left out."""
    parent = {n: n for n in chosen}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    first: dict[str, str] = {}
    for name in chosen:
        node = nodes[name]
        w = node.input[1]
        readers = uses.get(w, [])
        if w not in inits or any(r.name not in chosen or r.input[1] != w for r in readers):
            log.debug("%s: its weight is not a constant read only by smoothed nodes; left as "
                      "it is", name)
            parent.pop(name)
            continue
        for key in (("x", node.input[0]), ("w", w)):
            k = "\0".join(key)
            if k in first:
                parent[find(name)] = find(first[k])
            else:
                first[k] = name
    groups: dict[str, list[str]] = {}
    for name in chosen:  # in the graph's order
        if name in parent:
            groups.setdefault(find(name), []).append(name)
    return list(groups.values())


def smooth(src: Path, dst: Path, roles: Mapping[str, list[str]], alpha: Mapping[str, float],
           feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write src with the nodes of each role in alpha smoothed at that alpha; returns the
    record for the manifest. roles maps a role to its node names (quantize.matmul_roles).

    Nodes that share an input or a weight share one factor (from the largest activations over
    their inputs and the largest weights over their weights, at the largest alpha among their
    roles). Each input's 1/s goes where it costs nothing when it can: into the value columns of
    the fused Attention that produced it, or into the scale and bias of the norm that produced
    it when nothing else reads the normalized value (a pre-LayerNorm block: ModernBERT); else
    into one Mul in front of its readers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    order = {n.name: i for i, n in enumerate(graph.node)}
    nodes = {n.name: n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    uses = consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    chosen = {n: role for role, names in roles.items() if alpha.get(role) for n in names}
    chosen = dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))
    groups = _groups(chosen, nodes, uses, inits)
    tensors = sorted({nodes[n].input[0] for g in groups for n in g})
    maxima = activation_maxima(src, tensors, feeds)
    # Every factor from the original weights first, so the result does not depend on order.
    factors: list[tuple[list[str], np.ndarray]] = []
    for group in groups:
        xs = sorted({nodes[n].input[0] for n in group})
        ws = sorted({nodes[n].input[1] for n in group})
        if len({len(maxima[x]) for x in xs}) != 1:
            log.debug("%s: inputs of different widths; left as they are", group)
            continue
        a = max(float(alpha[chosen[n]]) for n in group)
        x_max = np.maximum(np.max([maxima[x] for x in xs], axis=0).astype(np.float64), _FLOOR)
        w_max = np.max([np.abs(numpy_helper.to_array(inits[w]).astype(np.float64)).max(axis=1)
                        for w in ws], axis=0)
        w_max = np.maximum(w_max, _FLOOR)
        if len(w_max) != len(x_max):
            log.debug("%s: weights do not match the input width; left as they are", group)
            continue
        factors.append((group, np.clip(x_max**a / w_max ** (1.0 - a), _FLOOR, None)))
    new_inits: list[Any] = []
    muls: list[tuple[int, Any]] = []
    folded = norms = 0
    for group, s in factors:
        for w_name in sorted({nodes[n].input[1] for n in group}):
            w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
            inits[w_name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32),
                                                           w_name))
        for x in sorted({nodes[n].input[0] for n in group}):
            readers = [nodes[n] for n in group if nodes[n].input[0] == x]
            # a Shape reads no values: the 1/s does not change it
            only_group = len([u for u in uses.get(x, []) if u.op_type != "Shape"]) == len(readers)
            src_node = producer.get(x)
            if (src_node is not None and src_node.op_type == "Attention" and only_group
                    and _fold_into_values(src_node, inits, s)):
                folded += 1
                continue
            own = (_fold_into_norm(src_node, x, inits, uses, producer, s)
                   if src_node is not None and only_group else None)
            if own is not None:
                new_inits.extend(own)
                norms += 1
                continue
            name = readers[0].name
            inv = f"{name}_smooth_inv"
            new_inits.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            out = f"{x}_smoothed_for_{name}"
            muls.append((min(order[r.name] for r in readers),
                         onnx.helper.make_node("Mul", [x, inv], [out], name=f"{name}_Smooth")))
            for r in readers:
                r.input[0] = out
    for idx, mul in sorted(muls, key=lambda t: -t[0]):
        graph.node.insert(idx, mul)
    graph.initializer.extend(new_inits)
    onnxfile.save(model, dst)
    smoothed = sum(len(g) for g, _ in factors)
    log.info("smoothed %d nodes in %d groups (%d folded into the attention values, %d into "
             "norms, %d Mul nodes)", smoothed, len(factors), folded, norms, len(muls))
    return {"alpha": {k: float(v) for k, v in alpha.items() if v}, "nodes": smoothed,
            "groups": len(factors), "mul_nodes": len(muls), "folded": folded,
            "folded_into_norms": norms, "calibration_pairs": len(feeds)}


_NORM_PARAMS = {  # where a norm's scale and bias are among its inputs
    "LayerNormalization": (1, 2),
    "SimplifiedLayerNormalization": (1, None),
    "SkipLayerNormalization": (2, 3),
    "SkipSimplifiedLayerNormalization": (2, None),
}


def _fold_into_norm(norm: Any, x: str, inits: dict[str, Any], uses: Mapping[str, list[Any]],
                    producer: Mapping[str, Any], s: np.ndarray) -> list[Any] | None:
    """Divide the scale and bias of the norm whose normalized output is x by s (x's readers are
    all smoothed with s). A scale or bias shared with other nodes (the exporter merges equal
    constants) gets a copy of its own; a bias that is a zero Constant needs nothing. Returns the
    new initializers, or None where folding is not possible (and changes nothing)."""
    from onnx import numpy_helper

    if norm.op_type not in _NORM_PARAMS or not norm.output or norm.output[0] != x:
        return None
    todo: list[tuple[int, np.ndarray]] = []
    for i in _NORM_PARAMS[norm.op_type]:
        if i is None or i >= len(norm.input) or not norm.input[i]:
            continue
        name = norm.input[i]
        if name in inits:
            arr = numpy_helper.to_array(inits[name]).astype(np.float64)
        elif name in producer and producer[name].op_type == "Constant":
            arr = numpy_helper.to_array(producer[name].attribute[0].t).astype(np.float64)
            if arr.shape == s.shape and not arr.any():
                continue  # a zero bias stays zero
        else:
            return None
        if arr.shape != s.shape:
            return None
        todo.append((i, arr))
    if not todo:
        return None
    added = []
    for i, arr in todo:
        name = norm.input[i]
        value = (arr / s).astype(np.float32)
        if name in inits and len(uses.get(name, [])) == 1:
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
        else:
            own = f"{name}_smoothed_for_{norm.name}"
            added.append(numpy_helper.from_array(value, own))
            norm.input[i] = own
    return added


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


def per_token_scales(model_file: Path, nodes: Sequence[str]) -> int:
    """Rewrite the named MatMul nodes of model_file, in place, so that their input reaches them
    divided by each row's max |x| and their output is multiplied back: dynamic int8 then takes
    a range that fits every token (module docstring). Returns how many nodes were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_file))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    wanted = set(nodes)
    eps, axes = "per_token_floor", "per_token_axes"
    graph.initializer.append(numpy_helper.from_array(np.array(1e-12, np.float32), eps))
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
    rebuilt: list[Any] = []
    done = 0
    for node in graph.node:
        if node.name not in wanted or node.op_type != "MatMul":
            rebuilt.append(node)
            continue
        x, y, p = node.input[0], node.output[0], f"{node.name}_per_token"
        reduce = (helper.make_node("ReduceMax", [f"{p}_abs", axes], [f"{p}_max"],
                                   name=f"{p}_ReduceMax", keepdims=1) if opset >= 18 else
                  helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"],
                                   name=f"{p}_ReduceMax", axes=[-1], keepdims=1))
        node.input[0], node.output[0] = f"{p}_x", f"{p}_y"
        rebuilt += [helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_Abs"), reduce,
                    helper.make_node("Max", [f"{p}_max", eps], [f"{p}_r"], name=f"{p}_Max"),
                    helper.make_node("Div", [x, f"{p}_r"], [f"{p}_x"], name=f"{p}_Div"),
                    node,
                    helper.make_node("Mul", [f"{p}_y", f"{p}_r"], [y], name=f"{p}_Mul")]
        done += 1
    del graph.node[:]
    graph.node.extend(rebuilt)
    onnxfile.save(model, model_file)
    log.info("per-token activation ranges for %d nodes", done)
    return done
