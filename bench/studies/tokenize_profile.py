"""Where the CPU time of a large request goes before the model runs: tokenizing and padding.

    python -m bench.studies.tokenize_profile [--tokenizer PATH] [--chunks 2000 100] [--rounds 7]

Side by side in one run, on fresh texts each round (no tokenizer cache sees a text twice): the
library's pair encoding (every pair tokenized with its query), crossrank's fast path (query once,
chunks alone, rows assembled with numpy) on the tokenizers library and on nanotoken, each on one
thread and on every core; then padding every batch of the CUDA plan.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench.workload import QUERY, chunks
from crossrank.runtime.core import batching
from crossrank.runtime.core.profiles import PROFILES
from crossrank.runtime.execution.session import usable_cores
from crossrank.runtime.text.pairs import PairTokenizer


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.tokenize_profile")
    p.add_argument("--tokenizer", default="models/stand-in-L-12/tokenizer.json")
    p.add_argument("--chunks", type=int, nargs="+", default=[2000, 100])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    cores = usable_cores()
    toks: dict[str, PairTokenizer] = {}
    for threads in sorted({1, cores}):
        slow = PairTokenizer(Path(args.tokenizer), 512, threads=threads, backend="tokenizers")
        slow.template = None  # the library's pair encoding, for comparison
        toks[f"library pairs, {threads} thread(s)"] = slow
        toks[f"fast path, tokenizers, {threads} thread(s)"] = PairTokenizer(
            Path(args.tokenizer), 512, threads=threads, backend="tokenizers")
        try:
            toks[f"fast path, nanotoken, {threads} thread(s)"] = PairTokenizer(
                Path(args.tokenizer), 512, threads=threads, backend="nanotoken")
        except Exception as exc:
            print(f"nanotoken: not available ({exc})")
    print(f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')} cores={cores}; "
          f"medians of {args.rounds} fresh requests")
    budget = PROFILES["cuda"].batch
    for n in args.chunks:
        fresh = [chunks(n, seed=5000 + 10 * n + r) for r in range(args.rounds + 1)]
        ref = next(iter(toks.values()))
        tokens = int(np.median([ref.encode(QUERY, d).lengths.sum() for d in fresh[1:]]))
        print(f"\n{n} chunks, ~{tokens} tokens")
        for name, t in toks.items():
            t.encode(QUERY, fresh[0])  # warm-up
            times = []
            for d in fresh[1:]:
                t0 = time.perf_counter()
                t.encode(QUERY, d)
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            print(f"  {name:<42} {med * 1e3:8.1f} ms {tokens / med:>14,.0f} tok/s")
        enc = ref.encode(QUERY, fresh[1])
        groups = batching.plan(enc.lengths, budget.token_budget, budget.max_rows,
                               budget.pad_multiple, 512)
        t0 = time.perf_counter()
        for g in groups:
            batching.pad(enc.rows, g, 0, budget.pad_multiple, 512, budget.row_multiple)
        print(f"  {f'pad {len(groups)} batches (CUDA policy)':<42} "
              f"{(time.perf_counter() - t0) * 1e3:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
