"""The seeded benchmark workload: a ~12-word query and chunks with a realistic mix of lengths."""

from __future__ import annotations

import random
from pathlib import Path

from crossrank.export.corpus import FILLER, TOPICS

ROOT = Path(__file__).resolve().parent.parent
# The stand-in L-12 checkpoint (scored by the seed's PyTorch code) and its crossrank export.
CKPT = ROOT / "models" / ".stand-in-L-12-checkpoint"
EXPORTED = ROOT / "models" / "stand-in-L-12-bench"

QUERY = "What are the main causes of ocean tides and how does the moon affect them?"


def chunks(n: int, seed: int = 0) -> list[str]:
    """n chunks: ~20% short (~30 tokens), ~65% typical (120-300), ~15% over 512 tokens."""
    rng = random.Random(seed)
    sentences = [s for _, ss in TOPICS.values() for s in ss] + FILLER
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.20:
            k = 2
        elif r < 0.85:
            k = rng.randint(9, 22)  # ~13 tokens a sentence
        else:
            k = rng.randint(42, 70)
        out.append(" ".join(rng.choice(sentences) for _ in range(k)))
    return out


def with_overlong(n: int, fraction: float = 0.2, seed: int = 0) -> list[str]:
    """n chunks of typical length, `fraction` of them far over 512 tokens (~700-900)."""
    rng = random.Random(seed)
    sentences = [s for _, ss in TOPICS.values() for s in ss] + FILLER
    out = []
    for i in range(n):
        k = rng.randint(55, 70) if i < round(n * fraction) else rng.randint(9, 22)
        out.append(" ".join(rng.choice(sentences) for _ in range(k)))
    rng.shuffle(out)
    return out
