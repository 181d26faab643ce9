"""Serve exported models on emulated CPUs (ARM64, and x86 without VNNI) and print what each
serves and why.

For each model directory and each emulated CPU class, a Python under qemu-user with that -cpu
loads the model exactly as `crossrank serve` does (Scorer.from_dir: the int8 self-check, then
int8 or fp32), and reports the variant served, whether the CPU reproduced the export's int8, and
the gate's figures on its own int8 where it did not. The verdict cache is off, so every row is
measured. qemu gives the emulated CPU's int8 numbers exactly (ONNX Runtime picks its kernels by
the emulated CPUID or HWCAPs), never its speed: the seconds are emulated ones.

- ARM64 classes (cortex-a72, neoverse-n1, neoverse-v1, max) run the aarch64 Python that
  tools/arm64/setup.sh builds.
- x86 classes (EPYC-Rome: AVX2 without VNNI, whose int8 logits match a real Zen 3's to ~5e-7;
  any other qemu x86 model name in X86_CPUS) run this checkout's own .venv under qemu-x86_64,
  found beside the qemu-aarch64 that setup.sh recorded, or on PATH. qemu-user passes the host's
  /proc/cpuinfo through, so crossrank's own class name in the log (detect_isa) is the host's;
  the kernels, and so the numbers, are the emulated CPU's.
- avx2-masked: not emulated: this checkout's .venv natively, with CPUID answering as an AVX2 CPU
  (tools/avx2/run.sh; Intel CPUs with CPUID faulting), so ONNX Runtime runs its AVX2 kernels at
  native speed. Its numbers are EPYC-Rome's (bench/results/avx2-mask-parity.json); its seconds
  are this CPU's running AVX2 code.

    bash tools/arm64/setup.sh
    .venv/bin/python -m tools.arm64.check MODEL_DIR [MODEL_DIR ...] [--cpu cortex-a72 EPYC-Rome ...]
        [--out bench/results/arm64-check-latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "arm64"
# Raspberry Pi 4 (NEON only); Graviton2 and the Pi 5's int8 features (dotprod); Graviton3
# (dotprod, i8mm, SVE); everything qemu has (SVE2, SME)
CPUS = ("cortex-a72", "neoverse-n1", "neoverse-v1", "max")
# x86 without VNNI: Zen 2 (EPYC-Rome) and Zen 3 (EPYC-Milan) have AVX2 only; Haswell is Intel's
X86_CPUS = ("EPYC-Rome", "EPYC-Milan", "Haswell")
MASKED = "avx2-masked"  # native, CPUID masked (tools/avx2/run.sh)

SNIPPET = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from crossrank.runtime.core import cpu
from crossrank.runtime.scorer import Scorer
t = time.perf_counter()
s = Scorer.from_dir(sys.argv[2], provider="cpu")
features = json.loads(cpu.signature())["flags"]
print("RESULT " + json.dumps({"variant": s.info.variant, "check": s.info.int8_check,
      "load_s": round(time.perf_counter() - t, 1),
      "int8_features": [f for f in features if f in ("asimd", "asimddp", "i8mm", "sve",
                                                     "sve2", "sme", "svei8mm")]}))
"""

TIMEOUT_S = 3600.0  # seconds of emulation per row


def emulated_env() -> dict[str, str]:
    """The environment of an emulated run: no verdict cache (every row measured), no user site."""
    return {**os.environ, "CROSSRANK_CACHE_DIR": "off", "PYTHONNOUSERSITE": "1"}


def arm_python(qemu: str, cpu_name: str) -> list[str]:
    """The aarch64 Python that setup.sh built, under qemu-user with this -cpu; the caller adds
    "-c", its code, the site folder (CACHE / "site") and its own arguments."""
    return [qemu, "-cpu", cpu_name, "-L", str(CACHE / "root"),
            str(CACHE / "root" / "usr" / "bin" / "python3.11")]


PAIRS_SNIPPET = """
import json, sys
sys.path.insert(0, sys.argv[1])
from crossrank.runtime.scorer import Scorer
pairs = json.loads(sys.stdin.read())
s = Scorer.from_dir(sys.argv[2], variant="int8", int8_check=False, provider="cpu")
print("RESULT " + json.dumps([float(x) for x in s.predict([tuple(p) for p in pairs])]))
"""


def emulated_logits(cpu_name: str, model: Path, pairs: list[list[str]],
                    timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The export's int8 logits of these (query, passage) pairs under qemu as cpu_name, one
    call, check off: {"cpu", "seconds", "logits"} or {"cpu", "error"}."""
    cmd = [*arm_python((CACHE / "qemu").read_text().strip(), cpu_name), "-c", PAIRS_SNIPPET,
           str(CACHE / "site"), str(model)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, input=json.dumps(pairs), capture_output=True, text=True,
                             env=emulated_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"cpu": cpu_name, "error": f"no answer within {timeout_s:.0f} s"}
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"cpu": cpu_name, "error": (out.stderr or out.stdout).strip()[-500:]}
    return {"cpu": cpu_name, "seconds": round(time.perf_counter() - t0, 1),
            "logits": json.loads(line[len("RESULT "):])}


def x86_qemu(arm_qemu: str | None) -> str | None:
    """qemu-x86_64: beside the recorded qemu-aarch64 (one qemu-user package), else on PATH."""
    import shutil

    if arm_qemu:
        beside = Path(arm_qemu).with_name("qemu-x86_64")
        if beside.is_file():
            return str(beside)
    return shutil.which("qemu-x86_64")


def run_one(qemu: str, model: Path, cpu_name: str,
            timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    env = emulated_env()
    if cpu_name == MASKED:
        cmd = ["bash", str(ROOT / "tools" / "avx2" / "run.sh"), sys.executable, "-c", SNIPPET,
               str(ROOT), str(model)]
    elif cpu_name in X86_CPUS:  # this checkout's Python; the int8 kernels follow the emulated CPUID
        cmd = [qemu, "-cpu", cpu_name, sys.executable, "-c", SNIPPET, str(ROOT), str(model)]
    else:
        cmd = [*arm_python(qemu, cpu_name), "-c", SNIPPET, str(CACHE / "site"), str(model)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": [f"no verdict within {timeout_s:.0f} s of emulation (--timeout)"]}
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-3:]}
    res: dict[str, Any] = json.loads(line[len("RESULT "):])
    if cpu_name in X86_CPUS:  # /proc/cpuinfo is the host's under qemu-user: name the emulated one
        res["int8_features"] = [f"{cpu_name} (emulated CPUID)"]
    elif cpu_name == MASKED:
        res["int8_features"] = ["AVX2 (CPUID masked, native)"]
    res["wall_s_emulated"] = round(time.perf_counter() - t0, 1)
    return res


def row(model: Path, cpu_name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {model.name} | {cpu_name} | error: {' '.join(r['error'])[:120]} |"
    c = r.get("check") or {}
    j = c.get("judgement") or {}
    judged = (f"{j.get('clear_misses')} / {j.get('worst_graded_ndcg', 0):.4f} / "
              f"{j.get('rms_error_over_spread')} (<= {j.get('rms_bound')}) / "
              f"{j.get('quality_kept', 0):.3f}" if j else "-")
    diff = c.get("max_abs_diff")
    return (f"| {model.name} | {cpu_name} | {' '.join(r['int8_features'])} | "
            f"{'-' if diff is None else f'{diff:.3f}'} | {c.get('how') or '-'} | {judged} | "
            f"{c.get('error_bound') or '-'} | {c.get('status')} | **{r['variant']}** | "
            f"{c.get('seconds')} |")


HEADER = ("| model | -cpu | int8 features | max abs(int8 here - export's) | how | judged here: "
          "clear misses / worst graded NDCG@10 / rms error x std (bound) / quality kept "
          "(recorded) | cascade bound here | check | serves | check s (emulated; native: avx2-masked) |\n"
          "|---|---|---|---:|---|---|---:|---|---|---:|")


def table(results: list[dict[str, Any]]) -> str:
    """The rows of a --out file, as printed."""
    return "\n".join([HEADER] + [row(Path(r["model"]), r["cpu"], r) for r in results])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--table", type=Path, default=None,
                    help="print the table of an earlier --out file and stop")
    ap.add_argument("--cpu", nargs="+", default=list(CPUS))
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S,
                    help="seconds of emulation per row before it is reported as unfinished")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())["results"]))
        return 0
    if not args.models:
        ap.error("name at least one exported model directory")
    if not args.timeout > 0:
        ap.error(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    known = CPUS + X86_CPUS + (MASKED,)
    unknown = [c for c in args.cpu if c not in known]
    if unknown:
        ap.error(f"unknown -cpu {unknown}: choose from {', '.join(known)}")
    qemu_file = CACHE / "qemu"
    arm = qemu_file.read_text().strip() if qemu_file.is_file() else None
    if any(c in CPUS for c in args.cpu) and not (arm and (CACHE / "site").is_dir()):
        print("no aarch64 Python yet: run `bash tools/arm64/setup.sh` first", file=sys.stderr)
        return 2
    x86 = x86_qemu(arm)
    if any(c in X86_CPUS for c in args.cpu) and not x86:
        print("no qemu-x86_64 found: install qemu-user (or run tools/arm64/setup.sh with QEMU "
              "set to a qemu-user's qemu-aarch64)", file=sys.stderr)
        return 2
    for m in args.models:
        if not (m / "manifest.json").is_file():
            print(f"{m} is not an exported model directory (crossrank export)", file=sys.stderr)
            return 2
    print(HEADER)
    results = []
    for m in args.models:
        for c in args.cpu:
            r = run_one(str(x86 if c in X86_CPUS else arm or ""), m.resolve(), c, args.timeout)
            print(row(m, c, r), flush=True)
            results.append({"model": m.name, "cpu": c, **r})
    if args.out:
        args.out.write_text(json.dumps({"qemu": arm, "qemu_x86": x86, "results": results},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
