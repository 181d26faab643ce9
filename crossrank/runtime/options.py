"""Per-request scoring options, request and window limits, option lists: plain frozen values,
no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass

from crossrank.runtime.errors import InvalidRequest

OVERFLOW_MODES = ("truncate", "split")
# Which end of an over-long pair is cut: right keeps the start (sentence-transformers), left the end.
TRUNCATION_SIDES = ("right", "left")
# What tokenizes texts: nanotoken when installed and in agreement with the library, or either.
TOKENIZER_BACKENDS = ("auto", "nanotoken", "tokenizers")


@dataclass(frozen=True)
class WindowLimits:
    """overflow="split": how windows overlap and how many a chunk and a request may need."""

    stride: int = 128  # tokens shared by consecutive windows
    max_per_chunk: int = 16
    max_per_request: int = 2000


DEFAULT_WINDOWS = WindowLimits()


@dataclass(frozen=True)
class RequestLimits:
    """What the server allows per request."""

    max_chunks: int = 1000  # texts / documents / chunks in one request
    overflow_default: str = "truncate"  # for requests that do not say


@dataclass(frozen=True)
class ScoreOptions:
    """How one request's texts are tokenized (the defaults are the seed's behaviour)."""

    overflow: str = "truncate"  # one of OVERFLOW_MODES
    report_truncation: bool = False  # count the tokens each text lost
    must_fit: bool = False  # refuse a text that would be cut (TEI truncate=false)
    max_tokens_per_text: int | None = None  # cut each text to this many of its own tokens first
    truncation_side: str = "right"  # one of TRUNCATION_SIDES
    # the answer's top k must be fp32's (scores and order) where int8 serves with a precision
    # cascade (runtime/cascade.py); ignored where the served variant is exact already
    exact_top_k: int | None = None

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_MODES:
            raise InvalidRequest(f"'overflow' must be one of {', '.join(OVERFLOW_MODES)}")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise InvalidRequest(f"truncation side must be one of {', '.join(TRUNCATION_SIDES)}")
        if self.exact_top_k is not None and self.exact_top_k < 1:
            raise InvalidRequest("'exact_top_k' must be a positive integer")
