"""One scoring service for every front end: a typed request in, one logit per text out.

Every request shape (the library's calls, /score, TEI's /rerank, Cohere's /v1|v2/rerank) becomes a
`ScoreRequest`; `Prepared` cuts it into the parts the engine scores, tokenizes each part for the
request's options, and puts the parts' logits back in the caller's order. The library runs it
synchronously, the server on its event loop; both through the same engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossrank.runtime.engine import Engine, Parts
from crossrank.runtime.errors import InferenceError, InvalidRequest
from crossrank.runtime.options import (
    DEFAULT_WINDOWS,
    ScoreOptions,
    WindowLimits,
)
from crossrank.runtime.tokenization import Encoded, PairTokenizer


@dataclass(frozen=True)
class ScoreRequest:
    """One query against many texts."""

    query: str
    texts: Sequence[str]
    options: ScoreOptions = ScoreOptions()


@dataclass(frozen=True)
class Scored:
    """One logit per text in the caller's order; tokens cut from each when asked for."""

    logits: np.ndarray  # float32
    truncated: np.ndarray | None  # int64, or None unless report_truncation


class Prepared:
    """A request cut into the engine's parts: `encode(k)` for k = 0, 1, ... in order, then
    `finish` with what the engine returned."""

    def __init__(self, request: ScoreRequest, tokenizer: PairTokenizer, engine: Engine,
                 windows: WindowLimits) -> None:
        self.request = request
        self.tokenizer = tokenizer
        self.windows = windows
        self.parts = engine.slice_request(request.texts)
        self._counted = 0  # rows the parts encoded so far made (the window cap is per request)

    def chars(self, k: int) -> int:
        """Characters of part k, query included: how long tokenizing it will take, roughly."""
        texts = self.request.texts
        return len(self.request.query) + sum(len(texts[i]) for i in self.parts[k])

    def encode(self, k: int) -> Encoded:
        """Tokenize part k for the request's options."""
        r, o, tok = self.request, self.request.options, self.tokenizer
        idx = self.parts[k]
        texts = list(r.texts) if len(self.parts) == 1 else [r.texts[i] for i in idx]
        if o.max_tokens_per_text is not None:
            texts = tok.cut_to_tokens(texts, o.max_tokens_per_text)
        if o.must_fit:
            enc = tok.encode(r.query, texts, with_truncation=True)
            assert enc.truncated is not None
            over = np.flatnonzero(enc.truncated > 0)
            if len(over):
                i = int(over[0])
                raise InvalidRequest(
                    f"texts[{int(idx[i])}] is {int(enc.lengths[i] + enc.truncated[i])} tokens "
                    f"with the query; the model takes {tok.max_length}. Send truncate=true or "
                    "shorten it.")
            # nothing is over the limit, so split would change nothing
        elif o.overflow == "split":
            w = self.windows
            enc = tok.encode_windows(r.query, texts, w.stride, w.max_per_chunk, w.max_per_request,
                                     o.report_truncation, idx, self._counted)
        else:
            enc = tok.encode(r.query, texts, with_truncation=o.report_truncation)
        self._counted += enc.n_rows
        return enc

    def finish(self, results: Parts) -> Scored:
        """One logit per text in the caller's order (a split text scores as its best window)."""
        n = len(self.request.texts)
        out = np.zeros(n, dtype=np.float32)
        cut = np.zeros(n, dtype=np.int64) if self.request.options.report_truncation else None
        for idx, (enc, logits) in zip(self.parts, results, strict=True):
            out[idx] = per_text(logits, enc)
            if cut is not None and enc.truncated is not None:
                cut[idx] = enc.truncated
        if not np.isfinite(out).all():
            raise InferenceError("the model returned a non-finite score")
        return Scored(logits=out, truncated=cut)


# Parts with less text than this are tokenized on the event loop: a thread hop costs more.
INLINE_CHARS = 20_000


class Service:
    """Scores requests on one engine, for the library (run) or an event loop (run_async)."""

    def __init__(self, tokenizer: PairTokenizer, engine: Engine,
                 windows: WindowLimits = DEFAULT_WINDOWS, limit: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.engine = engine
        self.windows = windows
        self.limit = limit  # queued tokens above which new requests are refused (None: never)

    def _empty(self, request: ScoreRequest) -> Scored:
        return Scored(logits=np.zeros(0, dtype=np.float32),
                      truncated=np.zeros(0, dtype=np.int64)
                      if request.options.report_truncation else None)

    def run(self, request: ScoreRequest, timeout_s: float | None = None) -> Scored:
        """Score one request, blocking this thread; it tokenizes part k + 1 while the engine
        scores part k."""
        check_texts(request.query, request.texts)
        if len(request.texts) == 0:
            return self._empty(request)
        if self.limit is not None:
            self.engine.check_capacity(self.limit)
        prepared = Prepared(request, self.tokenizer, self.engine, self.windows)
        return prepared.finish(self.engine.score_parts(len(prepared.parts), prepared.encode,
                                                       timeout_s, self.limit))

    async def run_async(self, request: ScoreRequest, timeout_s: float) -> Scored:
        """Score one request without blocking the event loop: large parts are tokenized in a
        thread; cancelling the caller drops its queued work."""
        check_texts(request.query, request.texts)
        if len(request.texts) == 0:
            return self._empty(request)
        if self.limit is not None:
            self.engine.check_capacity(self.limit)  # refuse at once, before tokenizing
        prepared = Prepared(request, self.tokenizer, self.engine, self.windows)

        async def encode(k: int) -> Encoded:
            if prepared.chars(k) < INLINE_CHARS:
                return prepared.encode(k)
            return await asyncio.to_thread(prepared.encode, k)

        results = await self.engine.score_parts_async(len(prepared.parts), encode, timeout_s,
                                                      self.limit)
        return prepared.finish(results)


def per_text(logits: np.ndarray, enc: Encoded) -> np.ndarray:
    """One logit per text: a text split into windows scores as the best of them."""
    if enc.owner is None or enc.n_chunks is None or enc.n_chunks == len(logits):
        return logits
    out = np.full(enc.n_chunks, -np.inf, dtype=np.float32)
    np.maximum.at(out, enc.owner, logits)
    return out


def check_texts(query: object, texts: Sequence[object]) -> None:
    """Raise InvalidRequest unless the query and every text are strings."""
    if not isinstance(query, str):
        raise InvalidRequest("query must be a string")
    for i, c in enumerate(texts):
        if not isinstance(c, str):
            raise InvalidRequest(f"texts[{i}] must be a string")
