"""What tokenizes texts alone: nanotoken where it is installed and gives the tokenizers library's
ids on the probe texts, else the library; large batches are sharded over threads.

The library stays the reference: nanotoken is only used after it agrees on every probe text, and
a tokenizer file nanotoken cannot read falls back with one log line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from crossrank.runtime.core.batching import Rows
from crossrank.runtime.core.choices import TOKENIZER_BACKENDS
from crossrank.runtime.core.errors import ConfigError

log = logging.getLogger(__name__)

# Below this many items one encode_batch call is fastest; above it, shards run on threads.
SHARD_MIN = 64


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


class TextEncoder:
    """Texts alone (no special tokens) as flat Rows, on the chosen backend; `map` runs a library
    batch call over shards on threads (encode_batch releases the GIL, which parallelises even
    where the library's own thread pool is disabled)."""

    def __init__(self, library: Tokenizer, source: Path, backend: str = "auto",
                 threads: int = 1) -> None:
        if backend not in TOKENIZER_BACKENDS:
            raise ConfigError(f"tokenizer backend must be one of {', '.join(TOKENIZER_BACKENDS)}, "
                              f"not {backend!r}")
        self.library = library  # untruncated, unpadded
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads.
        self._alone_fn = getattr(library, "encode_batch_fast", None) or library.encode_batch
        self._nano = _load_nanotoken(library, source) if backend != "tokenizers" else None
        if backend == "nanotoken" and self._nano is None:
            raise ConfigError(f"tokenizer backend nanotoken was asked for but is not usable for "
                              f"{source} (not installed, not WordPiece, or it disagrees "
                              "with the tokenizers library; the log says which)")

    @property
    def name(self) -> str:
        """'nanotoken' or 'tokenizers'."""
        return "nanotoken" if self._nano is not None else "tokenizers"

    def encode(self, texts: list[str]) -> Rows:
        """Each text's tokens on its own, without special tokens; segment ids 0."""
        if self._nano is not None:
            ids, offsets = self._nano.encode_batch(texts, add_special_tokens=False,
                                                   parallel=self.threads > 1)
            flat = ids.astype(np.int64)
            return Rows(ids=flat, type_ids=np.zeros(len(flat), dtype=np.int64),
                        offsets=offsets.astype(np.int64))
        encs = self.map(lambda part: self._alone_fn(part, add_special_tokens=False), texts)
        return Rows.from_lists([e.ids for e in encs], None)

    def map(self, fn: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any]) -> list[Any]:
        """fn over items (a library batch call), in shards on threads when there are many."""
        n = len(items)
        if self.threads < 2 or n < SHARD_MIN:
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
