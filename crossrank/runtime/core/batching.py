"""Length-bucketed, token-budgeted batches (pure functions over lengths and arrays).

The budget counts padding: a batch costs rows x its longest row. Sorting by length keeps that
close to the real token count; each batch is padded only to its own longest row and the caller's
order is restored at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for some pairs plus their positions in the caller's list."""

    input_ids: np.ndarray  # int64 [rows, width]
    attention_mask: np.ndarray  # int64 [rows, width]
    token_type_ids: np.ndarray  # int64 [rows, width]
    positions: np.ndarray  # int64 [rows], index of each row in the caller's list

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask[: len(self.positions)].sum())


def padded_width(lengths: np.ndarray, multiple: int = 1, cap: int = 0) -> np.ndarray:
    """The width a row of each length is padded to: rounded up to `multiple`, at most `cap`
    (when given) unless the row itself is longer."""
    lens = np.asarray(lengths, dtype=np.int64)
    if multiple <= 1:
        return lens
    width = -(-lens // multiple) * multiple
    return np.maximum(lens, np.minimum(width, cap)) if cap else width


def plan(lengths: Sequence[int] | np.ndarray, token_budget: int, max_rows: int,
         multiple: int = 1, cap: int = 0) -> list[np.ndarray]:
    """Group indices into batches: ascending length, rows x padded width <= token_budget.

    The padded width is the longest row rounded as pad() will round it. A single row longer than
    the budget still gets a batch of its own. Ties keep index order, so the plan is deterministic.
    """
    if token_budget < 1 or max_rows < 1:
        raise ValueError("token_budget and max_rows must be positive")
    lens = padded_width(np.asarray(lengths, dtype=np.int64), multiple, cap)
    order = np.argsort(lens, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        end = start + 1
        while end < n and end - start < max_rows and (end - start + 1) * int(lens[order[end]]) <= token_budget:
            end += 1
        groups.append(order[start:end])
        start = end
    return groups


def slices_by_size(sizes: Sequence[int] | np.ndarray, parts: int) -> list[np.ndarray]:
    """Positions in ascending size (ties by position), cut into at most `parts` consecutive runs,
    none empty: the first holds about half the total size of each of the others.

    The CUDA pipeline tokenizes one run while the device scores the previous one: a small first
    run starts the device early, equal runs after it keep each run's tokenizing shorter than the
    device's work on the run before, and runs of similar lengths plan into batches as tightly as
    the whole request would (the plan sorts by length anyway). Character counts are a good
    enough size before tokenizing (bench/studies/overlap_sim.py measured these choices).
    """
    w = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(w, kind="stable")
    if len(order) == 0:
        return []
    cum = np.cumsum(np.maximum(w[order], 1))  # empty texts still cost a row
    k = max(1, parts)
    shares = (np.arange(1, k) - 0.5) / (k - 0.5)  # cumulative: 0.5, 1.5, 2.5 ... of k - 0.5
    cuts = np.unique(np.searchsorted(cum, cum[-1] * shares, side="right"))
    cuts = cuts[(cuts > 0) & (cuts < len(order))]
    return [part for part in np.split(order, cuts) if len(part)]


def ragged_range(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    return np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lens), lens) + np.arange(total)


def offsets_for(lengths: np.ndarray) -> np.ndarray:
    """Row offsets [0, l0, l0 + l1, ...] for rows of these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class Rows:
    """Token rows stored back to back: row i is ids[offsets[i]:offsets[i + 1]].

    One flat array per field instead of one small array per row: building, joining and padding
    them is a handful of numpy calls whatever the row count.
    """

    ids: np.ndarray  # int64, all rows' token ids
    type_ids: np.ndarray  # int64, segment ids, same shape as ids
    offsets: np.ndarray  # int64 [rows + 1], offsets[0] == 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, ids: Sequence[Any], type_ids: Sequence[Any] | None) -> Rows:
        """From per-row sequences of ints (lists, arrays, the library's encodings' ids);
        type_ids None leaves every segment id 0."""
        offsets = offsets_for(np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids)))
        total = int(offsets[-1])
        flat_ids = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total)
        flat_types = (np.zeros(total, dtype=np.int64) if type_ids is None else
                      np.fromiter(itertools.chain.from_iterable(type_ids), dtype=np.int64,
                                  count=total))
        return cls(ids=flat_ids, type_ids=flat_types, offsets=offsets)

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        if len(parts) == 1:
            return parts[0]
        shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, dtype=np.int64)]
                                 + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)])
        return cls(ids=np.concatenate([p.ids for p in parts]),
                   type_ids=np.concatenate([p.type_ids for p in parts]), offsets=offsets)

    def select(self, positions: np.ndarray) -> Rows:
        """The given rows, in the given order."""
        pos = np.asarray(positions, dtype=np.int64)
        lens = self.lengths[pos]
        src = ragged_range(self.offsets[pos], lens)
        return Rows(ids=self.ids[src], type_ids=self.type_ids[src], offsets=offsets_for(lens))


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


def pad(rows: Rows, positions: np.ndarray, pad_id: int = 0, multiple: int = 1,
        cap: int = 0, row_multiple: int = 1) -> Batch:
    """Pad the selected rows to the longest among them, rounded up to `multiple` but never
    beyond `cap` (when given) unless a row itself is longer; then add filler rows (one pad token)
    up to a multiple of `row_multiple` rows. Rounding keeps the number of distinct batch shapes
    small, which kernels that plan per shape (cuDNN attention) need. Filler rows are not in
    `positions`: their outputs are dropped."""
    pos = np.asarray(positions, dtype=np.int64)
    lens = rows.lengths[pos]
    width = int(padded_width(lens.max(keepdims=True), multiple, cap)[0])
    n = len(pos)
    total = -(-n // row_multiple) * row_multiple if row_multiple > 1 else n
    src = ragged_range(rows.offsets[pos], lens)
    dst = ragged_range(np.arange(n, dtype=np.int64) * width, lens)
    input_ids = np.full((total, width), pad_id, dtype=np.int64)
    input_ids.reshape(-1)[dst] = rows.ids[src]
    token_type = np.zeros((total, width), dtype=np.int64)
    token_type.reshape(-1)[dst] = rows.type_ids[src]
    filled = np.concatenate([lens, np.ones(total - n, dtype=np.int64)])
    mask = (np.arange(width, dtype=np.int64) < filled[:, None]).astype(np.int64)
    return Batch(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type, positions=pos)
