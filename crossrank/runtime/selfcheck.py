"""The int8 self-check at start-up: does this CPU compute the int8 model that was verified?

Dynamic int8 scores depend on the CPU's integer kernels: the same u8u8 file gives logits that
differ by up to 0.43 (logits of std 4) between a Zen 4 (AVX-512 VNNI) and a Zen 3 (AVX2), and a
ranking the exporter accepted on one can fail on the other. The exporter therefore keeps, for a
fixed set of pairs, the fp32 and int8 logits it measured; at load the runtime scores the same
pairs with the int8 model through its own engine and serves int8 only when it reproduces the
exporter's int8 logits within the tolerance, so what is served is what was verified. A CPU with
the same kernels reproduces them to ~1e-6.

Why not compare with fp32 instead: the error against fp32 on a few pairs does not tell a faithful
int8 from an unfaithful one (the u8u8 file above: mean |int8 - fp32| 0.16 on the Zen 4, where it
passes the ranking check, and 0.17 on the Zen 3, where it fails it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.runtime.scores import spearman

RELATIVE_TOLERANCE = 0.01  # of the fp32 logits' standard deviation on the check pairs
ABSOLUTE_FLOOR = 1e-4


def tolerance(fp32_logits: Sequence[float] | np.ndarray) -> float:
    """The largest |int8 here - int8 at export| still taken as the same computation."""
    return max(ABSOLUTE_FLOOR, RELATIVE_TOLERANCE * float(np.std(np.asarray(fp32_logits))))


@dataclass(frozen=True)
class Int8Check:
    """The self-check's outcome, for /info, `crossrank info` and the start-up log."""

    status: str  # passed | failed | skipped | unavailable (an export without check data)
    max_abs_diff: float | None = None  # |int8 here - int8 at export|, worst pair
    tolerance: float | None = None
    pairs: int = 0
    seconds: float = 0.0
    measured_on: str | None = None  # the CPU class the export's int8 logits come from
    spearman_vs_fp32: float | None = None  # this CPU's int8 against the export's fp32

    @property
    def ok(self) -> bool:
        """True unless the check ran and failed."""
        return self.status != "failed"


MIN_PAIRS = 8  # fewer pairs within a short max_length: too little to judge


def check(record: Any, predict: Callable[[list[tuple[str, str]]], np.ndarray],
          max_length: int | None = None) -> Int8Check:
    """Score the record's pairs with predict (the int8 scorer's) and compare. With a max_length
    below the model's, only the pairs that fit are used (truncated pairs score otherwise)."""
    if not isinstance(record, dict) or not record.get("pairs"):
        return Int8Check(status="unavailable")
    try:
        pairs = [(str(q), str(c)) for q, c in record["pairs"]]
        want = np.asarray(record["int8_logits"], dtype=np.float64)
        fp32 = np.asarray(record["fp32_logits"], dtype=np.float64)
        tol = float(record.get("tolerance", tolerance(fp32)))
        tokens = [int(n) for n in record.get("tokens", [0] * len(pairs))]
    except (KeyError, TypeError, ValueError):
        return Int8Check(status="unavailable")
    if not len(want) == len(fp32) == len(tokens) == len(pairs):
        return Int8Check(status="unavailable")
    if max_length is not None:
        keep = [i for i, n in enumerate(tokens) if n <= max_length]
        if len(keep) < MIN_PAIRS:
            return Int8Check(status="unavailable")
        pairs = [pairs[i] for i in keep]
        want, fp32 = want[keep], fp32[keep]
    t0 = time.perf_counter()
    got = np.asarray(predict(pairs), dtype=np.float64)
    seconds = time.perf_counter() - t0
    worst = float(np.abs(got - want).max())
    return Int8Check(status="passed" if worst <= tol else "failed", max_abs_diff=worst,
                     tolerance=tol, pairs=len(pairs), seconds=round(seconds, 3),
                     measured_on=record.get("measured_on"),
                     spearman_vs_fp32=round(spearman(got, fp32), 5))
