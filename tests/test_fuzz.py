"""Property-based fuzzing: every endpoint from the server's own OpenAPI document (schemathesis,
in process, bounded), and unicode/size edge cases through the tokenizer (hypothesis)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.applications import Starlette

from crossrank.runtime.scorer import Scorer
from crossrank.runtime.settings import Settings
from tests.fake import fake_scorer
from tests.helpers import app_for


@pytest.fixture(scope="module")
def fuzz_app(fake_model_dir: Path) -> Iterator[Starlette]:
    scorer = fake_scorer(fake_model_dir)
    # The engine runs from the scorer's start; the ASGI transport does not run the lifespan.
    yield app_for(scorer, replace(Settings(), max_chunks=16, request_timeout_s=20))
    scorer.close()


# Bounded and derandomized for CI (no flaky runs); `make fuzz` runs many more, randomly.
EXAMPLES = int(os.environ.get("CROSSRANK_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = "CROSSRANK_FUZZ_EXAMPLES" not in os.environ


def operations(app: Starlette) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = []
    for result in schema.get_all_operations():
        assert not isinstance(result, Err), f"invalid operation in /openapi.json: {result}"
        ops.append(result.ok())
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_endpoint_conforms_and_never_5xx(fuzz_app: Starlette, mode: Any) -> None:
    # Driven by hand rather than schemathesis' pytest plugin (which pytest 9 breaks). Checks:
    # no 5xx, documented status codes and content types, response bodies match the schema,
    # schema-valid bodies accepted and invalid ones rejected.
    ops = operations(fuzz_app)
    labels = {op.label for op in ops}
    assert {"POST /score", "POST /v1/score", "POST /rerank", "POST /v1/rerank", "POST /v2/rerank",
            "POST /v1/reranking", "GET /health", "GET /info", "GET /metrics"} <= labels
    for op in ops:
        if mode == GenerationMode.NEGATIVE and op.method.upper() == "GET":
            continue  # no parameters or body to make invalid
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            if mode == GenerationMode.NEGATIVE or not pair_lists_differ(case.body):
                case.call_and_validate()
                return
            # vLLM's rule no JSON Schema can state: text_1 and text_2 lists of different
            # lengths (text_1 not one text) are a 422 naming them, never a 5xx.
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            assert response.status_code == 422 and "text_1" in response.json()["error"]

        run()


def pair_lists_differ(body: Any) -> bool:
    """A vLLM score body whose text_1 list is neither one text nor as long as text_2."""
    if not isinstance(body, dict) or not isinstance(body.get("text_1"), list):
        return False
    t1, t2 = body["text_1"], body.get("text_2")
    n2 = 1 if isinstance(t2, str) else len(t2) if isinstance(t2, list) else None
    return len(t1) > 1 and n2 is not None and len(t1) != n2


@pytest.fixture(scope="module")
def scorer(fake_model_dir: Path) -> Scorer:
    return fake_scorer(fake_model_dir)


EDGE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Mn"]), max_size=200),
    st.builds(lambda w, n: w * n, st.text(min_size=1, max_size=3), st.integers(100, 3000)),
    st.sampled_from(["\u200b" * 600, "\u202eevil\u202c", "עברית ועוד" * 80,
                     "a" * 5000, "\x00\x01\x02", "\ufeff", "🚀" * 700]),
)


@given(query=EDGE_TEXT.filter(lambda q: q.strip() != ""), chunks=st.lists(EDGE_TEXT, max_size=4))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_tokenizer_edge_cases(scorer: Scorer, query: str, chunks: list[str]) -> None:
    out = scorer.score(query, chunks)
    assert sorted(i for i, _ in out) == list(range(len(chunks)))
    enc = scorer.tokenizer.encode(query, chunks)
    assert (enc.lengths <= 512).all()


@pytest.mark.parametrize("target", [510, 511, 512, 513])
def test_exact_lengths_around_the_limit(scorer: Scorer, target: int) -> None:
    # "moon" is one token; [CLS] q [SEP] c [SEP] with a 1-token query: 4 + chunk tokens.
    chunk = " ".join(["moon"] * (target - 4))
    enc = scorer.tokenizer.encode("moon", [chunk], with_truncation=True)
    assert enc.lengths[0] == min(target, 512)
    assert enc.truncated is not None and enc.truncated[0] == max(0, target - 512)
    assert len(scorer.score("moon", [chunk])) == 1
