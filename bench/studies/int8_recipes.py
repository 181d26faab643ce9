"""int8 recipes side by side on the realistic fixture: fidelity against fp32 and speed.

    python -m bench.studies.int8_recipes [--recipes u8s8 u8s8-smooth u8u8 u8u8-smooth
                                          u8s8-reduced u8s8-reduced+search] [--emulate CPU]

Builds the realistic fixture (the real MiniLM encoder with a fitted head) and its fp32 export
once, quantizes it with each recipe, and scores 8 queries x 100 passages (the tests' evaluation
set) with crossrank's runtime: per query, top-10 overlap and Spearman against fp32, and the time
taken (median of three passes). `--emulate EPYC-Rome` runs the int8 scoring under
`qemu-x86_64 -cpu EPYC-Rome` (Debian's qemu-user): ONNX Runtime then picks its AVX2 kernels (no
AVX-512, no VNNI) as on a Zen 2/3 CPU, so the fidelity is that of AVX2 machines; emulated times
mean nothing (one pass).

A name ending in `+search` runs the exporter's own mixed-precision search on that recipe (its
check, on its ranking set, seed 5000) and evaluates what the search settles on; the trail is
saved with the row.
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

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "models" / ".int8-recipes"


def prepare() -> Path:
    """The realistic fixture's fp32 export (built once)."""
    from crossrank.export.pipeline import Options, run
    from fixtures.reranker import build_realistic

    ckpt = WORK / "ckpt"
    if not (ckpt / "config.json").is_file():
        build_realistic(ckpt)
    return run(Options(model=str(ckpt), out_dir=WORK / "fp32", variants=("fp32",)))


def evaluate(model_dir: Path, model_file: Path, variant: str, repeats: int = 3) -> dict[str, Any]:
    """Logits for the evaluation set with one model file, and the seconds it took."""
    from crossrank.export.corpus import TOPICS, passages_for
    from crossrank.runtime import loader
    from crossrank.runtime.scorer import Scorer

    out: dict[str, Any] = {}
    with Scorer(loader.load_files(model_file, model_dir / "tokenizer.json", 512,
                                  variant=variant)) as scorer:
        times = []
        for _ in range(repeats):  # the machine is noisy: the median of three passes
            t0 = time.perf_counter()
            for topic in TOPICS:
                q, passages = passages_for(topic, 100, seed=2000)
                out[topic] = scorer.logits(q, passages).tolist()
            times.append(time.perf_counter() - t0)
        out["seconds"] = float(np.median(times))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.int8_recipes")
    p.add_argument("--recipes", nargs="+",
                   default=["u8s8", "u8s8-smooth", "u8u8", "u8u8-smooth", "u8s8-reduced"])
    p.add_argument("--emulate", help="a qemu CPU model (EPYC-Rome: AVX2 without VNNI)")
    # model_dir, file, out json, repeats
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        model_dir, model_file, out, repeats = args.child
        Path(out).write_text(json.dumps(evaluate(Path(model_dir), Path(model_file), "int8",
                                                 int(repeats))))
        return 0
    from crossrank.export import quantize
    from crossrank.runtime.core.cpu import detect_isa
    from crossrank.runtime.core.scores import spearman

    unknown = [n for n in args.recipes if n.removesuffix(SEARCH) not in quantize.RECIPES]
    if unknown:
        p.error(f"unknown recipe {', '.join(unknown)}; known: {', '.join(quantize.RECIPES)} "
                f"(each may end in {SEARCH})")
    fp32_dir = prepare()
    ref = evaluate(fp32_dir, fp32_dir / "model.onnx", "fp32")
    where = f"emulated {args.emulate}" if args.emulate else f"this CPU ({detect_isa()})"
    print(f"fp32: {ref['seconds']:.1f} s; int8 kernels on {where}", flush=True)
    rows = []
    for name in args.recipes:
        qfile = WORK / f"{name}.onnx"
        trail: list[dict[str, Any]] | None = None
        if name.endswith(SEARCH):
            trail = quantize_with_search(fp32_dir, name.removesuffix(SEARCH), qfile)
        else:
            quantize.quantize(fp32_dir / "model.onnx", qfile, recipe_isa(name),
                              quantize.RECIPES[name])
        result = WORK / f"{name}-{args.emulate or 'native'}.json"
        cmd = [sys.executable, "-m", "bench.studies.int8_recipes", "--child", str(fp32_dir),
               str(qfile), str(result), "1" if args.emulate else "3"]  # emulated times mean nothing
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
               "seconds": round(got["seconds"], 1),
               "fp32_seconds": round(ref["seconds"], 1), "per_topic": per}
        if trail is not None:
            row["search"] = trail
        rows.append(row)
        print(f"{name:13s} top-10 min {row['min_top10']}/10, Spearman min "
              f"{row['min_spearman']:.4f}, max |diff| {row['max_abs_diff']}, "
              f"{row['seconds']} s", flush=True)
    out = ROOT / "bench" / "results" / f"int8-recipes-{args.emulate or detect_isa()}.json"
    # Rows of earlier runs stay (each with the fp32 time of its own run); a recipe run again
    # replaces its row.
    kept: list[dict[str, Any]] = []
    before: dict[str, Any] = {}
    if out.is_file():
        before = json.loads(out.read_text())
        names = {r["recipe"] for r in rows}
        for r in before.get("rows", []):
            r.setdefault("fp32_seconds", before.get("fp32_seconds"))
            if r["recipe"] not in names:
                kept.append(r)
    before.pop("fp32_seconds", None)  # now per row
    out.write_text(json.dumps({**before, "rows": kept + rows}, indent=2))
    print(f"saved {out}")
    return 0


SEARCH = "+search"


def quantize_with_search(fp32_dir: Path, base: str, dst: Path) -> list[dict[str, Any]]:
    """The exporter's int8 check and, when the recipe fails it, its mixed-precision search, in a
    staging copy of the fp32 export; dst gets the int8 model the search settles on."""
    from crossrank.export import pipeline, quantize, verify
    from crossrank.runtime.modeldir import VARIANT_FILES

    staging = WORK / f"{base}{SEARCH}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(fp32_dir, staging)
    int8_file = staging / VARIANT_FILES["int8"]
    rec = quantize.quantize(staging / VARIANT_FILES["fp32"], int8_file, recipe_isa(base),
                            quantize.RECIPES[base])
    pairs = verify.fixed_pairs()
    staged = verify.Staged(staging, 512, 0)
    fp32_fixed = staged.logits("fp32", pairs)
    check = pipeline._GateCheck(staged, fp32_fixed, pairs)
    first = check()
    trail: list[dict[str, Any]] = [{"all_int8": True, "passed": first["passed"]}]
    if not first["passed"]:
        trail += pipeline._mixed_precision(staging, rec, check)["trail"]
    staged.close()
    for step in trail:
        print(f"  search: {step}", flush=True)
    shutil.copyfile(int8_file, dst)
    return trail


def recipe_isa(name: str) -> str:
    """The CPU class a recipe is meant for (recorded in the int8 model's recipe)."""
    return "avx512_vnni" if name.startswith("u8s8") and "reduced" not in name else "avx2"


if __name__ == "__main__":
    sys.exit(main())
