"""Scores after the model: activations, tie-broken ranking and rank correlation (numpy only)."""

from __future__ import annotations

import numpy as np

from crossrank.runtime.core.choices import ACTIVATIONS
from crossrank.runtime.core.errors import ConfigError

# What callers may ask for: the model's own activation, raw logits, or the logistic function.


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def activate(logits: np.ndarray, activation: str, model_activation: str) -> np.ndarray:
    """Scores as asked: `model` means the model's own (identity or sigmoid)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}")
    act = model_activation if activation == "model" else activation
    if act == "sigmoid":
        return sigmoid(logits)
    return np.asarray(logits, dtype=np.float32)


def rank(scores: np.ndarray) -> list[tuple[int, float]]:
    """(index, score) sorted by score descending, ties by index ascending, plain Python floats."""
    s = np.asarray(scores)
    order = np.lexsort((np.arange(len(s)), -s.astype(np.float64)))
    return [(int(i), float(s[i])) for i in order]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (0.0 when either is constant)."""
    ra = _ranks(np.asarray(a, dtype=np.float64))
    rb = _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        idx = np.flatnonzero(x == v)
        if len(idx) > 1:
            r[idx] = r[idx].mean()
    return r
