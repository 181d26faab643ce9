"""How much tokenization the CUDA pipelines hide, measured on any machine with a simulated GPU.

    python -m bench.studies.overlap_sim [--chunks 2000 100] [--ratio 1.6] [--rounds 5]

The GPU is replaced by a device that takes rows x width / rate seconds per batch and holds no
CPU or GIL while it "runs" (it sleeps, as a thread waiting in ONNX Runtime's CUDA run does). The
rate is set so that the device time of the 2000-chunk request is `ratio` times its tokenization
time on this machine (1.6 on the H200 that measured issue #5: 136 ms of GPU, 85 ms tokenizing).
Everything else is the real code with the CUDA settings: fast-path tokenizer on every core,
GPU token budget, widths rounded to 64 and rows to 16, the pipelined scorer, and the server's
worker (the HTTP server minus HTTP).

For each request size and path it reports the median wall time next to `serial` (tokenize,
then run every batch) and `bound` (the larger of the two) for the same texts, and the share of
the smaller stage hidden behind the other: 0% is no overlap, 100% reaches the bound. Fresh texts
each round, so no path gains from caches real traffic would not have.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.workload import QUERY, chunks
from crossrank.runtime import loader
from crossrank.runtime.config import RuntimeConfig
from crossrank.runtime.core import batching
from crossrank.runtime.core.options import ScoreRequest
from crossrank.runtime.core.profiles import PROFILES
from crossrank.runtime.execution.session import usable_cores
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.text.pairs import PairTokenizer

ROOT = Path(__file__).resolve().parents[2]


class SimulatedDevice:
    """A session whose run() sleeps rows x width / rate seconds (plus a launch cost) and
    returns zeros: a GPU that costs no host CPU."""

    def __init__(self, rate: float, launch_s: float = 0.0002) -> None:  # no ONNX model
        self.rate = rate
        self.launch_s = launch_s

    def seconds(self, rows: int, width: int) -> float:
        return self.launch_s + rows * width / self.rate

    def run(self, batch: batching.Batch) -> np.ndarray:
        dt = self.seconds(batch.rows, batch.width)
        time.sleep(dt)
        return np.zeros(batch.rows, dtype=np.float32)


def make_scorer(model_dir: Path, device: SimulatedDevice) -> Scorer:
    """A scorer with the CUDA profile's batch policy and tokenizer threads on the simulated
    device (the model directory gives the tokenizer)."""
    config = RuntimeConfig(model_dir=str(model_dir), variant="fp32", provider="cpu",
                           tokenizer="tokenizers", tokenizer_threads=usable_cores(),
                           activation="identity")
    return Scorer(loader.load(config, runner=lambda _open: device,
                              policy=lambda _profiles: PROFILES["cuda"].batch))


def device_seconds(scorer: Scorer, device: SimulatedDevice, texts: list[str]) -> float:
    """What the simulated device needs for this request's batches, tokenizing not included."""
    rows = scorer.tokenizer.encode(QUERY, texts).rows
    batches = scorer.engine.iter_batches(rows, scorer.engine.plan(rows.lengths))
    return sum(device.seconds(b.rows, b.width) for b in batches)


def server_path(scorer: Scorer, sliced: bool = True) -> Callable[[list[str]], Any]:
    """The server's path without HTTP: its service on an event loop, the request tokenized in
    runs (large runs off the loop), each queued for the engine as soon as it is ready
    (sliced=False: in one run)."""
    if not sliced:
        scorer = Scorer(loader.reload(scorer.runtime, policy=functools.partial(replace, slices=1)))
    service = scorer.runtime.service
    loop = asyncio.new_event_loop()

    def call(texts: list[str]) -> Any:
        return loop.run_until_complete(service.score_async(ScoreRequest(QUERY, texts), 60.0))

    return call


def measure(fn: Callable[[list[str]], Any], scorer: Scorer, device: SimulatedDevice, n: int,
            rounds: int, seed0: int) -> dict[str, float]:
    """Medians over `rounds` fresh requests (new texts each, after one warm-up call) of: the
    path's wall time, tokenizing alone and the device's time alone; and the share of the
    smaller of those two that the path hid, from the medians."""
    fn(chunks(n, seed=seed0))
    got: dict[str, list[float]] = {"wall_s": [], "tokenize_s": [], "device_s": []}
    for r in range(rounds):
        texts = chunks(n, seed=seed0 + 1 + r)
        t_tok = _seconds(scorer.tokenizer.encode, QUERY, texts)
        t_dev = device_seconds(scorer, device, texts)
        wall = _seconds(fn, texts)
        got["wall_s"].append(wall)
        got["tokenize_s"].append(t_tok)
        got["device_s"].append(t_dev)
    m = {k: float(np.median(v)) for k, v in got.items()}
    m["hidden"] = (m["tokenize_s"] + m["device_s"] - m["wall_s"]) / min(m["tokenize_s"],
                                                                      m["device_s"])
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, nargs="+", default=[2000, 100])
    p.add_argument("--ratio", type=float, default=1.6,
                   help="device time / tokenizing time for the 2000-chunk request")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model-dir", default=str(ROOT / "models" / "stand-in-L-12"),
                   help="any exported model dir: only its tokenizer is used")
    p.add_argument("--out", default="", help="write the figures to this JSON file")
    args = p.parse_args(argv)

    tok_file = Path(args.model_dir) / "tokenizer.json"
    if not tok_file.is_file():
        print(f"no tokenizer at {tok_file}: run `make export STANDIN=1` first", file=sys.stderr)
        return 2
    tokenizer = PairTokenizer(tok_file, 512, threads=usable_cores())  # for timing alone
    calib = chunks(2000, seed=999)
    tok_s = float(np.median([_seconds(tokenizer.encode, QUERY, calib) for _ in range(3)]))
    probe = SimulatedDevice(rate=1.0, launch_s=0.0)
    scorer = make_scorer(Path(args.model_dir), probe)
    rate = device_seconds(scorer, probe, calib) / (args.ratio * tok_s)
    device = SimulatedDevice(rate=rate)
    scorer.close()
    scorer = make_scorer(Path(args.model_dir), device)
    print(f"{usable_cores()} cores; tokenizing 2000 chunks: {tok_s * 1e3:.0f} ms; simulated "
          f"device {rate / 1e6:.2f}M padded tokens/s (ratio {args.ratio})", flush=True)

    paths: dict[str, Callable[[list[str]], Any]] = {
        "scorer": lambda texts: scorer.score(QUERY, texts),
        "server path": server_path(scorer),
        "  one part": server_path(scorer, sliced=False),
    }
    report: dict[str, Any] = {"cores": usable_cores(), "ratio": args.ratio,
                              "device_rate": rate, "results": []}
    for n in args.chunks:
        print(f"\n{n} chunks (medians of {args.rounds} fresh requests)", flush=True)
        row: dict[str, Any] = {"chunks": n}
        for name, fn in paths.items():
            m = measure(fn, scorer, device, n, args.rounds, seed0=100 * n)
            serial = m["tokenize_s"] + m["device_s"]
            bound = max(m["tokenize_s"], m["device_s"])
            print(f"  {name:14s} {m['wall_s'] * 1e3:7.1f} ms   (tokenize {m['tokenize_s'] * 1e3:.1f}"
                  f" + device {m['device_s'] * 1e3:.1f} = serial {serial * 1e3:.1f}, bound "
                  f"{bound * 1e3:.1f})   hidden {m['hidden']:4.0%}", flush=True)
            row[name] = m
        report["results"].append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def _seconds(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
