"""Static and weight-only int8 against the shipped dynamic int8, rows per batch (issue 19, item 4).

    python -m bench.int8_static [--chunks 100] [--rounds 3]

Dynamic int8 runs one pair per batch, so that a pair's activation scale is its own. With scales
fixed at export time a pair's score would not depend on its batch-mates and rows could be
batched again. The fused `Attention` has no QDQ form, so its query/key/value projection stays
fp32 in a static model; here it is first unfused (`MatMul` + `Add` + `Split` +
`MultiHeadAttention`, the same function: 0.0 logits apart in fp32) so that the projection is a
plain MatMul that can be quantized too. Candidates, each on the stand-in L-12 and the benchmark's
mixed request, sorted by length as the runtime sorts, time as the median of `--rounds` passes
in one run, ratio against fp32 paired round by round:

- fp32 (8 rows per batch, what the token budget gives on this request) and the shipped dynamic
  int8 (`u8s8-smooth`, one row per batch, and for comparison 4 and 8 rows per batch, where one
  activation scale covers the whole batch, so a pair's score depends on its batch-mates);
- `qdq-fused`: static s8s8 QDQ of the MatMuls outside the fused Attention, min/max calibration
  (bench.int8_recipes' `s8s8-qdq-static`; ONNX Runtime runs each as `MatMulIntegerToFloat`);
- `qdq-unfused`: the same after unfusing, so the QKV projection is in it too; `qdq-unfused u8`
  with uint8 asymmetric activations (VNNI's own u8 x s8 operands);
- `nbits8-unfused`: 8-bit block-wise weights (`MatMulNBits`, block 32, accuracy level 4: int8
  compute) after unfusing.

Also printed: which operators ONNX Runtime actually runs for each file after its own graph
optimizations (a QDQ model need not run as int8 activations). Results go to
bench/results/int8-static-<stamp>.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "models" / ".int8-static"


def unfuse_attention(src: Path, dst: Path) -> None:
    """Each fused Attention as MatMul + Add + Split + MultiHeadAttention, mask kept."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "Attention":
            nodes.append(node)
            continue
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        x, w, b = node.input[0], node.input[1], node.input[2]
        hidden = numpy_helper.to_array(inits[w]).shape[1] // 3
        p = node.name
        split = f"{p}_split_sizes"
        graph.initializer.append(helper.make_tensor(split, onnx.TensorProto.INT64, [3],
                                                    [hidden] * 3))
        q, k, v = f"{p}_q", f"{p}_k", f"{p}_v"
        nodes += [
            helper.make_node("MatMul", [x, w], [f"{p}_qkv"], name=f"{p}/qkv/MatMul"),
            helper.make_node("Add", [f"{p}_qkv", b], [f"{p}_qkv_b"], name=f"{p}/qkv/Add"),
            helper.make_node("Split", [f"{p}_qkv_b", split], [q, k, v], axis=-1,
                             name=f"{p}/Split"),
        ]
        inputs = [q, k, v] + (["", node.input[3]] if len(node.input) > 3 and node.input[3] else [])
        nodes.append(helper.make_node("MultiHeadAttention", inputs, list(node.output),
                                      domain="com.microsoft", num_heads=heads, name=f"{p}/MHA"))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))


def weight_nbits(src: Path, dst: Path, block: int = 32, accuracy_level: int = 4) -> None:
    """Every MatMul with a constant 2-D weight as MatMulNBits: 8-bit symmetric block-wise
    weights along K (zero point 128), activations as the accuracy level says (4: int8)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    replaced: set[str] = set()
    for node in graph.node:
        w_init = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        w = numpy_helper.to_array(w_init).astype(np.float32) if w_init is not None else None
        if w is None or w.ndim != 2:
            nodes.append(node)
            continue
        k, n = w.shape
        blocks = -(-k // block)
        padded = np.zeros((blocks * block, n), np.float32)
        padded[:k] = w
        wb = padded.T.reshape(n, blocks, block)
        scale = np.abs(wb).max(axis=2) / 127.0
        scale[scale == 0] = 1.0
        q = (np.clip(np.round(wb / scale[:, :, None]), -128, 127) + 128).astype(np.uint8)
        name = node.input[1]
        graph.initializer.append(numpy_helper.from_array(q, f"{name}_q8"))
        graph.initializer.append(numpy_helper.from_array(scale.reshape(-1), f"{name}_q8_scale"))
        replaced.add(name)
        nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], f"{name}_q8", f"{name}_q8_scale"], list(node.output),
            domain="com.microsoft", name=f"{node.name}_NBits", K=k, N=n, bits=8,
            block_size=block, accuracy_level=accuracy_level))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for nd in graph.node for i in nd.input}
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))


def executed_ops(model_file: Path) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime runs after its own optimizations."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node).most_common())


def length_sorted_batches(tokenizer_file: Path, pairs: list[tuple[str, str]],
                          rows: int) -> list[dict[str, np.ndarray]]:
    """Pairs sorted by length, `rows` per batch, padded by the runtime's own tokenizer and
    `pad` (as bench.compare's padded contender runs them)."""
    from crossrank.runtime.batching import pad
    from crossrank.runtime.tokenization import PairTokenizer

    enc = PairTokenizer(tokenizer_file, 512).encode_pairs(pairs)
    order = np.argsort(enc.lengths, kind="stable")
    out = []
    for i in range(0, len(order), rows):
        b = pad(enc.rows, order[i:i + rows])
        out.append({"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                    "token_type_ids": b.token_type_ids})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.int8_static")
    p.add_argument("--chunks", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    import onnxruntime as ort

    from bench.compare import cpu_name
    from bench.int8_recipes import quantize_static_qdq
    from bench.models import standin
    from bench.workload import QUERY, chunks
    from crossrank.runtime.cpu import detect_isa

    _, model_dir = standin()
    WORK.mkdir(parents=True, exist_ok=True)
    tok = model_dir / "tokenizer.json"
    unfused = WORK / "unfused.onnx"
    unfuse_attention(model_dir / "model.onnx", unfused)
    files = {"fp32": model_dir / "model.onnx", "fp32-unfused": unfused,
             "dynamic u8s8-smooth": model_dir / "model_int8.onnx",
             "qdq-fused": WORK / "qdq-fused.onnx", "qdq-unfused": WORK / "qdq-unfused.onnx",
             "qdq-unfused u8": WORK / "qdq-unfused-u8.onnx",
             "nbits8-unfused": WORK / "nbits8-unfused.onnx"}
    quantize_static_qdq(model_dir, files["qdq-fused"])
    quantize_static_qdq(model_dir, files["qdq-unfused"], src=unfused)
    quantize_static_qdq(model_dir, files["qdq-unfused u8"], src=unfused, activations="u8")
    weight_nbits(unfused, files["nbits8-unfused"])
    cases = {"fp32, 8 rows": ("fp32", 8), "fp32 unfused, 8 rows": ("fp32-unfused", 8),
             "dynamic u8s8-smooth, 1 row": ("dynamic u8s8-smooth", 1),
             "qdq-fused, 8 rows": ("qdq-fused", 8)}
    for rows in (1, 4, 8, 16):
        cases[f"qdq-unfused, {rows} rows"] = ("qdq-unfused", rows)
    for rows in (1, 8):
        cases[f"qdq-unfused u8, {rows} rows"] = ("qdq-unfused u8", rows)
    for rows in (1, 8):
        cases[f"nbits8-unfused, {rows} rows"] = ("nbits8-unfused", rows)
    for rows in (4, 8):  # one activation scale per batch: a pair's score depends on its mates
        cases[f"dynamic u8s8-smooth, {rows} rows"] = ("dynamic u8s8-smooth", rows)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sessions = {k: ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
                for k, f in files.items()}
    pairs = [(QUERY, d) for d in chunks(args.chunks, seed=0)]
    batches = {r: length_sorted_batches(tok, pairs, r) for r in {r for _, r in cases.values()}}

    def run(case: str) -> np.ndarray:
        name, rows = cases[case]
        return np.concatenate([sessions[name].run(None, b)[0].ravel() for b in batches[rows]])

    ref = run("fp32, 8 rows")
    diffs = {c: float(np.abs(run(c) - ref).mean()) for c in cases}  # also the warm-up
    times: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for c in cases:
            t0 = time.perf_counter()
            run(c)
            times[c].append(time.perf_counter() - t0)
    base = np.array(times["fp32, 8 rows"])
    result: dict[str, Any] = {
        "created": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), "cpu": cpu_name(),
        "isa": detect_isa(), "chunks": args.chunks, "rounds": args.rounds,
        "model": "stand-in L-12 (random weights: mean |diff| is a sanity check, not fidelity)",
        "cases": {c: {"median_s": round(float(np.median(t)), 3),
                      "vs_fp32": round(float(np.median(np.array(t) / base)), 3),
                      "mean_abs_diff_vs_fp32": round(diffs[c], 6)} for c, t in times.items()},
        "executed_ops": {k: executed_ops(f) for k, f in files.items()},
    }
    print(f"{args.chunks}-chunk request, stand-in L-12, {cpu_name()} ({detect_isa()}), "
          f"median of {args.rounds}\n")
    print("| candidate | median s | x fp32 time | mean \\|diff\\| vs fp32 |")
    print("| --- | ---: | ---: | ---: |")
    for c, r in result["cases"].items():
        print(f"| {c} | {r['median_s']:.2f} | {r['vs_fp32']:.2f} | {r['mean_abs_diff_vs_fp32']:.1e} |")
    for k, ops in result["executed_ops"].items():
        print(f"{k}: {ops}")
    out = ROOT / "bench" / "results" / f"int8-static-{result['created']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
