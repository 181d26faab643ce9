"""One scoring service for every front end: a typed request in, one logit per text out.

Every request shape (the library's calls and CrossEncoder.predict, /score, TEI's /rerank,
Cohere's /v1|v2/rerank, Ray Serve, the exporter's verification) becomes a `ScoreRequest` and goes
through `Service.score` (blocking) or `Service.score_async` (an event loop). Its data flows one
way: checks -> parts -> tokenize each part -> submit its rows to the engine -> wait for the logits
-> one logit per text in the caller's order. A large request on a pipelined profile is cut into
parts of similar length; part k + 1 is tokenized while the engine already scores part k.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from crossrank.runtime.core import batching, cascade
from crossrank.runtime.core.batching import Encoded
from crossrank.runtime.core.errors import DeadlineExceeded, InferenceError, InvalidRequest
from crossrank.runtime.core.options import Scored, ScoreRequest, WindowLimits
from crossrank.runtime.core.profiles import BatchPolicy
from crossrank.runtime.execution.engine import Engine, Job
from crossrank.runtime.text.pairs import PairTokenizer
from crossrank.runtime.text.windows import Windows, per_text


def parts_of(texts: Sequence[str], policy: BatchPolicy) -> list[np.ndarray]:
    """How a request is tokenized: with pipelining, text positions in runs of similar length
    (batching.slices_by_size); otherwise one run holding everything."""
    p = policy
    if not p.pipeline or len(texts) <= p.slice_min_chunks or p.slices < 2:
        return [np.arange(len(texts))]
    sizes = np.fromiter((len(c) for c in texts), dtype=np.int64, count=len(texts))
    return batching.slices_by_size(sizes, p.slices)


class _Call:
    """One request in flight: its parts, how each is tokenized, the engine jobs of those already
    submitted, and how their logits become the answer."""

    def __init__(self, service: Service, request: ScoreRequest, timeout_s: float | None) -> None:
        self.service = service
        self.request = request
        self.timeout_s = timeout_s
        self.deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        self.parts = parts_of(request.texts, service.engine.policy)
        self.encoded: list[Encoded] = []
        self.jobs: list[Job] = []
        self._rows = 0  # rows the parts encoded so far made (the window cap is per request)

    def chars(self, k: int) -> int:
        """Characters of part k, queries included: how long tokenizing it will take, roughly."""
        q, texts = self.request.query, self.request.texts
        n = sum(len(texts[i]) for i in self.parts[k])
        if isinstance(q, str):
            return n + len(q)
        return n + sum(len(q[i]) for i in self.parts[k])

    def encode(self, k: int) -> Encoded:
        """Tokenize part k for the request's options."""
        r, o = self.request, self.request.options
        tok = self.service.tokenizer
        idx = self.parts[k]
        whole = len(self.parts) == 1
        texts = list(r.texts) if whole else [r.texts[i] for i in idx]
        queries = None if isinstance(r.query, str) else (
            list(r.query) if whole else [r.query[i] for i in idx])
        if o.max_tokens_per_text is not None:
            texts = tok.cut_to_tokens(texts, o.max_tokens_per_text)
        truncation = o.report_truncation or o.must_fit
        side = o.truncation_side
        if o.overflow == "split" and not o.must_fit:
            enc = self._windows(queries, texts, idx)
        elif queries is not None:
            enc = tok.encode_pairs(list(zip(queries, texts, strict=True)), truncation, side)
        else:
            assert isinstance(r.query, str)
            enc = tok.encode(r.query, texts, truncation, side)
        if o.must_fit:
            assert enc.truncated is not None
            over = np.flatnonzero(enc.truncated > 0)
            if len(over):
                i = int(over[0])
                raise InvalidRequest(
                    f"texts[{int(idx[i])}] is {int(enc.lengths[i] + enc.truncated[i])} tokens "
                    f"with the query; the model takes {tok.max_length}. Send truncate=true or "
                    "shorten it.")
        self._rows += enc.n_rows
        return enc

    def _windows(self, queries: list[str] | None, texts: list[str], idx: np.ndarray) -> Encoded:
        """overflow="split" for a part (queries: one per text, or None for the request's one):
        the texts of each distinct query as windows, rows put back in text order (a text's
        windows together)."""
        o, windows = self.request.options, self.service.windows
        tok, side = self.service.tokenizer, self.request.options.truncation_side
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries or ()):
            groups.setdefault(q, []).append(i)
        if len(groups) <= 1:
            query = queries[0] if queries else self.request.query
            assert isinstance(query, str)
            return windows.encode(query, texts,
                                  tok.encode(query, texts, o.report_truncation, side),
                                  idx, self._rows)
        encs, owners = [], []
        truncated = np.zeros(len(texts), dtype=np.int64) if o.report_truncation else None
        counted = self._rows
        for q, members in groups.items():
            pos = np.asarray(members, dtype=np.int64)
            mine = [texts[i] for i in members]
            enc = windows.encode(q, mine, tok.encode(q, mine, o.report_truncation, side),
                                 idx[pos], counted)
            counted += enc.n_rows
            assert enc.owner is not None
            encs.append(enc.rows)
            owners.append(pos[enc.owner])
            if truncated is not None and enc.truncated is not None:
                truncated[pos] = enc.truncated
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        return Encoded(rows=batching.Rows.concat(encs).select(order), truncated=truncated,
                       owner=owner[order], n_chunks=len(texts))

    def submit(self, enc: Encoded) -> None:
        """Queue one encoded part; the queue bound applies to the first part only, so an
        accepted request is never refused halfway."""
        for job in self.jobs:  # an earlier part already failed: stop here with its error
            if job.future.done() and job.future.exception() is not None:
                job.future.result()
        bound = self.service.max_queued_tokens if not self.jobs else None
        self.jobs.append(self.service.engine.submit(enc.rows, self.deadline, bound))
        self.encoded.append(enc)

    def abandon(self) -> None:
        """The caller failed, timed out or left: the engine skips these jobs' rows."""
        for job in self.jobs:
            job.abandoned = True

    def remaining(self) -> float | None:
        return None if self.deadline == math.inf else max(0.0, self.deadline - time.monotonic())

    def expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"the request's deadline ({self.timeout_s:g}s) passed; its work "
                                "was dropped")

    def finish(self, outs: list[np.ndarray]) -> Scored:
        """One logit per text in the caller's order (a split text scores as its best window)."""
        n = len(self.request.texts)
        out = np.zeros(n, dtype=np.float32)
        cut = np.zeros(n, dtype=np.int64) if self.request.options.report_truncation else None
        tokens = 0
        for idx, enc, logits in zip(self.parts, self.encoded, outs, strict=True):
            out[idx] = per_text(logits, enc)
            tokens += int(enc.rows.offsets[-1])
            if cut is not None and enc.truncated is not None:
                cut[idx] = enc.truncated
        if not np.isfinite(out).all():
            raise InferenceError("the model returned a non-finite score")
        return Scored(logits=out, truncated=cut, tokens=tokens)


# Parts with less text than this are tokenized on the event loop: a thread hop costs more.
INLINE_CHARS = 20_000


@dataclass(frozen=True)
class Refiner:
    """The precision cascade's second stage: an fp32 service on the same model, the export's
    int8 error bound (logits), the k a request gets when it names none, and the counts."""

    service: Service
    bound: float
    default_k: int
    stats: cascade.CascadeStats


class _Refinement:
    """One request's way through the cascade: its int8 scores, then rounds of pairs re-scored in
    fp32 (cascade.window) until fp32's top k is known; `result` has fp32's scores where known."""

    def __init__(self, refiner: Refiner, request: ScoreRequest, scored: Scored) -> None:
        self.refiner = refiner
        self.request = request
        self.scored = scored
        self.k = request.options.exact_top_k or refiner.default_k
        self.exact = np.full(len(scored.logits), np.nan)
        self.tokens = scored.tokens

    def next(self) -> tuple[np.ndarray, ScoreRequest] | None:
        """The positions of the next round and their request; None when done (then counted)."""
        pos = cascade.window(self.scored.logits, self.k, self.refiner.bound, self.exact)
        if len(pos) == 0:
            self.refiner.stats.add(len(self.exact), int((~np.isnan(self.exact)).sum()))
            return None
        r = self.request
        return pos, ScoreRequest(r.query, [r.texts[i] for i in pos],
                                 replace(r.options, exact_top_k=None, report_truncation=False))

    def take(self, pos: np.ndarray, exact: Scored) -> None:
        self.exact[pos] = exact.logits
        self.tokens += exact.tokens

    def result(self) -> Scored:
        known = ~np.isnan(self.exact)
        logits = self.scored.logits.copy()
        logits[known] = self.exact[known]
        return replace(self.scored, logits=logits, tokens=self.tokens)


class Service:
    """Scores requests on one engine: `score` blocks its thread, `score_async` its coroutine
    only. max_queued_tokens: queued tokens above which new requests are refused (None: never).
    refiner: for each one-query request, the pairs that could be in fp32's top k (k: the
    request's exact_top_k, else the refiner's default) are re-scored there (runtime/core/cascade.py)."""

    def __init__(self, tokenizer: PairTokenizer, engine: Engine, windows: WindowLimits,
                 max_queued_tokens: int | None = None, refiner: Refiner | None = None) -> None:
        self.tokenizer = tokenizer
        self.engine = engine
        self.windows = Windows(tokenizer.library, tokenizer.max_length, windows)
        self.max_queued_tokens = max_queued_tokens
        self.refiner = refiner

    def _refinement(self, request: ScoreRequest, scored: Scored) -> _Refinement | None:
        """The cascade's rounds for this request, or None when there is nothing to refine (no
        cascade, or pairs of many queries: CrossEncoder.predict wants every score)."""
        if self.refiner is None or not isinstance(request.query, str):
            return None
        return _Refinement(self.refiner, request, scored)

    def _start(self, request: ScoreRequest, timeout_s: float | None) -> _Call | Scored:
        """The request checked and cut into parts, or its answer when it has no texts."""
        check_texts(request.query, request.texts)
        if len(request.texts) == 0:
            return Scored(logits=np.zeros(0, dtype=np.float32),
                          truncated=np.zeros(0, dtype=np.int64)
                          if request.options.report_truncation else None)
        if self.max_queued_tokens is not None:
            self.engine.check_capacity(self.max_queued_tokens)  # at once, before tokenizing
        return _Call(self, request, timeout_s)

    def score(self, request: ScoreRequest, timeout_s: float | None = None) -> Scored:
        """Score one request, blocking this thread."""
        call = self._start(request, timeout_s)
        if isinstance(call, Scored):
            return call
        try:
            for k in range(len(call.parts)):
                call.submit(call.encode(k))
            outs = []
            for job in call.jobs:
                try:
                    outs.append(job.future.result(timeout=call.remaining()))
                except concurrent.futures.TimeoutError as exc:
                    raise call.expired() from exc
        except BaseException:
            call.abandon()
            raise
        scored = call.finish(outs)
        refine = self._refinement(request, scored)
        if refine is None:
            return scored
        while (step := refine.next()) is not None:
            refine.take(step[0], refine.refiner.service.score(step[1], call.remaining()))
        return refine.result()

    async def score_async(self, request: ScoreRequest, timeout_s: float) -> Scored:
        """Score one request without blocking the event loop: large parts are tokenized in a
        thread; cancelling the caller drops its queued work."""
        call = self._start(request, timeout_s)
        if isinstance(call, Scored):
            return call
        try:
            for k in range(len(call.parts)):
                call.submit(call.encode(k) if call.chars(k) < INLINE_CHARS
                            else await asyncio.to_thread(call.encode, k))
            outs = []
            for job in call.jobs:
                try:
                    outs.append(await asyncio.wait_for(
                        asyncio.shield(asyncio.wrap_future(job.future)), call.remaining()))
                except asyncio.TimeoutError as exc:
                    raise call.expired() from exc
        except BaseException:
            call.abandon()
            raise
        scored = call.finish(outs)
        refine = self._refinement(request, scored)
        if refine is None:
            return scored
        while (step := refine.next()) is not None:
            remaining = call.remaining()
            refine.take(step[0], await refine.refiner.service.score_async(
                step[1], timeout_s if remaining is None else remaining))
        return refine.result()


def check_texts(query: object, texts: Sequence[object]) -> None:
    """Raise InvalidRequest unless the query (or each query) and every text are strings."""
    if isinstance(query, (list, tuple)):
        if len(query) != len(texts):
            raise InvalidRequest(f"{len(query)} queries for {len(texts)} texts: give one each")
        for i, q in enumerate(query):
            if not isinstance(q, str):
                raise InvalidRequest(f"queries[{i}] must be a string")
    elif not isinstance(query, str):
        raise InvalidRequest("query must be a string")
    for i, c in enumerate(texts):
        if not isinstance(c, str):
            raise InvalidRequest(f"texts[{i}] must be a string")
