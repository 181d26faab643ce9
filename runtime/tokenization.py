"""Pair encoding with the Rust tokenizers library, truncated exactly like CrossEncoder.predict."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from runtime.errors import LimitExceeded, ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Unpadded token ids and segment ids per pair, with lengths known before any padding."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    lengths: np.ndarray  # int64, tokens per pair after truncation
    truncated: np.ndarray | None  # int64, tokens cut from each pair; None unless asked for
    # With overflow="split" one chunk may become several rows (windows): owner[row] is its chunk.
    owner: np.ndarray | None = None
    n_chunks: int | None = None

    @property
    def rows(self) -> int:
        return len(self.ids)


# Below this many pairs one encode_batch call is fastest; above it, shards run on threads.
_SHARD_MIN = 64


class PairTokenizer:
    """Encodes (query, chunk) pairs: [CLS] query [SEP] chunk [SEP], longest-first truncation."""

    def __init__(self, tokenizer_file: Path, max_length: int, threads: int = 1) -> None:
        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for bad files
            raise ModelLoadError(
                f"Cannot read the tokenizer {tokenizer_file}: {exc}. Export the model again "
                "(`make export`) or restore the file."
            ) from exc
        # Never trust a tokenizer file's own truncation or padding (some have 128 baked in).
        tok.no_padding()
        self._full = Tokenizer.from_str(tok.to_str())
        self._full.no_truncation()
        tok.enable_truncation(max_length=max_length, strategy="longest_first", stride=0)
        self._tok = tok
        self.max_length = max_length
        # Shards of a large request are encoded on threads (encode_batch releases the GIL), which
        # parallelises even where the library's own thread pool is disabled.
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._splitters: dict[int, Tokenizer] = {}
        self._lock = threading.Lock()

    def encode(self, query: str, chunks: list[str], with_truncation: bool = False) -> Encoded:
        """Encode one query against many chunks."""
        return self.encode_pairs([(query, c) for c in chunks], with_truncation)

    def encode_pairs(self, pairs: list[tuple[str, str]], with_truncation: bool = False) -> Encoded:
        """Encode arbitrary pairs; ids are int64 arrays, one per pair.

        with_truncation also counts the tokens each pair lost (it re-encodes the pairs that hit
        the limit, so it costs time and is off by default).
        """
        encs = self._encode_batch(pairs)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        type_ids = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        truncated: np.ndarray | None = None
        if with_truncation:
            truncated = np.zeros(len(ids), dtype=np.int64)
            # Only a pair at the limit can have been cut; re-encode just those untruncated.
            at_limit = np.flatnonzero(lengths >= self.max_length)
            if len(at_limit):
                full = self._full.encode_batch([pairs[i] for i in at_limit])
                for i, e in zip(at_limit, full, strict=True):
                    truncated[i] = len(e.ids) - lengths[i]
        return Encoded(ids=ids, type_ids=type_ids, lengths=lengths, truncated=truncated)

    def _encode_batch(self, pairs: list[tuple[str, str]]) -> list[Any]:
        n = len(pairs)
        if self.threads < 2 or n < _SHARD_MIN:
            return list(self._tok.encode_batch(pairs))
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads,
                                                thread_name_prefix="crossrank-tokenize")
            pool = self._pool
        step = -(-n // self.threads)
        shards = [pairs[i:i + step] for i in range(0, n, step)]
        out: list[Any] = []
        for part in pool.map(self._tok.encode_batch, shards):
            out.extend(part)
        return out

    def encode_windows(self, query: str, chunks: list[str], stride: int, max_per_chunk: int,
                       max_total: int, with_truncation: bool = False) -> Encoded:
        """Pairs that fit stay one row; a chunk whose pair is too long becomes overlapping
        windows of its tokens, each with the whole query ([CLS] q [SEP] window [SEP]), the
        windows overlapping by `stride` tokens so every token is seen. Caps raise LimitExceeded.

        A query too long to leave room for a window falls back to longest-first truncation.
        """
        base = self.encode(query, chunks)
        n = len(chunks)
        # Only a pair at the limit may be too long; the splitter tells which (>1 window).
        at_limit = np.flatnonzero(base.lengths >= self.max_length).tolist()
        splitter = self._splitter(stride) if at_limit else None
        windows: dict[int, list[Any]] = {}
        kept_cut: list[int] = []  # over-long, but the query leaves no room for a window
        total = n
        for c in at_limit:
            assert splitter is not None
            try:
                enc = splitter.encode(query, chunks[c])
            except Exception:  # the query leaves no room for a window: keep the truncated row
                kept_cut.append(c)
                continue
            wins = [enc, *enc.overflowing]
            if len(wins) == 1:
                continue  # exactly at the limit: nothing was cut
            if len(wins) > max_per_chunk:
                raise LimitExceeded(
                    f"chunk {c} needs {len(wins)} windows; the limit is {max_per_chunk} per chunk. "
                    "Shorten it, or send overflow='truncate'.")
            windows[c] = wins
            total += len(wins) - 1
        if total > max_total:
            raise LimitExceeded(f"the request needs {total} windows; the limit is {max_total} "
                                "per request. Send fewer or shorter chunks, or overflow='truncate'.")
        truncated: np.ndarray | None = None
        if with_truncation:
            truncated = np.zeros(n, dtype=np.int64)
            if kept_cut:
                full = self._full.encode_batch([(query, chunks[c]) for c in kept_cut])
                for c, e in zip(kept_cut, full, strict=True):
                    truncated[c] = len(e.ids) - base.lengths[c]
        if not windows:
            return Encoded(ids=base.ids, type_ids=base.type_ids, lengths=base.lengths,
                           truncated=truncated, owner=np.arange(n, dtype=np.int64), n_chunks=n)
        ids: list[np.ndarray] = []
        type_ids: list[np.ndarray] = []
        owner: list[int] = []
        for i in range(n):
            if i in windows:
                for w in windows[i]:
                    ids.append(np.asarray(w.ids, dtype=np.int64))
                    type_ids.append(np.asarray(w.type_ids, dtype=np.int64))
                    owner.append(i)
            else:
                ids.append(base.ids[i])
                type_ids.append(base.type_ids[i])
                owner.append(i)
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        return Encoded(ids=ids, type_ids=type_ids, lengths=lengths, truncated=truncated,
                       owner=np.asarray(owner, dtype=np.int64), n_chunks=n)

    def _splitter(self, stride: int) -> Tokenizer:
        with self._lock:
            cached = self._splitters.get(stride)
            if cached is None:
                cached = Tokenizer.from_str(self._full.to_str())
                cached.enable_truncation(max_length=self.max_length, stride=stride,
                                         strategy="only_second")
                self._splitters[stride] = cached
            return cached

    def tokenize_alone(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of a text's tokens on its own, without special tokens."""
        return list(self._full.encode(text, add_special_tokens=False).offsets)

    def cut_to_tokens(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text up to the end of its max_tokens-th token of its own (no special tokens)."""
        encs = self._full.encode_batch(texts, add_special_tokens=False)
        return [t if len(e.offsets) <= max_tokens else t[: e.offsets[max_tokens - 1][1]]
                for t, e in zip(texts, encs, strict=True)]

    def full_length(self, pair: tuple[str, str]) -> int:
        """Tokens the pair would have without truncation."""
        return len(self._full.encode(pair[0], pair[1]).ids)
