"""fp16 on CUDA judged on a trained reranker and real prose it never saw.

The GPU check's fp16 parity uses the synthetic corpus, the same kind of text the exporter checks
with. This study takes the trained fixture (fixtures/reranker.py: MiniLM fine-tuned on package
descriptions) and the unseen test requests of fixtures/prose.py, scores every request with fp32
on the CPU provider and fp16 on CUDA, and judges fp16 by the int8 gate's measures
(runtime/core/fidelity.py): clear top-10 misses, graded NDCG@10, quality kept, rms error over
each request's spread.

    python -m bench.studies.fp16_fidelity --checkpoint DIR [--out FILE] [--cpu-dry-run]

DIR may hold the checkpoint in fp16 (it is upcast first), as `bash bench/gpu_check.sh prepare`
writes it to .gpu/trained. --cpu-dry-run runs fp16 on the CPU provider with 4 requests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default="")
    p.add_argument("--cpu-dry-run", action="store_true")
    args = p.parse_args(argv)
    gpu = "cpu" if args.cpu_dry_run else "cuda"

    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from bench.gpu_check import upcast_checkpoint
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose

    reqs = prose.requests("test")[: 4 if args.cpu_dry_run else None]
    with tempfile.TemporaryDirectory(prefix="crossrank-fp16-") as tmp:
        ckpt = upcast_checkpoint(Path(args.checkpoint), Path(tmp) / "ckpt")
        t0 = time.perf_counter()
        out = run(Options(model=str(ckpt), out_dir=Path(tmp) / "m", variants=("fp32", "fp16"),
                          exporter="torch" if args.cpu_dry_run else "auto"))
        export_s = time.perf_counter() - t0
        manifest = json.loads((out / "manifest.json").read_text())
        ref, got, groups, labels = [], [], [], []
        times: list[float] = []
        with Scorer.from_dir(out, variant="fp32", provider="cpu") as f32, \
                Scorer.from_dir(out, variant="fp16", provider=gpu) as f16:
            f16.logits(reqs[0].query, list(reqs[0].passages))  # warm-up
            for g, r in enumerate(reqs):
                chunks = list(r.passages)
                ref.append(f32.logits(r.query, chunks))
                t = time.perf_counter()
                got.append(f16.logits(r.query, chunks))
                times.append(time.perf_counter() - t)
                groups += [g] * len(chunks)
                labels += list(r.labels)
    a, b = np.concatenate(ref), np.concatenate(got)
    j = fidelity.judge(a, b, groups, labels)
    top10 = [len(set(fidelity.order(x)[:10].tolist()) & set(fidelity.order(y)[:10].tolist()))
             for x, y in zip(ref, got, strict=True)]
    report: dict[str, Any] = {
        "fixture": "trained", "provider": gpu, "onnxruntime": ort.__version__,
        "requests": len(reqs), "pairs": int(len(a)), "export_s": round(export_s, 1),
        "export_fp16_verification": manifest["variants"]["fp16"].get("verification"),
        "judgement": j.as_dict(),
        "rms_error_over_spread": round(fidelity.rms_error_over_spread(a, b, groups), 5),
        "max_abs_diff": round(float(np.abs(a - b).max()), 5),
        "top10_overlap_min": min(top10), "top10_identical_requests": sum(t == 10 for t in top10),
        "fp16_median_ms_per_request": round(statistics.median(times) * 1e3, 2),
    }
    print(json.dumps(report, indent=2), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
