"""The GPU check: fp16 parity and end-to-end speed on CUDA against the seed, in one run.

Run on a machine with an NVIDIA GPU and onnxruntime-gpu (see bench/gpu_check.sh):

    python bench/gpu_check.py --tokenizer-dir DIR --realistic DIR [--out DIR]

1. builds the stand-in L-12 checkpoint and exports it (fp32 + fp16; torch.onnx when optimum is
   absent), recording fused-operator counts, and exports the realistic fixture;
2. times the seed (sentence-transformers CrossEncoder fp32, batch 32, CUDA) and crossrank's
   tokenization (library pair encoding vs the fast path) on requests of 100 and 2000 chunks;
3. in a fresh process (no torch holding the GPU): the attention kernel ONNX Runtime reports
   choosing, fp16 on CUDA vs fp32 on the CPU provider on the realistic fixture (top-10 overlap,
   Spearman, max |diff|), the model alone on pre-padded batches, and crossrank end to end
   (strings to sorted scores) tokenized in 1 to 8 parts, the server's service path (no HTTP),
   and both on fresh requests (new texts each round);
4. the HTTP path: a real `crossrank serve` on loopback, one client (100 and 2000 chunks, fresh
   and repeated) and 16 concurrent clients sending 100-chunk requests; prints tokens/s, p50 and
   p99 and the ratios to the seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("gpu_check")


def run_all(scorer: Any, batches: list[Any]) -> None:
    for b in batches:
        scorer.engine.session.run(b)


def upcast_checkpoint(src: Path, dst: Path) -> Path:
    """The carried realistic checkpoint is stored in fp16 to fit one transfer; export wants fp32."""
    import torch
    from transformers import BertForSequenceClassification

    m = BertForSequenceClassification.from_pretrained(str(src), dtype=torch.float32)
    dst.mkdir(parents=True, exist_ok=True)
    m.save_pretrained(str(dst))
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, dst / f.name)
    cfg = json.loads((dst / "config.json").read_text())
    src_cfg = json.loads((src / "config.json").read_text())
    for key in ("sbert_ce_default_activation_function", "crossrank_stand_in"):
        if key in src_cfg:
            cfg[key] = src_cfg[key]
    cfg.pop("dtype", None)
    cfg.pop("torch_dtype", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def row(n: int, tokens: int, who: str, seconds: float, **extra: Any) -> dict[str, Any]:
    r = {"n": n, "tokens": tokens, "who": who, **extra, "median_ms": round(seconds * 1e3, 3),
         "tokens_per_s": round(tokens / seconds)}
    print(json.dumps(r), flush=True)
    return r


def median_fresh(fn: Any, n: int, rounds: int) -> float:
    """Median seconds of fn(texts) over `rounds` requests of n new texts each (new batch
    shapes, as real traffic brings), after one warm-up."""
    from bench.workload import chunks

    fn(chunks(n, seed=7000))
    times = []
    for r in range(rounds):
        docs = chunks(n, seed=7001 + r)
        t0 = time.perf_counter()
        fn(docs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(args: argparse.Namespace) -> int:
    """In its own process: attention kernel, parity, model alone, end to end."""
    import onnxruntime as ort

    gpu = "cpu" if args.cpu_dry_run else "cuda"
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    import functools
    from dataclasses import replace

    from bench.studies.overlap_sim import server_path
    from bench.timing import median_seconds
    from bench.workload import QUERY, chunks
    from crossrank.export.corpus import TOPICS, passages_for
    from crossrank.runtime import loader
    from crossrank.runtime.core import batching
    from crossrank.runtime.core.scores import spearman
    from crossrank.runtime.scorer import Scorer

    report: dict[str, Any] = {}
    if args.probe:  # only the kernel report: ONNX Runtime prints it on every run
        s = Scorer.from_dir(args.standin, variant="fp16", provider=gpu)
        s.score(QUERY, chunks(4, seed=0))
        return 0
    real = Path(args.real)
    f32 = Scorer.from_dir(real, variant="fp32", provider="cpu")
    f16 = Scorer.from_dir(real, variant="fp16", provider=gpu)
    parity = []
    for topic in TOPICS:
        q, docs = passages_for(topic, 100, seed=2000)
        a, b = f32.logits(q, docs), f16.logits(q, docs)
        parity.append({
            "topic": topic,
            "top10_overlap": len(set(np.argsort(-a)[:10].tolist())
                                 & set(np.argsort(-b)[:10].tolist())),
            "spearman": round(spearman(a, b), 5),
            "max_abs_diff": round(float(np.abs(a - b).max()), 5),
        })
    report["realistic_parity"] = parity
    print("fp16 parity:", json.dumps(parity), flush=True)
    del f32, f16

    speed: list[dict[str, Any]] = []
    s = Scorer.from_dir(args.standin, variant="fp16", provider=gpu)
    for n in (int(x) for x in args.sizes.split(",")):
        docs = chunks(n, seed=0)
        enc = s.tokenizer.encode(QUERY, docs)
        tokens = int(enc.lengths.sum())
        rounds = 2 if args.cpu_dry_run else 20 if n <= 100 else 7
        for budget in (16384, 32768, 65536):
            groups = batching.plan(enc.lengths, budget, 4096)
            batches = [batching.pad(enc.rows, g) for g in groups]
            mo = median_seconds(run_all, s, batches, rounds=rounds)
            speed.append(row(n, tokens, "model only (pre-padded)", mo, budget=budget))
        default = s.policy.slices
        for k in (1, 2, 4, 6, 8):  # how many parts a request is tokenized in (1: no overlap)
            sk = Scorer(loader.reload(s.runtime, policy=functools.partial(replace, slices=k)))
            med = median_seconds(sk.score, QUERY, docs, rounds=rounds)
            speed.append(row(n, tokens, "crossrank fp16 end to end", med, slices=k))
            sk.close()
        # The server's path without HTTP (its service on an event loop), and both paths on
        # fresh requests: new texts each round.
        server = server_path(s)
        med = median_seconds(server, docs, rounds=rounds)
        speed.append(row(n, tokens, "crossrank fp16 server service", med, slices=default))
        fresh_tokens = int(np.median([s.tokenizer.encode(QUERY, chunks(n, seed=7001 + r))
                                      .lengths.sum() for r in range(rounds)]))
        for who, fn in (("crossrank fp16 end to end, fresh", lambda d: s.score(QUERY, d)),
                        ("crossrank fp16 server service, fresh", server)):
            med = median_fresh(fn, n, rounds)
            speed.append(row(n, fresh_tokens, who, med, slices=default))
    s.close()
    report["speed"] = speed + http_path(args, gpu)
    Path(args.result).write_text(json.dumps(report, indent=2))
    return 0


def http_path(args: argparse.Namespace, gpu: str) -> list[dict[str, Any]]:
    """`crossrank serve` on loopback: one client, then 16 concurrent clients."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from bench.loadgen import Server, pct
    from bench.workload import QUERY, chunks
    from crossrank.runtime.scorer import Scorer

    out: list[dict[str, Any]] = []
    with Scorer.from_dir(args.standin, variant="fp16", provider=gpu) as s:
        def count(docs: list[str]) -> int:
            return int(s.tokenizer.encode(QUERY, docs).lengths.sum())

        sizes = [int(x) for x in args.sizes.split(",")]
        with Server(Path(args.standin), "--variant", "fp16", "--provider", gpu,
                    "--max-chunks", "5000", "--max-queued-tokens", "100000000") as server, \
                httpx.Client(base_url=server.base, timeout=300) as client:
            def post(docs: list[str]) -> float:
                t0 = time.perf_counter()
                r = client.post("/score", json={"query": QUERY, "chunks": docs})
                dt = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                return dt

            for n in sizes:
                rounds = 3 if args.cpu_dry_run else 20 if n <= 100 else 9
                same = chunks(n, seed=0)
                for _ in range(2):
                    post(same)
                times = [post(same) for _ in range(rounds)]
                out.append(row(n, count(same), "HTTP /score, one client, repeated",
                               float(np.median(times)), p99_ms=round(pct(times, 99) * 1e3, 2)))
                fresh = [chunks(n, seed=9000 + k) for k in range(rounds)]
                times = [post(d) for d in fresh]
                tokens = int(np.median([count(d) for d in fresh]))
                out.append(row(n, tokens, "HTTP /score, one client, fresh",
                               float(np.median(times)), p99_ms=round(pct(times, 99) * 1e3, 2)))
            # 16 clients, each its own connection, fresh 100-chunk requests.
            clients, per_client = 16, (2 if args.cpu_dry_run else 12)
            n = min(100, max(sizes))
            work = [[chunks(n, seed=20000 + 100 * c + k) for k in range(per_client)]
                    for c in range(clients)]
            total_tokens = sum(count(d) for w in work for d in w)

            def one_client(docs_list: list[list[str]]) -> list[float]:
                with httpx.Client(base_url=server.base, timeout=300) as own:
                    lat = []
                    for docs in docs_list:
                        t0 = time.perf_counter()
                        r = own.post("/score", json={"query": QUERY, "chunks": docs})
                        lat.append(time.perf_counter() - t0)
                        assert r.status_code == 200, r.text
                    return lat

            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                lats = [x for lat in pool.map(one_client, work) for x in lat]
            wall = time.perf_counter() - t0
            r = {"n": n, "tokens": total_tokens, "who": f"HTTP /score, {clients} clients",
                 "median_ms": round(float(np.median(lats)) * 1e3, 2),
                 "p99_ms": round(pct(lats, 99) * 1e3, 2),
                 "requests_per_s": round(len(lats) / wall, 1),
                 "tokens_per_s": round(total_tokens / wall)}
            print(json.dumps(r), flush=True)
            out.append(r)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer-dir", default="")
    p.add_argument("--realistic", default="", help="realistic fixture checkpoint (fp16 ok)")
    p.add_argument("--work", default="/tmp/crossrank-gpu")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--sizes", default="100,2000")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="exercise the script on a machine without CUDA (tiny sizes, CPU provider)")
    # internal: the ONNX Runtime measurements in a fresh process
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--standin", default="", help=argparse.SUPPRESS)
    p.add_argument("--real", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cpu_dry_run:
        args.sizes = "10,40"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.measure or args.probe:
        return measure(args)
    if not args.tokenizer_dir or not args.realistic:
        p.error("--tokenizer-dir and --realistic are required")
    gpu = "cpu" if args.cpu_dry_run else "cuda"
    logging.getLogger("crossrank.export").setLevel(logging.INFO)
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    report: dict[str, Any] = {"onnxruntime": ort.__version__,
                              "providers": ort.get_available_providers(),
                              "cores": len(os.sched_getaffinity(0))}
    print("onnxruntime", ort.__version__, ort.get_available_providers(), flush=True)
    import tokenizers
    import torch

    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report["torch"] = torch.__version__
    report["tokenizers"] = tokenizers.__version__

    from bench.models import gpu_standin
    from bench.timing import median_seconds
    from bench.workload import QUERY, chunks
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime.text.pairs import PairTokenizer

    work = Path(args.work)
    t0 = time.perf_counter()
    ckpt, standin = gpu_standin(work, Path(args.tokenizer_dir), args.cpu_dry_run)
    exporter = "torch" if args.cpu_dry_run else "auto"  # the GPU box has no optimum
    m = json.loads((standin / "manifest.json").read_text())
    report["standin_export_s"] = round(time.perf_counter() - t0, 1)
    report["standin_fused_fp16"] = m["variants"]["fp16"]["fused_ops"]
    report["standin_fp16_verification"] = m["variants"]["fp16"]["verification"]
    print("stand-in exported:", json.dumps(report["standin_fused_fp16"]), flush=True)
    real_ckpt = upcast_checkpoint(Path(args.realistic), work / "real-ckpt")
    real = run(Options(model=str(real_ckpt), out_dir=work / "real", variants=("fp32", "fp16"),
                       exporter=exporter))
    rm = json.loads((real / "manifest.json").read_text())
    report["realistic_fp16_verification"] = rm["variants"]["fp16"]["verification"]

    # The seed's implementation and crossrank's tokenization, in this process.
    from sentence_transformers import CrossEncoder

    seed = CrossEncoder(str(ckpt), max_length=512, device=gpu)
    cores = len(os.sched_getaffinity(0))
    fast = PairTokenizer(standin / "tokenizer.json", 512, threads=cores)
    library = PairTokenizer(standin / "tokenizer.json", 512, threads=cores)
    library.template = None
    speed: list[dict[str, Any]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        docs = chunks(n, seed=0)
        pairs = [(QUERY, d) for d in docs]
        tokens = int(fast.encode(QUERY, docs).lengths.sum())
        rounds = 2 if args.cpu_dry_run else 20 if n <= 100 else 7
        med = median_seconds(seed.predict, pairs, rounds=rounds, batch_size=32,
                             show_progress_bar=False)
        speed.append(row(n, tokens, "seed CrossEncoder fp32 b32", med))
        speed.append(row(n, tokens, f"tokenize: library pairs ({cores} threads)",
                         median_seconds(library.encode, QUERY, docs, rounds=rounds)))
        speed.append(row(n, tokens, f"tokenize: fast path ({cores} threads)",
                         median_seconds(fast.encode, QUERY, docs, rounds=rounds)))
    del seed
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    # ONNX Runtime in a fresh process; first a run with its kernel report switched on.
    common = [sys.executable, __file__, "--standin", str(standin), "--real", str(real),
              "--sizes", args.sizes] + (["--cpu-dry-run"] if args.cpu_dry_run else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = subprocess.run(common + ["--probe"], capture_output=True, text=True, timeout=300,
                           env={**env, "ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO": "1"})
    report["attention_kernel"] = [ln for ln in (probe.stdout + probe.stderr).splitlines()
                                  if "Operator=Attention" in ln][:1]
    print("attention kernel:", report["attention_kernel"], flush=True)
    result = work / "measure.json"
    proc = subprocess.run(common + ["--measure", "--result", str(result)], timeout=1800, env=env)
    if proc.returncode == 0 and result.is_file():
        got = json.loads(result.read_text())
        report["realistic_parity"] = got["realistic_parity"]
        speed.extend(got["speed"])
    else:
        report["measure_error"] = f"exit {proc.returncode}"
    report["speed"] = speed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print("\nSUMMARY (ratio: tokens/s over the seed's, same n)")
    seed_rate = {r["n"]: r["tokens_per_s"] for r in speed if r["who"].startswith("seed")}
    for r in speed:
        extra = "".join(f" {k}={r[k]}" for k in ("budget", "slices") if k in r)
        print(f"n={r['n']:5d} {r['who']:<38}{extra:<34} {r['median_ms']:8.2f} ms "
              f"{r['tokens_per_s']:>12,} tok/s  x{r['tokens_per_s'] / seed_rate[r['n']]:.2f}")
    parity = report.get("realistic_parity", [])
    if parity:
        print(f"fp16 parity: worst top-10 overlap {min(x['top10_overlap'] for x in parity)}/10, "
              f"max |diff| {max(x['max_abs_diff'] for x in parity)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
