"""int8 logits under AVX2 numerics, emulated, checked against a real AVX2 CPU's.

    python -m bench.studies.int8_emulation [--recipes u8u8 u8s8-reduced u8u8-smooth] [--cpu EPYC-Rome]
                                   [--topics 2000:coffee ...] [--check-set 5000] [--out FILE]

ONNX Runtime picks its int8 kernels by the CPU's features, and the same int8 file scores
differently on an AVX-512 VNNI CPU and on an AVX2-only one (u8u8 on the realistic fixture: up to
0.43 logits apart between a Zen 4 and a Zen 3). So fidelity measured natively on a VNNI machine
says nothing about AVX2 machines. Under `qemu-x86_64 -cpu EPYC-Rome` (Zen 2: AVX2, no AVX-512,
no VNNI; Debian's qemu-user) ONNX Runtime takes its AVX2 kernels; this script scores the 64
fixed pairs (the realistic fixture, `sample_pairs(64, seed=4242)`, one pair per run) that way for
each recipe, and compares them with the logits written on a real Zen 3 (AMD EPYC, family 25 model
1; bench/studies/data/int8-logits-avx2-zen3.json) where that file has the
recipe: agreement to float rounding means the emulation computes what the real CPU computes,
and the other recipes' emulated figures (their error against fp32, and per-topic rankings for
the --topics given as SEED:TOPIC, or every topic of the exporter's ranking sets with
--check-set 5000 and --check-set 5001) stand for that CPU. Emulation is slow (~2-4 s a pair): times
mean nothing. Results go to bench/results/int8-emulation-<cpu>.json.

    python -m bench.studies.int8_emulation --parity [--recipes u8s8 u8u8-smooth-pertoken]

checks tools/avx2/run.sh instead (CPUID masked to an AVX2 CPU's, native speed): the same int8
files' logits on the 64 fixed pairs under the mask, under qemu -cpu EPYC-Rome and natively
unmasked. Masked equal to emulated means the mask's figures are AVX2's; u8s8 is the telling
recipe (its AVX2 kernel saturates, its VNNI kernel does not). Writes
bench/results/avx2-mask-parity.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies.int8_recipes import WORK, prepare, recipe_isa

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).resolve().parent / "data" / "int8-logits-avx2-zen3.json"
RECIPES = ["u8u8", "u8s8-reduced", "u8u8-smooth"]
PARITY_RECIPES = ["u8s8", "u8u8-smooth-pertoken"]  # the saturating one; the one AVX2 exports ship


def child_logits(prefix: list[str], model: Path, tok: Path, out: Path) -> np.ndarray:
    """The 64 fixed pairs' logits, scored in a child process started under prefix (kept in out;
    an out already there is read, not scored again)."""
    if not out.is_file():
        subprocess.run([*prefix, sys.executable, "-m", "bench.studies.int8_emulation", "--child",
                        str(model), str(tok), str(out)], cwd=ROOT, check=True,
                       stderr=subprocess.DEVNULL)
    return np.array(json.loads(out.read_text())["fixed64"])


def parity(recipes: list[str], cpu: str) -> int:
    """The same int8 files scored under the CPUID mask, under qemu and natively: how far apart."""
    from crossrank.export import quantize

    if shutil.which("qemu-x86_64") is None:
        print("qemu-x86_64 is not installed (apt-get install qemu-user)", file=sys.stderr)
        return 2
    fp32_dir = prepare()
    tok = fp32_dir / "tokenizer.json"
    mask = ["bash", str(ROOT / "tools" / "avx2" / "run.sh")]
    rows = []
    for name in recipes:
        qfile = WORK / f"{name}-parity.onnx"
        quantize.quantize(fp32_dir / "model.onnx", qfile, recipe_isa(name), quantize.RECIPES[name])
        # scored afresh masked and natively (seconds); under qemu (~30 min a recipe) kept per
        # file content, so a rerun on the same int8 file reuses it
        for stale in (WORK / f"{name}-masked.json", WORK / f"{name}-native.json"):
            stale.unlink(missing_ok=True)
        t0 = time.perf_counter()
        masked = child_logits(mask, qfile, tok, WORK / f"{name}-masked.json")
        masked_s = time.perf_counter() - t0
        native = child_logits([], qfile, tok, WORK / f"{name}-native.json")
        digest = hashlib.sha256(qfile.read_bytes()).hexdigest()[:16]
        done = WORK / f"{name}-{digest}-{cpu}.json"
        print(f"{name}: masked in {masked_s:.0f} s; under qemu -cpu {cpu}: "
              f"{'kept from an earlier run' if done.is_file() else 'scoring ...'}", flush=True)
        emulated = child_logits(["qemu-x86_64", "-cpu", cpu], qfile, tok, done)
        row = {"recipe": name, "pairs": len(masked),
               "max_abs_masked_vs_emulated": float(np.abs(masked - emulated).max()),
               "max_abs_native_vs_emulated": float(np.abs(native - emulated).max()),
               "mean_abs_native_vs_emulated": float(np.abs(native - emulated).mean()),
               "seconds_masked": round(masked_s, 1), "int8_sha256": digest}
        rows.append(row)
        print(json.dumps(row), flush=True)
    from bench.studies import machine

    dst = ROOT / "bench" / "results" / "avx2-mask-parity.json"
    dst.write_text(json.dumps({
        "what": "the realistic fixture's int8 files, 64 fixed pairs one per run: logits under "
                "tools/avx2/run.sh (CPUID masked, native) against qemu-x86_64 -cpu " + cpu +
                " (AVX2 numerics, checked against a real Zen 3: int8-emulation-EPYC-Rome.json) "
                "and natively unmasked",
        "host": machine(), "qemu": subprocess.run(["qemu-x86_64", "--version"], text=True,
                                                  capture_output=True).stdout.splitlines()[0],
        "rows": rows}, indent=2) + "\n")
    print(f"saved {dst}")
    return 0


def sets(topics: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The 64 fixed pairs, and each SEED:TOPIC's query against its 100 passages."""
    from crossrank.export.corpus import passages_for, sample_pairs

    out = {"fixed64": sample_pairs(64, seed=4242)}
    for spec in topics:
        seed, topic = spec.split(":")
        q, passages = passages_for(topic, 100, seed=int(seed))
        out[spec] = [(q, p) for p in passages]
    return out


def score(model: Path, tokenizer_file: Path, topics: list[str]) -> dict[str, list[float]]:
    """Logits of every set, one pair per run (as the int8 runtime runs), one thread."""
    import onnxruntime as ort

    from crossrank.export.quantize import pair_feeds

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    from crossrank.runtime.core.profiles import profile

    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(profile("cpu").disabled_optimizers))
    names = {i.name for i in sess.get_inputs()}
    out = {}
    for name, pairs in sets(topics).items():
        out[name] = [float(sess.run(None, {k: v for k, v in f.items() if k in names})[0].ravel()[0])
                     for f in pair_feeds(tokenizer_file, pairs)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.int8_emulation")
    p.add_argument("--recipes", nargs="+",
                   help=f"default {' '.join(RECIPES)}; with --parity {' '.join(PARITY_RECIPES)}")
    p.add_argument("--cpu", default="EPYC-Rome", help="qemu CPU model (EPYC-Rome: AVX2, no VNNI)")
    p.add_argument("--topics", nargs="*", default=[], help="SEED:TOPIC rankings to add")
    p.add_argument("--check-set", type=int, action="append", default=[], metavar="SEED",
                   help="add every topic of this seed's ranking set (the exporter's: 5000 check "
                        "set, 5001 held-out)")
    p.add_argument("--out", type=Path, help="results file (default bench/results/"
                                            "int8-emulation-<cpu>.json)")
    p.add_argument("--parity", action="store_true",
                   help="check tools/avx2/run.sh against qemu -cpu CPU instead")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # model, tokenizer, out
    args = p.parse_args(argv)
    if args.child:
        model, tok, out = args.child
        Path(out).write_text(json.dumps(score(Path(model), Path(tok), args.topics)))
        return 0
    if args.parity:
        return parity(args.recipes or PARITY_RECIPES, args.cpu)
    args.recipes = args.recipes or RECIPES
    if args.check_set:
        from crossrank.export.corpus import TOPICS

        args.topics += [f"{seed}:{t}" for seed in args.check_set for t in TOPICS]
    if shutil.which("qemu-x86_64") is None:
        print("qemu-x86_64 is not installed (apt-get install qemu-user)", file=sys.stderr)
        return 2
    from crossrank.export import quantize
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.core.scores import spearman

    fp32_dir = prepare()
    tok = fp32_dir / "tokenizer.json"
    print("fp32 (native) ...", flush=True)
    ref = score(fp32_dir / "model.onnx", tok, args.topics)
    real = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {"logits": {}}
    rows = []
    tag = args.out.stem if args.out else args.cpu  # runs with different --out can run at once
    for name in args.recipes:
        qfile = WORK / f"{name}-{tag}.onnx"
        quantize.quantize(fp32_dir / "model.onnx", qfile, recipe_isa(name), quantize.RECIPES[name])
        out = WORK / f"{name}-emulated-{tag}.json"
        t0 = time.perf_counter()
        print(f"{name}: scoring under qemu -cpu {args.cpu} ...", flush=True)
        subprocess.run(["qemu-x86_64", "-cpu", args.cpu, sys.executable, "-m",
                        "bench.studies.int8_emulation", "--topics", *args.topics, "--child", str(qfile),
                        str(tok), str(out)], cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
        got = json.loads(out.read_text())
        a, f = np.array(got["fixed64"]), np.array(ref["fixed64"])
        row: dict[str, Any] = {"recipe": name, "cpu": args.cpu,
                               "emulated_seconds": round(time.perf_counter() - t0),
                               "fixed64_vs_fp32": {
                                   "mean_abs_diff": round(float(np.abs(a - f).mean()), 4),
                                   "max_abs_diff": round(float(np.abs(a - f).max()), 4),
                                   "spearman": round(spearman(f, a), 5)}}
        if name in real["logits"]:
            d = np.abs(a - np.array(real["logits"][name]))
            row["vs_real_cpu"] = {"cpu": real["cpu"]["model"], "max_abs_diff": float(d.max()),
                                  "mean_abs_diff": float(d.mean())}
        if args.topics:
            got_r = np.concatenate([got[t] for t in args.topics])
            ref_r = np.concatenate([ref[t] for t in args.topics])
            groups = [i for i, t in enumerate(args.topics) for _ in got[t]]
            row["rankings"] = fidelity.judge(ref_r, got_r, groups).as_dict()
            row["mean_abs_diff_rankings"] = round(float(np.abs(got_r - ref_r).mean()), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    dst = args.out or ROOT / "bench" / "results" / f"int8-emulation-{args.cpu}.json"
    dst.write_text(json.dumps({"fixture": "realistic (build_realistic seed 0)", "rows": rows},
                              indent=2))
    print(f"saved {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
