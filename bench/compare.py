"""Side by side on the 100-chunk mixed request, in one run: the seed, one padded int8 batch, crossrank.

Each contender runs in its own process (clean peak RSS, no thread interference), warm-up first,
then the median of several rounds. Prints a table and saves JSON under bench/results/.

    python -m bench.compare [--chunks 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.workload import QUERY, chunks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

CONTENDERS = {
    "seed": "seed: CrossEncoder.predict, PyTorch fp32, batch 32",
    "padded": "one padded unsorted int8 batch (FlashRank approach)",
    "crossrank": "crossrank: int8, sorted token-budget batches",
}


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def worker(kind: str, n: int, rounds: int) -> dict[str, Any]:
    """Run one contender in this process; returns timings and peak RSS."""
    from bench.workload import CKPT, EXPORTED

    docs = chunks(n, seed=0)
    fn: Any
    if kind == "seed":
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(os.cpu_count() or 1)
        ce = CrossEncoder(str(CKPT), max_length=512, device="cpu")
        pairs = [(QUERY, d) for d in docs]

        def fn() -> Any:
            return ce.predict(pairs, batch_size=32, show_progress_bar=False)
    elif kind == "padded":
        import numpy as np

        from crossrank.runtime.batching import pad
        from crossrank.runtime.session import Session
        from crossrank.runtime.tokenization import PairTokenizer

        tok = PairTokenizer(EXPORTED / "tokenizer.json", 512)
        sess = Session(EXPORTED / "model_int8.onnx")

        def fn() -> Any:
            enc = tok.encode(QUERY, docs)
            return sess.run(pad(enc.rows, np.arange(len(docs))))
    else:
        from crossrank.runtime.scorer import Scorer

        scorer = Scorer.from_dir(EXPORTED)

        def fn() -> Any:
            return scorer.score(QUERY, docs)

    from crossrank.runtime.tokenization import PairTokenizer as _Tok

    tokens = int(_Tok(EXPORTED / "tokenizer.json", 512).encode(QUERY, docs).lengths.sum())
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = _median(times)
    return {"kind": kind, "tokens": tokens, "median_s": med, "times_s": times,
            "tokens_per_s": tokens / med,
            "peak_rss_mb": peak_rss_mb(),
            "heavy_modules": sorted(m for m in ("torch", "transformers") if m in sys.modules)}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss can carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare")
    p.add_argument("--chunks", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--worker", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(worker(args.worker, args.chunks, args.rounds)))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    from bench.models import standin

    standin()
    results: dict[str, dict[str, Any]] = {}
    for kind in CONTENDERS:
        print(f"running {kind} ({args.rounds} rounds of a {args.chunks}-chunk request) ...",
              flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "bench.compare", "--worker", kind,
                            "--chunks", str(args.chunks), "--rounds", str(args.rounds)],
                           capture_output=True, text=True, cwd=ROOT, timeout=1800)
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        results[kind] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    ours = results["crossrank"]["tokens_per_s"]
    lines = [
        f"{args.chunks}-chunk mixed request, {results['crossrank']['tokens']} tokens, stand-in L-12, "
        f"median of {args.rounds}; {cpu_name()}, {os.cpu_count()} cores",
        "",
        "| contender | median ms | tokens/s | crossrank is x faster | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, label in CONTENDERS.items():
        row = results[kind]
        lines.append(f"| {label} | {row['median_s'] * 1e3:.0f} | {row['tokens_per_s']:,.0f} | "
                     f"{ours / row['tokens_per_s']:.2f} | {row['peak_rss_mb']:.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload = {"created": stamp, "cpu": cpu_name(), "cores": os.cpu_count(),
               "chunks": args.chunks, "rounds": args.rounds, "results": results, "table": table}
    (RESULTS / f"compare-{stamp}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / "latest.md").write_text(table + "\n")
    print(f"\nsaved bench/results/compare-{stamp}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
