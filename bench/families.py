"""Each family at its real size against sentence-transformers, measured in the same run.

For every family (fixtures/families.py, "base" shapes: ms-marco-MiniLM-L-12 for BERT; ELECTRA,
XLM-R and DeBERTa-v3 base; ModernBERT base with its 22 layers; Qwen3-Reranker-0.6B's 28 layers)
a random-weight checkpoint is built offline with a tokenizer of the family's kind trained on the
benchmark's own corpus (so words are mostly whole tokens, as a real vocabulary gives on plain
English; the embedding table is small, which changes nothing but memory). It is exported with
crossrank's defaults capped at 512 tokens (the same cap for every family), then one request of N
mixed-length chunks (bench.workload, ~15% over 512 tokens) is scored by, each in its own process:

- sentence-transformers: CrossEncoder.predict, PyTorch fp32, batch 32, max_length 512;
- crossrank fp32 and crossrank int8 (ONNX Runtime, token-budget batches).

Medians of --rounds timed runs after a warm-up; ratios are against sentence-transformers in the
same run. Random weights: speed only, the int8 is recorded but never judged. Writes
bench/results/families-latest.{json,md}, or families-<names>-latest.{json,md} for a subset of
--families (a run of one family does not overwrite the table of all).

    python -m bench.families [--families bert xlm-roberta ...] [--chunks 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.compare import _median, cpu_name, peak_rss_mb
from bench.workload import QUERY, ROOT, chunks
from crossrank.runtime.core.cpu import detect_isa

WORK = ROOT / "models" / ".families-bench"
RESULTS = ROOT / "bench" / "results"
FAMILIES = ("bert", "electra", "xlm-roberta", "modernbert", "deberta-v2", "qwen3")
KINDS = ("sentence-transformers", "crossrank-fp32", "crossrank-int8")
MAX_LENGTH = 512
VOCAB = 8000  # trained on the workload's corpus: words mostly whole, as a real vocabulary gives


def prepared(family: str) -> tuple[Path, Path]:
    """(checkpoint, export) of family at base size, built once and reused."""
    from crossrank.export.pipeline import Options, run
    from fixtures import families

    ckpt = WORK / family / "ckpt"
    if not (ckpt / "config.json").is_file():
        families.build(family, ckpt, size="base", vocab=VOCAB)
    out = run(Options(model=str(ckpt), out_dir=WORK / family / "export",
                      variants=("fp32", "int8"), max_length=MAX_LENGTH))
    return ckpt, out


def worker(family: str, kind: str, n: int, rounds: int) -> dict[str, Any]:
    """Time one contender on one family in this process."""
    ckpt, out = WORK / family / "ckpt", WORK / family / "export"
    docs = chunks(n, seed=0)
    fn: Any
    if kind == "sentence-transformers":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(ckpt), max_length=MAX_LENGTH, device="cpu")

        def fn(docs: list[str]) -> Any:
            return ce.predict([(QUERY, d) for d in docs], batch_size=32, show_progress_bar=False)
    else:
        from crossrank.runtime.scorer import Scorer

        scorer = Scorer.from_dir(out, variant=kind.split("-")[1], int8_check=False)

        def fn(docs: list[str]) -> Any:
            return scorer.score(QUERY, docs)
    from crossrank.runtime.text.pairs import PairTokenizer

    tokens = int(PairTokenizer(out / "tokenizer.json", MAX_LENGTH).encode(QUERY, docs)
                 .lengths.sum())
    fn(docs)  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(docs)
        times.append(time.perf_counter() - t0)
    return {"family": family, "kind": kind, "tokens": tokens, "median_s": _median(times),
            "times_s": times, "peak_rss_mb": peak_rss_mb()}


def run_worker(family: str, kind: str, n: int, rounds: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.families", "--worker", family, kind, "--chunks", str(n),
           "--rounds", str(rounds)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{family} {kind} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(results: list[dict[str, Any]], fused: dict[str, dict[str, int]], n: int,
           rounds: int) -> str:
    lines = [f"# Families at real size vs sentence-transformers ({n} chunks, median of {rounds})",
             "", f"CPU: {cpu_name()} (crossrank class {detect_isa()}); "
             f"{datetime.now(timezone.utc):%Y-%m-%d}. Random weights (speed only); every "
             f"family capped at {MAX_LENGTH} tokens.", "",
             "| family | tokens | sentence-transformers s | crossrank fp32 s (x) | "
             "crossrank int8 s (x) | fused by the optimizer |", "| --- |" + " --- |" * 5]
    for fam in dict.fromkeys(r["family"] for r in results):
        by = {r["kind"]: r for r in results if r["family"] == fam}
        base = by["sentence-transformers"]["median_s"]
        cells = [f"{by[k]['median_s']:.2f} ({base / by[k]['median_s']:.2f}x)"
                 for k in KINDS[1:]]
        ops = ", ".join(f"{k} {v}" for k, v in sorted(fused[fam].items()))
        lines.append(f"| {fam} | {by['sentence-transformers']['tokens']} | {base:.2f} | "
                     f"{' | '.join(cells)} | {ops} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.families")
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--chunks", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", nargs=2, metavar=("FAMILY", "KIND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        logging.basicConfig(level=logging.ERROR)
        fam, kind = args.worker
        print(json.dumps(worker(fam, kind, args.chunks, args.rounds)))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    results: list[dict[str, Any]] = []
    fused: dict[str, dict[str, int]] = {}
    for fam in args.families:
        _, out = prepared(fam)
        fused[fam] = json.loads((out / "manifest.json").read_text())["variants"]["fp32"][
            "fused_ops"]
        for kind in KINDS:
            r = run_worker(fam, kind, args.chunks, args.rounds)
            print(f"{fam:12s} {kind:22s} {r['median_s']:.3f} s", flush=True)
            results.append(r)
    md = report(results, fused, args.chunks, args.rounds)
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = ("families-latest" if set(args.families) == set(FAMILIES)
            else f"families-{'-'.join(args.families)}-latest")
    (RESULTS / f"{stem}.md").write_text(md)
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"cpu": cpu_name(), "isa": detect_isa(), "chunks": args.chunks, "rounds": args.rounds,
         "max_length": MAX_LENGTH, "results": results, "fused_ops": fused}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
