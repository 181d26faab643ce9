"""The inference worker: one thread owns the session and batches pairs across requests.

Requests are tokenized off the event loop, then queued here (a large request on the CUDA path in
parts, each queued as soon as it is tokenized). The worker takes every job waiting (up to a token
cap) as one round, sorts all their pairs by length into token-budget batches, and hands each job
the scores of its own pairs. Queued tokens are bounded: above the bound new work is refused at
once (429). Work whose caller timed out or went away is dropped
before inference. If inference fails, exactly the requests in that round fail; if the thread
dies, every waiting request fails - none is left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrank.runtime import batching
from crossrank.runtime.errors import CrossrankError, DeadlineExceeded, InferenceError, Overloaded, Unavailable
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.tokenization import Encoded

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One request's pairs waiting for inference."""

    enc: Encoded
    tokens: int
    deadline: float  # time.monotonic()
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by the caller's side on timeout or disconnect


class Hooks:
    """Metric callbacks (no-ops by default), so the worker needs no metrics library."""

    def batch(self, rows: int, tokens: int, padded: int) -> None:
        """One batch ran."""

    def queue_time(self, seconds: float) -> None:
        """A job waited this long before its round started."""

    def queued_tokens(self, tokens: int) -> None:
        """Tokens now waiting."""


class Worker:
    """Owns the scorer's session on one thread; async callers submit encoded requests."""

    def __init__(self, scorer: Scorer, max_queued_tokens: int, hooks: Hooks | None = None,
                 round_tokens: int | None = None) -> None:
        self.scorer = scorer
        self.max_queued_tokens = max_queued_tokens
        self.round_tokens = round_tokens or max(scorer.token_budget * 16, 65536)
        self.hooks = hooks or Hooks()
        self._queue: deque[Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._rate = 5000.0  # tokens/s, refined as batches run; for Retry-After
        self.alive = False
        self.fault: Callable[[batching.Batch], None] | None = None  # tests inject failures

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._accepting = True
            self.alive = True
        self._thread = threading.Thread(target=self._main, name="crossrank-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let queued work finish (up to timeout), then end the thread."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_all(Unavailable("the server is shutting down"))

    @property
    def queued_tokens(self) -> int:
        return self._queued

    @property
    def healthy(self) -> bool:
        return self.alive and self._accepting

    # -- the caller's side --------------------------------------------------------------------

    def check_capacity(self) -> None:
        """Raise Overloaded if the queue is already at its bound (cheap, no tokenization)."""
        queued = self._queued
        if queued >= self.max_queued_tokens:
            raise self._overloaded(queued)

    def _overloaded(self, queued: int) -> Overloaded:
        wait = max(1, math.ceil(queued / self._rate))
        return Overloaded(f"{queued} tokens are already queued (limit {self.max_queued_tokens}); "
                          f"retry in {wait}s", retry_after_s=wait)

    async def submit_parts(self, parts: int, encode: Callable[[int], Awaitable[Encoded]],
                           timeout_s: float) -> list[tuple[Encoded, np.ndarray]]:
        """One request tokenized in parts: part k + 1 is encoded (by `encode(k + 1)`, off this
        thread) while the worker already scores part k, so a large request keeps the device busy
        while it is still being tokenized. Returns each part's encoding and logits. The queue
        bound applies to the first part; the rest of an accepted request is never refused
        halfway. If any part fails or the caller goes away, every part's work is dropped."""
        deadline = time.monotonic() + timeout_s
        jobs: list[Job] = []
        encs: list[Encoded] = []
        try:
            for k in range(parts):
                enc = await encode(k)
                encs.append(enc)
                failed = next((j for j in jobs if j.future.done()
                               and j.future.exception() is not None), None)
                if failed is not None:
                    await failed.future  # raises that part's error
                jobs.append(self._enqueue(enc, deadline, bounded=not jobs))
            outs = [await self._wait(job, deadline - time.monotonic(), timeout_s)
                    for job in jobs]
        except BaseException:
            for job in jobs:
                job.abandoned = True
            raise
        return list(zip(encs, outs, strict=True))

    def _enqueue(self, enc: Encoded, deadline: float, bounded: bool) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(enc=enc, tokens=int(enc.lengths.sum()), deadline=deadline, loop=loop,
                  future=loop.create_future())
        with self._cond:
            if not (self._accepting and self.alive):
                raise Unavailable("the inference worker is not running")
            if bounded and self._queued > 0 and self._queued + job.tokens > self.max_queued_tokens:
                raise self._overloaded(self._queued)
            self._queue.append(job)
            self._queued += job.tokens
            self.hooks.queued_tokens(self._queued)
            self._cond.notify()
        return job

    @staticmethod
    async def _wait(job: Job, remaining_s: float, timeout_s: float) -> np.ndarray:
        try:
            return await asyncio.wait_for(asyncio.shield(job.future),
                                          timeout=max(0.0, remaining_s))
        except asyncio.TimeoutError as exc:
            raise DeadlineExceeded(f"the request's deadline ({timeout_s:g}s) passed; its work "
                                   "was dropped") from exc

    # -- the worker's side --------------------------------------------------------------------

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
                        self.hooks.queued_tokens(self._queued)
        except BaseException as exc:  # the thread must never die silently
            log.exception("inference worker died")
            self._fail_all(InferenceError(f"the inference worker stopped: {type(exc).__name__}"))
            raise
        finally:
            self.alive = False

    def _run_round(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live: list[Job] = []
        for job in jobs:
            if job.abandoned or job.future.done():
                continue
            if now > job.deadline:
                self._resolve(job, exc=DeadlineExceeded("the deadline passed while queued"))
                continue
            self.hooks.queue_time(now - job.enqueued)
            live.append(job)
        if not live:
            return
        rows = batching.Rows.concat([job.enc.rows for job in live])
        owners = np.repeat(np.arange(len(live)), [job.enc.n_rows for job in live])
        out = np.zeros(len(rows), dtype=np.float32)
        try:
            groups = self.scorer.plan(rows.lengths)
            for batch in self.scorer.iter_batches(rows, groups):
                if all(live[k].abandoned for k in set(owners[batch.positions].tolist())):
                    continue  # nobody is waiting for these rows any more
                t0 = time.perf_counter()
                if self.fault is not None:
                    self.fault(batch)
                out[batch.positions] = self.scorer.run_batch(batch)
                dt = time.perf_counter() - t0
                real = batch.real_tokens
                self.hooks.batch(batch.rows, real, batch.rows * batch.width)
                if dt > 0:
                    self._rate = 0.9 * self._rate + 0.1 * (real / dt)
        except CrossrankError as exc:
            for job in live:
                self._resolve(job, exc=exc)
            return
        except Exception as exc:
            log.exception("inference failed")
            err = InferenceError(f"inference failed: {type(exc).__name__}")
            for job in live:
                self._resolve(job, exc=err)
            return
        start = 0
        for job in live:
            n = job.enc.n_rows
            self._resolve(job, result=out[start:start + n].copy())
            start += n

    def _resolve(self, job: Job, result: np.ndarray | None = None,
                 exc: BaseException | None = None) -> None:
        def settle(fut: asyncio.Future[Any] = job.future) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's loop is closed: nobody to tell
            pass

    def _fail_all(self, exc: CrossrankError) -> None:
        with self._cond:
            jobs = list(self._queue)
            self._queue.clear()
            self._queued = 0
        for job in jobs:
            self._resolve(job, exc=exc)
