"""Where an export's CPU time goes once the model runs: ONNX Runtime's own profile, per operator.

    python -m bench.studies.op_profile [MODEL_DIR] [--chunks 100] [--variants int8 fp32]

Each variant's file is loaded as `crossrank serve` loads it on the CPU (every graph optimization,
the CPU profile's disabled fusions) on one intra-op thread, the thread a serving int8 lane has,
and scores the benchmark's mixed request (bench.workload: query and chunks of `make bench`) one
pair per run, as int8 serves. ONNX Runtime's profiler times every node; the table sums them per
operator type. The attention core's arithmetic (Q.K^T and the softmax product: 2 x n^2 x hidden
multiply-adds a layer, n the pair's tokens) is set beside the attention node's time, and the
projections' and feed-forward's (4 x hidden^2 + 2 x hidden x ffn a token a layer) beside theirs,
so the table says which operators run near what the CPU can do and which have room.

About 1 min a variant on 2 cores. Writes bench/results/op-profile-latest.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies import start
from bench.workload import EXPORTED, QUERY, chunks

RESULTS = Path(__file__).resolve().parents[1] / "results" / "op-profile-latest.json"
# The operators that do the attention core, and the ones that do the dense products.
ATTENTION = ("QAttention", "Attention", "MultiHeadAttention")
DENSE = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "MatMul", "FusedMatMul",
         "Gemm", "FusedGemm")


def node_times(profile_file: str) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Microseconds and node runs per operator type in one ONNX Runtime profile."""
    with open(profile_file) as f:
        events = json.load(f)
    micros: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e["args"]["op_name"]
            micros[op] += e["dur"]
            runs[op] += 1
    return micros, runs


def profile_variant(file: Path, batches: list[Any]) -> dict[str, Any]:
    """Run every batch once to warm up, then once profiled; per-operator times."""
    import onnxruntime as ort

    from crossrank.runtime.core import profiles

    prof = profiles.profile("cpu")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    feeds = []
    sess = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(prof.disabled_optimizers))
    names = [i.name for i in sess.get_inputs()]
    for b in batches:
        arrays = {"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                  "token_type_ids": b.token_type_ids}
        feeds.append({n: np.ascontiguousarray(arrays[n], dtype=np.int64) for n in names})
    for feed in feeds:
        sess.run(None, feed)
    wall = time.perf_counter()
    for feed in feeds:
        sess.run(None, feed)
    wall = time.perf_counter() - wall
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(prof.disabled_optimizers))
        for feed in feeds:
            sess.run(None, feed)
        micros, runs = node_times(sess.end_profiling())
    total = sum(micros.values())
    ops = [{"op": op, "ms": round(us / 1000, 2), "share": round(us / total, 4),
            "nodes_per_pair": round(runs[op] / len(feeds), 1)}
           for op, us in micros.most_common()]
    return {"file": file.name, "wall_ms": round(wall * 1000, 1),
            "node_ms": round(total / 1000, 1), "ops": ops}


def arithmetic(config: dict[str, Any], lengths: np.ndarray) -> dict[str, float]:
    """Multiply-adds of the request, in G: the attention core's (inside the attention node), the
    Q/K/V projection's (also inside it) and the other dense products' (output projection and
    feed-forward, the MatMul nodes)."""
    h = int(config["hidden_size"])
    ffn = int(config.get("intermediate_size", 4 * h))
    layers = int(config["num_hidden_layers"])
    n = lengths.astype(np.float64)
    return {"attention_core_gmac": round(float(layers * 2 * h * (n ** 2).sum()) / 1e9, 2),
            "qkv_gmac": round(float(layers * 3 * h * h * n.sum()) / 1e9, 2),
            "dense_gmac": round(float(layers * (h * h + 2 * h * ffn) * n.sum()) / 1e9, 2)}


def rates(res: dict[str, Any], work: dict[str, float]) -> dict[str, float | None]:
    """G multiply-adds a second: the dense MatMul nodes'; and the attention core's, estimated as
    the attention node's time less its Q/K/V projection at the dense nodes' rate."""
    att = sum(o["ms"] for o in res["ops"] if o["op"] in ATTENTION) / 1000
    dense = sum(o["ms"] for o in res["ops"] if o["op"] in DENSE) / 1000
    if not att or not dense:
        return {"dense_gmac_per_s": None, "attention_core_gmac_per_s": None}
    dense_rate = work["dense_gmac"] / dense
    core = att - work["qkv_gmac"] / dense_rate
    return {"dense_gmac_per_s": round(dense_rate, 1),
            "attention_core_gmac_per_s": round(work["attention_core_gmac"] / core, 1) if core > 0
            else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.op_profile")
    p.add_argument("model", nargs="?", type=Path, default=EXPORTED)
    p.add_argument("--chunks", type=int, default=100)
    p.add_argument("--variants", nargs="+", default=["int8", "fp32"])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    where = start()

    from crossrank.runtime.core.batching import pad
    from crossrank.runtime.modeldir import VARIANT_FILES
    from crossrank.runtime.text.pairs import PairTokenizer

    enc = PairTokenizer(args.model / "tokenizer.json", 512).encode(QUERY, chunks(args.chunks, seed=0))
    batches = [pad(enc.rows, np.array([i])) for i in range(args.chunks)]
    config = json.loads((args.model / "config.json").read_text())
    work = arithmetic(config, enc.lengths)
    out: dict[str, Any] = {"machine": where, "model": str(args.model), "chunks": args.chunks,
                           "tokens": int(enc.lengths.sum()), "threads": 1,
                           "date": time.strftime("%Y-%m-%d"), **work, "variants": {}}
    print(f"{where['cpu']} ({where['isa']}); {args.model.name}, {args.chunks} chunks, "
          f"{out['tokens']} tokens, one pair a run, one thread; attention core "
          f"{work['attention_core_gmac']} G multiply-adds, Q/K/V {work['qkv_gmac']} G, other dense "
          f"products {work['dense_gmac']} G")
    for variant in args.variants:
        res = profile_variant(args.model / VARIANT_FILES[variant], batches)
        res.update(rates(res, work))
        out["variants"][variant] = res
        print(f"\n{variant}: {res['wall_ms']} ms wall, {res['node_ms']} ms in nodes; dense "
              f"products {res['dense_gmac_per_s']} G multiply-adds/s, attention core (estimated) "
              f"{res['attention_core_gmac_per_s']} G/s")
        for o in res["ops"]:
            if o["share"] >= 0.002:
                print(f"  {o['op']:26s} {o['ms']:9.1f} ms {100 * o['share']:5.1f}%  "
                      f"{o['nodes_per_pair']:4.0f} a pair")
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
