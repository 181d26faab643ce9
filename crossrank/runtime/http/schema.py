"""The OpenAPI 3.1 document served at /openapi.json, describing every endpoint. Request bodies
are built from the shapes the parser reads (api.SHAPES: each field declared once); the answers
are described here, beside nothing else that writes them but api.render."""

from __future__ import annotations

from typing import Any

from crossrank.runtime import __version__
from crossrank.runtime.core.choices import OVERFLOW_MODES
from crossrank.runtime.http.api import SHAPES, Field, Shape

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


def _field(f: Field, max_chunks: int) -> dict[str, Any]:
    """A request field's schema, from its declaration (api.Field)."""
    chunks = {**_STR_LIST, "maxItems": max_chunks}
    kinds: dict[str, dict[str, Any]] = {
        "query": _QUERY,
        "texts": chunks,
        "documents": {"type": "array", "items": {"oneOf": [_STR, _TEXT_OBJECT]},
                      "maxItems": max_chunks},
        "queries": {"oneOf": [_QUERY, {"type": "array", "items": _QUERY, "minItems": 1,
                                       "maxItems": max_chunks}]},
        "text_or_texts": {"oneOf": [_STR, {**chunks, "minItems": 1}]},
        "bool": {"type": "boolean"},
        "positive": {"type": "integer", "minimum": 1},
        "count_or_all": {"type": "integer", "minimum": 0},
        "string": _STR,
        "side": {"type": "string", "enum": list(f.values)},
        "overflow": {"type": "string", "enum": list(OVERFLOW_MODES)},
        "refused": {"type": "null", "description": f"not supported: {f.doc}"},
        "other_shape": {"type": "null", "description": f.doc},
        "false_only": {"type": ["boolean", "null"], "enum": [False, None],
                       "description": f"not supported: {f.doc}"},
    }
    schema = dict(kinds[f.kind])
    if f.kind in ("refused", "other_shape", "false_only"):
        return schema
    if f.default is not None and f.show_default:
        schema["default"] = f.default
    if f.doc:
        schema["description"] = f.doc
    return schema if f.required else _opt(schema)


def request_schema(shape: Shape, max_chunks: int) -> dict[str, Any]:
    """A request body's schema, from the shape its parser reads."""
    out: dict[str, Any] = {
        "type": "object",
        "required": [f.name for f in shape.fields if f.required],
        "properties": {f.name: _field(f, max_chunks) for f in shape.fields}}
    if shape.doc:
        out["description"] = shape.doc
    return out


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
            **{shape.name: request_schema(shape, max_chunks) for shape in SHAPES},
        }},
    }
