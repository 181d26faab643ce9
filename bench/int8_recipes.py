"""int8 recipes side by side on the realistic fixture: fidelity against fp32 and speed.

    python -m bench.int8_recipes [--recipes u8s8 u8u8 u8s8-reduced] [--emulate CPU]

Builds the realistic fixture (the real MiniLM encoder with a fitted head) and its fp32 export
once, quantizes it with each recipe, and scores 8 queries x 100 passages (the tests' evaluation
set) with crossrank's runtime: per query, top-10 overlap and Spearman against fp32, and the time
taken. `--emulate EPYC-Rome` runs the int8 scoring under `qemu-x86_64 -cpu EPYC-Rome` (Debian's
qemu-user): ONNX Runtime then picks its AVX2 kernels (no AVX-512, no VNNI) as on a Zen 2/3 CPU,
so the fidelity is that of AVX2 machines; emulated times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "models" / ".int8-recipes"


def prepare() -> Path:
    """The realistic fixture's fp32 export (built once)."""
    from crossrank.export.pipeline import Options, run
    from crossrank.export.standin import build_realistic

    ckpt = WORK / "ckpt"
    if not (ckpt / "config.json").is_file():
        build_realistic(ckpt)
    return run(Options(model=str(ckpt), out_dir=WORK / "fp32", variants=("fp32",)))


def evaluate(model_dir: Path, model_file: Path, variant: str) -> dict[str, Any]:
    """Logits for the evaluation set with one model file, and the seconds it took."""
    from crossrank.export.corpus import TOPICS, passages_for
    from crossrank.runtime.scorer import Scorer

    out: dict[str, Any] = {}
    with Scorer.from_files(model_file, model_dir / "tokenizer.json", 512,
                           variant=variant) as scorer:
        t0 = time.perf_counter()
        for topic in TOPICS:
            q, passages = passages_for(topic, 100, seed=2000)
            out[topic] = scorer.logits(q, passages).tolist()
        out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.int8_recipes")
    p.add_argument("--recipes", nargs="+", default=["u8s8", "u8u8", "u8s8-reduced"])
    p.add_argument("--emulate", help="a qemu CPU model (EPYC-Rome: AVX2 without VNNI)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # model_dir, file, out json
    args = p.parse_args(argv)
    if args.child:
        model_dir, model_file, out = args.child
        Path(out).write_text(json.dumps(evaluate(Path(model_dir), Path(model_file), "int8")))
        return 0
    from crossrank.export import quantize
    from crossrank.export.verify import spearman
    from crossrank.runtime.cpu import detect_isa

    fp32_dir = prepare()
    ref = evaluate(fp32_dir, fp32_dir / "model.onnx", "fp32")
    where = f"emulated {args.emulate}" if args.emulate else f"this CPU ({detect_isa()})"
    print(f"fp32: {ref['seconds']:.1f} s; int8 kernels on {where}", flush=True)
    rows = []
    for name in args.recipes:
        recipe = quantize.RECIPES[name]
        qfile = WORK / f"{name}.onnx"
        quantize.quantize(fp32_dir / "model.onnx", qfile, recipe_isa(name), recipe)
        result = WORK / f"{name}-{args.emulate or 'native'}.json"
        cmd = [sys.executable, "-m", "bench.int8_recipes", "--child", str(fp32_dir), str(qfile),
               str(result)]
        if args.emulate:
            if shutil.which("qemu-x86_64") is None:
                print("qemu-x86_64 is not installed (apt-get install qemu-user)", file=sys.stderr)
                return 2
            cmd = ["qemu-x86_64", "-cpu", args.emulate, *cmd]
        subprocess.run(cmd, cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
        got = json.loads(result.read_text())
        per = []
        for topic in ref:
            if topic == "seconds":
                continue
            a, b = np.asarray(ref[topic]), np.asarray(got[topic])
            top = len(set(np.argsort(-a, kind="stable")[:10].tolist())
                      & set(np.argsort(-b, kind="stable")[:10].tolist()))
            per.append((topic, top, spearman(a, b), float(np.abs(a - b).max())))
        row = {"recipe": name, "kernels": where, "min_top10": min(x[1] for x in per),
               "min_spearman": round(min(x[2] for x in per), 4),
               "max_abs_diff": round(max(x[3] for x in per), 3),
               "seconds": round(got["seconds"], 1), "per_topic": per}
        rows.append(row)
        print(f"{name:13s} top-10 min {row['min_top10']}/10, Spearman min "
              f"{row['min_spearman']:.4f}, max |diff| {row['max_abs_diff']}, "
              f"{row['seconds']} s", flush=True)
    out = ROOT / "bench" / "results" / f"int8-recipes-{args.emulate or detect_isa()}.json"
    out.write_text(json.dumps({"fp32_seconds": ref["seconds"], "rows": rows}, indent=2))
    print(f"saved {out}")
    return 0


def recipe_isa(name: str) -> str:
    return {"u8s8": "avx512_vnni", "u8u8": "avx2", "u8s8-reduced": "avx2"}[name]


if __name__ == "__main__":
    sys.exit(main())
