"""Exact top-k from int8: score every pair in int8, re-score in fp32 only those that could be in
fp32's top k.

If every int8 score is within E of its fp32 score (E: the export's measured int8 error bound,
fidelity.error_record), then each of fp32's top k has an int8 score of at least t - 2E, t being
the k-th best int8 score: the k pairs int8 ranks first all have fp32 scores >= t - E, so fp32's
k-th best is >= t - E, and a pair at or above it in fp32 is >= t - 2E in int8. Re-scoring that
window in fp32 therefore finds fp32's top k with fp32's scores and order; every pair left with
its int8 score is below t - 2E, under fp32's k-th best, so it never enters the top k.

The guarantee is as good as E: E is the largest error the export saw on its check pairs, times a
margin (fidelity.ERROR_MARGIN), not a proof for every possible input.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


def window(int8_logits: np.ndarray, k: int, bound: float) -> np.ndarray:
    """Positions whose int8 score lies within 2 x bound of the k-th best (all of them when the
    request has k texts or fewer), in position order."""
    x = np.asarray(int8_logits, dtype=np.float64)
    if k >= len(x):
        return np.arange(len(x))
    kth = float(np.partition(x, len(x) - k)[len(x) - k])
    return np.flatnonzero(x >= kth - 2.0 * bound)


@dataclass
class CascadeStats:
    """Pairs scored by requests that asked for exact top-k, and how many went to fp32."""

    requests: int = 0
    pairs: int = 0
    rescored: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, pairs: int, rescored: int) -> None:
        with self._lock:
            self.requests += 1
            self.pairs += pairs
            self.rescored += rescored

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            share = self.rescored / self.pairs if self.pairs else 0.0
            return {"requests": self.requests, "pairs": self.pairs, "rescored": self.rescored,
                    "rescored_share": round(share, 4)}
