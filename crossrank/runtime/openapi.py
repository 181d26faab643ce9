"""The OpenAPI 3.1 document served at /openapi.json, describing every endpoint."""

from __future__ import annotations

from typing import Any

from crossrank.runtime import __version__
from crossrank.runtime.api import TRUNCATION_DIRECTIONS, UNSUPPORTED_COHERE
from crossrank.runtime.options import OVERFLOW_MODES

_ERROR = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
# Not empty and not only whitespace.
_QUERY = {"type": "string", "minLength": 1, "pattern": "\\S"}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: null is accepted and means 'not given' (some clients send nulls)."""
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*schema["enum"], None]
    return out


# Every scoring endpoint takes these (crossrank extensions; defaults keep the original shapes).
_OVERFLOW = {
    "overflow": _opt({"type": "string", "enum": list(OVERFLOW_MODES),
                      "description": "over-long chunks: truncate at the model's limit (default) "
                                     "or split into overlapping windows scored by their max"}),
    "report_truncation": _opt({"type": "boolean", "default": False,
                               "description": "report cut chunks in X-Truncated-Count and "
                                              "X-Truncated-Chunks (index:tokens lost)"}),
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "error", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for c in codes
    }


def _post(summary: str, body: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}},
        "responses": {
            "200": {"description": "scores, highest first",
                    "content": {"application/json": {"schema": response}}},
            **_errors(400, 401, 413, 415, 422, 429, 500, 503, 504),
        },
    }}


def document(max_chunks: int) -> dict[str, Any]:
    """The API description; max_chunks is written into the array limits."""
    chunks = {**_STR_LIST, "maxItems": max_chunks}
    cohere_doc = {"oneOf": [_STR, {"type": "object", "required": ["text"],
                                   "properties": {"text": _STR}}]}
    cohere_req = {
        "type": "object", "required": ["query", "documents"],
        "properties": {
            "query": _QUERY,
            "documents": {"type": "array", "items": cohere_doc, "maxItems": max_chunks},
            "top_n": _opt({"type": "integer", "minimum": 1}),
            "return_documents": _opt({"type": "boolean", "default": False}),
            "model": _opt(_STR),
            "max_tokens_per_doc": _opt({"type": "integer", "minimum": 1}),
            # Cohere fields crossrank cannot honour: null (not given) only; anything else is 422.
            **{name: {"type": "null", "description": f"not supported: {instead}"}
               for name, instead in UNSUPPORTED_COHERE.items()},
            **_OVERFLOW,
        },
    }
    cohere_resp = {
        "type": "object", "required": ["id", "results", "meta"],
        "properties": {
            "id": _STR,
            "results": {"type": "array", "items": {
                "type": "object", "required": ["index", "relevance_score"],
                "properties": {"index": {"type": "integer"},
                               "relevance_score": {"type": "number"},
                               "document": {"type": "object", "properties": {"text": _STR}}}}},
            "meta": {"type": "object"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "crossrank", "version": __version__,
                 "description": "Cross-encoder re-ranking with ONNX Runtime."},
        "paths": {
            "/score": _post(
                "Score chunks against a query (the seed's contract): [[index, score], ...]",
                "ScoreRequest",
                {"type": "array", "items": {
                    "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                    "description": "[index into chunks (an integer), score]"}},
            ),
            "/rerank": _post(
                "Text Embeddings Inference rerank shape", "TEIRerankRequest",
                {"type": "array", "items": {
                    "type": "object", "required": ["index", "score"],
                    "properties": {"index": {"type": "integer"}, "score": {"type": "number"},
                                   "text": _STR}}},
            ),
            "/v1/rerank": _post("Cohere v1 rerank shape", "CohereRerankRequest", cohere_resp),
            "/v2/rerank": _post("Cohere v2 rerank shape", "CohereRerankRequest", cohere_resp),
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
            "ScoreRequest": {"type": "object", "required": ["query", "chunks"], "properties": {
                "query": _QUERY, "chunks": chunks, **_OVERFLOW}},
            "TEIRerankRequest": {"type": "object", "required": ["query", "texts"], "properties": {
                "query": _QUERY, "texts": chunks,
                "raw_scores": _opt({"type": "boolean", "default": False}),
                "return_text": _opt({"type": "boolean", "default": False}),
                "truncate": _opt({"type": "boolean", "default": True}),
                "truncation_direction": _opt({"type": "string", "enum": [
                    d for d in TRUNCATION_DIRECTIONS if d.lower() == "right"],
                    "default": "right"}),
                **_OVERFLOW}},
            "CohereRerankRequest": cohere_req,
        }},
    }
