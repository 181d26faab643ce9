"""Padding removed vs padded batches on CUDA: ONNX Runtime's packing mode (RemovePadding,
PackedAttention, RestorePadding) measured against the plain fused fp16 graph, same run.

    python bench/gpu_packing.py --tokenizer-dir DIR [--out DIR]

Builds and exports the stand-in L-12 (as bench/gpu_check.py does), converts its fp16 graph to
packing mode (same inputs), checks the logits agree, and times model-only and end-to-end
scoring of a 2000-chunk request with sorted batches and with unsorted ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--work", default="/tmp/crossrank-packing")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    import onnx
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    from onnxruntime.transformers.onnx_model import OnnxModel

    from bench.models import gpu_standin
    from bench.timing import median_seconds
    from bench.workload import QUERY, chunks
    from crossrank.runtime import batching
    from crossrank.runtime.scorer import Scorer
    from crossrank.runtime.session import Session

    work = Path(args.work)
    _, out = gpu_standin(work, Path(args.tokenizer_dir))
    packed_file = work / "model_fp16_packed.onnx"
    m = OnnxModel(onnx.load(str(out / "model_fp16.onnx")))
    PackingMode(m).convert()
    m.save_model_to_file(str(packed_file))
    ops = sorted({n.op_type for n in m.model.graph.node})
    print("packed graph ops:", ops, flush=True)

    docs = chunks(2000, seed=0)
    padded = Scorer.from_dir(out, variant="fp16", provider="cuda", token_budget=32768,
                             max_rows=4096)
    packed = Scorer(padded.tokenizer, Session(packed_file, provider="cuda"), activation="identity",
                    token_budget=32768, max_rows=4096, pipeline=True)
    a, b = padded.logits(QUERY, docs), packed.logits(QUERY, docs)
    report: dict[str, Any] = {"ops": ops, "max_abs_diff_packed_vs_padded": float(np.abs(a - b).max())}
    enc = padded.tokenizer.encode(QUERY, docs)
    tokens = int(enc.lengths.sum())
    rows = []
    rng = np.random.default_rng(0)
    for budget in (32768, 65536):
        for order in ("sorted", "unsorted"):
            if order == "sorted":
                groups = batching.plan(enc.lengths, budget, 4096)
            else:  # arrival order, cut by rows so padding is large
                idx = rng.permutation(len(docs))
                per = max(1, budget // 512)
                groups = [idx[i:i + per] for i in range(0, len(idx), per)]
            batches = [batching.pad(enc.rows, g) for g in groups]
            computed = sum(bt.rows * bt.width for bt in batches)
            for name, s in (("padded", padded), ("packed", packed)):
                t = median_seconds(lambda s=s, batches=batches: [s.session.run(x) for x in batches])
                rows.append({"budget": budget, "order": order, "graph": name,
                             "padding_overhead": round(computed / tokens - 1, 3),
                             "model_ms": round(t * 1e3, 1), "tokens_per_s": round(tokens / t)})
                print(rows[-1], flush=True)
    for name, s in (("padded", padded), ("packed", packed)):
        t = median_seconds(s.score, QUERY, docs)
        rows.append({"end_to_end": name, "ms": round(t * 1e3, 1), "tokens_per_s": round(tokens / t)})
        print(rows[-1], flush=True)
    report["rows"] = rows
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_packing.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
