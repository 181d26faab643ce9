"""The seeded benchmark workload: a ~12-word query and chunks with a realistic mix of lengths
(the generators live in crossrank.export.corpus, shared with `crossrank bench`)."""

from __future__ import annotations

from pathlib import Path

from crossrank.export.corpus import mixed_chunks as chunks
from crossrank.export.corpus import with_overlong
from crossrank.quickbench import QUERY

__all__ = ["CKPT", "EXPORTED", "QUERY", "ROOT", "chunks", "with_overlong"]

ROOT = Path(__file__).resolve().parent.parent
# The stand-in L-12 checkpoint (scored by the seed's PyTorch code) and its crossrank export.
CKPT = ROOT / "models" / ".stand-in-L-12-checkpoint"
EXPORTED = ROOT / "models" / "stand-in-L-12-bench"
