"""The OpenAPI 3.1 document served at /openapi.json, describing every endpoint. Enums and the
refused fields come from the parser's own tuples (api.py, options.py)."""

from __future__ import annotations

from typing import Any

from crossrank.runtime import __version__
from crossrank.runtime.api import (
    PAIR_FIELDS,
    SCORE_FIELDS,
    TRUNCATION_DIRECTIONS,
    UNSUPPORTED_COHERE,
    UNSUPPORTED_MIXEDBREAD,
    UNSUPPORTED_VLLM,
)
from crossrank.runtime.choices import OVERFLOW_MODES, TRUNCATION_SIDES

_ERROR = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
# Not empty and not only whitespace.
_QUERY = {"type": "string", "minLength": 1, "pattern": "\\S"}
_TEXT_OBJECT = {"type": "object", "required": ["text"], "properties": {"text": _STR}}
_USAGE = {"type": "object", "required": ["prompt_tokens", "total_tokens"],
          "properties": {"prompt_tokens": _INT, "total_tokens": _INT}}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: null is accepted and means 'not given' (some clients send nulls)."""
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*schema["enum"], None]
    return out


def _null_only(fields: dict[str, str] | tuple[str, ...], why: str = "") -> dict[str, Any]:
    """Fields a shape must not carry (another shape's, or what crossrank cannot honour): null
    (not given) only; anything else is a 422."""
    if isinstance(fields, dict):
        return {name: {"type": "null", "description": f"not supported: {instead}"}
                for name, instead in fields.items()}
    return {name: {"type": "null", "description": why} for name in fields}


# Every scoring endpoint takes these (crossrank extensions; defaults keep the original shapes).
_OVERFLOW = {
    "overflow": _opt({"type": "string", "enum": list(OVERFLOW_MODES),
                      "description": "over-long chunks: truncate at the model's limit (default) "
                                     "or split into overlapping windows scored by their max"}),
    "report_truncation": _opt({"type": "boolean", "default": False,
                               "description": "report cut chunks in X-Truncated-Count and "
                                              "X-Truncated-Chunks (index:tokens lost)"}),
    "exact_top_k": _opt({"type": "integer", "minimum": 1,
                         "description": "where the server runs an int8 -> fp32 precision "
                                        "cascade (--cascade): the top k whose scores and order "
                                        "must be fp32's (default: the request's top_n/top_k, "
                                        "else the server's k); no effect otherwise"}),
}
_SIDE = {"truncation_side": _opt({"type": "string", "enum": list(TRUNCATION_SIDES),
                                  "default": "right",
                                  "description": "left keeps the end of an over-long text"})}
_VLLM_SCORES = {
    "use_activation": _opt({"type": "boolean", "default": True,
                            "description": "false: raw logits instead of sigmoid scores"}),
    "activation": _opt({"type": "boolean", "description": "vLLM's older name of use_activation"}),
    "raw_scores": _opt({"type": "boolean", "default": False}),
    "model": _opt(_STR),
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "error", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for c in codes
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _post(summary: str, bodies: list[str], response: dict[str, Any]) -> dict[str, Any]:
    body = _ref(bodies[0]) if len(bodies) == 1 else {"oneOf": [_ref(b) for b in bodies]}
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "scores, highest first (vLLM's score API: in pair order)",
                    "content": {"application/json": {"schema": response}}},
            **_errors(400, 401, 413, 415, 422, 429, 500, 503, 504),
        },
    }}


def _results(score: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {
        "type": "object", "required": ["index", score],
        "properties": {"index": _INT, score: _NUM, "document": document}}}


def document(max_chunks: int) -> dict[str, Any]:
    """The API description; max_chunks is written into the array limits."""
    chunks = {**_STR_LIST, "maxItems": max_chunks}
    docs = {"type": "array", "items": {"oneOf": [_STR, _TEXT_OBJECT]}, "maxItems": max_chunks}
    texts_1 = {"oneOf": [_QUERY, {"type": "array", "items": _QUERY, "minItems": 1,
                                  "maxItems": max_chunks}]}
    texts_2 = {"oneOf": [_STR, {**chunks, "minItems": 1}]}
    score_resp = {"type": "array", "items": {
        "type": "array", "items": _NUM, "minItems": 2, "maxItems": 2,
        "description": "[index into chunks (an integer), score]"}}
    pairs_resp = {
        "type": "object", "required": ["id", "object", "created", "model", "data", "usage"],
        "properties": {"id": _STR, "object": {"const": "list"}, "created": _INT, "model": _STR,
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["index", "object", "score"],
                           "properties": {"index": _INT, "object": {"const": "score"},
                                          "score": _NUM}}},
                       "usage": _USAGE}}
    tei_resp = {"type": "array", "items": {
        "type": "object", "required": ["index", "score"],
        "properties": {"index": _INT, "score": _NUM, "text": _STR}}}
    documents_resp = {
        "type": "object", "required": ["id", "object", "model", "results", "usage"],
        "properties": {"id": _STR, "object": {"const": "rerank"}, "created": _INT, "model": _STR,
                       "results": _results("relevance_score", {
                           "oneOf": [_TEXT_OBJECT, _STR],
                           "description": "{text} (vLLM's form, always there) unless the "
                                          "request carries return_documents (Infinity's form): "
                                          "then a bare string, and only when it is true"}),
                       "usage": _USAGE}}
    cohere_resp = {
        "type": "object", "required": ["id", "results", "meta", "usage"],
        "properties": {"id": _STR, "results": _results("relevance_score", _TEXT_OBJECT),
                       "meta": {"type": "object"}, "usage": _USAGE}}
    mixedbread_resp = {
        "type": "object", "required": ["object", "model", "data", "usage"],
        "properties": {"object": {"const": "list"}, "model": _STR, "top_k": _INT,
                       "return_input": {"type": "boolean"}, "usage": _USAGE,
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["index", "score", "object"],
                           "properties": {"index": _INT, "score": _NUM,
                                          "object": {"const": "rank_result"}, "input": {}}}}}}
    cohere_req = {
        "type": "object", "required": ["query", "documents"],
        "properties": {
            "query": _QUERY, "documents": docs,
            "top_n": _opt({"type": "integer", "minimum": 1}),
            "return_documents": _opt({"type": "boolean", "default": False}),
            "model": _opt(_STR),
            "max_tokens_per_doc": _opt({"type": "integer", "minimum": 1}),
            **_null_only(UNSUPPORTED_COHERE), **_OVERFLOW,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "crossrank", "version": __version__,
                 "description": "Cross-encoder re-ranking with ONNX Runtime."},
        "paths": {
            "/score": _post(
                "Score chunks against a query (crossrank's contract: [[index, score], ...] "
                "sorted) or vLLM's score API (text_1 / text_2: scores in pair order)",
                ["ScoreRequest", "VLLMScoreRequest"], {"oneOf": [score_resp, pairs_resp]}),
            "/v1/score": _post("vLLM's score API (text_1 / text_2; /score's own shape too)",
                               ["VLLMScoreRequest", "ScoreRequest"],
                               {"oneOf": [pairs_resp, score_resp]}),
            "/rerank": _post(
                "Text Embeddings Inference's shape (texts) or vLLM's and Infinity's (documents)",
                ["TEIRerankRequest", "DocumentsRerankRequest"],
                {"oneOf": [tei_resp, documents_resp]}),
            "/v1/rerank": _post("Cohere v1 rerank shape", ["CohereRerankRequest"], cohere_resp),
            "/v2/rerank": _post("Cohere v2 rerank shape", ["CohereRerankRequest"], cohere_resp),
            "/v1/reranking": _post("Mixedbread's reranking shape", ["MixedbreadRerankRequest"],
                                   mixedbread_resp),
            "/health": {"get": {"summary": "200 when the model can score, else 503", "responses": {
                "200": {"description": "ready", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                **_errors(503)}}},
            "/info": {"get": {"summary": "model, variant, provider, limits, version",
                              "responses": {"200": {"description": "info", "content": {
                                  "application/json": {"schema": {"type": "object"}}}},
                                  **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                    "schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "metrics",
                        "content": {"text/plain": {"schema": _STR}}}, **_errors(401)}}},
        },
        "components": {"schemas": {
            "Error": _ERROR,
            "ScoreRequest": {"type": "object", "required": list(SCORE_FIELDS), "properties": {
                "query": _QUERY, "chunks": chunks, **_OVERFLOW,
                **_null_only(PAIR_FIELDS, "vLLM's score API: not with query and chunks")}},
            "VLLMScoreRequest": {"type": "object", "required": list(PAIR_FIELDS), "properties": {
                "text_1": texts_1, "text_2": texts_2, **_VLLM_SCORES, **_SIDE, **_OVERFLOW,
                **_null_only(UNSUPPORTED_VLLM),
                **_null_only(SCORE_FIELDS, "crossrank's /score shape: not with text_1/text_2")},
                "description": "one text_1 against every text_2, or two lists of equal length "
                               "scored pair by pair (lists of other lengths: 422); "
                               "overflow='split' takes one text_1"},
            "TEIRerankRequest": {"type": "object", "required": ["query", "texts"], "properties": {
                "query": _QUERY, "texts": chunks,
                "raw_scores": _opt({"type": "boolean", "default": False}),
                "return_text": _opt({"type": "boolean", "default": False}),
                "truncate": _opt({"type": "boolean", "default": True}),
                "truncation_direction": _opt({"type": "string",
                                              "enum": list(TRUNCATION_DIRECTIONS),
                                              "default": "right"}),
                **_OVERFLOW, **_null_only(("documents",), "vLLM's and Infinity's shape")}},
            "DocumentsRerankRequest": {
                "type": "object", "required": ["query", "documents"], "properties": {
                    "query": _QUERY, "documents": docs,
                    "top_n": _opt({"type": "integer", "minimum": 0,
                                   "description": "0 or absent: every result"}),
                    "return_documents": _opt({
                        "type": "boolean", "default": False,
                        "description": "Infinity's field: documents come back as bare strings, "
                                       "only when true"}),
                    **_VLLM_SCORES, **_SIDE, **_OVERFLOW, **_null_only(UNSUPPORTED_VLLM),
                    **_null_only(("texts",), "Text Embeddings Inference's shape")}},
            "CohereRerankRequest": cohere_req,
            "MixedbreadRerankRequest": {
                "type": "object", "required": ["query", "input"], "properties": {
                    "query": _QUERY, "input": docs,
                    "top_k": _opt({"type": "integer", "minimum": 1}),
                    "return_input": _opt({"type": "boolean", "default": False}),
                    "model": _opt(_STR), **_OVERFLOW, **_null_only(UNSUPPORTED_MIXEDBREAD),
                    "rewrite_query": {"type": ["boolean", "null"], "enum": [False, None],
                                      "description": "not supported: the query is scored as "
                                                     "sent"}}},
        }},
    }
