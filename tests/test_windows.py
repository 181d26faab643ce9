"""overflow='split': windows over long chunks, max aggregation, caps, and the truncation report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from crossrank.runtime.core import batching
from crossrank.runtime.core.errors import LimitExceeded
from crossrank.runtime.core.options import ScoreOptions, ScoreRequest, WindowLimits
from crossrank.runtime.scorer import Scorer
from tests.helpers import app_for, reloaded, row, split

QUERY = "Who was the first person to walk on the moon?"
FILLER = "The committee met on Tuesday to review the annual budget. " * 60  # ~720 tokens
ANSWER = "Neil Armstrong was the first person to walk on the moon in July 1969."


@pytest.fixture(scope="module")
def scorer(realistic_dir: Path) -> Scorer:
    return Scorer.from_dir(realistic_dir, variant="fp32")


def split_logits(scorer: Scorer, chunks: list[str]) -> np.ndarray:
    """Logits with overflow='split': an over-long chunk scores as its best window."""
    request = ScoreRequest(QUERY, chunks, ScoreOptions(overflow="split"))
    return scorer.score_request(request).logits


def windows_by_hand(scorer: Scorer, query: str, chunk: str, stride: int) -> list[np.ndarray]:
    """[CLS] q [SEP] window [SEP] built from token ids, independent of the splitter."""
    tok = scorer.tokenizer.library
    q = tok.encode(query, add_special_tokens=False).ids
    c = tok.encode(chunk, add_special_tokens=False).ids
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    width = scorer.tokenizer.max_length - len(q) - 3
    rows = []
    start = 0
    while True:
        w = c[start:start + width]
        rows.append(np.array([cls_id, *q, sep_id, *w, sep_id]))
        if start + width >= len(c):
            break
        start += width - stride
    return rows


def test_answer_past_the_limit(scorer: Scorer) -> None:
    long_chunk = FILLER + ANSWER
    chunks = [long_chunk, "Bread needs flour and water.", ANSWER]
    truncated = scorer.logits(QUERY, chunks)
    split = split_logits(scorer, chunks)
    # truncate: the long chunk scores as its head (the answer is cut off)
    head = scorer.tokenizer.encode(QUERY, [long_chunk])
    assert head.lengths[0] == 512
    assert truncated[0] == pytest.approx(scorer.logits(QUERY, [long_chunk])[0], abs=1e-5)
    # split: the best window, computed here from token ids
    rows = windows_by_hand(scorer, QUERY, long_chunk, 128)
    assert len(rows) >= 2
    types = []
    for r in rows:
        t = np.zeros(len(r), dtype=np.int64)
        t[int(np.flatnonzero(r == r[-1])[0]) + 1:] = 1  # segment 1 after the first [SEP]
        types.append(t)
    direct = [scorer.engine.session.run(batching.pad(batching.Rows.from_lists([r], [t]), np.array([0])))[0]
              for r, t in zip(rows, types, strict=True)]
    assert split[0] == pytest.approx(max(direct), abs=1e-4)
    # short chunks are untouched
    assert np.abs(split[1:] - truncated[1:]).max() <= 1e-5
    # the first window is exactly the truncated pair, so split can only score higher
    assert direct[0] == pytest.approx(truncated[0], abs=1e-4)
    assert split[0] >= truncated[0] - 1e-5


def test_windows_fit_and_cover_every_token(scorer: Scorer) -> None:
    tok = scorer.tokenizer
    chunk = " ".join(f"w{i}" for i in range(1500))
    enc = split(tok, WindowLimits(64, 16, 100), QUERY, [chunk, "short"])
    assert enc.owner is not None and enc.n_chunks == 2
    assert (enc.lengths <= tok.max_length).all()
    chunk_ids = tok.library.encode(chunk, add_special_tokens=False).ids
    seen: list[int] = []
    for i, own in enumerate(enc.owner):
        ids, tids = row(enc.rows, i)
        if own == 0:  # segment 1 minus the final [SEP]
            seen.extend([t for t, ty in zip(ids, tids, strict=True) if ty == 1][:-1])
    # every token of the chunk appears, in order, with overlaps between windows
    assert set(chunk_ids) <= set(seen)
    assert len(seen) > len(chunk_ids)
    assert enc.owner.tolist().count(1) == 1


def test_window_caps(scorer: Scorer) -> None:
    chunk = "moon " * 3000
    with pytest.raises(LimitExceeded, match="per chunk"):
        split(scorer.tokenizer, WindowLimits(128, 2, 100), QUERY, [chunk])
    with pytest.raises(LimitExceeded, match="per request"):
        split(scorer.tokenizer, WindowLimits(128, 16, 10), QUERY, [chunk, chunk])


def test_split_and_report_over_http(scorer: Scorer) -> None:
    long_chunk = FILLER + ANSWER
    chunks = [long_chunk, "Bread needs flour and water."]
    with TestClient(app_for(reloaded(scorer, max_windows_per_chunk=3))) as c:
        plain = c.post("/score", json={"query": QUERY, "chunks": chunks})
        assert "x-truncated-count" not in plain.headers  # off by default: the seed's bytes
        reported = c.post("/score", json={"query": QUERY, "chunks": chunks,
                                          "report_truncation": True})
        assert reported.headers["x-truncated-count"] == "1"
        assert reported.headers["x-truncated-chunks"].startswith("0:")
        assert reported.json() == plain.json()
        parts = c.post("/score", json={"query": QUERY, "chunks": chunks, "overflow": "split"})
        expected = split_logits(scorer, chunks)
        assert dict((i, s) for i, s in parts.json())[0] == pytest.approx(float(expected[0]),
                                                                        abs=1e-5)
        for path, body in [("/rerank", {"query": QUERY, "texts": chunks}),
                           ("/v2/rerank", {"query": QUERY, "documents": chunks})]:
            r = c.post(path, json={**body, "overflow": "split", "report_truncation": True})
            assert r.status_code == 200 and r.headers["x-truncated-count"] == "0"
        too_long = c.post("/score", json={"query": QUERY, "chunks": ["moon " * 3000],
                                          "overflow": "split"})
        assert too_long.status_code == 422 and "windows" in too_long.json()["error"]
        bad = c.post("/score", json={"query": QUERY, "chunks": ["a"], "overflow": "chop"})
        assert bad.status_code == 422
        limits = c.get("/info").json()["limits"]
        assert limits["max_windows_per_chunk"] == 3 and limits["overflow_default"] == "truncate"


def test_query_too_long_for_a_window_falls_back_to_truncation(scorer: Scorer) -> None:
    long_query = "moon " * 600
    enc = split(scorer.tokenizer, WindowLimits(128, 16, 100), long_query, [FILLER, "short"],
                with_truncation=True)
    assert enc.owner is not None and enc.owner.tolist() == [0, 1]
    assert enc.truncated is not None and (enc.truncated > 0).all()  # both pairs were cut
    assert (enc.lengths == 512).all()
