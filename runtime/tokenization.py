"""Pair encoding with the Rust tokenizers library, truncated exactly like CrossEncoder.predict."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from runtime.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Unpadded token ids and segment ids per pair, with lengths known before any padding."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    lengths: np.ndarray  # int64, tokens per pair after truncation
    truncated: np.ndarray | None  # int64, tokens cut from each pair; None unless asked for


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
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="crossrank-tokenize")
        step = -(-n // self.threads)
        shards = [pairs[i:i + step] for i in range(0, n, step)]
        out: list[Any] = []
        for part in self._pool.map(self._tok.encode_batch, shards):
            out.extend(part)
        return out

    def tokenize_alone(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of a text's tokens on its own, without special tokens."""
        return list(self._full.encode(text, add_special_tokens=False).offsets)

    def full_length(self, pair: tuple[str, str]) -> int:
        """Tokens the pair would have without truncation."""
        return len(self._full.encode(pair[0], pair[1]).ids)
