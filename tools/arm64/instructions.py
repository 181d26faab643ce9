"""ARM instructions of the serving self-check, counted under emulation, not timed.

Emulated seconds say nothing about a board, and they move with the host's load. An instruction
count does neither: valgrind's callgrind, itself an aarch64 program run by qemu-user with the
CPU's features, counts the aarch64 instructions the scoring executes (the int8 kernels ONNX
Runtime picks from the HWCAPs it sees, the tokenizer, Python), the same total on any host.

Two runs of the aarch64 Python (tools/arm64/setup.sh valgrind) under callgrind, each loading the
export's int8 model as `crossrank serve` does (check off, one thread, tokenizer threads off) and
leaving at once after scoring (os._exit, no teardown): one scores a warm-up pair, the other the
warm-up pair and a sample of the check's pairs at quantiles of their token counts. The
difference is the sample's instructions; per token, times the tokens of every pair the serving
check scores on ARM (the judged requests'; the fast check's too for an export made on ARM), it
estimates the check's count.

    bash tools/arm64/setup.sh valgrind
    .venv/bin/python -m tools.arm64.instructions MODEL_DIR [--cpu cortex-a72] [--sample 3]
        [--out bench/results/arm64-instructions-latest.json]

About 25-40 min of one core per run under qemu (the two runs go side by side). What it leaves
out: cycles (a board's instructions per cycle and clock are not emulated), memory stalls, and
the second core the check's default two threads would use.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tools.arm64.check import CACHE, CPUS, emulated_env
from tools.arm64.resumable import check_pairs, first_needed, int8_export

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / \
    "arm64-instructions-latest.json"
ROOT = CACHE / "vgroot"
SITE = CACHE / "site313"
TOOL = "usr/libexec/valgrind/callgrind-arm64-linux"

SNIPPET = """
import ctypes, json, os, sys
sys.path.insert(0, sys.argv[1])
from crossrank.runtime.scorer import Scorer
pairs = json.loads(open(sys.argv[3]).read())
s = Scorer.from_dir(sys.argv[2], variant="int8", int8_check=False, provider="cpu", threads=1)
logits = [float(x) for x in s.predict([tuple(p) for p in pairs])]
aux = ctypes.CDLL(None).getauxval
aux.restype = ctypes.c_ulong
print("RESULT " + json.dumps({"logits": logits, "hwcap": aux(16), "hwcap2": aux(26)}), flush=True)
os._exit(0)
"""

# HWCAP bits the int8 kernels are chosen by (Linux arm64 uapi hwcap.h)
HWCAP = {"asimd": 1 << 1, "asimddp": 1 << 20, "sve": 1 << 22}
HWCAP2 = {"sve2": 1 << 1, "i8mm": 1 << 13}


def features(hwcap: int, hwcap2: int) -> list[str]:
    """The int8-relevant features a process saw in its auxiliary vector."""
    return ([f for f, b in HWCAP.items() if hwcap & b]
            + [f for f, b in HWCAP2.items() if hwcap2 & b])


def sample(tokens: list[int], n: int) -> tuple[int, list[int]]:
    """The warm-up pair (the median by token count) and n others at the quantiles i / (n + 1) of
    the token counts (n = 3: the quartiles): positions in tokens."""
    order = [int(i) for i in np.argsort(tokens, kind="stable")]
    warm = order[(len(order) - 1) // 2]
    counted = []
    for q in np.arange(1, n + 1) / (n + 1):
        at = round(q * (len(order) - 1))
        if order[at] == warm:  # the median itself: its neighbour, of (nearly) the same length
            at += 1
        counted.append(order[min(at, len(order) - 1)])
    return warm, counted


def collected(dump: str) -> int | None:
    """The instruction total of a complete callgrind dump (its last line, 'totals: N'), or None
    while it is missing or being written."""
    m = re.search(r"^totals:\s*(\d+)\s*$", dump, re.MULTILINE)
    return int(m.group(1)) if m else None


def command(qemu: str, cpu_name: str, model: Path, pairs_file: Path, out_file: Path) -> list[str]:
    """callgrind under qemu-user, dumping its counts as the snippet's os._exit begins (glibc's
    _Exit) into out_file.1."""
    return [qemu, "-L", str(ROOT), "-cpu", cpu_name, str(ROOT / TOOL),
            f"--callgrind-out-file={out_file}", "--dump-before=_Exit",
            str(ROOT / "usr/bin/python3.13"), "-c", SNIPPET, str(SITE), str(model), str(pairs_file)]


def env() -> dict[str, str]:
    """emulated_env() plus valgrind's paths (inside the root) and no helper threads: a thread
    that spins while idle (OpenBLAS's, the tokenizer's) would add instructions of its own."""
    return {**emulated_env(), "VALGRIND_LIB": "/usr/libexec/valgrind",
            "VALGRIND_LAUNCHER": "/usr/bin/valgrind.bin", "TOKENIZERS_PARALLELISM": "false",
            "RAYON_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


EXIT_GRACE_S = 30.0  # after its dump, a run that has not left is stopped (see counts)


def counts(qemu: str, cpu_name: str, model: Path, runs: list[list[list[str]]],
           timeout_s: float, poll_s: float = 2.0) -> list[dict[str, Any]]:
    """Each list of pairs scored in its own callgrind run, side by side: instructions, logits
    and the features the process saw; or an error.

    The count is the dump callgrind writes as the process begins to exit. valgrind under
    qemu-user can hang while it ends a process that has more than one thread, so a run whose
    dump is complete is stopped if it has not left EXIT_GRACE_S later; nothing is lost."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        procs = []
        for i, pairs in enumerate(runs):
            (t / f"pairs{i}.json").write_text(json.dumps(pairs))
            with open(t / f"stdout{i}", "w") as out, open(t / f"stderr{i}", "w") as err:
                procs.append(subprocess.Popen(
                    command(qemu, cpu_name, model, t / f"pairs{i}.json", t / f"callgrind{i}.out"),
                    stdout=out, stderr=err, env=env()))
        found: dict[int, int] = {}
        ended: dict[int, str] = {}
        start = time.monotonic()
        dumped_at: dict[int, float] = {}
        while len(found) + len(ended) < len(procs):
            time.sleep(poll_s)
            for i, p in enumerate(procs):
                if i in found or i in ended:
                    continue
                dump = t / f"callgrind{i}.out.1"
                n = collected(dump.read_text(errors="replace")) if dump.is_file() else None
                if n is not None:
                    dumped_at.setdefault(i, time.monotonic())
                    if p.poll() is None and time.monotonic() - dumped_at[i] < EXIT_GRACE_S:
                        continue
                    found[i] = n
                elif p.poll() is not None:
                    ended[i] = (t / f"stderr{i}").read_text(errors="replace").strip()[-800:] \
                        or f"ended ({p.returncode}) with no count"
                elif time.monotonic() - start > timeout_s:
                    ended[i] = f"no count within {timeout_s:.0f} s"
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        results: list[dict[str, Any]] = []
        for i in range(len(procs)):
            out_text = (t / f"stdout{i}").read_text(errors="replace")
            line = next((x for x in out_text.splitlines() if x.startswith("RESULT ")), None)
            if i in ended or line is None:
                results.append({"error": ended.get(i, "no RESULT line: " + out_text[-300:])})
                continue
            r = json.loads(line[len("RESULT "):])
            results.append({"instructions": found[i], "logits": r["logits"],
                            "features": features(int(r["hwcap"]), int(r["hwcap2"]))})
        return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--cpu", choices=CPUS, default="cortex-a72")
    ap.add_argument("--sample", type=int, default=3,
                    help="check pairs counted, at token-count quantiles")
    ap.add_argument("--hours", type=float, default=2.0, help="longest a run may take")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.sample < 1 or not args.hours > 0:
        ap.error("--sample must be >= 1 and --hours > 0")
    if not ((CACHE / "qemu").is_file() and (ROOT / TOOL).is_file() and SITE.is_dir()):
        print("no valgrind root yet: run `bash tools/arm64/setup.sh valgrind` first",
              file=sys.stderr)
        return 2
    md = int8_export(args.model)
    if md is None:
        return 2
    record = md.int8_self_check()
    found = md.int8_check_requests()
    if found is None:
        print(f"{args.model} carries no check requests (int8_check.json; an export made before "
              "the check carried them?)", file=sys.stderr)
        return 2
    pairs, n_fast = check_pairs(record, found[0])
    # the exporter records each check pair's token count (as served, truncated to max_length)
    tokens = [int(n) for n in [*record.get("tokens", []), *found[0].get("tokens", [])]]
    if len(tokens) != len(pairs):
        print(f"{args.model}: its check records no token count for every pair; export it again "
              "(`crossrank export SOURCE --force`)", file=sys.stderr)
        return 2
    warm, counted = sample(tokens[n_fast:], args.sample)
    warm_pair = pairs[n_fast + warm]
    sampled = [pairs[n_fast + i] for i in counted]
    print(f"{args.model.name} under {args.cpu}: counting 2 runs side by side (about 30 min "
          "each)", flush=True)
    qemu = (CACHE / "qemu").read_text().strip()
    base, full = counts(qemu, args.cpu, args.model.resolve(), [[warm_pair], [warm_pair, *sampled]],
                        args.hours * 3600.0)
    for r in (base, full):
        if "error" in r:
            print(f"a run failed: {r['error']}", file=sys.stderr)
            return 1
    sample_tokens = sum(tokens[n_fast + i] for i in counted)
    per_token = (full["instructions"] - base["instructions"]) / sample_tokens
    skip = first_needed(record, n_fast)  # an x86 export's fast-check pairs: not scored on ARM
    served = tokens[skip:]
    result = {
        "model": args.model.name, "cpu": args.cpu, "features_seen": full["features"],
        "threads": 1, "sample_pairs": len(sampled),
        "sample_tokens": [tokens[n_fast + i] for i in counted],
        "instructions": {"warm_up_run": base["instructions"], "with_sample": full["instructions"]},
        "instructions_per_token": round(per_token),
        "check": {"pairs": len(served), "fast_pairs": n_fast - skip, "tokens": sum(served),
                  "instructions_estimated": round(per_token * sum(served))},
        "warm_up_logit_agrees": abs(base["logits"][0] - full["logits"][0]) < 1e-6}
    print(json.dumps(result, indent=1))
    merged: dict[str, Any] = {}
    if args.out.is_file():
        try:
            merged = json.loads(args.out.read_text())
        except ValueError:
            merged = {}
    merged[f"{args.model.name}/{args.cpu}"] = result
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
