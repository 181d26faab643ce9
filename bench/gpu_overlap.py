"""How well tokenizing overlaps the GPU, end to end on CUDA: what keeps the GPU waiting.

    python bench/gpu_overlap.py --tokenizer-dir DIR [--out DIR]

Exports the stand-in L-12 (as bench/gpu_check.py does) and times crossrank fp16 end to end on
requests of 100 and 2000 chunks, same run, over: the interpreter's GIL switch interval (a thread
returning from ONNX Runtime waits up to that long for a thread busy in Python), how tokenization
is parallelised (the library's own thread pool on every core, or its pool off and crossrank's
shard threads on fewer cores, leaving some for the thread that feeds the GPU), and how many parts
a request is tokenized in.
For each it reports the median wall time and the share of it the GPU was running a batch.

    python bench/gpu_overlap.py --tokenizer-dir DIR --experiment shapes [--out DIR]

The same requests repeated (every batch shape seen before) and fresh requests (new texts each
round, so new batch shapes, as in real traffic), for the seed (sentence-transformers, in this
process) and for crossrank (fp16, in a fresh process) with exact batch widths, widths rounded up
to 64 tokens, and widths rounded plus row counts rounded up to 16.
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--experiment", choices=("threads", "shapes"), default="threads")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)  # exported model dir
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return shapes_child(args)
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from bench.models import gpu_standin
    from bench.workload import QUERY, chunks
    from crossrank.runtime.scorer import Scorer
    from crossrank.runtime.session import usable_cores
    from crossrank.runtime.tokenization import PairTokenizer

    gpu = "cpu" if args.cpu_dry_run else "cuda"
    ckpt, model = gpu_standin(Path(args.work), Path(args.tokenizer_dir), args.cpu_dry_run)
    if args.experiment == "shapes":
        return shapes_parent(args, ckpt, model)
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

    s.run_batch = timed  # type: ignore[method-assign]  # instrumenting this one instance
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
                for parts in (1, 2, 4):
                    s.slices = parts
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
                         "slices": parts, "median_ms": round(med * 1e3, 2),
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
              f"slices={r['slices']} {r['median_ms']:8.2f} ms {r['tokens_per_s']:>12,} tok/s "
              f"gpu busy {r['gpu_busy_share']:.0%}")
    return 0


def shapes_parent(args: argparse.Namespace, ckpt: Path, model: Path) -> int:
    import subprocess

    import numpy as np

    from bench.workload import QUERY, chunks
    from crossrank.runtime.tokenization import PairTokenizer

    gpu = "cpu" if args.cpu_dry_run else "cuda"
    rows: list[dict[str, Any]] = []
    from sentence_transformers import CrossEncoder

    seed = CrossEncoder(str(ckpt), max_length=512, device=gpu)
    tok = PairTokenizer(model / "tokenizer.json", 512)
    for n in ((10,) if args.cpu_dry_run else (100, 2000)):
        rounds, warmup = (1, 0) if args.cpu_dry_run else (20, 2) if n <= 100 else (7, 2)
        for traffic in ("repeated", "fresh"):
            walls, rates = [], []
            for k in range(rounds + warmup):
                docs = chunks(n, seed=0 if traffic == "repeated" else 1000 + k)
                tokens = int(tok.encode(QUERY, docs).lengths.sum())
                t0 = time.perf_counter()
                seed.predict([(QUERY, d) for d in docs], batch_size=32, show_progress_bar=False)
                wall = time.perf_counter() - t0
                if k >= warmup:
                    walls.append(wall)
                    rates.append(tokens / wall)
            r = {"n": n, "who": "seed CrossEncoder fp32 b32", "traffic": traffic,
                 "median_ms": round(float(np.median(walls)) * 1e3, 2),
                 "tokens_per_s": round(float(np.median(rates)))}
            rows.append(r)
            print(json.dumps(r), flush=True)
    del seed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = Path(args.work) / "shapes.json"
    cmd = [sys.executable, __file__, "--tokenizer-dir", args.tokenizer_dir, "--child",
           str(model), "--result", str(result)] + (["--cpu-dry-run"] if args.cpu_dry_run else [])
    proc = subprocess.run(cmd, env=env, timeout=600)
    if proc.returncode == 0 and result.is_file():
        rows.extend(json.loads(result.read_text()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_shapes.json").write_text(json.dumps({"rows": rows}, indent=2))
    print("\nSUMMARY (x: the seed's time / this time, same n and traffic)")
    seed_ms = {(r["n"], r["traffic"]): r["median_ms"] for r in rows if r["who"].startswith("seed")}
    for r in rows:
        shape = (f"width x{r['pad_multiple']} rows x{r['row_multiple']}" if "pad_multiple" in r
                 else "")
        print(f"n={r['n']:5d} {r['traffic']:<8} {r['who']:<28} {shape:<22} "
              f"{r['median_ms']:8.2f} ms {r['tokens_per_s']:>12,} tok/s "
              f"x{seed_ms[(r['n'], r['traffic'])] / r['median_ms']:.2f}")
    return 0


def shapes_child(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from bench.workload import QUERY, chunks
    from crossrank.runtime.scorer import Scorer

    gpu = "cpu" if args.cpu_dry_run else "cuda"
    s = Scorer.from_dir(args.child, variant="fp16", provider=gpu)
    s.pipeline = True
    rows: list[dict[str, Any]] = []
    for n in ((10,) if args.cpu_dry_run else (100, 2000)):
        rounds = 1 if args.cpu_dry_run else 20 if n <= 100 else 9
        warmup = 0 if args.cpu_dry_run else 2
        fresh = [chunks(n, seed=1000 + k) for k in range(rounds + warmup)]
        fresh_tokens = [int(s.tokenizer.encode(QUERY, d).lengths.sum()) for d in fresh]
        same = chunks(n, seed=0)
        same_tokens = int(s.tokenizer.encode(QUERY, same).lengths.sum())
        for traffic in ("repeated", "fresh"):
            for multiple, row_multiple in ((1, 1), (64, 1), (64, 16)):
                s.pad_multiple, s.row_multiple = multiple, row_multiple
                walls, rates = [], []
                for k in range(rounds + warmup):
                    docs, tokens = (same, same_tokens) if traffic == "repeated" else (
                        fresh[k], fresh_tokens[k])
                    t0 = time.perf_counter()
                    s.score(QUERY, docs)
                    wall = time.perf_counter() - t0
                    if k >= warmup:
                        walls.append(wall)
                        rates.append(tokens / wall)
                r = {"n": n, "traffic": traffic, "who": "crossrank fp16 end to end",
                     "pad_multiple": multiple, "row_multiple": row_multiple,
                     "median_ms": round(float(np.median(walls)) * 1e3, 2),
                     "tokens_per_s": round(float(np.median(rates)))}
                rows.append(r)
                print(json.dumps(r), flush=True)
    Path(args.result).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
