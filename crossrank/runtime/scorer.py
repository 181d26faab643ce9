"""The library's front end: synchronous calls on a runtime (runtime/loader.py), the same engine
and service the server uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from crossrank.runtime import loader
from crossrank.runtime.config import RuntimeConfig
from crossrank.runtime.core.options import Scored, ScoreRequest
from crossrank.runtime.core.profiles import BatchPolicy
from crossrank.runtime.core.scores import activate, rank
from crossrank.runtime.execution.engine import Engine
from crossrank.runtime.loader import Runtime, RuntimeInfo
from crossrank.runtime.text.pairs import PairTokenizer


class Scorer:
    """Scores (query, chunk) pairs with an exported cross-encoder. Thread-safe: concurrent calls
    are batched together by the engine, as the server's requests are."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @classmethod
    def from_dir(cls, path: Path | str, **config: Any) -> Scorer:
        """Load an exported model directory (its manifest and files checked first). Keyword
        arguments are RuntimeConfig's (runtime/config.py): variant, provider, threads, lanes, spin,
        token_budget, max_rows, pipeline, tokenizer, max_length, activation, int8_check,
        cascade, window limits, max_queued_tokens."""
        return cls(loader.load(RuntimeConfig(model_dir=str(path), **config)))

    @property
    def info(self) -> RuntimeInfo:
        return self.runtime.info

    @property
    def tokenizer(self) -> PairTokenizer:
        return self.runtime.tokenizer

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    @property
    def policy(self) -> BatchPolicy:
        return self.runtime.policy

    @property
    def activation(self) -> str:
        return self.runtime.activation

    def score_request(self, request: ScoreRequest) -> Scored:
        """Score one request (the server runs the same through the same service, asynchronously)."""
        return self.runtime.service.score(request)

    def logits(self, query: str, chunks: Sequence[str]) -> np.ndarray:
        """Raw float32 logits, one per chunk, in the caller's order."""
        return self.score_request(ScoreRequest(query, chunks)).logits

    def predict(self, pairs: Sequence[tuple[str, str]],
                activation: str | None = None) -> np.ndarray:
        """Scores for arbitrary (query, text) pairs in order, like CrossEncoder.predict."""
        return self.apply_activation(self.score_request(ScoreRequest.pairs(pairs)).logits,
                                     activation)

    def score(self, query: str, chunks: Sequence[str],
              activation: str | None = None) -> list[tuple[int, float]]:
        """[(index, score)] sorted by score descending, ties by index; the seed's contract."""
        if len(chunks) == 0:
            return []
        return rank(self.apply_activation(self.logits(query, chunks), activation))

    def apply_activation(self, logits: np.ndarray, activation: str | None = None) -> np.ndarray:
        """Scores as the caller asked: the model's activation by default."""
        return activate(logits, activation or "model", self.activation)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for /info: the model, and the profile and policy in use."""
        return self.runtime.describe()

    def close(self) -> None:
        """Stop the engine's thread (and the cascade's); later calls raise Unavailable."""
        self.runtime.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
