"""What serves, built once from Settings: `crossrank serve`, Ray Serve replicas and the HTTP app
all call `build`, so a setting means the same thing on every path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crossrank.runtime.options import RequestLimits, WindowLimits
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.service import Service
from crossrank.runtime.settings import Settings


@dataclass(frozen=True)
class Serving:
    """The scorer (model, engine), the service the server's requests go through (the scorer's
    tokenizer and engine with the settings' windows and queue bound) and the request limits."""

    scorer: Scorer
    service: Service
    limits: RequestLimits


def windows_of(settings: Settings) -> WindowLimits:
    return WindowLimits(settings.window_stride, settings.max_windows_per_chunk,
                        settings.max_windows_per_request)


def load_scorer(settings: Settings, model_dir: Path | str | None = None) -> Scorer:
    """The settings' model (model_dir, else the settings' own directory) loaded for serving."""
    s = settings
    return Scorer.from_dir(model_dir or s.resolved_model_dir(), variant=s.variant,
                           provider=s.provider, threads=s.threads, token_budget=s.token_budget,
                           max_rows=s.max_rows, spin=s.spin, pipeline=s.pipeline,
                           tokenizer=s.tokenizer, int8_check=s.int8_check,
                           cascade=s.cascade, windows=windows_of(s))


def build(settings: Settings, *, model_dir: Path | str | None = None,
          scorer: Scorer | None = None) -> Serving:
    """What serves under these settings: the given scorer (tests, benchmarks: a scorer on a
    simulated device) or the settings' model loaded, with the server's service and limits."""
    sc = scorer or load_scorer(settings, model_dir)
    service = Service(sc.tokenizer, sc.engine, windows_of(settings),
                      max_queued_tokens=settings.max_queued_tokens, refiner=sc.service.refiner)
    return Serving(scorer=sc, service=service,
                   limits=RequestLimits(max_chunks=settings.max_chunks,
                                        overflow_default=settings.overflow))
