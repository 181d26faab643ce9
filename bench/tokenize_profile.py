"""Where tokenization time goes for a large request: Rust encode_batch vs conversion to arrays.

    python -m bench.tokenize_profile [--tokenizer PATH] [--chunks 2000]

Run in fresh processes with TOKENIZERS_PARALLELISM unset and =false to compare the library's own
thread pool with crossrank's sharding over Python threads.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from bench.timing import median_seconds
from bench.workload import QUERY, chunks


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tokenize_profile")
    p.add_argument("--tokenizer", default=".gpu/tok/tokenizer.json")
    p.add_argument("--chunks", type=int, default=2000)
    args = p.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    tok.no_padding()
    tok.enable_truncation(512, strategy="longest_first")
    pairs = [(QUERY, d) for d in chunks(args.chunks, seed=0)]
    encs = tok.encode_batch(pairs)
    tokens = sum(len(e.ids) for e in encs)
    cores = len(os.sched_getaffinity(0))
    pool = ThreadPoolExecutor(cores)

    def sharded() -> list[Any]:
        step = -(-len(pairs) // cores)
        out: list[Any] = []
        for part in pool.map(tok.encode_batch, [pairs[i:i + step] for i in range(0, len(pairs), step)]):
            out.extend(part)
        return out

    rows = {
        "encode_batch": median_seconds(tok.encode_batch, pairs, warmup=1),
        f"encode_batch sharded on {cores} threads": median_seconds(sharded, warmup=1),
        "ids+type_ids to numpy (conversion only)": median_seconds(
            lambda: [(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64))
                     for e in encs], warmup=1),
        "single encode() calls, serial": median_seconds(
            lambda: [tok.encode(q, d) for q, d in pairs], rounds=1, warmup=1),
    }
    print(f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')} cores={cores} "
          f"pairs={len(pairs)} tokens={tokens}")
    for name, t in rows.items():
        print(f"  {name:<45} {t * 1e3:8.1f} ms {tokens / t:>12,.0f} tok/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
