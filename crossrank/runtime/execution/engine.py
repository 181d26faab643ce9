"""The one engine: a queue, and a thread that owns the session and batches rows across callers.

It knows token rows, not requests: `Service` (service.py) tokenizes a request and submits its rows
here, part by part; the engine's thread takes every job waiting (up to a token cap) as one round,
sorts all their rows by length into token-budget batches, and settles each job's future with the
logits of its own rows. With lanes > 1 (the policy's), that many batches of a round run at once,
each on its share of the cores (runtime/loader.py gives the session threads / lanes threads): on
a CPU, one-pair int8 batches are too small for every core to share one well.

Queued tokens are bounded for callers that pass a limit (the server: above it, new work is
refused at once with Overloaded, 429). Work whose caller timed out or went away is dropped before
inference. If inference fails, exactly the jobs in that round fail; if the thread dies, every
waiting job fails - none is left hanging.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from crossrank.runtime.core import batching
from crossrank.runtime.core.errors import (
    CrossrankError,
    DeadlineExceeded,
    InferenceError,
    Overloaded,
    Unavailable,
)
from crossrank.runtime.core.profiles import BatchPolicy

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the engine runs batches on: an ONNX Runtime Session, or a simulated device."""

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
    """Rows of one part of one request, waiting for inference."""

    rows: batching.Rows
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
        self._lanes: ThreadPoolExecutor | None = None  # runs batches at once (policy.lanes)
        self._stats = threading.Lock()  # hooks and the rate, updated from every lane
        self._accepting = True
        self._alive = True
        self._thread = threading.Thread(target=self._main, name="crossrank-engine", daemon=True)
        self._thread.start()

    # -- lifecycle and state ------------------------------------------------------------------

    def add_hooks(self, hooks: Hooks) -> None:
        """Report batches and queue state to these hooks too (the server's metrics)."""
        with self._cond:
            self._hooks = [*self._hooks, hooks]

    @property
    def hooks(self) -> tuple[Hooks, ...]:
        return tuple(self._hooks)

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
        for pool in (self._helpers, self._lanes):
            if pool is not None:
                pool.shutdown(wait=False)

    @property
    def healthy(self) -> bool:
        return self._alive and self._accepting

    @property
    def queued_tokens(self) -> int:
        return self._queued

    # -- planning (pure policy, used by the thread and by benchmarks) ---------------------------

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Batches for rows of these lengths, with this policy's budget and padding."""
        p = self.policy
        return batching.plan(lengths, p.token_budget, p.max_rows, p.pad_multiple, self.max_length)

    def pad(self, rows: batching.Rows, group: np.ndarray) -> batching.Batch:
        """One planned group of rows as a padded batch, with this policy's shape rounding."""
        p = self.policy
        return batching.pad(rows, group, self.pad_token_id, p.pad_multiple, self.max_length,
                            p.row_multiple)

    def iter_batches(self, rows: batching.Rows,
                     groups: Sequence[np.ndarray]) -> Iterator[batching.Batch]:
        """Padded batches in plan order; with pipelining, the next is padded during this one."""
        if not self.policy.pipeline or len(groups) < 2:
            for g in groups:
                yield self.pad(rows, g)
            return
        if self._helpers is None:  # only the engine's thread pads: no race
            self._helpers = ThreadPoolExecutor(1, thread_name_prefix="crossrank-pad")
        fut = self._helpers.submit(self.pad, rows, groups[0])
        for k in range(len(groups)):
            batch = fut.result()
            if k + 1 < len(groups):
                fut = self._helpers.submit(self.pad, rows, groups[k + 1])
            yield batch

    # -- submitting ---------------------------------------------------------------------------

    def check_capacity(self, max_queued: int) -> None:
        """Raise Overloaded if max_queued tokens are already queued (cheap: before tokenizing)."""
        queued = self._queued
        if queued >= max_queued:
            raise self._overloaded(queued, max_queued)

    def submit(self, rows: batching.Rows, deadline: float = math.inf,
               max_queued: int | None = None) -> Job:
        """Queue rows; their logits arrive in the job's future. With max_queued, refuse them
        (Overloaded) if they would take the queue over it (a part alone larger than the bound
        is accepted into an empty queue)."""
        job = Job(rows=rows, tokens=int(rows.offsets[-1]), deadline=deadline)
        with self._cond:
            if not (self._accepting and self._alive):
                raise Unavailable("the scorer is not running (shut down or failed)")
            if (max_queued is not None and self._queued > 0
                    and self._queued + job.tokens > max_queued):
                raise self._overloaded(self._queued, max_queued)
            self._queue.append(job)
            self._queued += job.tokens
            self._notify_queued()
            self._cond.notify()
        return job

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
        rows = batching.Rows.concat([job.rows for job in live])
        owners = np.repeat(np.arange(len(live)), [len(job.rows) for job in live])
        out = np.zeros(len(rows), dtype=np.float32)
        groups = self.plan(rows.lengths)

        def run(batch: batching.Batch) -> None:
            if all(live[k].abandoned for k in set(owners[batch.positions].tolist())):
                return  # nobody is waiting for these rows any more
            t0 = time.perf_counter()
            out[batch.positions] = self.session.run(batch)[: len(batch.positions)]
            dt = time.perf_counter() - t0
            real = batch.real_tokens
            with self._stats:
                for h in self._hooks:
                    h.batch(batch.rows, real, batch.rows * batch.width)
                if dt > 0:
                    self._rate = 0.9 * self._rate + 0.1 * (real / dt)

        try:
            if self.policy.lanes > 1 and len(groups) > 1:
                self._run_lanes(rows, groups, run)
            else:
                for batch in self.iter_batches(rows, groups):
                    run(batch)
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
            n = len(job.rows)
            _settle(job, result=out[start:start + n].copy())
            start += n

    def _run_lanes(self, rows: batching.Rows, groups: Sequence[np.ndarray],
                   run: Callable[[batching.Batch], None]) -> None:
        """The round's batches on `lanes` threads at once, each lane taking the next batch in
        plan order as it finishes one; rows land in disjoint places. The first failure stops
        every lane and is raised here."""
        lanes = self.policy.lanes
        if self._lanes is None:  # only the engine's thread starts lanes: no race
            self._lanes = ThreadPoolExecutor(lanes, thread_name_prefix="crossrank-lane")
        lock = threading.Lock()
        todo = iter(groups)
        failed: list[BaseException] = []

        def lane() -> None:
            while True:
                with lock:
                    group = None if failed else next(todo, None)
                if group is None:
                    return
                try:
                    run(self.pad(rows, group))
                except BaseException as exc:
                    with lock:
                        failed.append(exc)
                    return

        for fut in [self._lanes.submit(lane) for _ in range(min(lanes, len(groups)))]:
            fut.result()
        if failed:
            raise failed[0]

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
