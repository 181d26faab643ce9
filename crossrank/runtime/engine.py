"""The one engine: a thread owns the session and batches pairs across every caller.

The library (`Scorer`, synchronous) and the HTTP server (asynchronous) are front ends of the same
engine: both tokenize a request (a large one on a pipelined profile in runs, each submitted as
soon as it is tokenized, so the device starts while the rest is still being tokenized) and submit
the encoded rows here. The engine's thread takes every job waiting (up to a token cap) as one
round, sorts all their pairs by length into token-budget batches, and hands each job the scores of
its own rows.

Queued tokens are bounded for callers that pass a limit (the server: above it, new work is
refused at once with Overloaded, 429). Work whose caller timed out or went away is dropped before
inference. If inference fails, exactly the jobs in that round fail; if the thread dies, every
waiting job fails - none is left hanging.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from crossrank.runtime import batching
from crossrank.runtime.errors import (
    CrossrankError,
    DeadlineExceeded,
    InferenceError,
    Overloaded,
    Unavailable,
)
from crossrank.runtime.profiles import BatchPolicy
from crossrank.runtime.session import SessionInfo
from crossrank.runtime.tokenization import Encoded

log = logging.getLogger(__name__)

Parts = list[tuple[Encoded, np.ndarray]]


class Runner(Protocol):
    """What the engine runs batches on: an ONNX Runtime Session, or a simulated device."""

    info: SessionInfo

    def run(self, batch: batching.Batch) -> np.ndarray:
        """float32 logits, one per row of the batch (filler rows included)."""


class Hooks:
    """Metric callbacks (no-ops by default), so the engine needs no metrics library."""

    def batch(self, rows: int, tokens: int, padded: int) -> None:
        """One batch ran."""

    def queue_time(self, seconds: float) -> None:
        """A job waited this long before its round started."""

    def queued_tokens(self, tokens: int) -> None:
        """Tokens now waiting."""


@dataclass(eq=False)
class Job:
    """One part of one request, waiting for inference."""

    enc: Encoded
    tokens: int
    deadline: float  # time.monotonic(); math.inf for none
    future: concurrent.futures.Future[np.ndarray] = field(
        default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by the caller's side on failure, timeout or disconnect


class Engine:
    """Owns one session on one thread; every caller submits encoded rows to it. Thread-safe."""

    def __init__(self, session: Runner, policy: BatchPolicy, *, max_length: int,
                 pad_token_id: int = 0, round_tokens: int | None = None) -> None:
        self.session = session
        self.policy = policy
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.round_tokens = round_tokens or max(policy.token_budget * 16, 65536)
        self._hooks: list[Hooks] = []
        self._queue: deque[Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._rate = 5000.0  # tokens/s, refined as batches run; for Retry-After
        self._helpers: ThreadPoolExecutor | None = None  # pads the next batch (pipeline)
        self._accepting = True
        self._alive = True
        self._thread = threading.Thread(target=self._main, name="crossrank-engine", daemon=True)
        self._thread.start()

    # -- lifecycle and state ------------------------------------------------------------------

    def add_hooks(self, hooks: Hooks) -> None:
        """Report batches and queue state to these hooks too (the server's metrics)."""
        with self._cond:
            self._hooks = [*self._hooks, hooks]

    def remove_hooks(self, hooks: Hooks) -> None:
        with self._cond:
            self._hooks = [h for h in self._hooks if h is not hooks]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let queued work finish (up to timeout), then end the thread; anything
        still queued then fails with Unavailable."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._fail_all(Unavailable("the scorer is shut down"))
        if self._helpers is not None:
            self._helpers.shutdown(wait=False)

    @property
    def healthy(self) -> bool:
        return self._alive and self._accepting

    @property
    def queued_tokens(self) -> int:
        return self._queued

    # -- planning (pure policy, used by the thread and by benchmarks) ---------------------------

    def slice_request(self, chunks: Sequence[str]) -> list[np.ndarray]:
        """How a request is tokenized: with pipelining, chunk positions in runs of similar length
        (batching.slices_by_size); otherwise one run holding everything."""
        p = self.policy
        if not p.pipeline or len(chunks) <= p.slice_min_chunks or p.slices < 2:
            return [np.arange(len(chunks))]
        sizes = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        return batching.slices_by_size(sizes, p.slices)

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Batches for rows of these lengths, with this policy's budget and padding."""
        p = self.policy
        return batching.plan(lengths, p.token_budget, p.max_rows, p.pad_multiple, self.max_length)

    def iter_batches(self, rows: batching.Rows,
                     groups: Sequence[np.ndarray]) -> Iterator[batching.Batch]:
        """Padded batches in plan order; with pipelining, the next is padded during this one."""
        p = self.policy
        args = (self.pad_token_id, p.pad_multiple, self.max_length, p.row_multiple)
        if not p.pipeline or len(groups) < 2:
            for g in groups:
                yield batching.pad(rows, g, *args)
            return
        if self._helpers is None:  # only the engine's thread pads: no race
            self._helpers = ThreadPoolExecutor(1, thread_name_prefix="crossrank-pad")
        fut = self._helpers.submit(batching.pad, rows, groups[0], *args)
        for k in range(len(groups)):
            batch = fut.result()
            if k + 1 < len(groups):
                fut = self._helpers.submit(batching.pad, rows, groups[k + 1], *args)
            yield batch

    # -- submitting ---------------------------------------------------------------------------

    def check_capacity(self, limit: int) -> None:
        """Raise Overloaded if `limit` tokens are already queued (cheap: before tokenizing)."""
        queued = self._queued
        if queued >= limit:
            raise self._overloaded(queued, limit)

    def submit(self, enc: Encoded, deadline: float = math.inf, limit: int | None = None) -> Job:
        """Queue one part; with a limit, refuse it (Overloaded) if it would take the queue over
        (a part alone larger than the limit is accepted into an empty queue)."""
        job = Job(enc=enc, tokens=int(enc.lengths.sum()), deadline=deadline)
        with self._cond:
            if not (self._accepting and self._alive):
                raise Unavailable("the scorer is not running (shut down or failed)")
            if limit is not None and self._queued > 0 and self._queued + job.tokens > limit:
                raise self._overloaded(self._queued, limit)
            self._queue.append(job)
            self._queued += job.tokens
            self._notify_queued()
            self._cond.notify()
        return job

    def score_parts(self, parts: int, encode: Callable[[int], Encoded],
                    timeout_s: float | None = None, limit: int | None = None) -> Parts:
        """One request in parts, synchronously: part k + 1 is encoded (on this thread) while the
        engine already scores part k. Returns each part's encoding and logits. The limit applies
        to the first part; an accepted request is never refused halfway. If any part fails,
        every part's work is dropped."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        jobs: list[Job] = []
        try:
            for k in range(parts):
                enc = encode(k)
                _raise_first_failure(jobs)
                jobs.append(self.submit(enc, deadline, limit if not jobs else None))
            outs = [_result(job, deadline, timeout_s) for job in jobs]
        except BaseException:
            _abandon(jobs)
            raise
        return [(job.enc, out) for job, out in zip(jobs, outs, strict=True)]

    async def score_parts_async(self, parts: int, encode: Callable[[int], Awaitable[Encoded]],
                                timeout_s: float, limit: int | None = None) -> Parts:
        """score_parts for an event loop: `encode` runs off the loop where it is slow; waiting
        never blocks the loop. Cancelling the caller drops every part's work."""
        deadline = time.monotonic() + timeout_s
        jobs: list[Job] = []
        try:
            for k in range(parts):
                enc = await encode(k)
                _raise_first_failure(jobs)
                jobs.append(self.submit(enc, deadline, limit if not jobs else None))
            outs = [await _result_async(job, deadline, timeout_s) for job in jobs]
        except BaseException:
            _abandon(jobs)
            raise
        return [(job.enc, out) for job, out in zip(jobs, outs, strict=True)]

    def _overloaded(self, queued: int, limit: int) -> Overloaded:
        wait = max(1, math.ceil(queued / self._rate))
        return Overloaded(f"{queued} tokens are already queued (limit {limit}); retry in {wait}s",
                          retry_after_s=wait)

    # -- the engine's thread --------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and self._accepting:
                        self._cond.wait()
                    if not self._queue:
                        return
                    round_jobs = [self._queue.popleft()]
                    total = round_jobs[0].tokens
                    while self._queue and total + self._queue[0].tokens <= self.round_tokens:
                        job = self._queue.popleft()
                        round_jobs.append(job)
                        total += job.tokens
                try:
                    self._run_round(round_jobs)
                finally:
                    with self._cond:
                        self._queued = max(0, self._queued - total)
                        self._notify_queued()
        except BaseException as exc:  # the thread must never die silently
            log.exception("the inference thread died")
            self._alive = False
            self._fail_all(InferenceError(f"the inference thread stopped: {type(exc).__name__}"))
            raise
        finally:
            self._alive = False

    def _run_round(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live: list[Job] = []
        for job in jobs:
            if job.abandoned or job.future.done():
                continue
            if now > job.deadline:
                _settle(job, exc=DeadlineExceeded("the deadline passed while queued"))
                continue
            for h in self._hooks:
                h.queue_time(now - job.enqueued)
            live.append(job)
        if not live:
            return
        rows = batching.Rows.concat([job.enc.rows for job in live])
        owners = np.repeat(np.arange(len(live)), [job.enc.n_rows for job in live])
        out = np.zeros(len(rows), dtype=np.float32)
        try:
            for batch in self.iter_batches(rows, self.plan(rows.lengths)):
                if all(live[k].abandoned for k in set(owners[batch.positions].tolist())):
                    continue  # nobody is waiting for these rows any more
                t0 = time.perf_counter()
                out[batch.positions] = self.session.run(batch)[: len(batch.positions)]
                dt = time.perf_counter() - t0
                real = batch.real_tokens
                for h in self._hooks:
                    h.batch(batch.rows, real, batch.rows * batch.width)
                if dt > 0:
                    self._rate = 0.9 * self._rate + 0.1 * (real / dt)
        except CrossrankError as exc:
            for job in live:
                _settle(job, exc=exc)
            return
        except Exception as exc:
            log.exception("inference failed")
            err = InferenceError(f"inference failed: {type(exc).__name__}")
            for job in live:
                _settle(job, exc=err)
            return
        start = 0
        for job in live:
            n = job.enc.n_rows
            _settle(job, result=out[start:start + n].copy())
            start += n

    def _notify_queued(self) -> None:
        for h in self._hooks:
            h.queued_tokens(self._queued)

    def _fail_all(self, exc: CrossrankError) -> None:
        with self._cond:
            jobs = list(self._queue)
            self._queue.clear()
            self._queued = 0
        for job in jobs:
            _settle(job, exc=exc)


def _settle(job: Job, result: np.ndarray | None = None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)  # type: ignore[arg-type]  # set only with a result
    except concurrent.futures.InvalidStateError:  # cancelled or settled already
        pass


def _raise_first_failure(jobs: list[Job]) -> None:
    """An earlier part already failed: stop tokenizing the rest and raise its error."""
    for job in jobs:
        if job.future.done() and job.future.exception() is not None:
            job.future.result()


def _abandon(jobs: list[Job]) -> None:
    for job in jobs:
        job.abandoned = True


def _deadline_error(timeout_s: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(f"the request's deadline ({timeout_s:g}s) passed; its work was "
                            "dropped")


def _result(job: Job, deadline: float, timeout_s: float | None) -> np.ndarray:
    remaining = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
    try:
        return job.future.result(timeout=remaining)
    except concurrent.futures.TimeoutError as exc:
        raise _deadline_error(timeout_s) from exc


async def _result_async(job: Job, deadline: float, timeout_s: float) -> np.ndarray:
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)),
                                      timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError as exc:
        raise _deadline_error(timeout_s) from exc
