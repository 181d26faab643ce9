"""Where the CPU time of a large request goes before the model runs: tokenizing and padding.

    python -m bench.tokenize_profile [--tokenizer PATH] [--chunks 2000] [--budget 32768]

Compares, in one run, the library's pair encoding (every pair tokenized with its query) with
crossrank's fast path (query once, chunks alone, rows assembled with numpy), each on one thread
and sharded over all cores, then the padding of every batch of the plan.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.timing import median_seconds
from bench.workload import QUERY, chunks
from crossrank.runtime import batching
from crossrank.runtime.session import usable_cores
from crossrank.runtime.tokenization import PairTokenizer


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tokenize_profile")
    p.add_argument("--tokenizer", default=".gpu/tok/tokenizer.json")
    p.add_argument("--chunks", type=int, default=2000)
    p.add_argument("--budget", type=int, default=batching.GPU_TOKEN_BUDGET)
    args = p.parse_args()
    docs = chunks(args.chunks, seed=0)
    cores = usable_cores()
    toks = {}
    for threads in sorted({1, cores}):
        fast = PairTokenizer(Path(args.tokenizer), 512, threads=threads)
        slow = PairTokenizer(Path(args.tokenizer), 512, threads=threads)
        slow._template = None  # the library's pair encoding, for comparison
        toks[f"library pairs, {threads} thread(s)"] = slow
        toks[f"fast path, {threads} thread(s)"] = fast
    enc = next(iter(toks.values())).encode(QUERY, docs)
    tokens = int(enc.lengths.sum())
    rows = {name: median_seconds(t.encode, QUERY, docs, warmup=1) for name, t in toks.items()}
    groups = batching.plan(enc.lengths, args.budget, batching.GPU_MAX_ROWS)
    rows[f"pad {len(groups)} batches ({args.budget} budget)"] = median_seconds(
        lambda: [batching.pad(enc.rows, g) for g in groups], warmup=1)
    print(f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')} cores={cores} "
          f"pairs={len(docs)} tokens={tokens}")
    for name, t in rows.items():
        print(f"  {name:<45} {t * 1e3:8.1f} ms {tokens / t:>12,.0f} tok/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
