"""The serving self-check for CPUs too slow to emulate in one sitting (neoverse-v1, max), in
slices that survive being stopped.

qemu emulates SVE tens of times slower than NEON, so the self-check of one export on neoverse-v1
(Graviton3) or max takes longer than a working session (tools/arm64/check.py reports such a
row as unfinished). This splits the same check in two:

1. under qemu with the CPU's features, the export's int8 model (served as `crossrank serve`
   serves it, Scorer.from_dir with the check off) scores the check's pairs a slice at a time,
   and each slice's logits are appended to WORK/logits.jsonl as soon as they exist. A run that
   is stopped (timeout, end of session, Ctrl-C) loses at most the slice it was on; the next run
   starts after the last slice kept;
2. once every pair the check needs has its logits, the host applies the serving check of an
   ARM CPU to them (selfcheck.check_here, isa arm64, with those logits as the int8 scorer's
   answers) and prints the row tools/arm64.check prints. An export made on x86 is judged at
   once there (the same gate and bounds), so its fast-check pairs are not emulated; one made on
   ARM gets the "reproduces the export's int8?" fast check first.

Scoring in slices gives the same logits as scoring the pairs at once: every pair's int8 logits
are its own (per-pair activation scales); checked bit for bit natively on x86 for slices of 1,
4 and 16 pairs, and under emulation by --verify (4 pairs in one call and one by one).

    .venv/bin/python -m tools.arm64.resumable MODEL_DIR --cpu neoverse-v1 [--work DIR]
        [--slice 8] [--hours 2] [--threads N] [--verify]

WORK defaults to .cache/arm64/resumable/<model>-<cpu>-<int8 sha256[:12]>; its pairs.json names
the int8 file's hash, so logits of another export are never mixed in. The seconds are emulated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.runtime import modeldir, selfcheck
from crossrank.runtime.core.errors import ModelLoadError
from crossrank.runtime.modeldir import VARIANT_FILES
from tools.arm64.check import CACHE, CPUS, HEADER, arm_python, emulated_env, row

SNIPPET = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from crossrank.runtime.scorer import Scorer
work = sys.argv[3]
size, threads = int(sys.argv[4]), int(sys.argv[5])
done = set(json.loads(sys.argv[6]))  # the starts of the slices already kept (kept_logits)
pairs = [tuple(p) for p in json.load(open(os.path.join(work, "pairs.json")))["pairs"]]
out = os.path.join(work, "logits.jsonl")
t = time.perf_counter()
s = Scorer.from_dir(sys.argv[2], variant="int8", int8_check=False, provider="cpu",
                    threads=threads or None)
print("LOADED %.1f" % (time.perf_counter() - t), flush=True)
with open(out, "a") as f:
    for start in range(0, len(pairs), size):
        if start in done:
            continue
        t = time.perf_counter()
        got = [float(x) for x in s.predict(pairs[start:start + size])]
        f.write(json.dumps({"start": start, "logits": got,
                            "seconds": round(time.perf_counter() - t, 1)}) + "\\n")
        f.flush()
        os.fsync(f.fileno())
        print("SLICE %d %.1f" % (start, time.perf_counter() - t), flush=True)
"""


def check_pairs(record: Any, data: Any) -> tuple[list[list[str]], int]:
    """The pairs the serving check scores (record: the manifest's fast-check record; data:
    int8_check.json's content or None): the fast check's, then the judged requests'; and how many
    are the fast check's."""
    fast = [[str(q), str(c)] for q, c in (record or {}).get("pairs", [])]
    judged = [[str(q), str(c)] for q, c in (data or {}).get("pairs", [])]
    return fast + judged, len(fast)


def int8_export(path: Path) -> modeldir.ModelDir | None:
    """The export at path if it has an int8 self-check record; else None, the reason on stderr."""
    try:
        md = modeldir.load(path)
    except ModelLoadError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return None
    if md.int8_self_check() is None:
        print(f"{path} has no int8 self-check record (an export without int8?)", file=sys.stderr)
        return None
    return md


def work_dir(model: Path, cpu_name: str, sha: str) -> Path:
    return CACHE / "resumable" / f"{model.name}-{cpu_name.replace(',', '_')}-{sha[:12]}"


def prepare(sha: str, record: Any, data: Any, work: Path) -> list[list[str]]:
    """WORK/pairs.json for this export (sha: its int8 file's; record, data: as check_pairs),
    written once; refused if it names another int8 file or check."""
    pairs, n_fast = check_pairs(record, data)
    f = work / "pairs.json"
    if f.is_file():
        try:
            kept = json.loads(f.read_text())
        except ValueError:
            kept = {}
        if not isinstance(kept, dict) or kept.get("int8_sha256") != sha \
                or kept.get("pairs") != pairs:
            raise SystemExit(f"{work} holds logits of another export or check; remove it or "
                             "name another --work")
        return pairs
    work.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"int8_sha256": sha, "fast": n_fast, "pairs": pairs}) + "\n")
    return pairs


def kept_lines(work: Path) -> list[dict[str, Any]]:
    """WORK/logits.jsonl's whole lines (a torn last line from a killed run is ignored)."""
    out = []
    f = work / "logits.jsonl"
    for line in f.read_text().splitlines() if f.is_file() else []:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict):
            out.append(d)
    return out


def kept_logits(work: Path, n: int) -> dict[int, list[float]]:
    """The slices scored so far, by start."""
    got: dict[int, list[float]] = {}
    for d in kept_lines(work):
        try:
            got[int(d["start"])] = [float(x) for x in d["logits"]]
        except (ValueError, KeyError, TypeError):
            continue
    return {s: v for s, v in got.items() if 0 <= s < n}


def assembled(kept: dict[int, list[float]], n: int, first: int = 0) -> np.ndarray | None:
    """The n logits in pair order (those before first may be nan: never asked for), or None
    while some pair from first on has none."""
    out = np.full(n, np.nan)
    for start, vals in kept.items():
        out[start:start + len(vals)] = vals[: n - start]
    return None if np.isnan(out[first:]).any() else out


def emulated_seconds(work: Path, first: int = 0) -> float:
    """The emulated seconds of the kept slices the check needs (those reaching pair first)."""
    total = 0.0
    for d in kept_lines(work):
        try:
            if int(d["start"]) + len(d["logits"]) > first:
                total += float(d.get("seconds") or 0)
        except (KeyError, TypeError, ValueError):
            continue
    return total


def first_needed(record: Any, n_fast: int) -> int:
    """The first pair the serving check on ARM asks for: an export made on x86 is judged at
    once (selfcheck.check_here), so its fast-check pairs are never scored there."""
    return n_fast if selfcheck.other_architecture(record, "arm64") else 0


def judge(record: Any, data: Any, logits: np.ndarray) -> selfcheck.Int8Check:
    """The serving check (selfcheck.check_here) with these logits, in check_pairs' order, as the
    int8 scorer's answers (record, data: as check_pairs)."""
    pairs, n_fast = check_pairs(record, data)
    if len(logits) != len(pairs):
        raise ValueError(f"{len(logits)} logits for {len(pairs)} pairs")
    answers = {"fast": logits[:n_fast], "judged": logits[n_fast:]}

    def predict(asked: list[tuple[str, str]]) -> np.ndarray:
        wanted = [list(p) for p in asked]
        for part, scored in (("fast", pairs[:n_fast]), ("judged", pairs[n_fast:])):
            if wanted == scored:
                return answers[part]
        raise ValueError("the check asked for pairs this run did not score")

    requests = selfcheck.Requests.parse(data) if data is not None else None
    return selfcheck.check_here(record, requests, predict, isa="arm64")


def command(cpu_name: str, md_path: Path, work: Path, size: int, threads: int,
            done: list[int]) -> list[str]:
    """The emulated Python scoring WORK's slices but those starting at done (tests run SNIPPET
    natively instead)."""
    return [*arm_python((CACHE / "qemu").read_text().strip(), cpu_name), "-c", SNIPPET,
            str(CACHE / "site"), str(md_path), str(work), str(size), str(threads),
            json.dumps(done)]


def emulate(md_path: Path, cpu_name: str, work: Path, size: int, threads: int,
            timeout_s: float, first: int = 0) -> str:
    """Score the slices not yet kept, under qemu, until done or timeout_s, but for whole slices
    before pair `first` (first_needed); the last lines of its output."""
    kept = kept_logits(work, len(json.loads((work / "pairs.json").read_text())["pairs"]))
    done = sorted(set(kept) | {s for s in range(0, first, size) if s + size <= first})
    cmd = command(cpu_name, md_path, work, size, threads, done)
    env = emulated_env()
    log = work / "emulation.log"
    with open(log, "a") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} -cpu {cpu_name} slice {size}\n")
        f.flush()
        try:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            f.write(f"# stopped after {timeout_s:.0f} s; the next run resumes\n")
    return "\n".join(log.read_text().splitlines()[-3:])


VERIFY = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from crossrank.runtime.scorer import Scorer
pairs = [tuple(p) for p in json.loads(sys.stdin.read())]
s = Scorer.from_dir(sys.argv[2], variant="int8", int8_check=False, provider="cpu")
whole = s.predict(pairs)
alone = np.concatenate([s.predict([p]) for p in pairs])
print("RESULT %r" % float(np.abs(whole - alone).max()))
"""


def verify(md_path: Path, cpu_name: str, pairs: list[list[str]]) -> str:
    """Under emulation: the largest |logit| difference between scoring 4 pairs in one call and
    one by one ("0.0" expected), or what went wrong."""
    cmd = [*arm_python((CACHE / "qemu").read_text().strip(), cpu_name), "-c", VERIFY,
           str(CACHE / "site"), str(md_path)]
    try:
        out = subprocess.run(cmd, input=json.dumps(pairs[:4]), capture_output=True, text=True,
                             env=emulated_env(), timeout=3600.0)
    except subprocess.TimeoutExpired:
        return "no answer within an hour"
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    return line[len("RESULT "):] if line else (out.stderr or out.stdout).strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--cpu", default="neoverse-v1", choices=CPUS)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--slice", type=int, default=8, help="pairs per kept slice")
    ap.add_argument("--hours", type=float, default=2.0,
                    help="emulation this run may take before it stops (it resumes next run)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    ap.add_argument("--verify", action="store_true",
                    help="first check, under this CPU, that slices score as the whole does")
    ap.add_argument("--out", type=Path, default=None, help="also write the row as JSON here")
    args = ap.parse_args(argv)
    if args.slice < 1 or args.threads < 0 or not args.hours > 0:
        ap.error("--slice must be >= 1, --threads >= 0 and --hours > 0")
    if not ((CACHE / "qemu").is_file() and (CACHE / "site").is_dir()):
        print("no aarch64 Python yet: run `bash tools/arm64/setup.sh` first", file=sys.stderr)
        return 2
    md = int8_export(args.model)
    if md is None:
        return 2
    sha = md.file_sha256(VARIANT_FILES["int8"])
    record = md.int8_self_check()
    found = md.int8_check_requests()
    data = found[0] if found else None
    work = args.work or work_dir(args.model.resolve(), args.cpu, sha)
    pairs = prepare(sha, record, data, work)
    path = args.model.resolve()
    if args.verify:
        print(f"slices against one call, 4 pairs under {args.cpu}: max |diff| "
              f"{verify(path, args.cpu, pairs)}")
    first = first_needed(record, check_pairs(record, data)[1])
    kept = kept_logits(work, len(pairs))

    def scored() -> str:
        got = sum(len(v[max(0, first - s):]) for s, v in kept.items())
        return f"{got}/{len(pairs) - first} pairs the check needs here"

    if assembled(kept, len(pairs), first) is None:
        print(f"{scored()} scored so far; emulating (up to {args.hours:g} h, log "
              f"{work / 'emulation.log'})", flush=True)
        print(emulate(path, args.cpu, work, args.slice, args.threads, args.hours * 3600.0,
                      first))
        kept = kept_logits(work, len(pairs))
    logits = assembled(kept, len(pairs), first)
    if logits is None:
        print(f"{scored()} scored: run again to resume")
        return 3
    result = judge(record, data, logits)
    seconds = emulated_seconds(work, first)
    r: dict[str, Any] = {"variant": "int8" if result.status == "passed" else "fp32",
                         "check": {**asdict(result), "seconds": round(seconds, 1)},
                         "int8_features": [f"{args.cpu} (emulated)"], "slices": len(kept)}
    print(HEADER)
    print(row(args.model, args.cpu, r))
    if args.out:
        args.out.write_text(json.dumps({"model": args.model.name, "cpu": args.cpu, **r},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
