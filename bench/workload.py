"""The seeded benchmark workload: a ~12-word query and chunks with a realistic mix of lengths
(the generators live in crossrank.export.corpus, shared with `crossrank bench`)."""

from __future__ import annotations

import random
from pathlib import Path

from crossrank.export.corpus import FILLER, TOPICS
from crossrank.export.corpus import mixed_chunks as chunks
from crossrank.quickbench import QUERY

__all__ = ["CKPT", "EXPORTED", "QUERY", "ROOT", "chunks", "with_overlong"]

ROOT = Path(__file__).resolve().parent.parent
# The stand-in L-12 checkpoint (scored by the seed's PyTorch code) and its crossrank export.
CKPT = ROOT / "models" / ".stand-in-L-12-checkpoint"
EXPORTED = ROOT / "models" / "stand-in-L-12-bench"


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
