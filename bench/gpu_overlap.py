"""How well tokenizing overlaps the GPU, end to end on CUDA: what keeps the GPU waiting.

    python bench/gpu_overlap.py --tokenizer-dir DIR [--out DIR]

Exports the stand-in L-12 (as bench/gpu_check.py does) and times crossrank fp16 end to end on
requests of 100 and 2000 chunks, same run, over: the interpreter's GIL switch interval (a thread
returning from ONNX Runtime waits up to that long for a thread busy in Python), how tokenization
is parallelised (the library's own thread pool on every core, or its pool off and crossrank's
shard threads on fewer cores, leaving some for the thread that feeds the GPU), and slice sizes.
For each it reports the median wall time and the share of it the GPU was running a batch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--work", default="/tmp/crossrank-overlap")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--cpu-dry-run", action="store_true")
    args = p.parse_args()
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from bench.workload import QUERY, chunks
    from export.pipeline import Options, run
    from export.standin import build_standin
    from runtime.scorer import Scorer
    from runtime.session import usable_cores
    from runtime.tokenization import PairTokenizer

    gpu = "cpu" if args.cpu_dry_run else "cuda"
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    ckpt = build_standin(work / "ckpt", tokenizer_dir=Path(args.tokenizer_dir))
    model = run(Options(model=str(ckpt), out_dir=work / "standin", variants=("fp32", "fp16"),
                        exporter="torch" if args.cpu_dry_run else "auto"))
    s = Scorer.from_dir(model, variant="fp16", provider=gpu)
    s.pipeline = True
    busy = [0.0]
    run_batch = s.run_batch

    def timed(batch: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return run_batch(batch)
        finally:
            busy[0] += time.perf_counter() - t0

    s.run_batch = timed  # type: ignore[method-assign]
    cores = usable_cores()
    sizes = (10,) if args.cpu_dry_run else (100, 2000)
    warmup = 0 if args.cpu_dry_run else 2
    modes = [("library pool, all cores", None, cores)] + [
        (f"library pool off, {k} shard threads", "false", k)
        for k in sorted({max(1, cores - 2), max(1, cores // 2)}, reverse=True)]
    rows: list[dict[str, Any]] = []
    default_switch = sys.getswitchinterval()
    for n in sizes:
        docs = chunks(n, seed=0)
        tokens = int(s.tokenizer.encode(QUERY, docs).lengths.sum())
        rounds = 1 if args.cpu_dry_run else 20 if n <= 100 else 9
        for switch in (default_switch, 1e-3, 2e-4):
            sys.setswitchinterval(switch)
            for name, parallelism, threads in modes:
                if parallelism is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = parallelism
                s.tokenizer = PairTokenizer(model / "tokenizer.json", 512, threads=threads)
                for step in (n, n // 2, n // 4):
                    s.slice_pairs = step
                    for _ in range(warmup):
                        s.score(QUERY, docs)
                    walls, shares = [], []
                    for _ in range(rounds):
                        busy[0] = 0.0
                        t0 = time.perf_counter()
                        s.score(QUERY, docs)
                        wall = time.perf_counter() - t0
                        walls.append(wall)
                        shares.append(busy[0] / wall)
                    med = float(np.median(walls))
                    r = {"n": n, "tokens": tokens, "switch_ms": switch * 1e3, "tokenize": name,
                         "slice": step, "median_ms": round(med * 1e3, 2),
                         "tokens_per_s": round(tokens / med),
                         "gpu_busy_share": round(float(np.median(shares)), 3)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    sys.setswitchinterval(default_switch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_overlap.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))
    print("\nSUMMARY")
    for r in rows:
        print(f"n={r['n']:5d} switch={r['switch_ms']:4.1f}ms {r['tokenize']:<36} "
              f"slice={r['slice']:5d} {r['median_ms']:8.2f} ms {r['tokens_per_s']:>12,} tok/s "
              f"gpu busy {r['gpu_busy_share']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
