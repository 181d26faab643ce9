"""The only glue: tokenization -> batching -> session -> sorted scores."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.runtime import batching, modeldir
from crossrank.runtime.errors import ConfigError, InvalidRequest
from crossrank.runtime.session import Session, resolve_provider, usable_cores
from crossrank.runtime.tokenization import Encoded, PairTokenizer

log = logging.getLogger(__name__)

ACTIVATIONS = ("model", "identity", "sigmoid")
# Requests up to this many chunks are tokenized in one go even when pipelining.
SLICE_MIN_CHUNKS = 64


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def rank(scores: np.ndarray) -> list[tuple[int, float]]:
    """(index, score) sorted by score descending, ties by index ascending, plain Python floats."""
    s = np.asarray(scores)
    order = np.lexsort((np.arange(len(s)), -s.astype(np.float64)))
    return [(int(i), float(s[i])) for i in order]


@dataclass(frozen=True)
class ScorerInfo:
    """What a Scorer serves, for /info and logs."""

    model_dir: str
    name: str
    source: str
    stand_in: bool
    variant: str
    provider: str
    threads: int
    max_length: int
    activation: str
    token_budget: int
    max_rows: int
    pad_multiple: int = 1
    row_multiple: int = 1
    pipeline: bool = False


class Scorer:
    """Scores (query, chunk) pairs with an exported cross-encoder. Thread-safe."""

    def __init__(self, tokenizer: PairTokenizer, session: Session, *, activation: str,
                 token_budget: int, max_rows: int, pad_token_id: int = 0,
                 info: ScorerInfo | None = None, pipeline: bool = False,
                 slices: int = 6, pad_multiple: int = 1, row_multiple: int = 1) -> None:
        if activation not in ("identity", "sigmoid"):
            raise ConfigError(f"activation must be identity or sigmoid, not {activation!r}")
        if token_budget < 1 or max_rows < 1:
            raise ConfigError("token_budget and max_rows must be positive integers")
        self.tokenizer = tokenizer
        self.session = session
        self.activation = activation
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.pad_token_id = pad_token_id
        self.info = info
        self._lock = threading.Lock()  # one inference at a time: the session owns all cores
        # pipeline: pad the next batch and tokenize the next slice of a large request while the
        # accelerator runs the current batch (ONNX Runtime releases the GIL while it runs).
        self.pipeline = pipeline
        self.slices = slices  # parts a large request is tokenized in (see slice_request)
        # Batch widths rounded up to pad_multiple tokens and row counts to row_multiple rows:
        # fewer distinct shapes for kernels that plan per shape (see batching.pad).
        self.pad_multiple = pad_multiple
        self.row_multiple = row_multiple
        self._helpers: ThreadPoolExecutor | None = None  # created on first pipelined call
        self._helpers_lock = threading.Lock()

    @classmethod
    def from_dir(cls, path: Path | str, *, variant: str = "auto", provider: str = "auto",
                 threads: int | None = None, token_budget: int | None = None,
                 max_rows: int | None = None, activation: str = "model",
                 check_hash: bool = True, spin: bool = True,
                 pipeline: bool | None = None) -> Scorer:
        """Load an exported model directory, checking its manifest and files first.
        pipeline None: on with CUDA (tokenizing and padding overlap the device), off on CPUs."""
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        md = modeldir.load(path)
        prov = resolve_provider(provider)
        chosen = md.choose_variant(variant, prov)
        model_file = md.model_file(chosen, check_hash=check_hash)
        gpu = prov == "cuda"
        # On a GPU box the CPU cores are free to tokenize; on a CPU box ORT owns them.
        tok = PairTokenizer(md.tokenizer_file(), md.max_length,
                            threads=usable_cores() if gpu else 1)
        sess = Session(model_file, provider=prov, threads=threads, spin=spin)
        budget = token_budget or (batching.GPU_TOKEN_BUDGET if gpu else batching.CPU_TOKEN_BUDGET)
        if max_rows is None and chosen == "int8":
            # Dynamic int8 takes activation scales from the whole batch, so a pair's score would
            # move with its batch-mates; one row per run makes it depend on the pair alone, at no
            # measurable cost on CPUs (README, "int8 determinism").
            rows = 1
        else:
            rows = max_rows or (batching.GPU_MAX_ROWS if gpu else batching.CPU_MAX_ROWS)
        act = md.activation if activation == "model" else activation
        pad_multiple = batching.GPU_PAD_MULTIPLE if gpu else 1
        row_multiple = batching.GPU_ROW_MULTIPLE if gpu else 1
        if md.stand_in:
            log.warning("%s is a STAND-IN model with random weights: its scores are meaningless "
                        "(offline trials and benchmarks only)", md.path)
        info = ScorerInfo(model_dir=str(md.path), name=md.name, source=md.source,
                          stand_in=md.stand_in, variant=chosen, provider=prov,
                          threads=sess.info.threads, max_length=md.max_length, activation=act,
                          token_budget=budget, max_rows=rows, pad_multiple=pad_multiple,
                          row_multiple=row_multiple,
                          pipeline=gpu if pipeline is None else pipeline)
        log.info("serving %s (%s, %s, %d threads)", md.name, chosen, prov, sess.info.threads)
        return cls(tok, sess, activation=act, token_budget=budget, max_rows=rows,
                   pad_token_id=md.pad_token_id, info=info, pipeline=info.pipeline,
                   pad_multiple=pad_multiple, row_multiple=row_multiple)

    # -- the stages, public so the server can batch across requests ---------------------------

    def encode(self, query: str, chunks: Sequence[str]) -> Encoded:
        """Tokenize one request's pairs (validated: strings only)."""
        self.validate(query, chunks)
        return self.tokenizer.encode(query, list(chunks))

    @staticmethod
    def validate(query: str, chunks: Sequence[str]) -> None:
        """Raise InvalidRequest unless the query and every chunk are strings."""
        if not isinstance(query, str):
            raise InvalidRequest("query must be a string")
        for i, c in enumerate(chunks):
            if not isinstance(c, str):
                raise InvalidRequest(f"chunks[{i}] must be a string")

    def logits_encoded(self, rows: batching.Rows) -> np.ndarray:
        """float32 logits for encoded rows, in their given order."""
        n = len(rows)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        groups = self.plan(rows.lengths)
        batches: list[batching.Batch] = []
        results: list[np.ndarray] = []
        for b in self.iter_batches(rows, groups):
            batches.append(b)
            results.append(self.run_batch(b))
        return batching.restore(n, batches, results)

    def iter_batches(self, rows: batching.Rows,
                     groups: Sequence[np.ndarray]) -> Iterator[batching.Batch]:
        """Padded batches in plan order; with pipelining, the next is padded during this one."""
        args = (self.pad_token_id, self.pad_multiple, self.tokenizer.max_length,
                self.row_multiple)
        if not self.pipeline or len(groups) < 2:
            for g in groups:
                yield batching.pad(rows, g, *args)
            return
        pool = self._helper_pool()
        fut = pool.submit(batching.pad, rows, groups[0], *args)
        for k in range(len(groups)):
            batch = fut.result()
            if k + 1 < len(groups):
                fut = pool.submit(batching.pad, rows, groups[k + 1], *args)
            yield batch

    def _helper_pool(self) -> ThreadPoolExecutor:
        # Two threads: one tokenizes the next slice while the other pads the next batch.
        with self._helpers_lock:
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(2, thread_name_prefix="crossrank-prep")
            return self._helpers

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Batches for rows of these lengths, with this scorer's budget and padding."""
        return batching.plan(lengths, self.token_budget, self.max_rows, self.pad_multiple,
                             self.tokenizer.max_length)

    def run_batch(self, batch: batching.Batch) -> np.ndarray:
        """Logits for one padded batch's own rows (the server's worker plans batches across
        requests); filler rows are dropped."""
        with self._lock:
            return self.session.run(batch)[: len(batch.positions)]

    @staticmethod
    def per_chunk(logits: np.ndarray, enc: Encoded) -> np.ndarray:
        """One logit per chunk: a split chunk scores as the best of its windows."""
        if enc.owner is None or enc.n_chunks is None or enc.n_chunks == len(logits):
            return logits
        out = np.full(enc.n_chunks, -np.inf, dtype=np.float32)
        np.maximum.at(out, enc.owner, logits)
        return out

    def split(self, query: str, chunks: Sequence[str], stride: int = 128,
              max_per_chunk: int = 16, max_total: int = 2000) -> np.ndarray:
        """Logits with overflow='split': over-long chunks scored as the max over windows."""
        enc = self.tokenizer.encode_windows(query, list(chunks), stride, max_per_chunk, max_total)
        return self.per_chunk(self.logits_encoded(enc.rows), enc)

    def apply_activation(self, logits: np.ndarray, activation: str | None = None) -> np.ndarray:
        """Scores as the caller asked: the model's activation by default."""
        act = activation or self.activation
        if act == "sigmoid":
            return sigmoid(logits)
        return np.asarray(logits, dtype=np.float32)

    # -- the simple API -------------------------------------------------------------------------

    def logits(self, query: str, chunks: Sequence[str]) -> np.ndarray:
        """Raw float32 logits, one per chunk, in the caller's order."""
        self.validate(query, chunks)
        parts = self.slice_request(chunks)
        if len(parts) < 2:
            return self.logits_encoded(self.tokenizer.encode(query, list(chunks)).rows)
        return self._logits_sliced(query, chunks, parts)

    def slice_request(self, chunks: Sequence[str]) -> list[np.ndarray]:
        """How a request is tokenized when pipelining: chunk positions in runs of similar length
        and equal size (batching.slices_by_size); one run holding everything otherwise."""
        if not self.pipeline or len(chunks) <= SLICE_MIN_CHUNKS or self.slices < 2:
            return [np.arange(len(chunks))]
        sizes = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        return batching.slices_by_size(sizes, self.slices)

    def _logits_sliced(self, query: str, chunks: Sequence[str],
                       parts: list[np.ndarray]) -> np.ndarray:
        # A helper thread tokenizes the runs in order; this thread scores, each time, every run
        # tokenized so far as one plan (as the server's worker does with its queue), so the
        # device starts after the first run and small runs still fill large batches.
        ready: queue.SimpleQueue[tuple[int, Encoded | BaseException]] = queue.SimpleQueue()
        stop = threading.Event()

        def produce() -> None:
            for k, idx in enumerate(parts):
                if stop.is_set():
                    return
                try:
                    ready.put((k, self.tokenizer.encode(query, [chunks[i] for i in idx])))
                except BaseException as exc:  # handed to the scoring thread, raised there
                    ready.put((k, exc))
                    return

        self._helper_pool().submit(produce)
        out = np.zeros(len(chunks), dtype=np.float32)
        left = len(parts)
        try:
            while left:
                got = [ready.get()]
                while not ready.empty():
                    got.append(ready.get())
                encs: list[Encoded] = []
                for _, item in got:
                    if isinstance(item, BaseException):
                        raise item
                    encs.append(item)
                positions = np.concatenate([parts[k] for k, _ in got])
                out[positions] = self.logits_encoded(batching.Rows.concat([e.rows for e in encs]))
                left -= len(got)
        finally:
            stop.set()
        return out

    def predict(self, pairs: Sequence[tuple[str, str]], activation: str | None = None) -> np.ndarray:
        """Scores for arbitrary pairs in order, like CrossEncoder.predict."""
        enc = self.tokenizer.encode_pairs([(q, c) for q, c in pairs])
        return self.apply_activation(self.logits_encoded(enc.rows), activation)

    def score(self, query: str, chunks: Sequence[str],
              activation: str | None = None) -> list[tuple[int, float]]:
        """[(index, score)] sorted by score descending, ties by index; the seed's contract."""
        if len(chunks) == 0:
            return []
        return rank(self.apply_activation(self.logits(query, chunks), activation))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for /info."""
        return dict(self.info.__dict__) if self.info else {}
