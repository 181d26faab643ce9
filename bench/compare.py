"""Side by side on the 100-chunk mixed request, in one run: the seed, one padded int8 batch,
crossrank (int8 on ONNX Runtime), and, where openvino is installed, crossrank's bf16 on OpenVINO.

Each contender runs in its own process (clean peak RSS, no thread interference), warm-up first,
then the median of several rounds. Prints a table, saves bench/results/compare-latest.{json,md}
and appends a line to bench/results/history.jsonl.

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

from bench.loadgen import append_history
from bench.workload import QUERY, chunks
from crossrank.runtime.core.cpu import detect_isa

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

CONTENDERS = {
    "seed": "seed: CrossEncoder.predict, PyTorch fp32, batch 32",
    "padded": "one padded unsorted int8 batch (FlashRank approach)",
    "crossrank": "crossrank: int8, sorted token-budget batches",
    "openvino": "crossrank: bf16 on OpenVINO (`--provider openvino`)",
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

        def fn(docs: list[str]) -> Any:
            return ce.predict([(QUERY, d) for d in docs], batch_size=32, show_progress_bar=False)
    elif kind == "padded":
        import numpy as np

        from crossrank.runtime.core.batching import pad
        from crossrank.runtime.execution.session import Session
        from crossrank.runtime.text.pairs import PairTokenizer

        tok = PairTokenizer(EXPORTED / "tokenizer.json", 512)
        sess = Session(EXPORTED / "model_int8.onnx")

        def fn(docs: list[str]) -> Any:
            enc = tok.encode(QUERY, docs)
            return sess.run(pad(enc.rows, np.arange(len(docs))))
    else:
        from crossrank.runtime.scorer import Scorer

        scorer = Scorer.from_dir(EXPORTED, **({"provider": "openvino"} if kind == "openvino"
                                              else {}))

        def fn(docs: list[str]) -> Any:
            return scorer.score(QUERY, docs)

    from crossrank.runtime.text.pairs import PairTokenizer as _Tok

    tokens = int(_Tok(EXPORTED / "tokenizer.json", 512).encode(QUERY, docs).lengths.sum())
    fn(docs[:100])  # warm-up (at most 100 chunks: the seed takes minutes for 1000)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(docs)
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
    p.add_argument("--sizes", type=int, nargs="*", default=[10, 1000],
                   help="also time the seed and crossrank on requests of these sizes, for the "
                        "latency plot (the --chunks size is measured anyway)")
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
    from crossrank.runtime.execution import ovsession

    kinds = [k for k in CONTENDERS if k != "openvino" or ovsession.available()]
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        results[kind] = run_worker(kind, args.chunks, args.rounds)
    sweep: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in ("seed", "crossrank",
                                                                    "openvino") if k in kinds}
    for n in sorted(set(args.sizes) | {args.chunks}):
        for kind in sweep:
            sweep[kind][n] = (results[kind] if n == args.chunks else
                              run_worker(kind, n, args.rounds if n <= 100 else 1))
    ours = results["crossrank"]["tokens_per_s"]
    lines = [
        f"{args.chunks}-chunk mixed request, {results['crossrank']['tokens']} tokens, stand-in L-12, "
        f"median of {args.rounds}; {cpu_name()}, {os.cpu_count()} cores",
        "",
        "| contender | median ms | tokens/s | crossrank is x faster | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        label, row = CONTENDERS[kind], results[kind]
        lines.append(f"| {label} | {row['median_s'] * 1e3:.0f} | {row['tokens_per_s']:,.0f} | "
                     f"{ours / row['tokens_per_s']:.2f} | {row['peak_rss_mb']:.0f} |")
    if len(sweep["seed"]) > 1:
        ov = "openvino" in sweep
        lines += ["", "| chunks | tokens | seed ms | crossrank ms | x |"
                  + (" bf16 OpenVINO ms | x |" if ov else ""),
                  "| ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if ov else "")]
        for n in sorted(sweep["seed"]):
            a, b = sweep["seed"][n], sweep["crossrank"][n]
            line = (f"| {n} | {b['tokens']:,} | {a['median_s'] * 1e3:.0f} | "
                    f"{b['median_s'] * 1e3:.0f} | {a['median_s'] / b['median_s']:.2f} |")
            if ov:
                o = sweep["openvino"][n]
                line += f" {o['median_s'] * 1e3:.0f} | {a['median_s'] / o['median_s']:.2f} |"
            lines.append(line)
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload = {"created": stamp, "cpu": cpu_name(), "isa": detect_isa(), "cores": os.cpu_count(),
               "chunks": args.chunks, "rounds": args.rounds, "results": results,
               "sizes": {k: {str(n): v for n, v in d.items()} for k, d in sweep.items()},
               "table": table}
    (RESULTS / "compare-latest.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / "compare-latest.md").write_text(table + "\n")
    append_history("compare", {"created": stamp, "cpu": cpu_name(), "isa": detect_isa(),
                               "chunks": args.chunks,
                               **{f"{k}_median_s": v["median_s"] for k, v in results.items()}})
    print("\nsaved bench/results/compare-latest.json")
    if len(sweep["seed"]) > 1:
        plot(sweep, RESULTS / "latency-vs-size.png", f"{cpu_name()} ({detect_isa()}), "
             f"{os.cpu_count()} cores, stand-in L-12, {stamp[:8]}")
        print("saved bench/results/latency-vs-size.png")
    return 0


def run_worker(kind: str, n: int, rounds: int) -> dict[str, Any]:
    """One contender in its own process (clean peak RSS, no thread interference)."""
    print(f"running {kind} ({rounds} round(s) of a {n}-chunk request) ...", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bench.compare", "--worker", kind,
                        "--chunks", str(n), "--rounds", str(rounds)],
                       capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-2000:]}")
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def plot(sweep: dict[str, dict[int, dict[str, Any]]], out: Path, subtitle: str) -> None:
    """Latency against request size, log-log, seed and crossrank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    labels = {"seed": "seed: CrossEncoder.predict (PyTorch fp32)",
              "crossrank": "crossrank (int8, ONNX Runtime)",
              "openvino": "crossrank (bf16, OpenVINO)"}
    for kind, marker in (("seed", "o"), ("crossrank", "s"), ("openvino", "^")):
        if kind not in sweep:
            continue
        sizes = sorted(sweep[kind])
        secs = [sweep[kind][n]["median_s"] for n in sizes]
        ax.plot(sizes, secs, marker=marker, label=labels[kind])
        for n, t in zip(sizes, secs, strict=True):
            ax.annotate(f"{t:.2f} s" if t >= 1 else f"{t * 1e3:.0f} ms", (n, t),
                        textcoords="offset points",
                        xytext=(6, {"seed": 6, "crossrank": 4}.get(kind, -12)),
                        fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("chunks per request (mixed lengths)")
    ax.set_ylabel("median latency (s)")
    ax.set_title("Re-ranking latency on CPU", fontsize=11)
    fig.text(0.5, 0.005, subtitle, ha="center", fontsize=7, color="0.4")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
