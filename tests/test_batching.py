"""core/batching.py is pure: plans, padding and row layout, no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank.runtime.core.batching import (
    Batch,
    Rows,
    pad,
    plan,
    ragged_range,
    slices_by_size,
)
from tests.helpers import row


def test_plan_respects_budget_counting_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 512, size=500)
    groups = plan(lengths, token_budget=2048, max_rows=64)
    assert sorted(np.concatenate(groups).tolist()) == list(range(500))
    for g in groups:
        assert len(g) <= 64
        assert len(g) == 1 or len(g) * lengths[g].max() <= 2048


def test_plan_sorts_by_length_and_is_deterministic() -> None:
    lengths = [5, 3, 5, 3, 9]
    groups = plan(lengths, token_budget=100, max_rows=2)
    assert [g.tolist() for g in groups] == [[1, 3], [0, 2], [4]]
    assert [g.tolist() for g in plan(lengths, 100, 2)] == [g.tolist() for g in groups]


def test_row_longer_than_budget_gets_its_own_batch() -> None:
    groups = plan([600, 10, 10], token_budget=256, max_rows=8)
    assert [g.tolist() for g in groups] == [[1, 2], [0]]


def _scatter(n: int, batches: list[Batch], results: list[np.ndarray]) -> np.ndarray:
    """Per-batch outputs back in the caller's order, as the engine puts them (filler rows out)."""
    out = np.full(n, np.nan, dtype=np.float32)
    for b, res in zip(batches, results, strict=True):
        out[b.positions] = res[: len(b.positions)]
    return out


def test_sorting_beats_one_padded_batch() -> None:
    lengths = np.array([30] * 50 + [500] * 5)
    computed = sum(len(g) * int(lengths[g].max()) for g in plan(lengths, 2048, 64))
    assert computed < 0.5 * len(lengths) * 500


def test_invalid_budget() -> None:
    with pytest.raises(ValueError):
        plan([1, 2], token_budget=0, max_rows=1)


def test_pad_round_trip() -> None:
    ids = [np.array([101, 5, 102]), np.array([101, 7, 8, 9, 102]), np.array([101, 102])]
    types = [np.zeros(len(a), dtype=np.int64) for a in ids]
    lengths = [len(a) for a in ids]
    groups = plan(lengths, token_budget=8, max_rows=8)
    batches = [pad(Rows.from_lists(ids, types), g) for g in groups]
    for b in batches:
        assert b.input_ids.shape == b.attention_mask.shape == b.token_type_ids.shape
        assert b.width == max(lengths[i] for i in b.positions)
        for r, i in enumerate(b.positions):
            n = lengths[i]
            assert b.input_ids[r, :n].tolist() == ids[i].tolist()
            assert b.attention_mask[r].sum() == n
    results = [b.input_ids[:, 1].astype(np.float32) for b in batches]
    assert _scatter(3, batches, results).tolist() == [5.0, 7.0, 102.0]


def test_ragged_range() -> None:
    assert ragged_range(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert ragged_range(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).size == 0


def test_rows_concat_select_and_pad_types() -> None:
    a = Rows.from_lists([[1, 2, 3], [4]], [[0, 0, 1], [0]])
    b = Rows.from_lists([[5, 6]], [[1, 1]])
    both = Rows.concat([a, b])
    assert len(both) == 3 and both.lengths.tolist() == [3, 1, 2]
    assert row(both, 2) == ([5, 6], [1, 1])
    picked = both.select(np.array([2, 0]))
    assert picked.ids.tolist() == [5, 6, 1, 2, 3] and picked.type_ids.tolist() == [1, 1, 0, 0, 1]
    batch = pad(both, np.array([1, 2, 0]), pad_id=9)
    assert batch.input_ids.tolist() == [[4, 9, 9], [5, 6, 9], [1, 2, 3]]
    assert batch.token_type_ids.tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert batch.attention_mask.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_pad_rounds_widths_up_within_the_cap() -> None:
    rows = Rows.from_lists([[1] * 5, [2] * 70], [[0] * 5, [0] * 70])
    assert pad(rows, np.array([0]), multiple=64).width == 64
    assert pad(rows, np.array([0, 1]), multiple=64, cap=100).width == 100
    assert pad(rows, np.array([1]), multiple=64, cap=40).width == 70  # never cuts a row
    b = pad(rows, np.array([0]), pad_id=7, multiple=8)
    assert b.input_ids[0].tolist() == [1] * 5 + [7] * 3 and b.attention_mask.sum() == 5


def test_filler_rows_round_the_row_count_and_are_dropped() -> None:
    rows = Rows.from_lists([[1, 2, 3], [4]], [[0, 0, 1], [0]])
    groups = plan(rows.lengths, token_budget=64, max_rows=8, multiple=8, cap=16)
    assert [g.tolist() for g in groups] == [[0, 1]]  # both round to 8: index order
    b = pad(rows, np.array([1, 0]), pad_id=0, multiple=8, cap=16, row_multiple=4)
    assert b.input_ids.shape == (4, 8) and b.positions.tolist() == [1, 0]
    assert b.attention_mask.sum(axis=1).tolist() == [1, 3, 1, 1]  # fillers: one token each
    assert b.real_tokens == 4
    out = _scatter(2, [b], [np.array([10.0, 20.0, -1.0, -1.0], dtype=np.float32)])
    assert out.tolist() == [20.0, 10.0]


def test_plan_counts_rounded_widths() -> None:
    lengths = np.array([10] * 10)
    assert len(plan(lengths, token_budget=160, max_rows=64)) == 1
    assert [len(g) for g in plan(lengths, token_budget=160, max_rows=64, multiple=64)] == [2] * 5


def test_slices_by_size_cover_every_position_in_size_order() -> None:
    rng = np.random.default_rng(1)
    sizes = rng.integers(0, 3000, size=777)
    parts = slices_by_size(sizes, 6)
    assert len(parts) == 6 and all(len(p) for p in parts)
    flat = np.concatenate(parts)
    assert sorted(flat.tolist()) == list(range(777))
    assert np.all(np.diff(sizes[flat]) >= 0)  # ascending size across and within the runs
    mass = np.array([sizes[p].sum() for p in parts], dtype=float)
    # the first run holds about half of each later one; the later ones about equal
    assert 0.35 < mass[0] / mass[1:].mean() < 0.65
    assert mass[1:].max() / mass[1:].min() < 1.3


def test_slices_by_size_edges() -> None:
    assert slices_by_size([], 4) == []
    assert [p.tolist() for p in slices_by_size([7, 3, 5], 1)] == [[1, 2, 0]]
    assert [p.tolist() for p in slices_by_size([0, 0], 6)] == [[0], [1]]  # no empty runs
    assert [p.tolist() for p in slices_by_size([1, 1000], 4)] == [[0], [1]]
