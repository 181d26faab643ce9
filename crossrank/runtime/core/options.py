"""What one request is: its texts, its scoring options and its answer, with the request and
window limits and option lists: plain frozen values, no heavy imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crossrank.runtime.core.choices import OVERFLOW_MODES, TRUNCATION_SIDES
from crossrank.runtime.core.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np



@dataclass(frozen=True)
class WindowLimits:
    """overflow="split": how windows overlap and how many a chunk and a request may need."""

    stride: int  # tokens shared by consecutive windows
    max_per_chunk: int
    max_per_request: int


DEFAULT_WINDOWS = WindowLimits(stride=128, max_per_chunk=16, max_per_request=2000)


@dataclass(frozen=True)
class RequestLimits:
    """What the server allows per request (from its settings)."""

    max_chunks: int  # texts / documents / chunks in one request
    overflow_default: str  # for requests that do not say


@dataclass(frozen=True)
class ScoreOptions:
    """How one request's texts are tokenized (the defaults are the seed's behaviour)."""

    overflow: str = "truncate"  # one of OVERFLOW_MODES
    report_truncation: bool = False  # count the tokens each text lost
    must_fit: bool = False  # refuse a text that would be cut (TEI truncate=false)
    max_tokens_per_text: int | None = None  # cut each text to this many of its own tokens first
    truncation_side: str = "right"  # one of TRUNCATION_SIDES
    # the answer's top k must be fp32's (scores and order) where int8 serves with a precision
    # cascade (runtime/core/cascade.py); ignored where the served variant is exact already
    exact_top_k: int | None = None

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_MODES:
            raise InvalidRequest(f"'overflow' must be one of {', '.join(map(repr, OVERFLOW_MODES))}")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise InvalidRequest(f"truncation side must be one of {', '.join(TRUNCATION_SIDES)}")
        if self.exact_top_k is not None and self.exact_top_k < 1:
            raise InvalidRequest("'exact_top_k' must be a positive integer")


@dataclass(frozen=True)
class ScoreRequest:
    """One query against many texts, or (`query` a sequence) one query per text: pairs."""

    query: str | Sequence[str]
    texts: Sequence[str]
    options: ScoreOptions = ScoreOptions()

    @classmethod
    def pairs(cls, pairs: Sequence[tuple[str, str]],
              options: ScoreOptions | None = None) -> ScoreRequest:
        """(query, text) pairs scored in order."""
        return cls([q for q, _ in pairs], [t for _, t in pairs], options or ScoreOptions())


@dataclass(frozen=True)
class Scored:
    """One logit per text in the caller's order; tokens cut from each when asked for."""

    logits: np.ndarray  # float32
    truncated: np.ndarray | None  # int64, or None unless report_truncation
    tokens: int = 0  # tokens scored, windows included
