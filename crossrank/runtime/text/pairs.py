"""Pair encoding with the Rust tokenizers library, truncated exactly like CrossEncoder.predict."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from crossrank.runtime.core import batching
from crossrank.runtime.core.batching import Encoded, Rows
from crossrank.runtime.core.errors import ModelLoadError
from crossrank.runtime.text.encoders import TextEncoder

log = logging.getLogger(__name__)


def _longest_first(la: np.ndarray, lb: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens kept of A and B under the tokenizers library's longest-first rule, vectorized.

    Only pairs over the budget change. With s the shorter and l the longer side: keep s whole and
    cut l to budget - s, unless that leaves l shorter than s (or s alone is over the budget);
    then both get half, the odd token going to the side that was longer (B on ties).
    """
    short = np.minimum(la, lb)
    keep_long = np.where(short > budget, short, np.maximum(short, budget - short))
    keep_short = short.copy()
    both = keep_short + keep_long > budget
    keep_short = np.where(both, budget // 2, keep_short)
    keep_long = np.where(both, budget // 2 + budget % 2, keep_long)
    a_longer = la > lb
    over = la + lb > budget
    na = np.where(over, np.where(a_longer, keep_long, keep_short), la)
    nb = np.where(over, np.where(a_longer, keep_short, keep_long), lb)
    return np.minimum(na, la), np.minimum(nb, lb)


@dataclass(frozen=True)
class _Template:
    """The special tokens a pair gets: prefix A middle B suffix, and the segment id of each part."""

    prefix: tuple[tuple[int, int], ...]  # (token id, type id) pairs
    middle: tuple[tuple[int, int], ...]
    suffix: tuple[tuple[int, int], ...]
    type_a: int
    type_b: int

    @property
    def added(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    return -1


def _learn_template(tok: Tokenizer) -> _Template | None:
    """Read the pair template off the tokenizer itself by encoding a probe pair."""
    a = tok.encode("hello", add_special_tokens=False).ids
    b = tok.encode("world", add_special_tokens=False).ids
    e = tok.encode("hello", "world")
    ids, types = list(e.ids), list(e.type_ids)
    if not a or not b:
        return None
    i = _find(ids, a, 0)
    j = _find(ids, b, i + len(a)) if i >= 0 else -1
    if i < 0 or j < 0:
        return None
    ta, tb = set(types[i:i + len(a)]), set(types[j:j + len(b)])
    if len(ta) != 1 or len(tb) != 1:
        return None
    part = list(zip(ids, types, strict=True))
    return _Template(prefix=tuple(part[:i]), middle=tuple(part[i + len(a):j]),
                     suffix=tuple(part[j + len(b):]), type_a=ta.pop(), type_b=tb.pop())


class PairTokenizer:
    """Encodes (query, chunk) pairs: [CLS] query [SEP] chunk [SEP], longest-first truncation.

    Texts alone are tokenized by `texts` (text/encoders.py: nanotoken or the library); long chunks
    become windows in windows.py.

    Fast path: each distinct query and each chunk is tokenized alone (the query once per
    request, not once per pair), the pair rows are assembled and truncated with numpy by the
    library's own longest-first rule, and the pair template comes from the tokenizer file. It is
    checked against the library's pair encoding at load time and falls back to that if they ever
    differ.
    """

    def __init__(self, tokenizer_file: Path, max_length: int, threads: int = 1,
                 backend: str = "auto") -> None:
        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for bad files
            raise ModelLoadError(
                f"Cannot read the tokenizer {tokenizer_file}: {exc}. Export the model again "
                "(`crossrank export SOURCE --force`) or restore the file."
            ) from exc
        # Never trust a tokenizer file's own truncation or padding (some have 128 baked in).
        tok.no_padding()
        self.library = Tokenizer.from_str(tok.to_str())  # untruncated: lengths, windows
        self.library.no_truncation()
        tok.enable_truncation(max_length=max_length, strategy="longest_first", stride=0)
        self._tok = tok
        # truncation_side="left": the same longest-first counts, cut from each text's start.
        self._tok_left = Tokenizer.from_str(self.library.to_str())
        self._tok_left.enable_truncation(max_length=max_length, strategy="longest_first", stride=0,
                                         direction="left")
        self.max_length = max_length
        self.texts = TextEncoder(self.library, tokenizer_file, backend, threads)
        self.template: _Template | None
        try:
            self.template = _learn_template(self.library)
        except Exception as exc:  # an odd tokenizer file: the library path still decides
            log.debug("no pair fast path for %s: %s", tokenizer_file, exc)
            self.template = None
        if self.template is not None and self.template.added >= max_length:
            self.template = None  # no room for text: leave such limits to the library
        if self.template is not None and not (self._fast_path_agrees("right")
                                              and self._fast_path_agrees("left")):
            log.warning("the pair fast path disagrees with the tokenizer's own pair encoding for "
                        "%s; using the slower library path", tokenizer_file)
            self.template = None

    @property
    def backend(self) -> str:
        """What tokenizes texts alone: 'nanotoken' or 'tokenizers'."""
        return self.texts.name

    def _fast_path_agrees(self, side: str) -> bool:
        m = self.max_length
        long_a, long_b = "moon tide " * m, "the sea rises " * m
        probes = [("who?", "the moon"), ("", "x"), ("x", ""), ("", ""), (long_a, "short chunk"),
                  ("short query", long_b), (long_a, long_b), ("tides " * (m // 2), long_b),
                  ("Café naïve 東京", "Ünïcödé ß " * 3)]
        ours = self._encode_fast([p[0] for p in probes], np.arange(len(probes)),
                                 [p[1] for p in probes], False, side)
        ref = self._rows_from(self._library_for(side).encode_batch(probes))
        return bool(np.array_equal(ours.rows.offsets, ref.offsets)
                    and np.array_equal(ours.rows.ids, ref.ids)
                    and np.array_equal(ours.rows.type_ids, ref.type_ids))

    def _library_for(self, side: str) -> Tokenizer:
        return self._tok_left if side == "left" else self._tok

    def encode(self, query: str, chunks: list[str], with_truncation: bool = False,
               side: str = "right") -> Encoded:
        """Encode one query against many chunks; side: which end of an over-long text is cut
        (right keeps its start, as sentence-transformers does; left keeps its end)."""
        if self.template is not None:
            return self._encode_fast([query], np.zeros(len(chunks), dtype=np.int64), chunks,
                                     with_truncation, side)
        return self._encode_library([(query, c) for c in chunks], with_truncation, side)

    def encode_pairs(self, pairs: list[tuple[str, str]], with_truncation: bool = False,
                     side: str = "right") -> Encoded:
        """Encode arbitrary pairs, one row each, in order.

        with_truncation also counts the tokens each pair lost.
        """
        if self.template is not None:
            index: dict[str, int] = {}
            q_of = np.fromiter((index.setdefault(q, len(index)) for q, _ in pairs),
                               dtype=np.int64, count=len(pairs))
            return self._encode_fast(list(index), q_of, [c for _, c in pairs], with_truncation,
                                     side)
        return self._encode_library(pairs, with_truncation, side)

    def _encode_fast(self, queries: list[str], q_of: np.ndarray, chunks: list[str],
                     with_truncation: bool, side: str = "right") -> Encoded:
        t = self.template
        assert t is not None
        q = self.encode_alone(queries)
        c = self.encode_alone(chunks)
        lq, lc = q.lengths[q_of], c.lengths
        n1, n2 = _longest_first(lq, lc, self.max_length - t.added)
        # Each row gathers five runs from one source array: prefix, query, middle, chunk, suffix.
        specials = [*t.prefix, *t.middle, *t.suffix]
        sp_ids = np.asarray([i for i, _ in specials], dtype=np.int64)
        sp_types = np.asarray([ty for _, ty in specials], dtype=np.int64)
        q_base = len(specials)
        c_base = q_base + len(q.ids)
        src_ids = np.concatenate([sp_ids, q.ids, c.ids])
        src_types = np.concatenate([sp_types, np.full(len(q.ids), t.type_a, dtype=np.int64),
                                    np.full(len(c.ids), t.type_b, dtype=np.int64)])
        n = len(chunks)
        lp, lm, ls = len(t.prefix), len(t.middle), len(t.suffix)
        starts = np.empty((n, 5), dtype=np.int64)
        lens = np.empty((n, 5), dtype=np.int64)
        starts[:, 0], lens[:, 0] = 0, lp
        left = side == "left"  # keep each text's last tokens instead of its first
        starts[:, 1], lens[:, 1] = q_base + q.offsets[q_of] + (lq - n1 if left else 0), n1
        starts[:, 2], lens[:, 2] = lp, lm
        starts[:, 3], lens[:, 3] = c_base + c.offsets[:-1] + (lc - n2 if left else 0), n2
        starts[:, 4], lens[:, 4] = lp + lm, ls
        src = batching.ragged_range(starts.reshape(-1), lens.reshape(-1))
        lengths = lens.sum(axis=1)
        rows = Rows(ids=src_ids[src], type_ids=src_types[src],
                    offsets=batching.offsets_for(lengths))
        truncated = (lq + lc + t.added - lengths) if with_truncation else None
        return Encoded(rows=rows, truncated=truncated)

    def _encode_library(self, pairs: list[tuple[str, str]], with_truncation: bool,
                        side: str = "right") -> Encoded:
        rows = self._rows_from(self.texts.map(self._library_for(side).encode_batch, pairs))
        truncated: np.ndarray | None = None
        if with_truncation:
            lengths = rows.lengths
            truncated = np.zeros(len(rows), dtype=np.int64)
            # Only a pair at the limit can have been cut; re-encode just those untruncated.
            at_limit = np.flatnonzero(lengths >= self.max_length)
            if len(at_limit):
                full = self.library.encode_batch([pairs[i] for i in at_limit])
                for i, e in zip(at_limit, full, strict=True):
                    truncated[i] = len(e.ids) - lengths[i]
        return Encoded(rows=rows, truncated=truncated)

    def encode_alone(self, texts: list[str]) -> Rows:
        """Each text's tokens on its own, without special tokens; segment ids 0."""
        return self.texts.encode(texts)

    @staticmethod
    def _rows_from(encs: list[Any]) -> Rows:
        """Flat rows from library pair encodings."""
        return Rows.from_lists([e.ids for e in encs], [e.type_ids for e in encs])

    def cut_to_tokens(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text up to the end of its max_tokens-th token of its own (no special tokens)."""
        encs = self.library.encode_batch(texts, add_special_tokens=False)
        return [t if len(e.offsets) <= max_tokens else t[: e.offsets[max_tokens - 1][1]]
                for t, e in zip(texts, encs, strict=True)]
