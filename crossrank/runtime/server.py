"""HTTP only: the seed's /score, TEI and Cohere rerank shapes, health, info, metrics, OpenAPI.

Every error is a JSON body {"error", "error_type"} with the status chosen in `status_for`, the
one place where runtime errors meet HTTP. Inference never runs on the event loop: requests are
tokenized in a thread and scored by the worker thread, which batches across requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST as PROM_CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossrank.runtime import __version__
from crossrank.runtime.errors import (
    CrossrankError,
    DeadlineExceeded,
    InferenceError,
    InvalidRequest,
    LimitExceeded,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from crossrank.runtime.openapi import document
from crossrank.runtime.scorer import Scorer, rank, sigmoid
from crossrank.runtime.settings import Settings
from crossrank.runtime.tokenization import Encoded
from crossrank.runtime.worker import Hooks, Worker

log = logging.getLogger(__name__)

# Requests with less text than this are tokenized inline: a thread hop costs more than the work.
_INLINE_CHARS = 20_000
# At most this many index:tokens entries in X-Truncated-Chunks (the count header has them all).
_REPORT_MAX = 256


def status_for(exc: Exception) -> int:
    """The HTTP status of a runtime error (the only mapping)."""
    table: list[tuple[type[Exception], int]] = [
        (PayloadTooLarge, 413),
        (UnsupportedMediaType, 415),
        (LimitExceeded, 422),
        (InvalidRequest, 422),
        (Unauthorized, 401),
        (Overloaded, 429),
        (DeadlineExceeded, 504),
        (Unavailable, 503),
        (InferenceError, 500),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return 500


class BadJSON(InvalidRequest):
    """The body is not valid UTF-8 JSON (400 rather than 422)."""

    error_type = "invalid_json"


def error_response(exc: CrossrankError) -> JSONResponse:
    code = 400 if isinstance(exc, BadJSON) else status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": str(exc), "error_type": exc.error_type}, status_code=code,
                        headers=headers)


class Metrics(Hooks):
    """Prometheus metrics on a registry of the app's own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        PlatformCollector(registry=r)
        self.requests = Counter("crossrank_requests", "HTTP requests", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("crossrank_request_seconds", "request latency", ["endpoint"],
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25,
                                                      .5, 1, 2.5, 5, 10, 30, 60))
        self.queue = Histogram("crossrank_queue_seconds", "time queued before inference",
                               registry=r, buckets=(.001, .005, .01, .05, .1, .5, 1, 5, 10, 30))
        self.rows = Histogram("crossrank_batch_rows", "rows per batch", registry=r,
                              buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.tokens = Histogram("crossrank_batch_tokens", "real tokens per batch", registry=r,
                                buckets=(32, 128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
        self.padding = Counter("crossrank_padded_tokens", "tokens computed, padding included",
                               registry=r)
        self.queued = Gauge("crossrank_queued_tokens", "tokens waiting for inference", registry=r)
        self.pairs = Counter("crossrank_pairs", "pairs scored", registry=r)

    def batch(self, rows: int, tokens: int, padded: int) -> None:
        self.rows.observe(rows)
        self.tokens.observe(tokens)
        self.padding.inc(padded)
        self.pairs.inc(rows)

    def queue_time(self, seconds: float) -> None:
        self.queue.observe(seconds)

    def queued_tokens(self, tokens: int) -> None:
        self.queued.set(tokens)


# -- request parsing ------------------------------------------------------------------------------

async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, size-checked before and while reading."""
    ctype = request.headers.get("content-type", "")
    main = ctype.split(";")[0].strip().lower()
    if main and main != "application/json" and not main.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {main!r} "
                                   "(curl: -H 'Content-Type: application/json')")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise BadJSON("invalid Content-Length header") from exc
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is {size} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"the body is over the limit of {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJSON(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise BadJSON("malformed JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data


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
    if not q:
        raise InvalidRequest("'query' must not be empty")
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


# -- the app --------------------------------------------------------------------------------------

class App:
    """Handlers bound to one scorer, its worker and the settings."""

    def __init__(self, scorer: Scorer, settings: Settings) -> None:
        self.scorer = scorer
        self.settings = settings
        self.metrics = Metrics()
        self.worker = Worker(scorer, settings.max_queued_tokens, hooks=self.metrics)

    # Every endpoint runs through here: auth, errors, metrics.
    def endpoint(self, name: str, handler: Callable[[Request], Awaitable[Response]],
                 auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                if auth:
                    self.check_key(request)
                response = await handler(request)
            except CrossrankError as exc:
                response = error_response(exc)
            except Exception:
                log.exception("unexpected error in %s", name)
                response = JSONResponse({"error": "internal error", "error_type": "internal_error"},
                                        status_code=500)
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
            return response

        return wrapped

    def check_key(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 key.encode()):
            raise Unauthorized("missing or wrong API key (Authorization: Bearer <key>)")

    def timeout_for(self, request: Request) -> float:
        limit = self.settings.request_timeout_s
        raw = request.headers.get("x-request-timeout")
        if raw is None:
            return limit
        try:
            asked = float(raw)
        except ValueError as exc:
            raise InvalidRequest("X-Request-Timeout must be a number of seconds") from exc
        if not asked > 0:
            raise InvalidRequest("X-Request-Timeout must be positive")
        return min(asked, limit)

    def overflow_options(self, body: dict[str, Any]) -> tuple[str, bool]:
        """The request's overflow mode (or the server's default) and whether to report cuts."""
        mode = body.get("overflow", self.settings.overflow)
        if mode is None:
            mode = self.settings.overflow
        if mode not in ("truncate", "split"):
            raise InvalidRequest("'overflow' must be 'truncate' or 'split'")
        return str(mode), get_bool(body, "report_truncation", False)

    def encode(self, query: str, texts: list[str], mode: str, report: bool,
               must_fit: bool = False, max_tokens: int | None = None,
               positions: np.ndarray | None = None, counted: int = 0) -> Encoded:
        """Tokenize for the requested overflow mode; must_fit (TEI's truncate=false) refuses
        any text that would be cut, from the same encoding that is then scored; max_tokens
        (Cohere's max_tokens_per_doc) first cuts each text to that many tokens of its own.
        When the texts are one part of a request: `positions` are their indices in it, for
        error messages, and `counted` the rows its earlier parts made (window caps)."""
        tok = self.scorer.tokenizer
        if max_tokens is not None:
            texts = tok.cut_to_tokens(texts, max_tokens)
        if must_fit:
            enc = tok.encode(query, texts, with_truncation=True)
            assert enc.truncated is not None
            over = np.flatnonzero(enc.truncated > 0)
            if len(over):
                i = int(over[0])
                at = i if positions is None else int(positions[i])
                raise InvalidRequest(
                    f"texts[{at}] is {int(enc.lengths[i] + enc.truncated[i])} tokens with the "
                    f"query; the model takes {tok.max_length}. Send truncate=true or shorten it.")
            return enc  # nothing is over the limit, so split would change nothing
        if mode == "split":
            s = self.settings
            return tok.encode_windows(query, texts, s.window_stride, s.max_windows_per_chunk,
                                      s.max_windows_per_request, report, positions, counted)
        return tok.encode(query, texts, with_truncation=report)

    async def logits(self, request: Request, query: str, texts: list[str],
                     body: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None, must_fit: bool = False,
                     max_tokens: int | None = None) -> np.ndarray:
        """One logit per text. Tokenizes off the loop, queues for the worker, drops the work
        if the client leaves. With report_truncation, headers get what was cut."""
        mode, report = self.overflow_options(body or {})
        if not texts:
            return np.zeros(0, dtype=np.float32)
        timeout = self.timeout_for(request)
        self.worker.check_capacity()  # refuse at once, before tokenizing, when already full
        # On CUDA a large request is tokenized in parts, the device scoring one while the next
        # is tokenized; on CPUs in one part (ONNX Runtime already has every core).
        parts = self.scorer.slice_request(texts)
        counted = 0  # rows of the parts encoded so far (submit_parts encodes them in order)

        async def encode_part(k: int) -> Encoded:
            nonlocal counted
            idx = parts[k]
            sub = texts if len(parts) == 1 else [texts[i] for i in idx]
            args = (query, sub, mode, report, must_fit, max_tokens, idx, counted)
            if len(query) + sum(len(t) for t in sub) < _INLINE_CHARS:
                enc = self.encode(*args)
            else:
                enc = await anyio.to_thread.run_sync(self.encode, *args)
            counted += enc.n_rows
            return enc

        task = asyncio.ensure_future(self.worker.submit_parts(len(parts), encode_part, timeout))
        watcher = asyncio.ensure_future(_wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()  # marks the jobs abandoned: the worker skips them
                with contextlib.suppress(BaseException):
                    await task
                raise InvalidRequest("the client disconnected")
            results = task.result()
        finally:
            watcher.cancel()
        out = np.zeros(len(texts), dtype=np.float32)
        cut = np.zeros(len(texts), dtype=np.int64)
        for idx, (enc, logits) in zip(parts, results, strict=True):
            out[idx] = Scorer.per_chunk(logits, enc)
            if enc.truncated is not None:
                cut[idx] = enc.truncated
        if report and headers is not None:
            over = np.flatnonzero(cut > 0)
            headers["X-Truncated-Count"] = str(len(over))
            headers["X-Truncated-Chunks"] = ",".join(f"{i}:{cut[i]}" for i in over[:_REPORT_MAX])
        if not np.isfinite(out).all():
            raise InferenceError("the model returned a non-finite score")
        return out

    # -- endpoints ------------------------------------------------------------------------------

    async def score(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        query = get_query(body)
        chunks = get_texts(body, "chunks", self.settings.max_chunks)
        headers: dict[str, str] = {}
        logits = await self.logits(request, query, chunks, body, headers)
        scores = self.scorer.apply_activation(logits)
        return JSONResponse([[i, s] for i, s in rank(scores)], headers=headers)

    async def rerank_tei(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        query = get_query(body)
        texts = get_texts(body, "texts", self.settings.max_chunks)
        raw = get_bool(body, "raw_scores", False)
        return_text = get_bool(body, "return_text", False)
        truncate = get_bool(body, "truncate", True)
        direction = body.get("truncation_direction")
        direction = "right" if direction is None else direction
        if not isinstance(direction, str) or direction not in ("right", "Right", "left", "Left"):
            raise InvalidRequest("'truncation_direction' must be 'right' or 'left'")
        if direction in ("left", "Left"):
            raise InvalidRequest("truncation_direction 'left' is not supported; crossrank "
                                 "truncates like sentence-transformers (right, longest first)")
        headers: dict[str, str] = {}
        logits = await self.logits(request, query, texts, body, headers, must_fit=not truncate)
        scores = logits if raw else sigmoid(logits)
        out = []
        for i, s in rank(scores):
            item: dict[str, Any] = {"index": i, "score": s}
            if return_text:
                item["text"] = texts[i]
            out.append(item)
        return JSONResponse(out, headers=headers)

    async def rerank_cohere(self, request: Request, version: str) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        query = get_query(body)
        docs = get_texts(body, "documents", self.settings.max_chunks, objects=True)
        top_n = get_pos_int(body, "top_n")
        return_documents = get_bool(body, "return_documents", False)
        max_tokens = get_pos_int(body, "max_tokens_per_doc")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("'model' must be a string")
        headers: dict[str, str] = {}
        logits = await self.logits(request, query, docs, body, headers, max_tokens=max_tokens)
        ranked = rank(sigmoid(logits))
        if top_n is not None:
            ranked = ranked[:top_n]
        results = []
        for i, s in ranked:
            item: dict[str, Any] = {"index": i, "relevance_score": s}
            if return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        return JSONResponse({
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {"api_version": {"version": version},
                     "billed_units": {"search_units": 1}},
        }, headers=headers)

    async def health(self, request: Request) -> Response:
        if self.worker.healthy:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "error": "the model cannot score now",
                             "error_type": "unavailable"}, status_code=503)

    async def info(self, request: Request) -> Response:
        d = self.scorer.describe()
        s = self.settings
        return JSONResponse({
            "model": d.get("name"),
            "source": d.get("source"),
            "stand_in": d.get("stand_in"),
            "variant": d.get("variant"),
            "provider": d.get("provider"),
            "threads": d.get("threads"),
            "max_length": d.get("max_length"),
            "activation": d.get("activation"),
            "pipeline": d.get("pipeline"),
            "version": __version__,
            "limits": {
                "max_chunks": s.max_chunks,
                "max_body_bytes": s.max_body_bytes,
                "max_queued_tokens": s.max_queued_tokens,
                "request_timeout_s": s.request_timeout_s,
                "overflow_default": s.overflow,
                "window_stride": s.window_stride,
                "max_windows_per_chunk": s.max_windows_per_chunk,
                "max_windows_per_request": s.max_windows_per_request,
                "token_budget": d.get("token_budget"),
                "max_rows": d.get("max_rows"),
            },
            "queued_tokens": self.worker.queued_tokens,
            "auth": bool(s.api_key),
        })

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=PROM_CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(document(self.settings.max_chunks))


async def _wait_disconnect(request: Request) -> None:
    # The body has been read, so the next message is http.disconnect when the client leaves.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = {404: "not_found", 405: "method_not_allowed"}.get(code, "http_error")
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    headers = getattr(exc, "headers", None)
    return JSONResponse({"error": detail, "error_type": kind}, status_code=code, headers=headers)


def create_app(scorer: Scorer, settings: Settings) -> Starlette:
    """The ASGI app; the worker starts and stops with the app's lifespan."""
    app_state = App(scorer, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        app_state.worker.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(app_state.worker.stop, settings.graceful_shutdown_s)

    a = app_state
    routes = [
        Route("/score", a.endpoint("score", a.score), methods=["POST"]),
        Route("/rerank", a.endpoint("rerank", a.rerank_tei), methods=["POST"]),
        Route("/v1/rerank", a.endpoint("v1_rerank", lambda r: a.rerank_cohere(r, "1")),
              methods=["POST"]),
        Route("/v2/rerank", a.endpoint("v2_rerank", lambda r: a.rerank_cohere(r, "2")),
              methods=["POST"]),
        Route("/health", a.endpoint("health", a.health, auth=False), methods=["GET"]),
        Route("/info", a.endpoint("info", a.info), methods=["GET"]),
        Route("/metrics", a.endpoint("metrics", a.metrics_text), methods=["GET"]),
        Route("/openapi.json", a.endpoint("openapi", a.openapi, auth=False), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.crossrank = app_state
    return app
