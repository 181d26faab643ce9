"""pytest-benchmark suite: crossrank on the stand-in L-12, requests of 1, 10, 100, 1000 chunks."""

from __future__ import annotations

from typing import Any

import pytest

from bench.workload import QUERY, chunks, with_overlong
from crossrank.runtime.core.options import DEFAULT_WINDOWS, ScoreOptions, ScoreRequest
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.text.windows import Windows


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
def test_score_request(benchmark: Any, scorer: Scorer, n: int) -> None:
    docs = chunks(n, seed=0)
    tokens = int(scorer.tokenizer.encode(QUERY, docs).lengths.sum())
    rounds = {1: 30, 10: 10, 100: 3, 1000: 1}[n]
    result = benchmark.pedantic(scorer.score, args=(QUERY, docs), rounds=rounds, warmup_rounds=1)
    assert len(result) == n
    median = benchmark.stats.stats.median
    benchmark.extra_info["tokens"] = tokens
    benchmark.extra_info["tokens_per_s"] = round(tokens / median)
    print(f"\n{n} chunks: {tokens} tokens, median {median * 1e3:.1f} ms, "
          f"{tokens / median:,.0f} tokens/s")


def test_small_request_latency(benchmark: Any, scorer: Scorer) -> None:
    # 10 chunks of ~100 tokens: the interactive case; p50 and p99 from the rounds.
    docs = [c for c in chunks(400, seed=5) if 80 <= len(c.split()) <= 110][:10]
    assert len(docs) == 10
    benchmark.pedantic(scorer.score, args=(QUERY, docs), rounds=100, warmup_rounds=3)
    data = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p50_ms"] = round(data[len(data) // 2] * 1e3, 2)
    benchmark.extra_info["p99_ms"] = round(data[int(len(data) * 0.99) - 1] * 1e3, 2)


@pytest.mark.parametrize("overflow", ["truncate", "split"])
def test_overflow_cost(benchmark: Any, scorer: Scorer, overflow: str) -> None:
    # 100 chunks, 20% of them over 512 tokens: what windowed scoring costs over truncation.
    docs = with_overlong(100, 0.2, seed=1)
    options = ScoreOptions(overflow=overflow)
    benchmark.pedantic(lambda: scorer.score_request(ScoreRequest(QUERY, docs, options)),
                       rounds=3, warmup_rounds=1)
    tok = scorer.tokenizer
    enc = tok.encode(QUERY, docs)
    if overflow == "split":
        enc = Windows(tok.library, tok.max_length, DEFAULT_WINDOWS).encode(QUERY, docs, enc)
    benchmark.extra_info["rows"] = enc.n_rows
    benchmark.extra_info["tokens"] = int(enc.lengths.sum())
    print(f"\n{overflow}: {enc.n_rows} rows, {int(enc.lengths.sum())} tokens, "
          f"median {benchmark.stats.stats.median * 1e3:.0f} ms")
