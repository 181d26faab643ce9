"""crossrank as a Ray Serve application: replicas of the one engine behind the same HTTP app.

    serve run crossrank.rayserve:build_app model_dir=models/ms-marco-MiniLM-L-12-v2 replicas=2
    serve run deploy/ray-serve.yaml           # the same, from a config file
    crossrank serve-ray --model-dir DIR --replicas 2

Each replica loads the exported model once and serves the routes of `crossrank serve` (/score,
/v1/score, /rerank, /v1|v2/rerank, /v1/reranking, /health, /info, /metrics, /openapi.json)
through `create_app`, with the same answers and errors; Ray routes requests to replicas,
restarts a replica that dies and scales their number. A response names the replica that
answered in `X-Crossrank-Replica`.

Autoscaling follows the signal that matters here, the tokens waiting for inference: each replica
reports its queued tokens, and the policy asks for as many replicas as the total over
`target_queued_tokens` per replica (between min and max). Backpressure stays crossrank's: a
replica over its queued-token bound answers 429 with Retry-After; Ray's own queue in front of the
replicas is bounded too (`max_queued_requests`; Ray answers 503 past it).

Needs the `ray` extra (`pip install 'crossrank[ray]'`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from crossrank.runtime import settings as settings_mod
from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.settings import Settings

# Scoring calls are idempotent, but a request in flight on a replica that dies is answered with
# an error rather than sent again: its client decides (TEI and Cohere clients retry 5xx).
REPLICA_HEADER = b"x-crossrank-replica"


@dataclass(frozen=True)
class RayServeConfig:
    """How the application is deployed: crossrank's own settings, and Ray's."""

    settings: Settings = field(default_factory=Settings)
    replicas: int = 1  # fixed count, unless autoscaling (max_replicas > 0)
    min_replicas: int = 1
    max_replicas: int = 0  # > 0: autoscale between min and max on queued tokens
    target_queued_tokens: int = 20_000  # per replica: ~1.5 s of work on 2 CPU cores
    num_cpus: float = 2.0  # per replica: the cores its ONNX Runtime session uses
    num_gpus: float = 0.0  # 1 for one replica per GPU
    max_ongoing_requests: int = 64  # per replica: in its queue, bounded again in tokens
    max_queued_requests: int = 1000  # in Ray's proxies, before any replica takes them
    name: str = "crossrank"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.min_replicas < 0:
            raise ConfigError("replicas must be at least 1 and min_replicas at least 0")
        if self.max_replicas and self.max_replicas < max(1, self.min_replicas):
            raise ConfigError("max_replicas must be at least min_replicas (and 1)")
        if self.target_queued_tokens < 1 or self.max_ongoing_requests < 1:
            raise ConfigError("target_queued_tokens and max_ongoing_requests must be positive")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError("num_cpus must be positive and num_gpus not negative")

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RayServeConfig:
        """From `serve run ... key=value` arguments or a config file's `args`: Ray's keys as
        above, crossrank's as in `crossrank serve` (model_dir, variant, max_queued_tokens, ...);
        unknown keys are refused by name."""
        ours = {f.name: f for f in fields(cls) if f.name != "settings"}
        theirs = {f.name: f for f in fields(Settings)}
        mine: dict[str, Any] = {}
        setting: dict[str, Any] = {}
        for key, raw in args.items():
            k = key.replace("-", "_")
            if k in ours:
                mine[k] = _typed(k, raw, type(ours[k].default))
            elif k in theirs:
                setting[k] = settings_mod.convert(k, raw)
            else:
                raise ConfigError(f"unknown argument {key!r} for crossrank.rayserve:build_app")
        threads = setting.get("threads") or max(1, math.floor(float(mine.get("num_cpus", 2.0))))
        base = settings_mod.checked(replace(Settings(), **{**setting, "threads": threads}))
        return cls(settings=base, **mine)


def _typed(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        return settings_mod.switch(raw, name)
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc


class QueuedTokensPolicy:
    """Ray Serve autoscaling policy: replicas = total queued tokens over the replicas, divided
    by the target per replica, within the deployment's bounds (Ray then applies its up- and
    downscale delays)."""

    def __init__(self, target_queued_tokens: int = 20_000) -> None:
        self.target = max(1, int(target_queued_tokens))

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        total = float(sum(metrics.get("queued_tokens", {}).values()))
        want = math.ceil(total / self.target)
        low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
        return max(low, min(high, max(want, 1))), ctx.policy_state


def build_app(args: Mapping[str, Any] | None = None) -> Any:
    """Ray Serve's application builder: `serve run crossrank.rayserve:build_app key=value ...`."""
    return deployment(RayServeConfig.from_args(args or {})).bind()


def deployment(cfg: RayServeConfig) -> Any:
    """The Ray Serve deployment of crossrank for this configuration."""
    from ray import serve

    options: dict[str, Any] = {
        "name": cfg.name,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "graceful_shutdown_timeout_s": cfg.settings.graceful_shutdown_s,
        "health_check_period_s": 5.0,
    }
    if cfg.max_replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.min_replicas,
            "initial_replicas": max(cfg.min_replicas, 1),
            "max_replicas": cfg.max_replicas,
            "policy": {"policy_function": "crossrank.rayserve:QueuedTokensPolicy",
                       "policy_kwargs": {"target_queued_tokens": cfg.target_queued_tokens}},
            "upscale_delay_s": 5.0,
            "downscale_delay_s": 60.0,
        }
    else:
        options["num_replicas"] = cfg.replicas
    settings = cfg.settings

    def asgi_app() -> Any:
        # Runs in each replica's process: the one engine, the same app as `crossrank serve`.
        from crossrank.runtime import loader
        from crossrank.runtime.http.server import create_app

        runtime = loader.load(settings.runtime_config())
        return _NamedReplica(create_app(runtime, settings), _replica_name())

    class Crossrank:
        """One replica: the ASGI app above (serve.ingress) plus what Ray asks of it."""

        def record_autoscaling_stats(self) -> dict[str, float]:
            app = getattr(self, "app", None)
            state = getattr(getattr(app, "inner", None), "state", None)
            queued = state.crossrank.runtime.execution.engine.queued_tokens if state is not None else 0
            return {"queued_tokens": float(queued)}

    return serve.deployment(**options)(serve.ingress(asgi_app)(Crossrank))


def _replica_name() -> str:
    try:
        from ray import serve

        ctx = serve.get_replica_context()
        return str(ctx.replica_id.unique_id) if ctx is not None else str(os.getpid())
    except Exception:  # outside a replica (tests of the app alone)
        return str(os.getpid())


class _NamedReplica:
    """ASGI middleware: every HTTP response names the replica that made it."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.header = (REPLICA_HEADER, name.encode())

    @property
    def state(self) -> Any:
        return self.inner.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.inner(scope, receive, named)
