"""The int8 gate's measures (runtime/core/fidelity.py) and the exporter's check set, without a model."""

from __future__ import annotations

import numpy as np
import pytest

from crossrank.export import checkset
from crossrank.runtime.core import fidelity


def scores(seed: int = 0, n: int = 100) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, n)


def test_ndcg_of_binary_labels() -> None:
    labels = np.array([0, 1, 0, 1] + [0] * 20)
    perfect = labels.astype(float)
    assert fidelity.ndcg_at(perfect, labels) == pytest.approx(1.0)
    worst = -perfect
    assert fidelity.ndcg_at(worst, labels) == 0.0  # both relevant ranked last, past the top 10
    first_only = np.zeros(24)
    first_only[1] = 1.0  # index 1 first; the other relevant one (3) stays at rank 4 by index
    # DCG = 1/log2(2) + 1/log2(5) (ranks 1 and 4); ideal = 1 + 1/log2(3)
    assert fidelity.ndcg_at(first_only, labels) == pytest.approx(
        (1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert fidelity.mrr(perfect, labels) == 1.0 and fidelity.mrr(worst, labels) == pytest.approx(
        1 / 23)


def test_the_measures_ignore_the_score_scale() -> None:
    ref = scores()
    got = ref + np.random.default_rng(1).normal(0, 0.2, len(ref))
    a = fidelity.judge(ref, got, [0] * len(ref))
    b = fidelity.judge(5 * ref - 3, 5 * got - 3, [0] * len(ref))  # affine: same ranking
    assert a.worst_graded_ndcg == pytest.approx(b.worst_graded_ndcg)
    assert a.clear_misses == b.clear_misses
    assert a.mean_abs_error_over_spread == pytest.approx(b.mean_abs_error_over_spread)


def test_swapping_a_near_tie_is_no_clear_miss_but_a_real_swap_is() -> None:
    ref = np.linspace(10, -10, 100)
    ref[10] = ref[9] - 1e-3  # fp32's 10th and 11th: a near-tie
    tie = ref.copy()
    tie[9], tie[10] = ref[10], ref[9]
    assert fidelity.clear_misses(ref, tie) == 0
    assert fidelity.widest_swap(ref, tie) == pytest.approx(1e-3 / ref.std())
    assert fidelity.widest_swap(ref, ref) == 0.0
    assert fidelity.ndcg_at(tie, fidelity.graded_gains(ref)) > 0.9999
    far = ref.copy()
    far[0] = -100.0  # fp32's best falls out of the top 10
    # the best is out (a clear miss); the 11th comes in, a near-tie of the 10th (not one)
    assert fidelity.clear_misses(ref, far) == 1
    j = fidelity.judge(ref, far, [0] * 100)
    assert not j.passed and j.worst_top10_overlap == 9


def test_judge_per_request_and_labels() -> None:
    ref = np.concatenate([scores(2), scores(3)])
    groups = [0] * 100 + [1] * 100
    labels = (ref > 4).astype(int).tolist()  # fp32 ranks the labels: quality is enforced
    same = fidelity.judge(ref, ref.copy(), groups, labels)
    assert same.passed and same.requests == 2 and same.quality_kept == pytest.approx(1.0)
    assert same.labels_enforced and same.clear_misses == 0 and same.worst_top10_overlap == 10
    shuffled = ref.copy()
    shuffled[100:] = np.random.default_rng(4).permutation(shuffled[100:])
    bad = fidelity.judge(ref, shuffled, groups, labels)
    assert not bad.passed and bad.clear_misses > 0 and bad.quality_kept is not None
    assert bad.quality_kept < 0.9
    # labels a model cannot rank (fp32 NDCG below the floor): recorded, not enforced
    worst = [int(i in (int(np.argmin(ref[:100])), 100 + int(np.argmin(ref[100:]))))
             for i in range(200)]  # the one relevant passage is fp32's last, in both requests
    noise = fidelity.judge(ref, ref.copy(), groups, worst)
    assert noise.fp32_ndcg is not None and not noise.labels_enforced and noise.passed
    assert "quality kept" in fidelity.bounds() and "bound" in same.as_dict()


def labelled_requests(n: int = 8) -> tuple[np.ndarray, list[int], list[int]]:
    """n requests of 100 passages: 3 relevant among fp32's top 5 and 2 near fp32's rank 10."""
    ref, groups, labels = [], [], []
    for q in range(n):
        r = scores(10 + q)
        rank = fidelity.order(r)
        lab = np.zeros(len(r), dtype=int)
        lab[rank[[0, 2, 4, 8, 11]]] = 1
        ref.append(r)
        groups += [q] * len(r)
        labels += lab.tolist()
    return np.concatenate(ref), groups, labels


def test_quality_kept_is_judged_against_chance() -> None:
    ref, groups, labels = labelled_requests()
    std = float(np.std(ref[:100]))
    # an error unrelated to relevance, about int8's size (3-4% of the spread): chance keeps as much
    noise = np.random.default_rng(5).normal(0, 0.04 * std, len(ref))
    fair = fidelity.judge(ref, ref + noise, groups, labels)
    assert fair.labels_enforced and fair.quality_kept_chance_p is not None
    assert fair.quality_kept_chance_p >= fidelity.MIN_CHANCE_P and fair.passed, fair
    assert fair.quality_kept_by_chance == pytest.approx(fair.quality_kept, abs=0.05)
    # the same noise, but every relevant passage also pushed down by 0.08 x std: inside the
    # near-tie margin (no clear miss), yet chance would almost never lose this much
    lowered = ref + noise - 0.08 * std * np.asarray(labels)
    bad = fidelity.judge(ref, lowered, groups, labels)
    assert bad.clear_misses == 0 and bad.worst_graded_ndcg >= fidelity.MIN_GRADED_NDCG, bad
    assert bad.quality_kept is not None and fair.quality_kept is not None
    assert bad.quality_kept < fair.quality_kept
    assert bad.quality_kept_chance_p is not None
    assert bad.quality_kept_chance_p < fidelity.MIN_CHANCE_P and not bad.passed, bad
    # the draws are seeded: every machine judges the same errors the same way
    again = fidelity.judge(ref, lowered, groups, labels)
    assert again.quality_kept_chance_p == bad.quality_kept_chance_p
    # no labels enforced (the serving self-check): recorded without drawing chance
    quiet = fidelity.judge(ref, lowered, groups, labels, label_bound=False)
    assert quiet.quality_kept_chance_p is None and quiet.quality_kept == bad.quality_kept


def test_the_chance_of_no_error_is_certain() -> None:
    ref, groups, labels = labelled_requests(2)
    lab = np.asarray(labels, dtype=float)
    reqs = [(ref[:100], np.zeros(100), lab[:100]), (ref[100:], np.zeros(100), lab[100:])]
    fp32 = float(np.mean([fidelity.ndcg_at(ref[:100], lab[:100]),
                          fidelity.ndcg_at(ref[100:], lab[100:])]))
    ratios = fidelity.chance_ratios(reqs, fp32, draws=50)
    assert len(ratios) == 50 and ratios == pytest.approx(1.0)  # every draw keeps fp32's ranking
    assert fidelity.chance_p(ratios, 1.0) == 1.0 and fidelity.chance_p(ratios, 0.9) == 1 / 51


def test_the_check_set_is_real_prose_with_labels() -> None:
    sets = {name: checkset.load(name) for name in checkset.SETS}
    queries = {name: {q for q, _ in cs.pairs} for name, cs in sets.items()}
    assert not queries["ranking"] & queries["held_out"]  # disjoint questions
    for cs in sets.values():
        assert len(cs.pairs) == 800 and sorted(set(cs.groups)) == list(range(8))
        for g in range(8):
            idx = [i for i, x in enumerate(cs.groups) if x == g]
            assert len(idx) == 100 and 1 <= sum(cs.labels[i] for i in idx) <= 20
        assert all(len(p.split()) >= 20 for _, p in cs.pairs)  # passages, not fragments
        assert len({p for _, p in cs.pairs}) > 300  # lists differ per query
    assert "pydoc_data" in checkset.describe()["source"]
    with pytest.raises(ValueError, match="ranking"):
        checkset.load("nope")


def test_the_fixture_corpus_is_frozen_not_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trained fixture's data must not move when a dependency is added or upgraded (one
    added package once flipped its int8 verdict): it comes from the committed snapshot, never
    from the installed packages, and it is independent of the exporter's check set."""
    import importlib.metadata as md

    from fixtures import prose

    monkeypatch.setattr(md, "distributions", lambda: iter(()))
    prose.packages.cache_clear()
    try:
        pk = prose.packages()
    finally:
        prose.packages.cache_clear()
    assert len(pk) >= 90 and [p.name for p in pk] == sorted(p.name for p in pk)
    assert {prose.split_of(p.name) for p in pk} == {"train", "dev", "test"}
    check = {p for name in checkset.SETS for _, p in checkset.load(name).pairs}
    assert not check & {s for p in pk for s in p.passages}
