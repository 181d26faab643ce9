"""Server settings: one frozen dataclass, built once at start-up from flags, then CROSSRANK_* env."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from crossrank.runtime.errors import ConfigError
from crossrank.runtime.modeldir import VARIANTS
from crossrank.runtime.options import OVERFLOW_MODES
from crossrank.runtime.profiles import PROVIDER_CHOICES

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L-12-v2"
PIPELINE_CHOICES = ("auto", "on", "off")
TOKENIZER_BACKENDS = ("auto", "nanotoken", "tokenizers")  # tokenization.BACKENDS, without numpy
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know; defaults are the documented ones."""

    model: str = DEFAULT_MODEL  # hub id or checkpoint: exported into models_root when missing
    models_root: str = "models"
    model_dir: str = ""  # an exported directory to serve as is ("": models_root/<model's name>)
    provider: str = "auto"
    variant: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0  # 0: usable cores
    spin: int = 1  # 1: ONNX Runtime threads spin-wait between runs (faster, busier)
    token_budget: int = 0  # 0: the provider's measured default
    max_rows: int = 0  # 0: the variant's default
    pipeline: str = "auto"  # auto (on with CUDA) | on | off
    tokenizer: str = "auto"  # auto | nanotoken | tokenizers
    max_chunks: int = 1000  # per request
    max_body_bytes: int = 16 * 1024 * 1024
    max_queued_tokens: int = 200_000  # backpressure bound: above it, 429
    request_timeout_s: float = 60.0  # deadline unless the request asks for less
    api_key: str = ""  # empty: no authentication
    overflow: str = "truncate"  # default for requests that do not say: truncate | split
    window_stride: int = 128  # overflow=split: tokens shared by consecutive windows
    max_windows_per_chunk: int = 16
    max_windows_per_request: int = 2000
    max_connections: int = 256  # uvicorn limit_concurrency
    keepalive_timeout_s: float = 5.0
    graceful_shutdown_s: float = 30.0
    log_level: str = "info"
    int8_check: int = 1  # 1: serve int8 only if this CPU reproduces its verified scores

    def resolved_model_dir(self, stand_in: bool = False) -> str:
        """The directory to serve: model_dir when set, else where `crossrank export` writes the
        model (or the stand-in)."""
        if self.model_dir:
            return self.model_dir
        name = "stand-in-L-12" if stand_in else self.model.rstrip("/").split("/")[-1]
        return os.path.join(self.models_root, name)

    @property
    def pipeline_choice(self) -> bool | None:
        """pipeline as the scorer takes it: None leaves the provider profile's choice."""
        return {"on": True, "off": False}.get(self.pipeline)

    def public(self) -> dict[str, Any]:
        """Settings safe to show in /info: never the API key."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["api_key"] = bool(self.api_key)
        return d


_HELP = {
    "model": "hub id or local checkpoint to serve; exported into --models-root first when it is "
             "not there yet",
    "models_root": "where exported models live (models/<name>)",
    "model_dir": "an exported model directory to serve as is (overrides --model)",
    "provider": " | ".join(PROVIDER_CHOICES),
    "variant": " | ".join(VARIANTS),
    "host": "bind address (default 127.0.0.1: loopback only)",
    "port": "TCP port",
    "threads": "intra-op threads (0: usable cores)",
    "spin": "1: inference threads spin-wait between runs (throughput); 0: they sleep",
    "token_budget": "tokens per batch, padding counted (0: measured default)",
    "max_rows": "rows per batch (0: variant default; int8 runs one pair per batch)",
    "pipeline": "tokenize requests of more than 64 chunks in runs and pad the next batch while "
                "the model runs: auto (on with CUDA, off on CPUs, where ONNX Runtime already "
                "has every core) | on | off",
    "tokenizer": "auto (nanotoken when installed and in agreement with the tokenizers library on "
                 "probe texts, else tokenizers) | nanotoken | tokenizers",
    "max_chunks": "most chunks/texts/documents in one request (422 above)",
    "max_body_bytes": "largest request body (413 above, checked before reading it all)",
    "max_queued_tokens": "tokens waiting for inference before new work gets 429",
    "request_timeout_s": "deadline per request; X-Request-Timeout (seconds) may ask for less",
    "api_key": "require 'Authorization: Bearer KEY' on every endpoint but /health and "
               "/openapi.json (empty: no auth); prefer the environment variable, which `ps` "
               "does not show",
    "overflow": "over-long chunks: truncate (like sentence-transformers) or split into windows "
                "scored by their max",
    "window_stride": "overflow=split: tokens shared by consecutive windows",
    "max_windows_per_chunk": "overflow=split: most windows one chunk may need (422 above)",
    "max_windows_per_request": "overflow=split: most windows one request may need (422 above)",
    "max_connections": "concurrent connections before uvicorn answers 503",
    "keepalive_timeout_s": "idle keep-alive timeout",
    "graceful_shutdown_s": "on SIGTERM, how long in-flight requests may take to finish",
    "log_level": " | ".join(LOG_LEVELS),
    "int8_check": "1: at start-up, score the export's check pairs with int8 and serve fp32 "
                  "unless this CPU reproduces the int8 scores the exporter verified (~0.5 s); "
                  "0: skip the check",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per setting, each naming its environment variable and default."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=None,
                       help=f"{_HELP.get(f.name, '')} [env CROSSRANK_{f.name.upper()}; "
                            f"default {f.default!r}]")


def build(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags; a flag not given falls back to CROSSRANK_<NAME>, then the default."""
    p = argparse.ArgumentParser(prog="crossrank serve",
                                description="Serve an exported cross-encoder over HTTP.")
    add_arguments(p)
    return from_namespace(p.parse_args(argv), env)


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed flags, then CROSSRANK_* variables, then defaults; checked."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(ns, f.name)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None:
            raw = env.get(f"CROSSRANK_{f.name.upper()}")
            source = f"CROSSRANK_{f.name.upper()}"
        if raw is None:
            continue
        values[f.name] = _convert(f.name, type(f.default), raw, source)
    s = Settings(**values)
    _check(s)
    return s


def _convert(name: str, kind: type, raw: str, source: str) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}={raw!r} is not a valid {kind.__name__}") from exc
    return raw


def _check(s: Settings) -> None:
    _one_of("provider", s.provider, PROVIDER_CHOICES)
    _one_of("variant", s.variant, VARIANTS)
    if not 0 < s.port < 65536:
        raise ConfigError(f"port must be 1-65535, not {s.port}")
    for name in ("max_chunks", "max_body_bytes", "max_queued_tokens", "max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be positive")
    _one_of("overflow", s.overflow, OVERFLOW_MODES)
    if not 0 <= s.window_stride <= 256:
        raise ConfigError("window_stride must be between 0 and 256 tokens")
    if s.max_windows_per_chunk < 1 or s.max_windows_per_request < 1:
        raise ConfigError("window limits must be positive")
    _one_of("pipeline", s.pipeline, PIPELINE_CHOICES)
    _one_of("tokenizer", s.tokenizer, TOKENIZER_BACKENDS)
    for name in ("spin", "int8_check"):
        if getattr(s, name) not in (0, 1):
            raise ConfigError(f"{name} must be 0 or 1")
    for name in ("threads", "token_budget", "max_rows"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must be 0 (default) or positive")
    if s.request_timeout_s <= 0:
        raise ConfigError("request_timeout_s must be positive")
    _one_of("log_level", s.log_level, LOG_LEVELS)
    if not s.model and not s.model_dir:
        raise ConfigError("model must not be empty (or give model_dir)")


def _one_of(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
