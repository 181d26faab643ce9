"""Server settings: the runtime's configuration plus the HTTP fields, one frozen dataclass built
once at start-up from flags, then CROSSRANK_* env."""

from __future__ import annotations

import argparse
import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from crossrank.runtime.config import RuntimeConfig, one_of
from crossrank.runtime.core.choices import OVERFLOW_MODES
from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.core.options import RequestLimits
from crossrank.runtime.core.profiles import PROVIDER_CHOICES
from crossrank.runtime.modeldir import DEFAULT_MODEL, VARIANTS, export_name

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings(RuntimeConfig):
    """Everything the server needs to know: the runtime's configuration (runtime/config.py,
    where its defaults live) and the HTTP fields; defaults are the documented ones."""

    model: str = DEFAULT_MODEL  # hub id or checkpoint: exported into models_root when missing
    models_root: str = "models"
    host: str = "127.0.0.1"
    port: int = 8000
    max_chunks: int = 1000  # per request
    max_body_bytes: int = 16 * 1024 * 1024
    max_queued_tokens: int = 200_000  # backpressure bound: above it, 429 (the library: none)
    request_timeout_s: float = 60.0  # deadline unless the request asks for less
    api_key: str = ""  # empty: no authentication
    overflow: str = "truncate"  # default for requests that do not say: truncate | split
    max_connections: int = 256  # uvicorn limit_concurrency
    keepalive_timeout_s: float = 5.0
    graceful_shutdown_s: float = 30.0
    log_level: str = "info"

    def runtime_config(self, model_dir: Path | str | None = None) -> RuntimeConfig:
        """What serves: the runtime's fields of these settings, for model_dir (default: the
        settings' own directory)."""
        values = {f.name: getattr(self, f.name) for f in fields(RuntimeConfig)}
        values["model_dir"] = str(model_dir or self.resolved_model_dir())
        return RuntimeConfig(**values)

    @property
    def limits(self) -> RequestLimits:
        """What a request may hold, and what it gets when it does not say."""
        return RequestLimits(max_chunks=self.max_chunks, overflow_default=self.overflow)

    def resolved_model_dir(self, stand_in: bool = False) -> str:
        """The directory to serve: model_dir when set, else where `crossrank export` writes the
        model (or the stand-in)."""
        if self.model_dir:
            return self.model_dir
        return os.path.join(self.models_root, export_name(self.model, stand_in))


_HELP = {
    "model": "hub id or local checkpoint to serve; exported into --models-root first when it is "
             "not there yet",
    "models_root": "where exported models live (models/<name>)",
    "model_dir": "an exported model directory to serve as is (overrides --model)",
    "provider": " | ".join(PROVIDER_CHOICES),
    "variant": " | ".join(VARIANTS),
    "host": "bind address (default 127.0.0.1: loopback only)",
    "port": "TCP port",
    "threads": "intra-op threads (auto or 0: usable cores)",
    "lanes": "batches that run at once, each on threads/lanes of the threads (auto: the "
             "provider's: 2 for int8 on CPUs, faster for requests of many chunks; 1: one batch "
             "at a time on every thread, the lowest latency for a few chunks)",
    "spin": "1: inference threads spin-wait between runs (throughput); 0: they sleep",
    "token_budget": "tokens per batch, padding counted (auto or 0: measured default)",
    "max_rows": "rows per batch (auto or 0: variant default; int8 runs one pair per batch)",
    "pipeline": "tokenize requests of more than 64 chunks in runs and pad the next batch while "
                "the model runs: auto (on with CUDA, off on CPUs, where ONNX Runtime already "
                "has every core) | on | off",
    "tokenizer": "auto (nanotoken when installed and in agreement with the tokenizers library on "
                 "probe texts, else tokenizers) | nanotoken | tokenizers",
    "tokenizer_threads": "threads that tokenize a large request (auto: the provider's: 1 on "
                         "CPUs, where inference has every core; every core with CUDA)",
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
                  "unless this CPU reproduces the int8 scores the exporter verified (~0.5 s) "
                  "or else its own int8 passes the export's gate on the export's check "
                  "requests (cached per CPU); 0: skip the check",
    "int8_check_background": "1: where the int8 self-check has no cached verdict for this CPU, "
                             "serve fp32 at once and run the check beside it, switching to "
                             "int8 when it passes (/info and /metrics show it pending); 0: "
                             "wait for the check before serving. Not with --cascade",
    "max_length": "tokens per pair, at most the model's (auto: the model's); less truncates "
                  "sooner",
    "activation": "what scores get: model (the export's activation) | identity | sigmoid",
    "cascade": "int8 on the CPU: K > 0 also loads fp32 and makes each request's top K "
               "(its own top_n/top_k when it names one) exactly fp32's scores and order, by "
               "re-scoring in fp32 the pairs int8 could misplace there; 0: off",
    "cascade_fallback": "1: where int8 was refused (by the export's gate or this CPU's check) "
                        "on a CPU class where the cascade runs faster than fp32 (AVX-512 VNNI), "
                        "serve it behind a top-10 cascade instead of fp32; 0: fp32",
}


_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")
_AUTO = ("auto", "")


@functools.cache
def _kinds() -> dict[str, tuple[type, bool]]:
    """Each setting's value type and whether None (auto) is allowed."""
    out = {}
    for name, hint in typing.get_type_hints(Settings).items():
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) and type(None) in args:
            out[name] = (next(a for a in args if a is not type(None)), True)
        else:
            out[name] = (hint, False)
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per setting, each naming its environment variable and default."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=None,
                       help=f"{_HELP.get(f.name, '')} [env CROSSRANK_{f.name.upper()}; "
                            f"default {_shown(f.default)}]")


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed flags, then CROSSRANK_* variables, then defaults; checked."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(ns, f.name, None)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None:
            raw = env.get(f"CROSSRANK_{f.name.upper()}")
            source = f"CROSSRANK_{f.name.upper()}"
        if raw is None:
            continue
        values[f.name] = convert(f.name, raw, source)
    return checked(Settings(**values))


def convert(name: str, raw: Any, source: str | None = None) -> Any:
    """A setting's value from text (a flag, an environment variable, a config file's value):
    numbers as numbers, 1/0/true/false/on/off for switches, auto (or 0 for counts) for None."""
    kinds = _kinds()
    if name not in kinds:
        raise ConfigError(f"unknown setting {name!r}")
    kind, optional = kinds[name]
    where = source or name
    if not isinstance(raw, str):  # from a config file: already typed
        if raw is None and optional:
            return None
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, kind) and (kind is bool or not isinstance(raw, bool)):
            return None if optional and kind is int and raw == 0 else raw
        raw = str(raw)
    text = raw.strip().lower()
    if optional and (text in _AUTO or (kind is int and text == "0")):
        return None
    if kind is bool:
        return switch(raw, where, "auto, on, off" if optional else None)
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}={raw!r} is not a valid {kind.__name__}") from exc
    return raw


def switch(raw: Any, where: str, choices: str | None = None) -> bool:
    """A switch from text: 1/0, true/false, on/off, yes/no (a bool stays itself)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}={raw!r}: choose {choices or '1 or 0 (true/false, on/off)'}")


def checked(s: Settings) -> Settings:
    """The settings, if every value is in range; else ConfigError naming the first that is not."""
    s.checked()  # the runtime's fields
    if not 0 < s.port < 65536:
        raise ConfigError(f"port must be 1-65535, not {s.port}")
    for name in ("max_chunks", "max_body_bytes", "max_queued_tokens", "max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be positive")
    one_of("overflow", s.overflow, OVERFLOW_MODES)
    if s.request_timeout_s <= 0:
        raise ConfigError("request_timeout_s must be positive")
    one_of("log_level", s.log_level, LOG_LEVELS)
    if not s.model and not s.model_dir:
        raise ConfigError("model must not be empty (or give model_dir)")
    return s
