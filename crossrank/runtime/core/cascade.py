"""Exact top-k from int8: score every pair in int8, re-score in fp32 only those that could be in
fp32's top k.

If every int8 score is within E of its fp32 score (E: the export's measured int8 error bound,
fidelity.error_record), a pair whose int8 score is below s - E, s being the k-th best of the
fp32 scores known so far, has an fp32 score below s, so below fp32's k-th best: it never enters
fp32's top k. The cascade re-scores in rounds (`window`):

1. every pair whose int8 score is within E of the k-th best int8 score, t. These include int8's
   top k, whose fp32 scores are all >= t - E, so s >= t - E from here on;
2. every pair not yet re-scored whose int8 score is >= s - E (often none; never below t - 2E).

Then fp32's top k is among the re-scored pairs, with fp32's scores and order. A single window of
2E below t (every pair that could be needed before any fp32 score is known) holds the same
guarantee; the rounds re-score fewer pairs because s is usually close to t.

The guarantee is as good as E: E is the largest error the export saw on its check pairs, times a
margin (fidelity.ERROR_MARGIN), not a proof for every possible input.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


def window(int8_logits: np.ndarray, k: int, bound: float,
           exact: np.ndarray | None = None) -> np.ndarray:
    """Positions to re-score in fp32 next, in position order; empty when fp32's top k is known.

    exact: the fp32 scores found so far, NaN where a pair has not been re-scored (None: none
    yet). A request of k texts or fewer is re-scored whole."""
    x = np.asarray(int8_logits, dtype=np.float64)
    known = np.zeros(len(x), dtype=bool) if exact is None else ~np.isnan(exact)
    if k >= len(x):
        return np.flatnonzero(~known)
    if known.sum() < k:  # round 1: within E of int8's k-th best
        kth = float(np.partition(x, len(x) - k)[len(x) - k])
        return np.flatnonzero(~known & (x >= kth - bound))
    assert exact is not None
    found = exact[known]
    s = float(np.partition(found, len(found) - k)[len(found) - k])
    return np.flatnonzero(~known & (x >= s - bound))


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
