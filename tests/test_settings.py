"""Settings: flags first, then CROSSRANK_* environment variables, then defaults; checked once."""

from __future__ import annotations

import pytest

from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.settings import Settings
from tests.helpers import settings_from as build


def test_defaults() -> None:
    s = build([], env={})
    assert s == Settings()
    assert s.host == "127.0.0.1" and s.port == 8000


def test_env_fallback_and_flag_precedence() -> None:
    env = {"CROSSRANK_PORT": "9000", "CROSSRANK_API_KEY": "k", "CROSSRANK_MAX_CHUNKS": "10"}
    s = build([], env=env)
    assert (s.port, s.api_key, s.max_chunks) == (9000, "k", 10)
    assert build(["--port", "9001"], env=env).port == 9001


def test_switches_and_auto_read_as_bool_and_none() -> None:
    s = build(["--spin", "0", "--pipeline", "on", "--threads", "auto", "--max-rows", "0"],
              env={"CROSSRANK_INT8_CHECK": "false", "CROSSRANK_TOKEN_BUDGET": "4096"})
    assert (s.spin, s.pipeline, s.threads, s.max_rows, s.int8_check, s.token_budget) == (
        False, True, None, None, False, 4096)
    assert build(["--pipeline", "auto"]).pipeline is None


@pytest.mark.parametrize("argv", [["--port", "0"], ["--provider", "tpu"], ["--variant", "int4"],
                                  ["--max-chunks", "0"], ["--request-timeout-s", "-1"],
                                  ["--threads", "x"], ["--pipeline", "maybe"],
                                  ["--spin", "2"], ["--threads", "-1"]])
def test_invalid(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        build(argv, env={})


def test_model_dir_follows_the_model_unless_given() -> None:
    assert Settings().resolved_model_dir() == "models/ms-marco-MiniLM-L-12-v2"
    assert Settings().resolved_model_dir(stand_in=True) == "models/stand-in-L-12"
    s = build(["--model", "org/other-reranker", "--models-root", "/srv/m"], env={})
    assert s.resolved_model_dir() == "/srv/m/other-reranker"
    assert build(["--model-dir", "/x"], env={}).resolved_model_dir(stand_in=True) == "/x"
    assert build([], env={"CROSSRANK_MODEL_DIR": "/y"}).resolved_model_dir() == "/y"


def test_the_container_recipe_names_real_settings_and_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/Dockerfile (not built here: no container engine) configures the server by
    environment; each variable it sets must be one crossrank reads, and its health check a route."""
    import re
    import shlex
    from pathlib import Path

    from crossrank.runtime import selfcheck
    from crossrank.runtime.http import server

    text = (Path(__file__).resolve().parent.parent / "deploy" / "Dockerfile").read_text()
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", text, re.M)
    assert block is not None
    env = dict(kv.split("=", 1) for kv in shlex.split(block.group(1).replace("\\\n", " ")))
    cache = env.pop("CROSSRANK_CACHE_DIR")  # the int8 verdict cache's, not a setting
    s = build([], env=env)
    assert (s.model_dir, s.host, s.port, s.int8_check_background) == ("/model", "0.0.0.0", 8000,
                                                                      True)
    assert len(env) == 4
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", cache)
    assert selfcheck.cache_dir() == Path("/cache/int8-check")
    assert 'VOLUME ["/cache"]' in text and 'ENTRYPOINT ["crossrank", "serve"]' in text
    assert "/health" in text and 'Route("/health"' in Path(server.__file__).read_text()
