"""The request shapes clients speak, parsed once into typed calls and rendered back. No HTTP here.

    /score            crossrank's own {query, chunks}, or vLLM's score API {text_1, text_2}
    /v1/score         vLLM's score API (the original shape is accepted there too)
    /rerank           Text Embeddings Inference {query, texts}, or vLLM's and Infinity's
                      {query, documents}: told apart by the body
    /v1|v2/rerank     Cohere (also what Jina- and vLLM-style clients post there), with usage
    /v1/reranking     Mixedbread {query, input}

Shapes are told apart by their fields; a body mixing two shapes is refused with a 422 naming the
fields. A field that would change what a request means and is not supported (Cohere's
rank_fields, vLLM's truncate_prompt_tokens) is refused with a message naming it; other unknown
fields are ignored, as the original servers ignore them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.runtime.choices import TRUNCATION_SIDES
from crossrank.runtime.errors import InvalidRequest, LimitExceeded
from crossrank.runtime.options import (
    RequestLimits,
    Scored,
    ScoreOptions,
    ScoreRequest,
)
from crossrank.runtime.scores import activate, rank, sigmoid

# TEI's truncation_direction values (its enum is capitalised; lower case is accepted too).
TRUNCATION_DIRECTIONS = ("right", "Right", "left", "Left")


@dataclass(frozen=True)
class ScoreCall:
    """POST /score, the original shape: scores with the model's own activation,
    [[index, score], ...]."""

    request: ScoreRequest


@dataclass(frozen=True)
class TeiCall:
    """POST /rerank with texts (Text Embeddings Inference)."""

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


@dataclass(frozen=True)
class DocumentsCall:
    """POST /rerank with documents (vLLM, Infinity). document: how results carry their
    document, as the client that sent the shape reads it: "object" ({"text": ...}, vLLM's,
    always there), "string" (Infinity's bare string) or "" (none)."""

    request: ScoreRequest
    top_n: int | None
    document: str
    raw_scores: bool
    model: str | None


@dataclass(frozen=True)
class PairsCall:
    """POST /score or /v1/score with text_1 and text_2 (vLLM's score API): scores in pair
    order."""

    request: ScoreRequest
    raw_scores: bool
    model: str | None


@dataclass(frozen=True)
class MixedbreadCall:
    """POST /v1/reranking (Mixedbread)."""

    request: ScoreRequest
    inputs: list[Any]  # as sent, for return_input
    top_k: int | None
    return_input: bool
    model: str | None


Call = ScoreCall | TeiCall | CohereCall | DocumentsCall | PairsCall | MixedbreadCall

# Fields crossrank cannot honour (they would change the answer), and what to do instead.
UNSUPPORTED_COHERE = {
    "rank_fields": "crossrank scores each document's text (a string, or an object's 'text'); "
                   "send the field to rank on as the text",
    "max_chunks_per_doc": "send overflow='split' to score long documents as windows",
}
UNSUPPORTED_VLLM = {
    "truncate_prompt_tokens": "crossrank truncates each pair at the model's limit; send "
                              "truncation_side='left' to keep the end of a long text",
}
UNSUPPORTED_MIXEDBREAD = {
    "rank_fields": "crossrank scores each input's text (a string, or an object's 'text')",
}
# The fields that tell the shapes sharing a path apart.
SCORE_FIELDS = ("query", "chunks")
PAIR_FIELDS = ("text_1", "text_2")


# -- field readers ------------------------------------------------------------------------------

def _clean(s: str) -> str:
    # JSON may carry lone surrogates (\ud800); the tokenizer needs valid Unicode.
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def get_query(body: dict[str, Any], field: str = "query") -> str:
    q = body.get(field)
    if q is None:
        raise InvalidRequest(f"'{field}' is required")
    if not isinstance(q, str):
        raise InvalidRequest(f"'{field}' must be a string")
    if not q.strip():
        raise InvalidRequest(f"'{field}' must not be empty or only whitespace")
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


def get_pos_int(body: dict[str, Any], field: str, zero_is_all: bool = False) -> int | None:
    """A positive integer, or None when absent (zero_is_all: 0 also means absent, as vLLM's
    top_n=0 means every result)."""
    v = body.get(field)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # JSON Schema counts 3.0 as an integer
    if zero_is_all and v == 0 and not isinstance(v, bool):
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        what = "a positive integer (0: all)" if zero_is_all else "a positive integer"
        raise InvalidRequest(f"'{field}' must be {what}")
    return v


def get_model(body: dict[str, Any]) -> str | None:
    """The client's model name: echoed in answers that carry one, never used to choose."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string")
    return model


def refuse(body: dict[str, Any], unsupported: dict[str, str]) -> None:
    for name, instead in unsupported.items():
        if body.get(name) is not None:
            raise InvalidRequest(f"'{name}' is not supported: {instead}")


def present(body: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The fields of `names` the body gives (null counts as not given)."""
    return [n for n in names if body.get(n) is not None]


def one_shape(body: dict[str, Any], a: tuple[str, ...], a_name: str, b: tuple[str, ...],
              b_name: str) -> bool:
    """True when the body is in shape b, False for shape a; a body with fields of both is a
    422 naming them."""
    got_a, got_b = present(body, a), present(body, b)
    if got_a and got_b:
        raise InvalidRequest(f"the body mixes {a_name} ({', '.join(map(repr, got_a))}) and "
                             f"{b_name} ({', '.join(map(repr, got_b))}): send one shape")
    return bool(got_b)


def get_side(body: dict[str, Any], field: str, values: tuple[str, ...]) -> str:
    v = body.get(field)
    if v is None:
        return "right"
    if not isinstance(v, str) or v not in values:
        raise InvalidRequest(f"'{field}' must be 'right' or 'left'")
    return v.lower()


def get_options(body: dict[str, Any], limits: RequestLimits, must_fit: bool = False,
                max_tokens: int | None = None, side: str = "right",
                top: int | None = None) -> ScoreOptions:
    """crossrank's extensions every shape takes: overflow, report_truncation and exact_top_k
    (where a precision cascade serves: the k whose scores and order must be fp32's; a shape's
    own top_n/top_k when it names none)."""
    mode = body.get("overflow")
    if mode is None:
        mode = limits.overflow_default
    return ScoreOptions(overflow=str(mode),  # ScoreOptions checks the mode
                        report_truncation=get_bool(body, "report_truncation", False),
                        must_fit=must_fit, max_tokens_per_text=max_tokens, truncation_side=side,
                        exact_top_k=get_pos_int(body, "exact_top_k") or top)


def _vllm_raw(body: dict[str, Any]) -> bool:
    """vLLM's use_activation (and its older name activation): false means raw logits."""
    for name in ("use_activation", "activation"):
        if body.get(name) is not None:
            return not get_bool(body, name, True)
    return get_bool(body, "raw_scores", False)  # Infinity's name


# -- parsing: a JSON object in, a typed call out -------------------------------------------------

def parse_score(body: dict[str, Any], limits: RequestLimits) -> ScoreCall | PairsCall:
    """/score: crossrank's {query, chunks}, or vLLM's {text_1, text_2}."""
    if one_shape(body, SCORE_FIELDS, "crossrank's /score", PAIR_FIELDS, "vLLM's score API"):
        return parse_pairs(body, limits)
    query = get_query(body)
    chunks = get_texts(body, "chunks", limits.max_chunks)
    return ScoreCall(ScoreRequest(query, chunks, get_options(body, limits)))


def _text_list(body: dict[str, Any], field: str, max_items: int) -> list[str]:
    """vLLM's text_1 / text_2: one string, or a non-empty list of strings."""
    v = body.get(field)
    if v is None:
        raise InvalidRequest(f"'{field}' is required")
    if isinstance(v, str):
        return [_clean(v)]
    if not isinstance(v, list):
        raise InvalidRequest(f"'{field}' must be a string or a list of strings")
    if not v:
        raise InvalidRequest(f"'{field}' must not be empty")
    return get_texts(body, field, max_items)


def parse_pairs(body: dict[str, Any], limits: RequestLimits) -> PairsCall:
    """vLLM's score API: text_1 one string (or a list of one) against text_2's texts, or two
    lists of equal length scored pair by pair."""
    refuse(body, UNSUPPORTED_VLLM)
    t1 = _text_list(body, "text_1", limits.max_chunks)
    t2 = _text_list(body, "text_2", limits.max_chunks)
    for i, q in enumerate(t1):
        if not q.strip():
            raise InvalidRequest(f"'text_1[{i}]' must not be empty or only whitespace")
    options = get_options(body, limits, side=get_side(body, "truncation_side", TRUNCATION_SIDES))
    if len(t1) == 1:
        request = ScoreRequest(t1[0], t2, options)
    elif len(t1) == len(t2):
        request = ScoreRequest(t1, t2, options)
    else:
        raise InvalidRequest(f"'text_1' has {len(t1)} texts and 'text_2' {len(t2)}: give one "
                             "text_1 for all of text_2, or lists of equal length (pairs)")
    return PairsCall(request, raw_scores=_vllm_raw(body), model=get_model(body))


def parse_rerank(body: dict[str, Any], limits: RequestLimits) -> TeiCall | DocumentsCall:
    """/rerank: TEI's {query, texts}, or vLLM's and Infinity's {query, documents}."""
    if one_shape(body, ("texts",), "TEI's shape", ("documents",), "vLLM's and Infinity's shape"):
        return parse_documents(body, limits)
    if body.get("texts") is None:
        raise InvalidRequest("'texts' (Text Embeddings Inference's shape) or 'documents' "
                             "(vLLM's and Infinity's) is required")
    return parse_tei(body, limits)


def parse_tei(body: dict[str, Any], limits: RequestLimits) -> TeiCall:
    query = get_query(body)
    texts = get_texts(body, "texts", limits.max_chunks)
    side = get_side(body, "truncation_direction", TRUNCATION_DIRECTIONS)
    truncate = get_bool(body, "truncate", True)
    return TeiCall(ScoreRequest(query, texts, get_options(body, limits, must_fit=not truncate,
                                                          side=side)),
                   raw_scores=get_bool(body, "raw_scores", False),
                   return_text=get_bool(body, "return_text", False))


def parse_documents(body: dict[str, Any], limits: RequestLimits) -> DocumentsCall:
    refuse(body, UNSUPPORTED_VLLM)
    query = get_query(body)
    docs = get_texts(body, "documents", limits.max_chunks, objects=True)
    side = get_side(body, "truncation_side", TRUNCATION_SIDES)
    top_n = get_pos_int(body, "top_n", zero_is_all=True)
    return DocumentsCall(ScoreRequest(query, docs, get_options(body, limits, side=side,
                                                               top=top_n)),
                         top_n=top_n, document=_document_form(body),
                         raw_scores=_vllm_raw(body), model=get_model(body))


def _document_form(body: dict[str, Any]) -> str:
    """How /rerank's results carry documents, by who sends the shape: vLLM's request has no
    return_documents and its answer always has {"text": ...}; Infinity's request has
    return_documents and its answer a bare string (its client fails on an object). Documents
    sent as objects get objects back."""
    if "return_documents" not in body:
        return "object"
    if not get_bool(body, "return_documents", False):
        return ""
    strings = all(isinstance(d, str) for d in body["documents"])
    return "string" if strings else "object"


def parse_cohere(body: dict[str, Any], limits: RequestLimits, version: str) -> CohereCall:
    refuse(body, UNSUPPORTED_COHERE)
    query = get_query(body)
    docs = get_texts(body, "documents", limits.max_chunks, objects=True)
    get_model(body)
    max_tokens = get_pos_int(body, "max_tokens_per_doc")
    top_n = get_pos_int(body, "top_n")
    return CohereCall(ScoreRequest(query, docs, get_options(body, limits, max_tokens=max_tokens,
                                                            top=top_n)),
                      top_n=top_n,
                      return_documents=get_bool(body, "return_documents", False),
                      version=version)


def parse_mixedbread(body: dict[str, Any], limits: RequestLimits) -> MixedbreadCall:
    refuse(body, UNSUPPORTED_MIXEDBREAD)
    if get_bool(body, "rewrite_query", False):
        raise InvalidRequest("'rewrite_query' is not supported: crossrank scores the query as sent")
    query = get_query(body)
    texts = get_texts(body, "input", limits.max_chunks, objects=True)
    top_k = get_pos_int(body, "top_k")
    return MixedbreadCall(ScoreRequest(query, texts, get_options(body, limits, top=top_k)),
                          inputs=list(body["input"]), top_k=top_k,
                          return_input=get_bool(body, "return_input", False),
                          model=get_model(body))


# -- rendering: scores in, a JSON-able answer out -----------------------------------------------

def usage(scored: Scored) -> dict[str, int]:
    """Tokens scored (windows included): what OpenAI-style clients read as usage."""
    return {"prompt_tokens": scored.tokens, "total_tokens": scored.tokens}


def render(call: Call, scored: Scored, model_activation: str, model_name: str) -> Any:
    """The answer in the call's own shape, sorted by score, ties by index (vLLM's score API:
    in pair order). model_activation: the model's own (identity or sigmoid), which the
    original /score applies; model_name: what answers name when the client named none."""
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
    if isinstance(call, PairsCall):
        scores = np.asarray(scored.logits if call.raw_scores else sigmoid(scored.logits))
        return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": call.model or model_name,
                "data": [{"index": i, "object": "score", "score": float(s)}
                         for i, s in enumerate(scores)],
                "usage": {**usage(scored), "completion_tokens": 0}}
    if isinstance(call, MixedbreadCall):
        ranked = rank(sigmoid(scored.logits))[:call.top_k]
        data = []
        for i, s in ranked:
            res: dict[str, Any] = {"index": i, "score": s, "object": "rank_result"}
            if call.return_input:
                res["input"] = call.inputs[i]
            data.append(res)
        return {"object": "list", "model": call.model or model_name, "data": data,
                "usage": usage(scored), "top_k": len(data), "return_input": call.return_input}
    raw = isinstance(call, DocumentsCall) and call.raw_scores
    ranked = rank(scored.logits if raw else sigmoid(scored.logits))[:call.top_n]
    results = []
    form = call.document if isinstance(call, DocumentsCall) else \
        "object" if call.return_documents else ""
    for i, s in ranked:
        res = {"index": i, "relevance_score": s}
        if form:
            res["document"] = texts[i] if form == "string" else {"text": texts[i]}
        results.append(res)
    if isinstance(call, DocumentsCall):
        return {"id": f"rerank-{uuid.uuid4().hex}", "object": "rerank",
                "created": int(time.time()), "model": call.model or model_name,
                "results": results, "usage": usage(scored)}
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": call.version},
                     "billed_units": {"search_units": 1}},
            "usage": usage(scored)}


def truncation_headers(scored: Scored, max_listed: int = 256) -> dict[str, str]:
    """X-Truncated-Count (all of them) and X-Truncated-Chunks (index:tokens-lost, the first
    max_listed) when the request asked for the report."""
    if scored.truncated is None:
        return {}
    over = np.flatnonzero(scored.truncated > 0)
    return {"X-Truncated-Count": str(len(over)),
            "X-Truncated-Chunks": ",".join(f"{i}:{scored.truncated[i]}"
                                           for i in over[:max_listed])}
