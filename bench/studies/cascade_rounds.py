"""The precision cascade in rounds against one 2E window, timed in the same run.

On an exported model (fp32 + int8 with its error bound; e.g. the trained fixture exported with
`crossrank export`), over the fixture's held-out test requests (fixtures/prose.py), round-robin:
fp32 alone, int8 alone, the cascade as served (runtime/core/cascade.py: rounds), and the
cascade with the earlier rule (every pair within 2E of int8's k-th best, in one fp32 run).
Prints medians, speed against fp32 and each cascade's re-scored share.

    .venv/bin/python -m bench.studies.cascade_rounds MODEL_DIR [--requests 42] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def one_window(int8_logits: np.ndarray, k: int, bound: float,
               exact: np.ndarray | None = None) -> np.ndarray:
    """The earlier rule: every pair within 2 x bound of int8's k-th best, all in the first round."""
    x = np.asarray(int8_logits, dtype=np.float64)
    if exact is not None and (~np.isnan(exact)).any():
        return np.zeros(0, dtype=np.int64)
    if k >= len(x):
        return np.arange(len(x))
    kth = float(np.partition(x, len(x) - k)[len(x) - k])
    return np.flatnonzero(x >= kth - 2.0 * bound)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--requests", type=int, default=42)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    from crossrank.runtime import loader
    from crossrank.runtime.core import cascade
    from crossrank.runtime.modeldir import VARIANT_FILES
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose

    served = cascade.window
    f32 = Scorer.from_dir(args.model, variant="fp32")
    i8 = Scorer(loader.load_files(args.model / VARIANT_FILES["int8"], args.model / "tokenizer.json",
                                  f32.engine.max_length, variant="int8"))
    rounds = Scorer.from_dir(args.model, cascade=args.k)
    one = Scorer.from_dir(args.model, cascade=args.k)
    times: dict[str, list[float]] = {"fp32": [], "int8": [], "rounds": [], "one_window": []}
    reqs = prose.requests("test")[: args.requests]
    try:
        for _ in range(args.rounds):
            for r in reqs:
                chunks = list(r.passages)
                for who, s in (("fp32", f32), ("int8", i8), ("rounds", rounds),
                               ("one_window", one)):
                    cascade.window = one_window if who == "one_window" else served
                    t = time.perf_counter()
                    s.logits(r.query, chunks)
                    times[who].append(time.perf_counter() - t)
    finally:
        cascade.window = served
    med = {w: statistics.median(t) for w, t in times.items()}
    result: dict[str, Any] = {
        "model": args.model.name, "requests": len(reqs), "rounds": args.rounds, "k": args.k,
        "median_s": {w: round(t, 4) for w, t in med.items()},
        "speed_vs_fp32": {w: round(med["fp32"] / t, 3) for w, t in med.items()},
        "rescored": {"rounds": rounds.describe()["cascade"],
                     "one_window": one.describe()["cascade"]}}
    for s in (f32, i8, rounds, one):
        s.close()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
