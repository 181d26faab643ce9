"""Every request shape clients already speak, against one scorer: vLLM's score API and rerank
documents, Infinity's rerank, usage on the Cohere paths, Mixedbread's reranking, truncation from
the left; the original /score bytes unchanged. Bodies recorded from each project's own client
or protocol definition where no client library installs offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from crossrank.runtime.core.options import ScoreOptions, ScoreRequest
from crossrank.runtime.core.scores import sigmoid
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.settings import Settings
from tests.fake import fake_scorer
from tests.helpers import app_for

QUERY = "Who was the first person to walk on the moon?"
DOCS = [
    "The moon landing was watched by millions around the world.",
    "Neil Armstrong was the first person to walk on the moon in 1969.",
    "The moon orbits the Earth every 27 days.",
]
LONG = "The committee met on Tuesday to review the annual budget. " * 60  # ~720 tokens


@pytest.fixture(scope="module")
def scorer(fake_model_dir: Path) -> Scorer:
    return fake_scorer(fake_model_dir)


@pytest.fixture(scope="module")
def client(scorer: Scorer) -> Iterator[TestClient]:
    with TestClient(app_for(scorer, Settings()), raise_server_exceptions=False) as c:
        yield c


def tokens(scorer: Scorer, query: str, docs: list[str]) -> int:
    return int(scorer.tokenizer.encode(query, docs).lengths.sum())


def error(r: Any, status: int = 422) -> str:
    assert r.status_code == status, r.text
    message: str = r.json()["error"]
    return message


def test_the_original_score_bytes_are_unchanged(client: TestClient, scorer: Scorer) -> None:
    r = client.post("/score", json={"query": QUERY, "chunks": DOCS})
    want = json.dumps([[i, s] for i, s in scorer.score(QUERY, DOCS)], separators=(",", ":"))
    assert r.content == want.encode() and r.headers["content-type"] == "application/json"
    # Pinned: the whole path (parse, tokenize, batch, the fake runner's IEEE arithmetic,
    # render, JSON) gives these bytes on every CPU.
    assert r.content == (b"[[1,1.2503911256790161],[0,0.1098417192697525],"
                         b"[2,-0.09460638463497162]]")


# -- vLLM's score API --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_vllm_score_one_text_1_against_many(client: TestClient, scorer: Scorer, path: str) -> None:
    # As vLLM's own example client posts it.
    r = client.post(path, json={"model": "BAAI/bge-reranker-v2-m3", "text_1": QUERY,
                                "text_2": DOCS, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["object"] == "list" and body["model"] == "BAAI/bge-reranker-v2-m3"
    assert body["id"].startswith("score-") and isinstance(body["created"], int)
    logits = scorer.logits(QUERY, DOCS)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]  # pair order, not sorted
    assert all(d["object"] == "score" for d in body["data"])
    assert [d["score"] for d in body["data"]] == pytest.approx(sigmoid(logits).tolist(), abs=1e-6)
    n = tokens(scorer, QUERY, DOCS)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0}
    raw = client.post(path, json={"text_1": [QUERY], "text_2": DOCS, "use_activation": False})
    assert [d["score"] for d in raw.json()["data"]] == pytest.approx(logits.tolist(), abs=1e-6)
    single = client.post(path, json={"text_1": QUERY, "text_2": DOCS[1]}).json()["data"]
    assert len(single) == 1 and single[0]["score"] == pytest.approx(
        float(sigmoid(logits[1:2])[0]), abs=1e-6)


def test_vllm_score_zipped_pairs_are_many_queries_in_one_call(client: TestClient,
                                                              scorer: Scorer) -> None:
    queries = [QUERY, "How long is a lunar orbit?", "Who watched the landing?"]
    r = client.post("/v1/score", json={"text_1": queries, "text_2": DOCS})
    assert r.status_code == 200, r.text
    want = sigmoid(scorer.predict(list(zip(queries, DOCS, strict=True)), activation="identity"))
    assert [d["score"] for d in r.json()["data"]] == pytest.approx(want.tolist(), abs=1e-6)


def test_vllm_score_refusals_name_the_fields(client: TestClient) -> None:
    assert "text_1" in error(client.post("/score", json={"text_1": ["a", "b"],
                                                          "text_2": ["x", "y", "z"]}))
    mixed = error(client.post("/score", json={"query": "q", "chunks": ["a"], "text_1": "q",
                                              "text_2": ["a"]}))
    assert all(f"'{f}'" in mixed for f in ("query", "chunks", "text_1", "text_2"))
    assert "truncate_prompt_tokens" in error(client.post("/v1/score", json={
        "text_1": "q", "text_2": ["a"], "truncate_prompt_tokens": 10}))
    assert "'text_2' is required" in error(client.post("/score", json={"text_1": "q"}))
    assert error(client.post("/score", json={"text_1": {"q": 1}, "text_2": "a"})) == (
        "'text_1' must be a string or a list of strings")
    assert "'text_2[1]' must be a string" in error(client.post("/score", json={
        "text_1": "q", "text_2": ["a", 2]}))
    assert "'query' is required" in error(client.post("/score", json={"chunks": ["a"]}))


# -- /rerank with documents (vLLM, Infinity) -----------------------------------------------------------

# Recorded: what vLLM's rerank example and Infinity's client send (neither installs offline).
VLLM_RERANK = {"model": "BAAI/bge-reranker-base", "query": QUERY, "documents": DOCS, "top_n": 2}
INFINITY_RERANK = {"query": QUERY, "documents": DOCS, "return_documents": True,
                   "raw_scores": False, "model": "mixedbread-ai/mxbai-rerank-xsmall-v1",
                   "top_n": None}


def test_rerank_documents_shape(client: TestClient, scorer: Scorer) -> None:
    order = [i for i, _ in scorer.score(QUERY, DOCS)]
    logits = scorer.logits(QUERY, DOCS)
    r = client.post("/rerank", json=VLLM_RERANK)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "results", "usage"}
    assert body["model"] == "BAAI/bge-reranker-base" and body["object"] == "rerank"
    assert [x["index"] for x in body["results"]] == order[:2]
    for x in body["results"]:  # vLLM's answer always carries the document, as an object
        assert set(x) == {"index", "relevance_score", "document"}
        assert x["document"] == {"text": DOCS[x["index"]]}
        assert x["relevance_score"] == pytest.approx(float(sigmoid(logits)[x["index"]]), abs=1e-6)
    n = tokens(scorer, QUERY, DOCS)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    inf = client.post("/rerank", json=INFINITY_RERANK).json()
    assert [x["index"] for x in inf["results"]] == order
    # Infinity's request carries return_documents; its answer has bare strings
    assert all(x["document"] == DOCS[x["index"]] for x in inf["results"])
    without = client.post("/rerank", json={**INFINITY_RERANK, "return_documents": False}).json()
    assert all("document" not in x for x in without["results"])
    objects = client.post("/rerank", json={"query": QUERY, "raw_scores": True, "top_n": 0,
                                           "return_documents": True,
                                           "documents": [{"text": d} for d in DOCS]}).json()
    assert all(x["document"] == {"text": DOCS[x["index"]]} for x in objects["results"])
    assert [x["relevance_score"] for x in objects["results"]] == pytest.approx(
        sorted(logits.tolist(), reverse=True), abs=1e-6)
    unnamed = client.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()
    assert unnamed["model"] == scorer.info.name


def test_infinity_client_with_only_base_url_changed(client: TestClient, scorer: Scorer) -> None:
    pytest.importorskip("infinity_client")
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput

    inf = Client(base_url="http://testserver")
    inf.set_httpx_client(client)
    res = rerank.sync(client=inf, body=RerankInput(query=QUERY, documents=DOCS, top_n=2))
    assert res is not None and not hasattr(res, "detail"), res
    order = [i for i, _ in scorer.score(QUERY, DOCS)]
    assert [r.index for r in res.results] == order[:2]
    # asking for documents back: Infinity's client reads them as strings
    docs = rerank.sync(client=inf, body=RerankInput(query=QUERY, documents=DOCS,
                                                    return_documents=True))
    assert docs is not None and not hasattr(docs, "detail"), docs
    assert [r.document for r in docs.results] == [DOCS[i] for i in order]
    assert res.usage.total_tokens == tokens(scorer, QUERY, DOCS)


def test_rerank_body_with_both_shapes_or_neither_is_a_clear_422(client: TestClient) -> None:
    both = error(client.post("/rerank", json={"query": "q", "texts": ["a"], "documents": ["a"]}))
    assert "'texts'" in both and "'documents'" in both
    neither = error(client.post("/rerank", json={"query": "q"}))
    assert "'texts'" in neither and "'documents'" in neither
    # TEI's shape is unchanged beside it
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "documents": None})
    assert tei.status_code == 200 and set(tei.json()[0]) == {"index", "score"}


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_paths_carry_usage(client: TestClient, scorer: Scorer, path: str) -> None:
    # Jina- and vLLM-style clients post this shape here and read usage.total_tokens.
    body = client.post(path, json={"model": "jina-reranker-v2-base-multilingual",
                                   "query": QUERY, "documents": DOCS, "top_n": 1}).json()
    assert body["usage"]["total_tokens"] == tokens(scorer, QUERY, DOCS)
    assert "meta" in body and len(body["results"]) == 1


# -- Mixedbread ------------------------------------------------------------------------------------

def test_mixedbread_sdk_with_only_base_url_changed(client: TestClient, scorer: Scorer) -> None:
    mixedbread = pytest.importorskip("mixedbread")
    mx = mixedbread.Mixedbread(api_key="k", base_url="http://testserver", http_client=client)
    res = mx.rerank(model="mixedbread-ai/mxbai-rerank-large-v2", query=QUERY, input=DOCS,
                    top_k=2, return_input=True)
    order = [i for i, _ in scorer.score(QUERY, DOCS)]
    assert [d.index for d in res.data] == order[:2]
    assert [d.input for d in res.data] == [DOCS[i] for i in order[:2]]
    assert res.usage.total_tokens == tokens(scorer, QUERY, DOCS) and res.top_k == 2
    assert all(0 < d.score < 1 for d in res.data)


def test_mixedbread_objects_and_refusals(client: TestClient) -> None:
    items = [{"text": d, "id": k} for k, d in enumerate(DOCS)]
    body = client.post("/v1/reranking", json={"query": QUERY, "input": items,
                                              "return_input": True}).json()
    assert body["object"] == "list" and body["return_input"] is True
    assert all(d["input"] == items[d["index"]] and d["object"] == "rank_result"
               for d in body["data"])
    assert "rank_fields" in error(client.post("/v1/reranking", json={
        "query": QUERY, "input": items, "rank_fields": ["title"]}))
    assert "rewrite_query" in error(client.post("/v1/reranking", json={
        "query": QUERY, "input": DOCS, "rewrite_query": True}))


# -- truncation from the left ------------------------------------------------------------------------

def test_left_truncation_keeps_the_end_on_every_shape(client: TestClient, scorer: Scorer) -> None:
    answer = "Neil Armstrong was the first person to walk on the moon in July 1969."
    doc = LONG + answer  # the answer sits past the limit: only left truncation keeps it
    left = scorer.score_request(ScoreRequest(QUERY, [doc], ScoreOptions(truncation_side="left")))
    tail = scorer.tokenizer.encode(QUERY, [doc], side="left")
    head = scorer.tokenizer.encode(QUERY, [doc])
    assert tail.rows.ids.tolist() != head.rows.ids.tolist()  # (the tiny model scores both alike)
    ids = tail.rows.ids.tolist()
    end = scorer.tokenizer.library.encode(answer, add_special_tokens=False).ids
    assert ids[-1 - len(end):-1] == end and tail.lengths[0] == scorer.tokenizer.max_length
    tei = client.post("/rerank", json={"query": QUERY, "texts": [doc], "raw_scores": True,
                                       "truncation_direction": "Left"}).json()
    assert tei[0]["score"] == pytest.approx(float(left.logits[0]), abs=1e-5)
    for path, body in [("/rerank", {"query": QUERY, "documents": [doc]}),
                       ("/score", {"text_1": QUERY, "text_2": [doc]})]:
        r = client.post(path, json={**body, "truncation_side": "left", "use_activation": False})
        got = r.json()["results"][0]["relevance_score"] if "results" in r.json() else \
            r.json()["data"][0]["score"]
        assert got == pytest.approx(float(left.logits[0]), abs=1e-5)


def test_split_windows_with_many_queries(scorer: Scorer) -> None:
    answer = "Neil Armstrong was the first person to walk on the moon in July 1969."
    queries = [QUERY, "What did the committee review?", QUERY]
    texts = [LONG + answer, LONG, "short"]
    split = ScoreOptions(overflow="split")
    got = scorer.score_request(ScoreRequest(queries, texts, split)).logits
    want = [scorer.score_request(ScoreRequest(q, [t], split)).logits[0]
            for q, t in zip(queries, texts, strict=True)]
    assert np.allclose(got, want, atol=1e-5)
