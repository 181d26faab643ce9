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

from crossrank.runtime.core.choices import TRUNCATION_SIDES
from crossrank.runtime.core.errors import InvalidRequest, LimitExceeded
from crossrank.runtime.core.options import (
    RequestLimits,
    Scored,
    ScoreOptions,
    ScoreRequest,
)
from crossrank.runtime.core.scores import activate, rank, sigmoid

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


# -- the shapes, each declared once: its parser reads these fields and schema.py describes them

@dataclass(frozen=True)
class Field:
    """One request field. kind says how it is read (READERS) and described (schema.py):
    query, texts, documents (strings or {"text": ...} objects), queries and text_or_texts
    (vLLM's text_1 and text_2), bool, positive, count_or_all (0: all), string, side (one of
    `values`, either case), overflow, refused and other_shape (must be null: `doc` says why),
    false_only (false or null)."""

    name: str
    kind: str
    required: bool = False
    default: Any = None
    values: tuple[str, ...] = ()
    doc: str = ""
    show_default: bool = True  # the OpenAPI document states the default


@dataclass(frozen=True)
class Shape:
    """A request body: its name in the OpenAPI document and its fields, read in this order."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""

    def read(self, body: dict[str, Any], limits: RequestLimits) -> dict[str, Any]:
        """Every field's value (None when absent), checked in declaration order: the first
        bad field is the 422."""
        return {f.name: READERS[f.kind](body, f, limits) for f in self.fields}


def _refused(body: dict[str, Any], f: Field, limits: RequestLimits) -> None:
    refuse(body, {f.name: f.doc})


def _false_only(body: dict[str, Any], f: Field, limits: RequestLimits) -> None:
    if get_bool(body, f.name, False):
        raise InvalidRequest(f"'{f.name}' is not supported: {f.doc}")


def _queries(body: dict[str, Any], f: Field, limits: RequestLimits) -> list[str]:
    out = _text_list(body, f.name, limits.max_chunks)
    for i, q in enumerate(out):
        if not q.strip():
            raise InvalidRequest(f"'{f.name}[{i}]' must not be empty or only whitespace")
    return out


def _string(body: dict[str, Any], f: Field, limits: RequestLimits) -> str | None:
    v = body.get(f.name)
    if v is not None and not isinstance(v, str):
        raise InvalidRequest(f"'{f.name}' must be a string")
    return v


READERS: dict[str, Any] = {
    "query": lambda b, f, lim: get_query(b, f.name),
    "texts": lambda b, f, lim: get_texts(b, f.name, lim.max_chunks),
    "documents": lambda b, f, lim: get_texts(b, f.name, lim.max_chunks, objects=True),
    "queries": _queries,
    "text_or_texts": lambda b, f, lim: _text_list(b, f.name, lim.max_chunks),
    "bool": lambda b, f, lim: get_bool(b, f.name, f.default),
    "positive": lambda b, f, lim: get_pos_int(b, f.name),
    "count_or_all": lambda b, f, lim: get_pos_int(b, f.name, zero_is_all=True),
    "string": _string,
    "side": lambda b, f, lim: get_side(b, f.name, f.values),
    # ScoreOptions checks the mode, with the option lists' wording
    "overflow": lambda b, f, lim: str(lim.overflow_default if b.get(f.name) is None
                                      else b[f.name]),
    "refused": _refused,
    "other_shape": lambda b, f, lim: None,  # one_shape() names the mix first
    "false_only": _false_only,
}

# crossrank's extensions every shape takes (ScoreOptions): long texts, the truncation report and,
# where a precision cascade serves, the top k whose scores and order must be fp32's.
OPTIONS = (
    Field("overflow", "overflow", doc="over-long chunks: truncate at the model's limit "
          "(default) or split into overlapping windows scored by their max"),
    Field("report_truncation", "bool", default=False, doc="report cut chunks in "
          "X-Truncated-Count and X-Truncated-Chunks (index:tokens lost)"),
    Field("exact_top_k", "positive", doc="where the server runs an int8 -> fp32 precision "
          "cascade (--cascade): the top k whose scores and order must be fp32's (default: the "
          "request's top_n/top_k, else the server's k); no effect otherwise"),
)
SIDE = Field("truncation_side", "side", default="right", values=TRUNCATION_SIDES,
             doc="left keeps the end of an over-long text")
# vLLM's activation switch (its older name too) and Infinity's raw_scores; the client's model.
VLLM_SCORES = (
    Field("use_activation", "bool", default=True,
          doc="false: raw logits instead of sigmoid scores"),
    Field("activation", "bool", default=True, doc="vLLM's older name of use_activation",
          show_default=False),
    Field("raw_scores", "bool", default=False),
    Field("model", "string"),
)


def _refusing(unsupported: dict[str, str]) -> tuple[Field, ...]:
    return tuple(Field(name, "refused", doc=instead) for name, instead in unsupported.items())


def _others(names: tuple[str, ...], why: str) -> tuple[Field, ...]:
    return tuple(Field(name, "other_shape", doc=why) for name in names)


SCORE = Shape("ScoreRequest", (
    Field("query", "query", required=True), Field("chunks", "texts", required=True), *OPTIONS,
    *_others(PAIR_FIELDS, "vLLM's score API: not with query and chunks")))
PAIRS = Shape("VLLMScoreRequest", (
    *_refusing(UNSUPPORTED_VLLM),
    Field("text_1", "queries", required=True), Field("text_2", "text_or_texts", required=True),
    SIDE, *OPTIONS, *VLLM_SCORES,
    *_others(SCORE_FIELDS, "crossrank's /score shape: not with text_1/text_2")),
    doc="one text_1 against every text_2, or two lists of equal length scored pair by pair "
        "(lists of other lengths: 422); overflow='split' takes one text_1")
TEI = Shape("TEIRerankRequest", (
    Field("query", "query", required=True), Field("texts", "texts", required=True),
    Field("truncation_direction", "side", default="right", values=TRUNCATION_DIRECTIONS),
    Field("truncate", "bool", default=True), *OPTIONS,
    Field("raw_scores", "bool", default=False), Field("return_text", "bool", default=False),
    *_others(("documents",), "vLLM's and Infinity's shape")))
DOCUMENTS = Shape("DocumentsRerankRequest", (
    *_refusing(UNSUPPORTED_VLLM),
    Field("query", "query", required=True), Field("documents", "documents", required=True),
    SIDE, Field("top_n", "count_or_all", doc="0 or absent: every result"), *OPTIONS,
    Field("return_documents", "bool", default=False, doc="Infinity's field: documents come "
          "back as bare strings, only when true"),
    *VLLM_SCORES, *_others(("texts",), "Text Embeddings Inference's shape")))
COHERE = Shape("CohereRerankRequest", (
    *_refusing(UNSUPPORTED_COHERE),
    Field("query", "query", required=True), Field("documents", "documents", required=True),
    Field("model", "string"), Field("max_tokens_per_doc", "positive"),
    Field("top_n", "positive"), *OPTIONS, Field("return_documents", "bool", default=False)))
MIXEDBREAD = Shape("MixedbreadRerankRequest", (
    *_refusing(UNSUPPORTED_MIXEDBREAD),
    Field("rewrite_query", "false_only", doc="crossrank scores the query as sent"),
    Field("query", "query", required=True), Field("input", "documents", required=True),
    Field("top_k", "positive"), *OPTIONS, Field("return_input", "bool", default=False),
    Field("model", "string")))
SHAPES = (SCORE, PAIRS, TEI, DOCUMENTS, COHERE, MIXEDBREAD)


# -- parsing: a JSON object in, a typed call out -------------------------------------------------

def _options(v: dict[str, Any], must_fit: bool = False, max_tokens: int | None = None,
             side: str = "right", top: int | None = None) -> ScoreOptions:
    """The ScoreOptions of a request's values (a shape's own top_n/top_k is the cascade's k
    when the request names no exact_top_k)."""
    return ScoreOptions(overflow=v["overflow"], report_truncation=v["report_truncation"],
                        must_fit=must_fit, max_tokens_per_text=max_tokens, truncation_side=side,
                        exact_top_k=v["exact_top_k"] or top)


def _vllm_raw(body: dict[str, Any], v: dict[str, Any]) -> bool:
    """vLLM's use_activation (and its older name activation): false means raw logits; else
    Infinity's raw_scores."""
    for name in ("use_activation", "activation"):
        if body.get(name) is not None:
            return not v[name]
    return bool(v["raw_scores"])


def parse_score(body: dict[str, Any], limits: RequestLimits) -> ScoreCall | PairsCall:
    """/score: crossrank's {query, chunks}, or vLLM's {text_1, text_2}."""
    if one_shape(body, SCORE_FIELDS, "crossrank's /score", PAIR_FIELDS, "vLLM's score API"):
        return parse_pairs(body, limits)
    v = SCORE.read(body, limits)
    return ScoreCall(ScoreRequest(v["query"], v["chunks"], _options(v)))


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
    v = PAIRS.read(body, limits)
    t1, t2 = v["text_1"], v["text_2"]
    options = _options(v, side=v["truncation_side"])
    if len(t1) == 1:
        request = ScoreRequest(t1[0], t2, options)
    elif len(t1) == len(t2):
        request = ScoreRequest(t1, t2, options)
    else:
        raise InvalidRequest(f"'text_1' has {len(t1)} texts and 'text_2' {len(t2)}: give one "
                             "text_1 for all of text_2, or lists of equal length (pairs)")
    return PairsCall(request, raw_scores=_vllm_raw(body, v), model=v["model"])


def parse_rerank(body: dict[str, Any], limits: RequestLimits) -> TeiCall | DocumentsCall:
    """/rerank: TEI's {query, texts}, or vLLM's and Infinity's {query, documents}."""
    if one_shape(body, ("texts",), "TEI's shape", ("documents",), "vLLM's and Infinity's shape"):
        return parse_documents(body, limits)
    if body.get("texts") is None:
        raise InvalidRequest("'texts' (Text Embeddings Inference's shape) or 'documents' "
                             "(vLLM's and Infinity's) is required")
    return parse_tei(body, limits)


def parse_tei(body: dict[str, Any], limits: RequestLimits) -> TeiCall:
    v = TEI.read(body, limits)
    options = _options(v, must_fit=not v["truncate"], side=v["truncation_direction"])
    return TeiCall(ScoreRequest(v["query"], v["texts"], options), raw_scores=v["raw_scores"],
                   return_text=v["return_text"])


def parse_documents(body: dict[str, Any], limits: RequestLimits) -> DocumentsCall:
    v = DOCUMENTS.read(body, limits)
    top_n = v["top_n"]
    options = _options(v, side=v["truncation_side"], top=top_n)
    return DocumentsCall(ScoreRequest(v["query"], v["documents"], options), top_n=top_n,
                         document=_document_form(body, v["return_documents"]),
                         raw_scores=_vllm_raw(body, v), model=v["model"])


def _document_form(body: dict[str, Any], return_documents: bool) -> str:
    """How /rerank's results carry documents, by who sends the shape: vLLM's request has no
    return_documents and its answer always has {"text": ...}; Infinity's request has
    return_documents and its answer a bare string (its client fails on an object). Documents
    sent as objects get objects back."""
    if "return_documents" not in body:
        return "object"
    if not return_documents:
        return ""
    strings = all(isinstance(d, str) for d in body["documents"])
    return "string" if strings else "object"


def parse_cohere(body: dict[str, Any], limits: RequestLimits, version: str) -> CohereCall:
    v = COHERE.read(body, limits)
    options = _options(v, max_tokens=v["max_tokens_per_doc"], top=v["top_n"])
    return CohereCall(ScoreRequest(v["query"], v["documents"], options), top_n=v["top_n"],
                      return_documents=v["return_documents"], version=version)


def parse_mixedbread(body: dict[str, Any], limits: RequestLimits) -> MixedbreadCall:
    v = MIXEDBREAD.read(body, limits)
    return MixedbreadCall(ScoreRequest(v["query"], v["input"], _options(v, top=v["top_k"])),
                          inputs=list(body["input"]), top_k=v["top_k"],
                          return_input=v["return_input"], model=v["model"])


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
