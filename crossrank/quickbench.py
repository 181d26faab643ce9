"""`crossrank bench`: request latency on this machine through the library's engine.

The repository's bench/ suite goes further (each contender in its own process, the server,
overload and soak); this is the installed package's quick answer to "how fast here?".
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrank.export.corpus import mixed_chunks

log = logging.getLogger(__name__)

QUERY = "What are the main causes of ocean tides and how does the moon affect them?"


def _median_s(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm-up: first-run allocations and kernel choices are not what users see after
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_bench(model_dir: Path, sizes: list[int], rounds: int, variant: str = "auto",
              provider: str = "auto", seed_checkpoint: str | None = None) -> dict[str, Any]:
    """Median latency and tokens/s per request size; printed as it goes and returned."""
    from crossrank.runtime.core.cpu import detect_isa
    from crossrank.runtime.scorer import Scorer

    report: dict[str, Any] = {"model_dir": str(model_dir), "machine": platform.machine(),
                              "cpu_isa": detect_isa(), "rounds": rounds, "results": []}
    with Scorer.from_dir(model_dir, variant=variant, provider=provider) as scorer:
        info = scorer.describe()
        report.update(variant=info.get("variant"), provider=info.get("provider"))
        seed = _seed(seed_checkpoint)
        print(f"{info.get('name')}: {info.get('variant')} on {info.get('provider')} "
              f"({report['cpu_isa']}), medians of {rounds} rounds after a warm-up", flush=True)
        print(f"{'chunks':>7} {'tokens':>8} {'crossrank ms':>13} {'tokens/s':>10}"
              + (f" {'seed ms':>9} {'x':>6}" if seed else ""), flush=True)
        for n in sizes:
            docs = mixed_chunks(n, seed=n)
            tokens = int(scorer.tokenizer.encode(QUERY, docs).lengths.sum())
            t = _median_s(lambda: scorer.score(QUERY, docs), rounds)  # noqa: B023
            row: dict[str, Any] = {"chunks": n, "tokens": tokens, "median_s": t,
                                   "tokens_per_s": tokens / t}
            line = f"{n:>7} {tokens:>8} {t * 1e3:>13.1f} {tokens / t:>10,.0f}"
            if seed:
                pairs = [(QUERY, d) for d in docs]
                ts = _median_s(lambda: seed(pairs), rounds)  # noqa: B023
                row.update(seed_median_s=ts, speedup=ts / t)
                line += f" {ts * 1e3:>9.1f} {ts / t:>6.2f}"
            print(line, flush=True)
            report["results"].append(row)
    return report


def _seed(checkpoint: str | None) -> Callable[[list[tuple[str, str]]], Any] | None:
    if not checkpoint:
        return None
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        from crossrank.runtime.core.errors import ConfigError

        raise ConfigError("--seed-checkpoint needs sentence-transformers: "
                          "`pip install 'crossrank[export]'`") from exc
    ce = CrossEncoder(checkpoint, max_length=512, device="cpu")
    return lambda pairs: ce.predict(pairs, batch_size=32, show_progress_bar=False)
