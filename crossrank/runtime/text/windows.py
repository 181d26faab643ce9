"""overflow="split": a chunk too long for the model becomes overlapping windows of its tokens,
each scored with the whole query; the per-chunk and per-request caps are enforced here, worded
for the request that broke them."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from crossrank.runtime.core.batching import Encoded, Rows
from crossrank.runtime.core.errors import LimitExceeded
from crossrank.runtime.core.options import WindowLimits


class Windows:
    """Encodes chunks as windows under these limits for a model that takes `max_length` tokens,
    cutting with (a copy of) the tokenizers library's `library`. Thread-safe."""

    def __init__(self, library: Tokenizer, max_length: int, limits: WindowLimits) -> None:
        self.library = library
        self.max_length = max_length
        self.limits = limits
        self._splitter: Tokenizer | None = None
        self._lock = threading.Lock()

    def encode(self, query: str, chunks: list[str], base: Encoded,
               positions: np.ndarray | None = None, counted: int = 0) -> Encoded:
        """`base`: the pairs encoded as usual (truncated; with the tokens each lost when the
        truncation is to be reported). Pairs that fit stay one row; a chunk
        whose pair is too long becomes overlapping windows of its tokens, each with the whole
        query ([CLS] q [SEP] window [SEP]), the windows overlapping by `stride` tokens so every
        token is seen. Caps raise LimitExceeded.

        A query too long to leave room for a window keeps its truncated row from `base`, and
        the tokens it lost are reported; a split chunk lost none.
        When these chunks are one part of a larger request: `positions` are their indices in it
        (for messages) and `counted` the rows its earlier parts made (the cap is per request).
        """
        lim = self.limits
        n = len(chunks)
        # Only a pair at the limit may be too long; the splitter tells which (>1 window).
        at_limit = np.flatnonzero(base.lengths >= self.max_length).tolist()
        splitter = self.splitter() if at_limit else None
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
            if len(wins) > lim.max_per_chunk:
                at = c if positions is None else int(positions[c])
                raise LimitExceeded(
                    f"chunk {at} needs {len(wins)} windows; the limit is {lim.max_per_chunk} per "
                    "chunk. Shorten it, or send overflow='truncate'.")
            windows[c] = wins
            total += len(wins) - 1
        if total > lim.max_per_request:
            raise LimitExceeded(f"the request needs at least {total} windows; the limit is "
                                f"{lim.max_per_request} per request. Send fewer or shorter "
                                "chunks, or overflow='truncate'.")
        truncated: np.ndarray | None = None
        if base.truncated is not None:
            truncated = np.zeros(n, dtype=np.int64)
            truncated[kept_cut] = base.truncated[kept_cut]
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

    def splitter(self) -> Tokenizer:
        """The library tokenizer that cuts the second text into windows of this stride."""
        with self._lock:
            if self._splitter is None:
                split = Tokenizer.from_str(self.library.to_str())
                split.enable_truncation(max_length=self.max_length,
                                        stride=self.limits.stride, strategy="only_second")
                self._splitter = split
            return self._splitter


def per_text(logits: np.ndarray, enc: Encoded) -> np.ndarray:
    """One logit per text: a text split into windows scores as the best of them."""
    if enc.owner is None or enc.n_chunks is None or enc.n_chunks == len(logits):
        return logits
    out = np.full(enc.n_chunks, -np.inf, dtype=np.float32)
    np.maximum.at(out, enc.owner, logits)
    return out
