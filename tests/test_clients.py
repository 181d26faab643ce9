"""Real client libraries against the server: the Cohere SDK (v1 and v2) with only base_url changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from crossrank.runtime.settings import Settings
from tests.fake import fake_scorer
from tests.helpers import app_for

cohere = pytest.importorskip("cohere")

QUERY = "Who was the first person to walk on the moon?"
DOCS = [
    "The moon landing was watched by millions around the world.",
    "Neil Armstrong was the first person to walk on the moon in 1969.",
    "The moon orbits the Earth every 27 days.",
]


@pytest.fixture(scope="module")
def http(fake_model_dir: Path) -> Iterator[TestClient]:
    scorer = fake_scorer(fake_model_dir)
    with TestClient(app_for(scorer, Settings(api_key="k")), base_url="http://testserver") as c:
        c.headers["authorization"] = "Bearer k"
        yield c


def expected(fake_model_dir: Path) -> list[int]:
    return [i for i, _ in fake_scorer(fake_model_dir).score(QUERY, DOCS)]


def test_cohere_v2_sdk(http: TestClient, fake_model_dir: Path) -> None:
    co = cohere.ClientV2(api_key="k", base_url="http://testserver", httpx_client=http)
    res = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in res.results] == expected(fake_model_dir)[:2]
    assert all(0 < r.relevance_score < 1 for r in res.results)


def test_cohere_v1_sdk(http: TestClient, fake_model_dir: Path) -> None:
    co = cohere.Client(api_key="k", base_url="http://testserver", httpx_client=http)
    res = co.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS,
                    return_documents=True)
    assert [r.index for r in res.results] == expected(fake_model_dir)
    assert res.results[0].document is not None
    assert res.results[0].document.text == DOCS[res.results[0].index]
