"""The precision cascade (runtime/core/cascade.py): exact fp32 top-k from int8 plus a re-scored window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank.runtime.core import cascade, fidelity
from crossrank.runtime.core.options import ScoreOptions, ScoreRequest
from crossrank.runtime.scorer import Scorer
from tests.helpers import app_for, shipped_int8


def merged(fp32: np.ndarray, int8: np.ndarray, k: int,
           bound: float) -> tuple[np.ndarray, int, int]:
    """What the service answers: int8 scores with every round's window replaced by fp32's; the
    pairs re-scored and the rounds it took."""
    exact = np.full(len(int8), np.nan)
    rounds = 0
    while len(pos := cascade.window(int8, k, bound, exact)):
        assert np.isnan(exact[pos]).all()  # a round never re-scores a pair twice
        exact[pos] = fp32[pos]
        rounds += 1
    known = ~np.isnan(exact)
    out = int8.copy()
    out[known] = exact[known]
    return out, int(known.sum()), rounds


def single_window(int8: np.ndarray, k: int, bound: float) -> int:
    """Pairs the one-round cascade re-scored: every int8 score within 2E of the k-th best."""
    if k >= len(int8):
        return len(int8)
    kth = np.sort(int8)[::-1][k - 1]
    return int((int8 >= kth - 2 * bound).sum())


@pytest.mark.parametrize("seed", range(40))
def test_the_top_k_is_fp32s_whenever_the_error_is_within_the_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k, bound = int(rng.integers(5, 300)), int(rng.integers(1, 20)), 0.3
    fp32 = rng.normal(0, 3, n)
    if seed % 2:  # near-ties around the k-th place, where int8 misorders most
        fp32[: n // 2] = fp32[0] + rng.normal(0, 0.05, n // 2)
    int8 = fp32 + rng.uniform(-bound, bound, n)  # every error within the bound
    out, rescored, rounds = merged(fp32, int8, k, bound)
    top = fidelity.order(fp32)[:k]
    assert fidelity.order(out)[:k].tolist() == top.tolist()
    assert np.array_equal(out[top], fp32[top])
    assert k <= rescored <= single_window(int8, k, bound) or n < k
    assert rounds <= 2


def test_the_rounds_re_score_fewer_pairs_than_one_wide_window() -> None:
    # the 1,000-pair version of the property test above, errors up to the bound: the rounds
    # never re-score more than the single 2E window, and on such requests clearly fewer
    rng = np.random.default_rng(0)
    rounds_total = single_total = 0
    for _ in range(200):
        fp32 = rng.normal(0, 3, 100)
        int8 = fp32 + rng.uniform(-0.3, 0.3, 100)
        out, rescored, _ = merged(fp32, int8, 10, 0.3)
        assert fidelity.order(out)[:10].tolist() == fidelity.order(fp32)[:10].tolist()
        rounds_total += rescored
        single_total += single_window(int8, 10, 0.3)
    assert rounds_total < 0.9 * single_total


def test_the_window_is_everything_for_small_requests_and_narrow_for_clear_ones() -> None:
    x = np.array([3.0, 1.0, 2.0])
    assert cascade.window(x, 5, 0.1).tolist() == [0, 1, 2]
    done = np.array([3.0, 1.0, 2.0])
    assert len(cascade.window(x, 5, 0.1, done)) == 0
    clear = np.arange(100, dtype=np.float64)  # gaps of 1, bound 0.1: only the top 10 are close
    assert len(cascade.window(clear, 10, 0.1)) == 10
    assert len(cascade.window(clear, 10, 2.0)) == 12  # round 1: within 2 of the 10th best (90)
    exact = np.full(100, np.nan)
    exact[88:] = clear[88:] - 2.0  # fp32 2 lower everywhere: its 10th best is 88
    assert cascade.window(clear, 10, 2.0, exact).tolist() == [86, 87]  # round 2: int8 >= 86
    exact[86:88] = clear[86:88] - 2.0
    assert len(cascade.window(clear, 10, 2.0, exact)) == 0  # fp32's top 10 is known


def test_stats_count_what_was_rescored() -> None:
    s = cascade.CascadeStats()
    s.add(100, 12)
    s.add(50, 8)
    assert s.as_dict() == {"requests": 2, "pairs": 150, "rescored": 20, "rescored_share": 0.1333}


def test_exact_top_k_must_be_positive() -> None:
    from crossrank.runtime.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="exact_top_k"):
        ScoreOptions(exact_top_k=0)


def test_cascade_serves_fp32s_top_k_on_the_trained_fixture(realistic_dir: Path) -> None:
    from fixtures import prose

    shipped_int8(realistic_dir)
    bound = json.loads((realistic_dir / "manifest.json").read_text())[
        "variants"]["int8"]["verification"]["error"]["bound"]
    f32 = Scorer.from_dir(realistic_dir, variant="fp32")
    with Scorer.from_dir(realistic_dir, variant="int8", cascade=10) as cas:
        assert cas.info is not None and cas.info.cascade_k == 10
        assert cas.info.cascade_bound == bound
        for r in prose.requests("test")[:4]:
            chunks = list(r.passages)
            want = f32.score(r.query, chunks)[:10]
            got = cas.score(r.query, chunks)[:10]
            assert [i for i, _ in got] == [i for i, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
            # a request naming its own k gets that many exact
            three = cas.score_request(ScoreRequest(r.query, chunks, ScoreOptions(exact_top_k=3)))
            ref = f32.logits(r.query, chunks)
            top3 = fidelity.order(ref)[:3]
            assert fidelity.order(three.logits)[:3].tolist() == top3.tolist()
        stats = cas.describe()["cascade"]
        assert stats["requests"] == 8 and 0 < stats["rescored"] <= stats["pairs"] == 800
        # pairs of many queries (CrossEncoder.predict) want every score: no cascade there
        pairs = [(r.query, r.passages[0]) for r in prose.requests("test")[:3]]
        assert np.allclose(cas.predict(pairs), Scorer.from_dir(realistic_dir, variant="int8",
                                                               int8_check=False).predict(pairs))
    f32.close()


def test_each_shape_asks_for_its_own_top_k() -> None:
    from crossrank.runtime.core.options import RequestLimits
    from crossrank.runtime.http import api

    lim = RequestLimits(max_chunks=1000, overflow_default="truncate")
    docs = ["a", "b", "c", "d"]
    assert api.parse_score({"query": "q", "chunks": docs}, lim).request.options.exact_top_k is None
    assert api.parse_score({"query": "q", "chunks": docs, "exact_top_k": 2},
                           lim).request.options.exact_top_k == 2
    assert api.parse_documents({"query": "q", "documents": docs, "top_n": 3},
                               lim).request.options.exact_top_k == 3
    assert api.parse_documents({"query": "q", "documents": docs, "top_n": 0},
                               lim).request.options.exact_top_k is None  # 0: all, no k
    assert api.parse_cohere({"query": "q", "documents": docs, "top_n": 1}, lim,
                            "v2").request.options.exact_top_k == 1
    assert api.parse_mixedbread({"query": "q", "input": docs, "top_k": 2, "exact_top_k": 4},
                                lim).request.options.exact_top_k == 4  # the explicit one wins
    from crossrank.runtime.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="exact_top_k"):
        api.parse_score({"query": "q", "chunks": docs, "exact_top_k": 0}, lim)


def test_the_server_serves_the_cascade_and_counts_it(realistic_dir: Path) -> None:

    from starlette.testclient import TestClient

    from crossrank.runtime.settings import Settings
    from fixtures import prose

    shipped_int8(realistic_dir)
    r = prose.requests("test")[0]
    chunks = list(r.passages)
    with Scorer.from_dir(realistic_dir, variant="fp32") as f32:
        want = f32.score(r.query, chunks)[:5]
    cas = Scorer.from_dir(realistic_dir, cascade=10)
    with TestClient(app_for(cas, Settings())) as client:
        got = client.post("/rerank", json={"query": r.query, "documents": chunks, "top_n": 5,
                                           "return_documents": False, "raw_scores": True})
        assert got.status_code == 200
        results = got.json()["results"]
        assert [x["index"] for x in results] == [i for i, _ in want]
        assert np.allclose([x["relevance_score"] for x in results], [s for _, s in want],
                           atol=1e-5)
        info = client.get("/info").json()
        assert info["cascade"]["k"] == 10 and info["cascade"]["requests"] == 1
        assert 5 <= info["cascade"]["rescored"] <= 100
        metrics = client.get("/metrics").text
        assert "crossrank_cascade_pairs_total 100.0" in metrics
        assert "crossrank_cascade_rescored_pairs_total" in metrics
        # the start-up int8 self-check's verdict (exported on this CPU: reproduced)
        assert info["int8_check"]["status"] == "passed"
        assert f'how="{info["int8_check"]["how"]}",status="passed"}} 1.0' in metrics
    cas.close()
