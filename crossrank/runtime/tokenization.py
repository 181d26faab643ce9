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

from crossrank.runtime import batching
from crossrank.runtime.batching import Rows
from crossrank.runtime.errors import ConfigError, LimitExceeded, ModelLoadError
from crossrank.runtime.settings import TOKENIZER_BACKENDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Unpadded token rows for pairs, with lengths known before any padding."""

    rows: Rows
    truncated: np.ndarray | None  # int64, tokens cut from each pair; None unless asked for
    # With overflow="split" one chunk may become several rows (windows): owner[row] is its chunk.
    owner: np.ndarray | None = None
    n_chunks: int | None = None

    @property
    def lengths(self) -> np.ndarray:
        """int64 tokens per row after truncation."""
        return self.rows.lengths

    @property
    def n_rows(self) -> int:
        return len(self.rows)


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


# Below this many texts one encode_batch call is fastest; above it, shards run on threads.
_SHARD_MIN = 64
BACKENDS = TOKENIZER_BACKENDS


def probe_texts() -> list[str]:
    """Texts on which a second tokenizer must give the library's ids before it is used: plain
    and mixed-case prose, accents, CJK, Cyrillic, Arabic, emoji, control, zero-width and
    right-to-left marks, punctuation runs, numbers, very long words, empty and blank texts."""
    prose = ["Who was the first person to walk on the moon?",
             "Neil Armstrong was the first person to walk on the moon in July 1969.",
             "How do I read a file line by line in Python?",
             "Use a with statement so the file is closed even if an exception is raised.",
             "Coffee brews best with water between 90 and 96 degrees Celsius.",
             "Photosynthesis converts light, water and carbon dioxide into glucose and oxygen.",
             "The Western Roman Empire is usually said to have fallen in 476 AD.",
             "mRNA vaccines instruct cells to make a harmless piece of a viral protein.",
             "Rust's borrow checker forbids a mutable borrow while shared borrows are alive.",
             "Quarterly earnings beat analysts' expectations by a wide margin.",
             "The recipe calls for two cups of flour and a pinch of salt."]
    odd = ["", " ", "\t\n", "a", "A.B.C.", "don't stop-believing!!", "3.14159, 2,718 and 1e-9",
           "CamelCaseWords and snake_case_words", "x" * 300, "supercalifragilistic" * 12,
           "naïve café façade Ünïcödé ß ÀÉÎÕÜ", "東京は日本の首都です。", "Москва — столица",
           "العربية لغة جميلة", "emoji 🚀🌕👩‍🚀 text", "zero\u200bwidth\u200cjoin\u200d",
           "rtl \u202eevil\u202c mark", "control \x00\x01\x07\x1f chars", "soft\u00adhyphen",
           "tab\tand\nnewline\r\n", "((([[[{{{!!!???...}}}]]])))", "ﬁ ligature ﬀ", "Ⅻ ① ²",
           "mixed 中文 and English 和 数字 123", "\u0301combining first", "e\u0301 vs é",
           "[CLS] [SEP] [PAD] [MASK] [UNK]", "##subword ##prefix", "http://example.com/a?b=c",
           "user@example.com", "€100 £5 ¥300 $7", " leading and trailing spaces ",
           "한국어 텍스트", "ελληνικά κείμενα", "עברית", "हिन्दी पाठ", "ไทย"]
    return prose + odd + [" ".join(prose + odd)]


def _load_nanotoken(reference: Tokenizer, source: Path) -> Any:
    """nanotoken's WordPiece tokenizer for this file when it is installed, supports it and gives
    the library's ids on the probe texts; else None, with one log line saying why."""
    try:
        import nanotoken
    except ImportError:
        log.info("nanotoken is not installed: tokenizing with the tokenizers library "
                 "(`pip install 'crossrank[fast]'` for the faster tokenizer)")
        return None
    try:
        nano = nanotoken.WordPieceTokenizer.from_json(reference.to_str())
    except Exception as exc:  # UnsupportedTokenizerError for non-WordPiece models, and others
        log.info("nanotoken cannot read %s (%s): tokenizing with the tokenizers library",
                 source, str(exc)[:200])
        return None
    texts = probe_texts()
    ids, offsets = nano.encode_batch(texts, add_special_tokens=False, parallel=False)
    ref = reference.encode_batch(texts, add_special_tokens=False)
    for i, e in enumerate(ref):
        if ids[offsets[i]:offsets[i + 1]].tolist() != list(e.ids):
            log.warning("nanotoken disagrees with the tokenizers library on %r for %s: "
                        "tokenizing with the tokenizers library", texts[i][:40], source)
            return None
    return nano


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

    Fast path: each distinct query and each chunk is tokenized alone (the query once per
    request, not once per pair), the pair rows are assembled and truncated with numpy by the
    library's own longest-first rule, and the pair template comes from the tokenizer file. It is
    checked against the library's pair encoding at load time and falls back to that if they ever
    differ.
    """

    def __init__(self, tokenizer_file: Path, max_length: int, threads: int = 1,
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"tokenizer backend must be one of {', '.join(BACKENDS)}, "
                              f"not {backend!r}")
        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for bad files
            raise ModelLoadError(
                f"Cannot read the tokenizer {tokenizer_file}: {exc}. Export the model again "
                "(`crossrank export SOURCE --force`) or restore the file."
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
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads.
        self._alone_fn = getattr(self._full, "encode_batch_fast", None) or self._full.encode_batch
        # Texts alone (no special tokens) as flat rows: nanotoken where it is installed and
        # agrees with the library on the probe texts, else the library.
        self._nano = _load_nanotoken(self._full, tokenizer_file) if backend != "tokenizers" else None
        if backend == "nanotoken" and self._nano is None:
            raise ConfigError(f"tokenizer backend nanotoken was asked for but is not usable for "
                              f"{tokenizer_file} (not installed, not WordPiece, or it disagrees "
                              "with the tokenizers library; the log says which)")
        try:
            self._template = _learn_template(self._full)
        except Exception as exc:  # an odd tokenizer file: the library path still decides
            log.debug("no pair fast path for %s: %s", tokenizer_file, exc)
            self._template = None
        if self._template is not None and self._template.added >= max_length:
            self._template = None  # no room for text: leave such limits to the library
        if self._template is not None and not self._fast_path_agrees():
            log.warning("the pair fast path disagrees with the tokenizer's own pair encoding for "
                        "%s; using the slower library path", tokenizer_file)
            self._template = None

    @property
    def backend(self) -> str:
        """What tokenizes texts alone: 'nanotoken' or 'tokenizers'."""
        return "nanotoken" if self._nano is not None else "tokenizers"

    @property
    def fast(self) -> bool:
        """Whether pairs are assembled from separately tokenized texts (else encoded as pairs)."""
        return self._template is not None

    def _fast_path_agrees(self) -> bool:
        m = self.max_length
        long_a, long_b = "moon tide " * m, "the sea rises " * m
        probes = [("who?", "the moon"), ("", "x"), ("x", ""), ("", ""), (long_a, "short chunk"),
                  ("short query", long_b), (long_a, long_b), ("tides " * (m // 2), long_b),
                  ("Café naïve 東京", "Ünïcödé ß " * 3)]
        ours = self._encode_fast([p[0] for p in probes], np.arange(len(probes)),
                                 [p[1] for p in probes], with_truncation=False)
        ref = self._rows_from(self._tok.encode_batch(probes))
        return bool(np.array_equal(ours.rows.offsets, ref.offsets)
                    and np.array_equal(ours.rows.ids, ref.ids)
                    and np.array_equal(ours.rows.type_ids, ref.type_ids))

    def encode(self, query: str, chunks: list[str], with_truncation: bool = False) -> Encoded:
        """Encode one query against many chunks."""
        if self._template is not None:
            return self._encode_fast([query], np.zeros(len(chunks), dtype=np.int64), chunks,
                                     with_truncation)
        return self._encode_library([(query, c) for c in chunks], with_truncation)

    def encode_pairs(self, pairs: list[tuple[str, str]], with_truncation: bool = False) -> Encoded:
        """Encode arbitrary pairs, one row each, in order.

        with_truncation also counts the tokens each pair lost.
        """
        if self._template is not None:
            index: dict[str, int] = {}
            q_of = np.fromiter((index.setdefault(q, len(index)) for q, _ in pairs),
                               dtype=np.int64, count=len(pairs))
            return self._encode_fast(list(index), q_of, [c for _, c in pairs], with_truncation)
        return self._encode_library(pairs, with_truncation)

    def _encode_fast(self, queries: list[str], q_of: np.ndarray, chunks: list[str],
                     with_truncation: bool) -> Encoded:
        t = self._template
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
        starts[:, 1], lens[:, 1] = q_base + q.offsets[q_of], n1
        starts[:, 2], lens[:, 2] = lp, lm
        starts[:, 3], lens[:, 3] = c_base + c.offsets[:-1], n2
        starts[:, 4], lens[:, 4] = lp + lm, ls
        src = batching.ragged_range(starts.reshape(-1), lens.reshape(-1))
        lengths = lens.sum(axis=1)
        rows = Rows(ids=src_ids[src], type_ids=src_types[src],
                    offsets=batching.offsets_for(lengths))
        truncated = (lq + lc + t.added - lengths) if with_truncation else None
        return Encoded(rows=rows, truncated=truncated)

    def _encode_library(self, pairs: list[tuple[str, str]], with_truncation: bool) -> Encoded:
        rows = self._rows_from(self._encode_texts(pairs, pairs=True))
        truncated: np.ndarray | None = None
        if with_truncation:
            lengths = rows.lengths
            truncated = np.zeros(len(rows), dtype=np.int64)
            # Only a pair at the limit can have been cut; re-encode just those untruncated.
            at_limit = np.flatnonzero(lengths >= self.max_length)
            if len(at_limit):
                full = self._full.encode_batch([pairs[i] for i in at_limit])
                for i, e in zip(at_limit, full, strict=True):
                    truncated[i] = len(e.ids) - lengths[i]
        return Encoded(rows=rows, truncated=truncated)

    def encode_alone(self, texts: list[str]) -> Rows:
        """Each text's tokens on its own, without special tokens; segment ids 0."""
        if self._nano is not None:
            ids, offsets = self._nano.encode_batch(texts, add_special_tokens=False,
                                                   parallel=self.threads > 1)
            flat = ids.astype(np.int64)
            return Rows(ids=flat, type_ids=np.zeros(len(flat), dtype=np.int64),
                        offsets=offsets.astype(np.int64))
        return self._rows_from(self._encode_texts(texts), types=False)

    @staticmethod
    def _rows_from(encs: list[Any], types: bool = True) -> Rows:
        """Flat rows from library encodings (segment ids left 0 when not asked for)."""
        return Rows.from_lists([e.ids for e in encs],
                               [e.type_ids for e in encs] if types else None)

    def _encode_texts(self, items: list[Any], pairs: bool = False) -> list[Any]:
        """Library encodings of texts alone (no special tokens) or of pairs (truncated)."""
        fn: Any = self._tok.encode_batch if pairs else (
            lambda part: self._alone_fn(part, add_special_tokens=False))
        n = len(items)
        if self.threads < 2 or n < _SHARD_MIN:
            return list(fn(items))
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads,
                                                thread_name_prefix="crossrank-tokenize")
            pool = self._pool
        step = -(-n // self.threads)
        out: list[Any] = []
        for part in pool.map(fn, [items[i:i + step] for i in range(0, n, step)]):
            out.extend(part)
        return out

    def encode_windows(self, query: str, chunks: list[str], stride: int, max_per_chunk: int,
                       max_total: int, with_truncation: bool = False,
                       positions: np.ndarray | None = None, counted: int = 0) -> Encoded:
        """Pairs that fit stay one row; a chunk whose pair is too long becomes overlapping
        windows of its tokens, each with the whole query ([CLS] q [SEP] window [SEP]), the
        windows overlapping by `stride` tokens so every token is seen. Caps raise LimitExceeded.

        A query too long to leave room for a window falls back to longest-first truncation.
        When these chunks are one part of a larger request: `positions` are their indices in it
        (for messages) and `counted` the rows its earlier parts made (the cap is per request).
        """
        base = self.encode(query, chunks)
        n = len(chunks)
        # Only a pair at the limit may be too long; the splitter tells which (>1 window).
        at_limit = np.flatnonzero(base.lengths >= self.max_length).tolist()
        splitter = self._splitter(stride) if at_limit else None
        windows: dict[int, list[Any]] = {}
        kept_cut: list[int] = []  # over-long, but the query leaves no room for a window
        total = counted + n
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
                at = c if positions is None else int(positions[c])
                raise LimitExceeded(
                    f"chunk {at} needs {len(wins)} windows; the limit is {max_per_chunk} per "
                    "chunk. Shorten it, or send overflow='truncate'.")
            windows[c] = wins
            total += len(wins) - 1
        if total > max_total:
            raise LimitExceeded(f"the request needs at least {total} windows; the limit is "
                                f"{max_total} per request. Send fewer or shorter chunks, or "
                                "overflow='truncate'.")
        truncated: np.ndarray | None = None
        if with_truncation:
            truncated = np.zeros(n, dtype=np.int64)
            if kept_cut:
                full = self._full.encode_batch([(query, chunks[c]) for c in kept_cut])
                for c, e in zip(kept_cut, full, strict=True):
                    truncated[c] = len(e.ids) - base.lengths[c]
        if not windows:
            return Encoded(rows=base.rows, truncated=truncated,
                           owner=np.arange(n, dtype=np.int64), n_chunks=n)
        # Window rows go after the base rows, then one gather puts every row in chunk order.
        wins = [w for i in sorted(windows) for w in windows[i]]
        extra = Rows.from_lists([w.ids for w in wins], [w.type_ids for w in wins])
        order: list[int] = []
        owner: list[int] = []
        k = n
        for i in range(n):
            if i in windows:
                order.extend(range(k, k + len(windows[i])))
                owner.extend([i] * len(windows[i]))
                k += len(windows[i])
            else:
                order.append(i)
                owner.append(i)
        rows = Rows.concat([base.rows, extra]).select(np.asarray(order, dtype=np.int64))
        return Encoded(rows=rows, truncated=truncated, owner=np.asarray(owner, dtype=np.int64),
                       n_chunks=n)

    def _splitter(self, stride: int) -> Tokenizer:
        with self._lock:
            cached = self._splitters.get(stride)
            if cached is None:
                cached = Tokenizer.from_str(self._full.to_str())
                cached.enable_truncation(max_length=self.max_length, stride=stride,
                                         strategy="only_second")
                self._splitters[stride] = cached
            return cached

    def cut_to_tokens(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text up to the end of its max_tokens-th token of its own (no special tokens)."""
        encs = self._full.encode_batch(texts, add_special_tokens=False)
        return [t if len(e.offsets) <= max_tokens else t[: e.offsets[max_tokens - 1][1]]
                for t, e in zip(texts, encs, strict=True)]
