"""HTTP only: every request shape of api.py (/score, /v1/score, /rerank, /v1|v2/rerank,
/v1/reranking), health, info, metrics, OpenAPI.

A request runs one way: read_json -> api.parse_* (a typed call) -> Service.score_async (tokenize,
submit to the engine, wait) -> api.render -> JSON. Every error is a JSON body {"error",
"error_type"} with the status and headers its class carries (errors.py), written in one place,
`error_response`. Inference never runs on the event loop: the engine's thread batches across
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossrank.runtime import __version__
from crossrank.runtime.core.cascade import CascadeStats
from crossrank.runtime.core.errors import (
    BadJSON,
    ClientDisconnected,
    ConfigError,
    CrossrankError,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from crossrank.runtime.core.options import Scored, ScoreRequest
from crossrank.runtime.execution.engine import Hooks
from crossrank.runtime.http import api
from crossrank.runtime.http.schema import document
from crossrank.runtime.loader import Runtime
from crossrank.runtime.service import Service
from crossrank.runtime.settings import Settings

log = logging.getLogger(__name__)


def error_response(exc: CrossrankError) -> JSONResponse:
    """The one place a runtime error becomes HTTP: its class's status, error_type and headers."""
    return JSONResponse({"error": str(exc), "error_type": exc.error_type}, status_code=exc.status,
                        headers=exc.headers())


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

    def cascade(self, stats: CascadeStats) -> None:
        """Export the precision cascade's counts (read at each scrape)."""

        class _Collector:
            def collect(self) -> Iterator[CounterMetricFamily]:
                d = stats.as_dict()
                yield CounterMetricFamily("crossrank_cascade_pairs",
                                          "pairs of requests served through the int8 -> fp32 "
                                          "cascade", value=d["pairs"])
                yield CounterMetricFamily("crossrank_cascade_rescored_pairs",
                                          "of those, pairs re-scored in fp32", value=d["rescored"])

        self.registry.register(_Collector())

    def int8_check(self, verdict: Callable[[], dict[str, Any] | None]) -> None:
        """The int8 self-check's verdict (runtime/selfcheck.py), as an info gauge read at each
        scrape (a check in the background goes from pending to its verdict)."""

        class _Collector:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                check = verdict()
                if not check:
                    return
                g = GaugeMetricFamily(
                    "crossrank_int8_check", "the int8 self-check: 1 for its verdict (status "
                    "passed|failed|skipped|unavailable|pending, how reproduced|judged|background)",
                    labels=["status", "how", "cached"])
                g.add_metric([str(check.get("status")), str(check.get("how") or ""),
                              str(bool(check.get("cached"))).lower()], 1)
                yield g

        self.registry.register(_Collector())

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
    # A large body is parsed in a thread: 2.5 MB take ~1-2 ms the event loop should not lose.
    data = (_parse(body) if len(body) < _INLINE_BYTES
            else await asyncio.to_thread(_parse, body))
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data


try:  # orjson parses a 2000-chunk body (2.5 MB) in 0.9 ms against json's 1.8 ms
    import orjson

    _orjson_loads: Callable[[bytearray], Any] | None = orjson.loads
except ImportError:  # optional: crossrank[fast]
    _orjson_loads = None
_FAILED = object()
# Bodies and answers smaller than this are parsed and rendered on the event loop.
_INLINE_BYTES = 256 * 1024
_INLINE_ITEMS = 500


def _parse(body: bytearray) -> Any:
    data = _fast_loads(body)
    if data is _FAILED:  # not parsed fast: the standard parser decides, and words the error
        data = _loads(body)
    return data


def _fast_loads(body: bytearray) -> Any:
    if _orjson_loads is None:
        return _FAILED
    try:
        return _orjson_loads(body)
    except ValueError:  # malformed, or what orjson refuses and json accepts (lone surrogates)
        return _FAILED


def _loads(body: bytearray) -> Any:
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
    return data


# -- the app --------------------------------------------------------------------------------------

class App:
    """Handlers bound to what serves (a Runtime from runtime/loader.py) and the settings' HTTP
    fields: HTTP in, typed calls to the runtime's one service, HTTP out."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.limits = settings.limits
        # What answers that carry a model name say when the client named none.
        self.model_name = runtime.info.name
        self.settings = settings
        self.metrics = Metrics()
        if runtime.service.refiner is not None:
            self.metrics.cascade(runtime.service.refiner.stats)
        self.metrics.int8_check(lambda: runtime.info.int8_check)
        # Set when in-flight requests must give up: the graceful-shutdown window is about to end.
        self.shutdown_expired = asyncio.Event()
        self.closing = False  # SIGTERM received: /health answers 503 so balancers move on
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once started

    @property
    def service(self) -> Service:
        """The runtime's service now: a background int8 check that passes swaps it."""
        return self.runtime.service

    # Every endpoint runs through here: auth, errors, metrics.
    def endpoint(self, name: str, handler: Callable[[Request], Awaitable[Response]],
                 auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                if auth:
                    self.check_key(request)
                response = await handler(request)
            except ClientDisconnected as exc:
                log.info("%s: %s", name, exc)
                response = error_response(exc)
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

    def begin_shutdown(self, grace_s: float) -> None:
        """SIGTERM: report unhealthy now; requests still in flight shortly before the graceful
        window ends are answered 503 (uvicorn would otherwise cancel them into a bare 500)."""
        self.closing = True
        margin = min(1.0, grace_s / 4)
        asyncio.get_running_loop().call_later(max(0.0, grace_s - margin),
                                              self.shutdown_expired.set)

    async def scored(self, request: Request, req: ScoreRequest) -> Scored:
        """The service's answer, unless the client leaves (its work is dropped) or the server's
        graceful shutdown runs out first (503)."""
        if self.shutdown_expired.is_set():
            raise Unavailable("the server is shutting down")
        timeout = self.timeout_for(request)
        task = asyncio.ensure_future(self.service.score_async(req, timeout))
        watchers = {asyncio.ensure_future(_wait_disconnect(request)):
                    ClientDisconnected("the client disconnected before its answer; its work "
                                       "was dropped"),
                    asyncio.ensure_future(self.shutdown_expired.wait()):
                    Unavailable("the server is shutting down and this request did not finish "
                                "within the graceful-shutdown window; retry on another replica")}
        try:
            done, _ = await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()  # abandons the request's queued work: the engine skips it
                with contextlib.suppress(BaseException):
                    await task
                raise next(err for w, err in watchers.items() if w in done)
            return task.result()
        finally:
            for w in watchers:
                w.cancel()

    async def answer(self, request: Request, call: api.Call) -> Response:
        scored = await self.scored(request, call.request)
        if len(scored.logits) < _INLINE_ITEMS:
            return self.respond(call, scored)
        return await asyncio.to_thread(self.respond, call, scored)  # large: off the loop

    def respond(self, call: api.Call, scored: Scored) -> Response:
        """The call's answer rendered as JSON (the json module's bytes, as the seed's)."""
        return JSONResponse(api.render(call, scored, self.runtime.activation, self.model_name),
                            headers=api.truncation_headers(scored))

    # -- endpoints ------------------------------------------------------------------------------

    async def score(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        return await self.answer(request, api.parse_score(body, self.limits))

    async def rerank(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        return await self.answer(request, api.parse_rerank(body, self.limits))

    async def reranking(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        return await self.answer(request, api.parse_mixedbread(body, self.limits))

    async def rerank_cohere(self, request: Request, version: str) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        return await self.answer(request, api.parse_cohere(body, self.limits, version))

    async def health(self, request: Request) -> Response:
        if self.runtime.engine.healthy and not self.closing:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "error": "the model cannot score now",
                             "error_type": "unavailable"}, status_code=503)

    async def info(self, request: Request) -> Response:
        d = self.runtime.describe()
        s, c = self.settings, self.runtime.config
        policy = d["batch_policy"]
        return JSONResponse({
            "model": d.get("name"),
            "source": d.get("source"),
            "stand_in": d.get("stand_in"),
            "variant": d.get("variant"),
            "provider": d.get("provider"),
            "threads": d.get("threads"),
            "max_length": d.get("max_length"),
            "activation": d.get("activation"),
            "pipeline": policy["pipeline"],
            "tokenizer": d.get("tokenizer"),
            "int8_isa": d.get("int8_isa"),
            "cpu_isa": d.get("cpu_isa"),
            "isa_warning": d.get("isa_warning"),
            "int8_check": d.get("int8_check"),
            # the precision cascade: its k and error bound, and how many pairs went to fp32
            "cascade": None if d.get("cascade_k") is None else {
                "k": d.get("cascade_k"), "bound": d.get("cascade_bound"), **d["cascade"]},
            "profile": d.get("profile"),
            "batch_policy": policy,
            "version": __version__,
            "limits": {
                "max_chunks": s.max_chunks,
                "max_body_bytes": s.max_body_bytes,
                "max_queued_tokens": c.max_queued_tokens,
                "request_timeout_s": s.request_timeout_s,
                "overflow_default": s.overflow,
                "window_stride": c.window_stride,
                "max_windows_per_chunk": c.max_windows_per_chunk,
                "max_windows_per_request": c.max_windows_per_request,
                "token_budget": policy["token_budget"],
                "max_rows": policy["max_rows"],
            },
            "queued_tokens": self.runtime.engine.queued_tokens,
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


def create_app(runtime: Runtime, settings: Settings) -> Starlette:
    """The ASGI app on a loaded runtime, with the settings' HTTP fields."""
    app_state = App(runtime, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The runtime belongs to its loader's caller (the library may share it); the app only
        # listens.
        app_state.loop = asyncio.get_running_loop()
        app_state.runtime.engine.add_hooks(app_state.metrics)
        try:
            yield
        finally:
            app_state.runtime.engine.remove_hooks(app_state.metrics)

    a = app_state
    routes = [
        Route("/score", a.endpoint("score", a.score), methods=["POST"]),
        Route("/v1/score", a.endpoint("v1_score", a.score), methods=["POST"]),
        Route("/rerank", a.endpoint("rerank", a.rerank), methods=["POST"]),
        Route("/v1/reranking", a.endpoint("v1_reranking", a.reranking), methods=["POST"]),
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


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a busy port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another "
                          "process holds the port (an earlier crossrank?): stop it, or choose "
                          "another with --port.") from exc
    return sock


def serve(runtime: Runtime, settings: Settings, sock: socket.socket) -> None:
    """Run the app with uvicorn on an already bound socket until SIGTERM or SIGINT."""
    import uvicorn

    app = create_app(runtime, settings)
    state: App = app.state.crossrank
    grace = settings.graceful_shutdown_s
    config = uvicorn.Config(
        app, log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=math.ceil(settings.keepalive_timeout_s),
        timeout_graceful_shutdown=math.ceil(grace),
        h11_max_incomplete_event_size=16 * 1024,  # bounds header size
        server_header=False,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            loop = state.loop
            if not self.should_exit and loop is not None:
                loop.call_soon_threadsafe(state.begin_shutdown, grace)
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
