"""Every request shape parsed and rendered without a model (http/api.py), the OpenAPI request schemas
built from the same declarations, and the original /score bytes pinned."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from crossrank.runtime.core.errors import InvalidRequest, LimitExceeded
from crossrank.runtime.core.options import RequestLimits, Scored
from crossrank.runtime.core.scores import sigmoid
from crossrank.runtime.http import api
from crossrank.runtime.http.schema import document

LIMITS = RequestLimits(max_chunks=8, overflow_default="truncate")
QUERY = "Who was the first person to walk on the moon?"
DOCS = ["The moon landing was watched by millions.", "Neil Armstrong walked on the moon.",
        "The moon orbits the Earth."]
# The README's example answer: its logits, rendered by the original /score.
LOGITS = np.array([-5.674482345581055, 8.101385116577148, -8.991270065307617], dtype=np.float32)
SCORED = Scored(logits=LOGITS, truncated=None, tokens=42)


def render(call: api.Call, activation: str = "identity") -> Any:
    return api.render(call, SCORED, activation, "served-model")


def test_the_original_score_bytes_are_pinned() -> None:
    call = api.parse_score({"query": QUERY, "chunks": DOCS}, LIMITS)
    assert isinstance(call, api.ScoreCall) and call.request.texts == DOCS
    body = json.dumps(render(call), ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()
    assert body == b"[[1,8.101385116577148],[0,-5.674482345581055],[2,-8.991270065307617]]"
    sig = render(call, activation="sigmoid")  # a model whose own activation is the sigmoid
    assert [i for i, _ in sig] == [1, 0, 2] and 0 < sig[0][1] < 1


def test_vllm_score_api_pairs_and_one_against_many() -> None:
    many = api.parse_score({"text_1": QUERY, "text_2": DOCS, "model": "m"}, LIMITS)
    assert isinstance(many, api.PairsCall) and many.request.query == QUERY
    pairs = api.parse_pairs({"text_1": ["a", "b"], "text_2": ["x", "y"],
                             "use_activation": False, "truncation_side": "left"}, LIMITS)
    assert pairs.request.query == ["a", "b"] and pairs.raw_scores
    assert pairs.request.options.truncation_side == "left"
    out = render(many)
    assert out["model"] == "m" and out["usage"]["prompt_tokens"] == 42
    assert [d["index"] for d in out["data"]] == [0, 1, 2]  # pair order, not ranked
    assert out["data"][1]["score"] == pytest.approx(float(sigmoid(LOGITS)[1]))
    assert render(pairs)["data"][1]["score"] == pytest.approx(float(LOGITS[1]))
    with pytest.raises(InvalidRequest, match="equal length"):
        api.parse_pairs({"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, LIMITS)
    with pytest.raises(InvalidRequest, match="mixes"):
        api.parse_score({"query": QUERY, "text_1": "a", "text_2": "b"}, LIMITS)
    with pytest.raises(InvalidRequest, match="truncate_prompt_tokens"):
        api.parse_pairs({"text_1": "a", "text_2": "b", "truncate_prompt_tokens": 5}, LIMITS)


def test_tei_rerank() -> None:
    call = api.parse_rerank({"query": QUERY, "texts": DOCS, "return_text": True,
                             "truncate": False, "truncation_direction": "Left"}, LIMITS)
    assert isinstance(call, api.TeiCall) and call.return_text and not call.raw_scores
    assert call.request.options.must_fit and call.request.options.truncation_side == "left"
    out = render(call)
    assert [r["index"] for r in out] == [1, 0, 2] and out[0]["text"] == DOCS[1]
    assert out[0]["score"] == pytest.approx(float(sigmoid(LOGITS)[1]))
    with pytest.raises(InvalidRequest, match="'texts'"):
        api.parse_rerank({"query": QUERY}, LIMITS)


def test_documents_rerank_vllm_and_infinity() -> None:
    vllm = api.parse_rerank({"query": QUERY, "documents": DOCS, "top_n": 0}, LIMITS)
    assert isinstance(vllm, api.DocumentsCall) and vllm.top_n is None
    assert vllm.document == "object"  # vLLM's answer always carries {"text": ...}
    out = render(vllm)
    assert out["object"] == "rerank" and out["model"] == "served-model"
    assert out["results"][0] == {"index": 1, "relevance_score": pytest.approx(
        float(sigmoid(LOGITS)[1])), "document": {"text": DOCS[1]}}
    infinity = api.parse_rerank({"query": QUERY, "documents": DOCS, "top_n": 2,
                                 "return_documents": True, "raw_scores": True}, LIMITS)
    assert isinstance(infinity, api.DocumentsCall) and infinity.document == "string"
    got = render(infinity)["results"]
    assert len(got) == 2 and got[0]["document"] == DOCS[1]
    assert got[0]["relevance_score"] == pytest.approx(float(LOGITS[1]))
    assert infinity.request.options.exact_top_k == 2  # the cascade's k: the shape's top_n
    with pytest.raises(InvalidRequest, match="mixes"):
        api.parse_rerank({"query": QUERY, "texts": DOCS, "documents": DOCS}, LIMITS)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cohere_rerank(version: str) -> None:
    body = {"query": QUERY, "documents": [DOCS[0], {"text": DOCS[1]}, DOCS[2]], "top_n": 1,
            "return_documents": True, "max_tokens_per_doc": 64, "model": "rerank-v3.5"}
    call = api.parse_cohere(body, LIMITS, version)
    assert call.request.texts == DOCS and call.request.options.max_tokens_per_text == 64
    out = render(call)
    assert out["results"] == [{"index": 1, "relevance_score": pytest.approx(
        float(sigmoid(LOGITS)[1])), "document": {"text": DOCS[1]}}]
    assert out["meta"]["api_version"]["version"] == version and out["usage"]["total_tokens"] == 42
    with pytest.raises(InvalidRequest, match="rank_fields"):
        api.parse_cohere({**body, "rank_fields": ["title"]}, LIMITS, version)
    with pytest.raises(InvalidRequest, match="'model' must be a string"):
        api.parse_cohere({**body, "model": 3}, LIMITS, version)


def test_mixedbread_reranking() -> None:
    inputs: list[Any] = [DOCS[0], {"text": DOCS[1], "id": 7}, DOCS[2]]
    call = api.parse_mixedbread({"query": QUERY, "input": inputs, "top_k": 2,
                                 "return_input": True}, LIMITS)
    out = render(call)
    assert out["top_k"] == 2 and out["data"][0]["input"] == {"text": DOCS[1], "id": 7}
    assert out["data"][0]["object"] == "rank_result" and out["model"] == "served-model"
    with pytest.raises(InvalidRequest, match="rewrite_query"):
        api.parse_mixedbread({"query": QUERY, "input": DOCS, "rewrite_query": True}, LIMITS)


@pytest.mark.parametrize(("body", "error", "match"), [
    ({"chunks": DOCS}, InvalidRequest, "'query' is required"),
    ({"query": " ", "chunks": DOCS}, InvalidRequest, "empty or only whitespace"),
    ({"query": QUERY, "chunks": "one"}, InvalidRequest, "list of strings"),
    ({"query": QUERY, "chunks": [1]}, InvalidRequest, r"'chunks\[0\]' must be a string"),
    ({"query": QUERY, "chunks": ["x"] * 9}, LimitExceeded, "the limit is 8"),
    ({"query": QUERY, "chunks": DOCS, "overflow": "chop"}, InvalidRequest, "'overflow'"),
    ({"query": QUERY, "chunks": DOCS, "report_truncation": "yes"}, InvalidRequest,
     "true or false"),
    ({"query": QUERY, "chunks": DOCS, "exact_top_k": 0}, InvalidRequest, "positive integer"),
])
def test_bad_fields_are_named(body: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        api.parse_score(body, LIMITS)


def test_nulls_mean_absent_and_defaults_apply() -> None:
    call = api.parse_score({"query": QUERY, "chunks": DOCS, "overflow": None,
                            "report_truncation": None, "text_1": None}, LIMITS)
    o = call.request.options
    assert (o.overflow, o.report_truncation, o.exact_top_k) == ("truncate", False, None)
    split = RequestLimits(max_chunks=8, overflow_default="split")
    assert api.parse_score({"query": QUERY, "chunks": DOCS}, split).request.options.overflow \
        == "split"


def test_the_request_schemas_are_the_parsers_declarations() -> None:
    schemas = document(8)["components"]["schemas"]
    for shape in api.SHAPES:
        schema = schemas[shape.name]
        assert list(schema["properties"]) == [f.name for f in shape.fields]
        assert schema["required"] == [f.name for f in shape.fields if f.required]
        for f in shape.fields:
            if f.kind in ("texts", "documents"):
                assert schema["properties"][f.name]["maxItems"] == 8
            if f.kind in ("refused", "other_shape"):
                assert schema["properties"][f.name]["type"] == "null"
    overflow = schemas["ScoreRequest"]["properties"]["overflow"]
    assert overflow["enum"][:-1] == ["truncate", "split"]  # and null: absent
