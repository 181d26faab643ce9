"""Pair encoding with the Rust tokenizers library, truncated exactly like CrossEncoder.predict."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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
    truncated: np.ndarray  # int64, tokens cut from each pair (0 when it fitted)


class PairTokenizer:
    """Encodes (query, chunk) pairs: [CLS] query [SEP] chunk [SEP], longest-first truncation."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
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

    def encode(self, query: str, chunks: list[str]) -> Encoded:
        """Encode one query against many chunks."""
        return self.encode_pairs([(query, c) for c in chunks])

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> Encoded:
        """Encode arbitrary pairs; ids are int64 arrays, one per pair."""
        encs = self._tok.encode_batch(pairs)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        type_ids = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        truncated = np.zeros(len(ids), dtype=np.int64)
        # Only a pair at the limit can have been cut; re-encode just those without truncation.
        for i in np.flatnonzero(lengths >= self.max_length):
            truncated[i] = self.full_length(pairs[i]) - lengths[i]
        return Encoded(ids=ids, type_ids=type_ids, lengths=lengths, truncated=truncated)

    def tokenize_alone(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of a text's tokens on its own, without special tokens."""
        return list(self._full.encode(text, add_special_tokens=False).offsets)

    def full_length(self, pair: tuple[str, str]) -> int:
        """Tokens the pair would have without truncation."""
        return len(self._full.encode(pair[0], pair[1]).ids)
