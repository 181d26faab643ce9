"""The GPU check: fp16 parity and end-to-end speed on CUDA against the seed, in one run.

Run on a machine with an NVIDIA GPU and onnxruntime-gpu (see bench/gpu_check.sh):

    python bench/gpu_check.py --tokenizer-dir DIR --realistic DIR [--out DIR]

1. builds the stand-in L-12 checkpoint and exports it (fp32 + fp16; torch.onnx when optimum is
   absent), recording fused-operator counts and the fp16 check on CUDA;
2. exports the realistic fixture (real MiniLM encoder, principal-direction head) and compares
   fp16 on CUDA with fp32 on the CPU provider: top-10 overlap, Spearman, max |diff|;
3. times the seed (sentence-transformers CrossEncoder fp32, batch 32, CUDA) and crossrank
   (fp16, CUDA) on requests of 100 and 2000 chunks, strings to sorted scores; prints tokens/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("gpu_check")


def run_all(scorer: Any, batches: list[Any]) -> None:
    for b in batches:
        scorer.session.run(b)


def upcast_checkpoint(src: Path, dst: Path) -> Path:
    """The carried realistic checkpoint is stored in fp16 to fit one transfer; export wants fp32."""
    import torch
    from transformers import BertForSequenceClassification

    m = BertForSequenceClassification.from_pretrained(str(src), dtype=torch.float32)
    dst.mkdir(parents=True, exist_ok=True)
    m.save_pretrained(str(dst))
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, dst / f.name)
    cfg = json.loads((dst / "config.json").read_text())
    src_cfg = json.loads((src / "config.json").read_text())
    for key in ("sbert_ce_default_activation_function", "crossrank_stand_in"):
        if key in src_cfg:
            cfg[key] = src_cfg[key]
    cfg.pop("dtype", None)
    cfg.pop("torch_dtype", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--realistic", required=True, help="realistic fixture checkpoint (fp16 ok)")
    p.add_argument("--work", default="/tmp/crossrank-gpu")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--sizes", default="100,2000")
    p.add_argument("--budgets", default="32768,65536")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="exercise the script on a machine without CUDA (tiny sizes, CPU provider)")
    args = p.parse_args()
    gpu = "cpu" if args.cpu_dry_run else "cuda"
    if args.cpu_dry_run:
        args.sizes, args.budgets = "10", "2048"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("export").setLevel(logging.INFO)
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    report: dict[str, Any] = {"onnxruntime": ort.__version__,
                              "providers": ort.get_available_providers()}
    print("onnxruntime", ort.__version__, ort.get_available_providers(), flush=True)
    import torch

    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report["torch"] = torch.__version__

    from bench.timing import median_seconds
    from bench.workload import QUERY, chunks
    from export.corpus import TOPICS, passages_for
    from export.pipeline import Options, run
    from export.standin import build_standin
    from export.verify import spearman
    from runtime.scorer import Scorer
    from runtime.tokenization import PairTokenizer

    report["TOKENIZERS_PARALLELISM"] = os.environ.get("TOKENIZERS_PARALLELISM")
    print("TOKENIZERS_PARALLELISM =", report["TOKENIZERS_PARALLELISM"], flush=True)

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    ckpt = build_standin(work / "standin-ckpt", tokenizer_dir=Path(args.tokenizer_dir))
    exporter = "torch" if args.cpu_dry_run else "auto"  # the GPU box has no optimum
    standin = run(Options(model=str(ckpt), out_dir=work / "standin", variants=("fp32", "fp16"),
                          exporter=exporter))
    m = json.loads((standin / "manifest.json").read_text())
    report["standin_export_s"] = round(time.perf_counter() - t0, 1)
    report["standin_fused_fp16"] = m["variants"]["fp16"]["fused_ops"]
    report["standin_fp16_verification"] = m["variants"]["fp16"]["verification"]
    print("stand-in exported:", json.dumps(report["standin_fused_fp16"]), flush=True)

    # fp16 parity on the realistic fixture: fp16 on CUDA vs fp32 on the CPU provider.
    t0 = time.perf_counter()
    real_ckpt = upcast_checkpoint(Path(args.realistic), work / "real-ckpt")
    real = run(Options(model=str(real_ckpt), out_dir=work / "real", variants=("fp32", "fp16"),
                       exporter=exporter))
    rm = json.loads((real / "manifest.json").read_text())
    report["realistic_fp16_verification"] = rm["variants"]["fp16"]["verification"]
    f32 = Scorer.from_dir(real, variant="fp32", provider="cpu")
    f16 = Scorer.from_dir(real, variant="fp16", provider=gpu)
    parity = []
    for topic in TOPICS:
        q, docs = passages_for(topic, 100, seed=2000)
        a, b = f32.logits(q, docs), f16.logits(q, docs)
        parity.append({
            "topic": topic,
            "top10_overlap": len(set(np.argsort(-a)[:10].tolist())
                                 & set(np.argsort(-b)[:10].tolist())),
            "spearman": round(spearman(a, b), 5),
            "max_abs_diff": round(float(np.abs(a - b).max()), 5),
        })
    report["realistic_parity"] = parity
    report["realistic_s"] = round(time.perf_counter() - t0, 1)
    print("fp16 parity:", json.dumps(parity), flush=True)

    # Speed: the seed's implementation and crossrank, same requests, same run.
    from sentence_transformers import CrossEncoder

    seed = CrossEncoder(str(ckpt), max_length=512, device=gpu)
    budgets = [int(b) for b in args.budgets.split(",")]
    speed: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        docs = chunks(n, seed=0)
        pairs = [(QUERY, d) for d in docs]
        base = Scorer.from_dir(standin, variant="fp16", provider=gpu)
        enc = base.tokenizer.encode(QUERY, docs)
        tokens = int(enc.lengths.sum())
        rounds = 10 if n <= 100 else 5

        med = median_seconds(seed.predict, pairs, rounds=rounds, batch_size=32,
                             show_progress_bar=False)
        speed.append({"n": n, "tokens": tokens, "who": "seed CrossEncoder fp32 b32",
                      "median_ms": med * 1e3, "tokens_per_s": tokens / med})
        print(speed[-1], flush=True)
        tt = median_seconds(base.tokenizer.encode, QUERY, docs, rounds=rounds)
        speed.append({"n": n, "tokens": tokens,
                      "who": f"tokenization only ({base.tokenizer.threads} threads)",
                      "median_ms": tt * 1e3, "tokens_per_s": tokens / tt})
        one = PairTokenizer(standin / "tokenizer.json", 512, threads=1)
        tt = median_seconds(one.encode, QUERY, docs, rounds=rounds)
        speed.append({"n": n, "tokens": tokens, "who": "tokenization only (1 thread)",
                      "median_ms": tt * 1e3, "tokens_per_s": tokens / tt})
        for budget in budgets:
            for io in (True, False):
                for pipe in (True, False):
                    s = Scorer.from_dir(standin, variant="fp16", provider=gpu,
                                        token_budget=budget, max_rows=4096)
                    s.session._io_binding = io
                    s.pipeline = pipe
                    med = median_seconds(s.score, QUERY, docs, rounds=rounds)
                    speed.append({"n": n, "tokens": tokens, "who": "crossrank fp16",
                                  "budget": budget, "io_binding": io, "pipeline": pipe,
                                  "median_ms": med * 1e3, "tokens_per_s": tokens / med})
                    print(speed[-1], flush=True)
        # Model only: pre-tokenized, pre-padded batches (the ceiling for the end-to-end figure).
        s = Scorer.from_dir(standin, variant="fp16", provider=gpu, token_budget=32768,
                            max_rows=4096)
        from runtime import batching

        groups = batching.plan(enc.lengths, 32768, 4096)
        batches = [batching.pad(enc.ids, enc.type_ids, g) for g in groups]
        mo = median_seconds(run_all, s, batches, rounds=rounds)
        speed.append({"n": n, "tokens": tokens, "who": "model only (pre-padded, 32k budget)",
                      "median_ms": mo * 1e3, "tokens_per_s": tokens / mo})
        print(speed[-1], flush=True)
    report["speed"] = speed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print("\nSUMMARY")
    for row in speed:
        extra = "".join(f" {k}={row[k]}" for k in ("budget", "io_binding", "pipeline") if k in row)
        print(f"n={row['n']:5d} {row['who']:<38}{extra:<42} {row['median_ms']:8.1f} ms "
              f"{row['tokens_per_s']:>12,.0f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
