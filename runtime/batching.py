"""Length-bucketed, token-budgeted batches (pure functions over lengths and arrays).

The budget counts padding: a batch costs rows x its longest row. Sorting by length keeps that
close to the real token count; each batch is padded only to its own longest row and the caller's
order is restored at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Chosen by measurement on the 2-core dev machine (stand-in L-12, int8, 100-chunk mixed request);
# see README "Batch budgets". Small batches keep activations in cache on CPUs.
CPU_TOKEN_BUDGET = 2048
CPU_MAX_ROWS = 64
GPU_TOKEN_BUDGET = 32768
GPU_MAX_ROWS = 512


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
        return int(self.attention_mask.sum())


def plan(lengths: Sequence[int] | np.ndarray, token_budget: int, max_rows: int) -> list[np.ndarray]:
    """Group indices into batches: ascending length, rows x longest row <= token_budget.

    A single row longer than the budget still gets a batch of its own. Ties keep index order,
    so the plan is deterministic.
    """
    if token_budget < 1 or max_rows < 1:
        raise ValueError("token_budget and max_rows must be positive")
    lens = np.asarray(lengths, dtype=np.int64)
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


def pad(ids: Sequence[np.ndarray], type_ids: Sequence[np.ndarray], positions: np.ndarray,
        pad_id: int = 0) -> Batch:
    """Pad the selected rows to the longest among them."""
    width = max(len(ids[i]) for i in positions)
    rows = len(positions)
    input_ids = np.full((rows, width), pad_id, dtype=np.int64)
    token_type = np.zeros((rows, width), dtype=np.int64)
    mask = np.zeros((rows, width), dtype=np.int64)
    for r, i in enumerate(positions):
        n = len(ids[i])
        input_ids[r, :n] = ids[i]
        token_type[r, :n] = type_ids[i]
        mask[r, :n] = 1
    return Batch(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type,
                 positions=np.asarray(positions, dtype=np.int64))


def restore(n: int, batches: Sequence[Batch], results: Sequence[np.ndarray]) -> np.ndarray:
    """Scatter per-batch scores back into the caller's order."""
    out = np.zeros(n, dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for batch, res in zip(batches, results, strict=True):
        out[batch.positions] = res
        seen[batch.positions] = True
    if not seen.all():
        raise ValueError("some positions were not scored")
    return out


def padded_tokens(lengths: Sequence[int] | np.ndarray, groups: Sequence[np.ndarray]) -> int:
    """Tokens the model will compute for a plan, padding included."""
    lens = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(g) * int(lens[g].max()) for g in groups))
