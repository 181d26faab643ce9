"""The request shapes clients speak, parsed once into typed calls and rendered back: the original
/score, Text Embeddings Inference's /rerank and Cohere's /v1|v2/rerank. No HTTP here.

A field that would change what a request means and is not supported (Cohere's rank_fields and
max_chunks_per_doc) is refused with a message naming it; other unknown fields are ignored, as the
original servers ignore them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.runtime.errors import InvalidRequest, LimitExceeded
from crossrank.runtime.options import OVERFLOW_MODES, RequestLimits, ScoreOptions
from crossrank.runtime.scores import activate, rank, sigmoid
from crossrank.runtime.service import Scored, ScoreRequest

# TEI's truncation_direction values (its enum is capitalised; lower case is accepted too).
TRUNCATION_DIRECTIONS = ("right", "Right", "left", "Left")


@dataclass(frozen=True)
class ScoreCall:
    """POST /score, the original shape: scores with the model's own activation,
    [[index, score], ...]."""

    request: ScoreRequest


@dataclass(frozen=True)
class TeiCall:
    """POST /rerank (Text Embeddings Inference)."""

    request: ScoreRequest
    raw_scores: bool
    return_text: bool


@dataclass(frozen=True)
class CohereCall:
    """POST /v1/rerank and /v2/rerank (Cohere)."""

    request: ScoreRequest
    top_n: int | None
    return_documents: bool
    version: str


Call = ScoreCall | TeiCall | CohereCall

# Cohere fields crossrank cannot honour, and what to do instead.
UNSUPPORTED_COHERE = {
    "rank_fields": "crossrank scores each document's text (a string, or an object's 'text'); "
                   "send the field to rank on as the text",
    "max_chunks_per_doc": "send overflow='split' to score long documents as windows",
}


# -- field readers ------------------------------------------------------------------------------

def _clean(s: str) -> str:
    # JSON may carry lone surrogates (\ud800); the tokenizer needs valid Unicode.
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def get_query(body: dict[str, Any]) -> str:
    q = body.get("query")
    if q is None:
        raise InvalidRequest("'query' is required")
    if not isinstance(q, str):
        raise InvalidRequest("'query' must be a string")
    if not q.strip():
        raise InvalidRequest("'query' must not be empty or only whitespace")
    return _clean(q)


def get_texts(body: dict[str, Any], field: str, max_items: int, objects: bool = False) -> list[str]:
    items = body.get(field)
    if items is None:
        raise InvalidRequest(f"'{field}' is required")
    if not isinstance(items, list):
        raise InvalidRequest(f"'{field}' must be a list of strings")
    if len(items) > max_items:
        raise LimitExceeded(f"'{field}' has {len(items)} items; the limit is {max_items}")
    out = []
    for i, item in enumerate(items):
        if objects and isinstance(item, dict) and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            kind = "a string or an object with a 'text' string" if objects else "a string"
            raise InvalidRequest(f"'{field}[{i}]' must be {kind}")
        out.append(_clean(item))
    return out


def get_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    v = body.get(field, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequest(f"'{field}' must be true or false")
    return v


def get_pos_int(body: dict[str, Any], field: str) -> int | None:
    v = body.get(field)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # JSON Schema counts 3.0 as an integer
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise InvalidRequest(f"'{field}' must be a positive integer")
    return v


def get_options(body: dict[str, Any], limits: RequestLimits, must_fit: bool = False,
                max_tokens: int | None = None) -> ScoreOptions:
    """crossrank's extensions every shape takes: overflow and report_truncation."""
    mode = body.get("overflow")
    if mode is None:
        mode = limits.overflow_default
    if mode not in OVERFLOW_MODES:
        raise InvalidRequest(f"'overflow' must be one of {', '.join(map(repr, OVERFLOW_MODES))}")
    return ScoreOptions(overflow=str(mode), report_truncation=get_bool(body, "report_truncation",
                                                                        False),
                        must_fit=must_fit, max_tokens_per_text=max_tokens)


# -- parsing: a JSON object in, a typed call out -------------------------------------------------

def parse_score(body: dict[str, Any], limits: RequestLimits) -> ScoreCall:
    query = get_query(body)
    chunks = get_texts(body, "chunks", limits.max_chunks)
    return ScoreCall(ScoreRequest(query, chunks, get_options(body, limits)))


def parse_tei(body: dict[str, Any], limits: RequestLimits) -> TeiCall:
    query = get_query(body)
    texts = get_texts(body, "texts", limits.max_chunks)
    direction = body.get("truncation_direction")
    direction = "right" if direction is None else direction
    if not isinstance(direction, str) or direction not in TRUNCATION_DIRECTIONS:
        raise InvalidRequest("'truncation_direction' must be 'right' or 'left'")
    if direction in ("left", "Left"):
        raise InvalidRequest("truncation_direction 'left' is not supported; crossrank "
                             "truncates like sentence-transformers (right, longest first)")
    truncate = get_bool(body, "truncate", True)
    return TeiCall(ScoreRequest(query, texts, get_options(body, limits, must_fit=not truncate)),
                   raw_scores=get_bool(body, "raw_scores", False),
                   return_text=get_bool(body, "return_text", False))


def parse_cohere(body: dict[str, Any], limits: RequestLimits, version: str) -> CohereCall:
    for name, instead in UNSUPPORTED_COHERE.items():
        if body.get(name) is not None:
            raise InvalidRequest(f"'{name}' is not supported: {instead}")
    query = get_query(body)
    docs = get_texts(body, "documents", limits.max_chunks, objects=True)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string")
    max_tokens = get_pos_int(body, "max_tokens_per_doc")
    return CohereCall(ScoreRequest(query, docs, get_options(body, limits, max_tokens=max_tokens)),
                      top_n=get_pos_int(body, "top_n"),
                      return_documents=get_bool(body, "return_documents", False),
                      version=version)


# -- rendering: scores in, a JSON-able answer out -----------------------------------------------

def render(call: Call, scored: Scored, model_activation: str) -> Any:
    """The answer in the call's own shape, sorted by score, ties by index. model_activation:
    the model's own (identity or sigmoid), which the original /score applies."""
    texts = call.request.texts
    if isinstance(call, ScoreCall):
        return [[i, s] for i, s in rank(activate(scored.logits, "model", model_activation))]
    if isinstance(call, TeiCall):
        out = []
        for i, s in rank(scored.logits if call.raw_scores else sigmoid(scored.logits)):
            item: dict[str, Any] = {"index": i, "score": s}
            if call.return_text:
                item["text"] = texts[i]
            out.append(item)
        return out
    ranked = rank(sigmoid(scored.logits))
    if call.top_n is not None:
        ranked = ranked[:call.top_n]
    results = []
    for i, s in ranked:
        res: dict[str, Any] = {"index": i, "relevance_score": s}
        if call.return_documents:
            res["document"] = {"text": texts[i]}
        results.append(res)
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": call.version},
                     "billed_units": {"search_units": 1}}}


def truncation_headers(scored: Scored, max_listed: int = 256) -> dict[str, str]:
    """X-Truncated-Count (all of them) and X-Truncated-Chunks (index:tokens-lost, the first
    max_listed) when the request asked for the report."""
    if scored.truncated is None:
        return {}
    over = np.flatnonzero(scored.truncated > 0)
    return {"X-Truncated-Count": str(len(over)),
            "X-Truncated-Chunks": ",".join(f"{i}:{scored.truncated[i]}"
                                           for i in over[:max_listed])}
