"""The HTTP server in process: every endpoint, every bad input, 429, deadlines, faults, API key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from runtime import batching
from runtime.scorer import Scorer, sigmoid
from runtime.server import create_app
from runtime.settings import Settings

SEED_QUERY = "Who was the first person to walk on the moon?"
SEED_CHUNKS = [
    "The moon landing was watched by millions around the world.",
    "Neil Armstrong was the first person to walk on the moon in 1969.",
    "The moon orbits the Earth every 27 days.",
]


@pytest.fixture(scope="module")
def scorer(tiny_dir: Path) -> Scorer:
    return Scorer.from_dir(tiny_dir, variant="fp32")


def make_client(scorer: Scorer, **overrides: Any) -> TestClient:
    return TestClient(create_app(scorer, replace(Settings(), **overrides)),
                      raise_server_exceptions=False)


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with make_client(scorer) as c:
        yield c


def worker_of(c: TestClient) -> Any:
    return c.app.state.crossrank.worker  # type: ignore[attr-defined]


def assert_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "error_type"} and body["error"]
    return body


# -- the endpoints ---------------------------------------------------------------------------------

def test_score_is_the_seed_contract(client: TestClient, scorer: Scorer) -> None:
    r = client.post("/score", json={"query": SEED_QUERY, "chunks": SEED_CHUNKS})
    assert r.status_code == 200
    body = r.json()
    assert [tuple(x) for x in body] == scorer.score(SEED_QUERY, SEED_CHUNKS)
    assert all(len(x) == 2 and isinstance(x[0], int) and isinstance(x[1], float) for x in body)
    assert [x[1] for x in body] == sorted((x[1] for x in body), reverse=True)


def test_empty_chunks_give_empty_answer(client: TestClient) -> None:
    r = client.post("/score", json={"query": "q", "chunks": []})
    assert r.status_code == 200 and r.json() == []


def test_tei_rerank(client: TestClient, scorer: Scorer) -> None:
    raw = scorer.logits(SEED_QUERY, SEED_CHUNKS)
    r = client.post("/rerank", json={"query": SEED_QUERY, "texts": SEED_CHUNKS})
    assert r.status_code == 200
    out = r.json()
    assert [o["index"] for o in out] == [i for i, _ in scorer.score(SEED_QUERY, SEED_CHUNKS)]
    for o in out:
        assert set(o) == {"index", "score"}
        assert o["score"] == pytest.approx(float(sigmoid(raw[o["index"]:o["index"] + 1])[0]))
    r = client.post("/rerank", json={"query": SEED_QUERY, "texts": SEED_CHUNKS,
                                     "raw_scores": True, "return_text": True})
    for o in r.json():
        assert o["score"] == pytest.approx(float(raw[o["index"]]), abs=1e-6)
        assert o["text"] == SEED_CHUNKS[o["index"]]


def test_tei_truncate_false_rejects_long_text(client: TestClient) -> None:
    long = "moon " * 600
    assert_error(client.post("/rerank", json={"query": "q", "texts": [long], "truncate": False}),
                 422)
    assert client.post("/rerank", json={"query": "q", "texts": [long]}).status_code == 200
    assert client.post("/rerank", json={"query": "q", "texts": ["x"],
                                        "truncation_direction": "Right"}).status_code == 200
    assert_error(client.post("/rerank", json={"query": "q", "texts": ["x"],
                                              "truncation_direction": "Left"}), 422)


@pytest.mark.parametrize("version", ["1", "2"])
def test_cohere_rerank(client: TestClient, scorer: Scorer, version: str) -> None:
    docs: list[Any] = [SEED_CHUNKS[0], {"text": SEED_CHUNKS[1]}, SEED_CHUNKS[2]]
    r = client.post(f"/v{version}/rerank", json={
        "model": "rerank-english-v3.0", "query": SEED_QUERY, "documents": docs, "top_n": 2,
        "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"]["api_version"]["version"] == version
    expected = scorer.score(SEED_QUERY, SEED_CHUNKS)[:2]
    assert [x["index"] for x in body["results"]] == [i for i, _ in expected]
    for x in body["results"]:
        assert 0 < x["relevance_score"] < 1
        assert x["document"] == {"text": SEED_CHUNKS[x["index"]]}
    plain = client.post(f"/v{version}/rerank", json={"query": SEED_QUERY, "documents": docs})
    assert len(plain.json()["results"]) == 3
    assert all("document" not in x for x in plain.json()["results"])


def test_cohere_max_tokens_per_doc_cuts_documents(client: TestClient, scorer: Scorer) -> None:
    doc = "Neil Armstrong walked on the moon. " + "filler words here " * 50
    cut = client.post("/v2/rerank", json={"query": SEED_QUERY, "documents": [doc],
                                          "max_tokens_per_doc": 7})
    head = scorer.tokenizer.tokenize_alone(doc)[6][1]
    expected = float(sigmoid(scorer.logits(SEED_QUERY, [doc[:head]]))[0])
    assert cut.json()["results"][0]["relevance_score"] == pytest.approx(expected, abs=1e-6)


def test_health_info_metrics_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["limits"]["max_chunks"] == 1000
    assert info["stand_in"] is True and info["variant"] == "fp32" and info["provider"] == "cpu"
    client.post("/score", json={"query": "q", "chunks": ["a"]})
    metrics = client.get("/metrics").text
    assert 'crossrank_requests_total{endpoint="score",status="200"}' in metrics
    assert "crossrank_batch_rows_bucket" in metrics and "crossrank_queued_tokens" in metrics
    assert "process_resident_memory_bytes" in metrics
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/score", "/rerank", "/v1/rerank", "/v2/rerank", "/health", "/info",
            "/metrics"} <= set(spec["paths"])


def test_health_is_503_when_the_worker_is_gone(scorer: Scorer) -> None:
    with make_client(scorer) as c:
        worker_of(c).stop(1)
        assert_error(c.post("/score", json={"query": "q", "chunks": ["a"]}), 503)
        assert c.get("/health").status_code == 503


# -- bad input: a 4xx JSON error, and the server keeps serving ------------------------------------

BAD = [
    (b'{"query": "q", "chunks": [', "application/json", 400),
    (b'\xff\xfe{"query": "q"}', "application/json", 400),
    (b'{"query": "q", "chunks": ["a"]}', "text/plain", 415),
    (b'[1, 2]', "application/json", 422),
    (b'{"chunks": ["a"]}', "application/json", 422),
    (b'{"query": "q"}', "application/json", 422),
    (b'{"query": 3, "chunks": ["a"]}', "application/json", 422),
    (b'{"query": null, "chunks": ["a"]}', "application/json", 422),
    (b'{"query": "q", "chunks": "a"}', "application/json", 422),
    (b'{"query": "q", "chunks": null}', "application/json", 422),
    (b'{"query": "q", "chunks": ["a", 1]}', "application/json", 422),
    (b'{"query": "q", "chunks": ["a", null]}', "application/json", 422),
    (b'{"query": "", "chunks": ["a"]}', "application/json", 422),
]


@pytest.mark.parametrize(("body", "ctype", "status"), BAD)
def test_bad_input(client: TestClient, body: bytes, ctype: str, status: int) -> None:
    assert_error(client.post("/score", content=body, headers={"content-type": ctype}), status)
    assert client.post("/score", json={"query": "q", "chunks": ["a"]}).status_code == 200


def test_too_many_chunks(scorer: Scorer) -> None:
    with make_client(scorer, max_chunks=5) as c:
        body = assert_error(c.post("/score", json={"query": "q", "chunks": ["a"] * 6}), 422)
        assert "limit is 5" in body["error"]
        assert c.get("/info").json()["limits"]["max_chunks"] == 5


def test_body_over_limit(scorer: Scorer) -> None:
    with make_client(scorer, max_body_bytes=1000) as c:
        big = json.dumps({"query": "q", "chunks": ["x" * 2000]}).encode()
        assert_error(c.post("/score", content=big, headers={"content-type": "application/json"}),
                     413)

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(20):
                yield b" " * 100

        assert_error(c.post("/score", content=chunked(),
                            headers={"content-type": "application/json"}), 413)


def test_huge_single_chunk_is_truncated_not_rejected(client: TestClient) -> None:
    r = client.post("/score", json={"query": "q", "chunks": ["word " * 50_000]})
    assert r.status_code == 200 and len(r.json()) == 1


def test_lone_surrogates_are_scored(client: TestClient) -> None:
    r = client.post("/score", content=b'{"query": "q\\ud800", "chunks": ["\\udfff x"]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 200


@pytest.mark.parametrize("top_n", [0, -1, "3", 1.5, True, -2.0])
def test_bad_top_n(client: TestClient, top_n: Any) -> None:
    assert_error(client.post("/v1/rerank", json={"query": "q", "documents": ["a"],
                                                 "top_n": top_n}), 422)


def test_unknown_endpoint_and_wrong_method(client: TestClient) -> None:
    assert assert_error(client.get("/nope"), 404)["error_type"] == "not_found"
    assert assert_error(client.get("/score"), 405)["error_type"] == "method_not_allowed"


# -- serving model: batching across requests, backpressure, deadlines, faults ----------------------

def test_concurrent_requests_batch_together_and_get_their_own_answers(tiny_dir: Path) -> None:
    scorer = Scorer.from_dir(tiny_dir, variant="fp32", token_budget=100_000, max_rows=512)
    gate = threading.Event()
    rows_seen: list[int] = []

    def hold(batch: batching.Batch) -> None:
        gate.wait(10)
        rows_seen.append(batch.rows)

    requests = [(f"query {k}", [f"chunk {k} {j}" for j in range(5)]) for k in range(6)]
    with make_client(scorer) as c:
        worker_of(c).fault = hold
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(c.post, "/score", json={"query": q, "chunks": ch})
                       for q, ch in requests]
            time.sleep(0.5)  # all six arrive while the first round is held
            gate.set()
            answers = [f.result().json() for f in futures]
    for (q, ch), ans in zip(requests, answers, strict=True):
        expected = scorer.score(q, ch)
        assert [i for i, _ in (tuple(a) for a in ans)] == [i for i, _ in expected]
        assert np.allclose([a[1] for a in ans], [s for _, s in expected], atol=1e-5)
    assert max(rows_seen) > 5  # some batch mixed pairs from several requests


def test_overload_answers_429_at_once(scorer: Scorer) -> None:
    gate = threading.Event()
    with make_client(scorer, max_queued_tokens=50) as c:
        worker_of(c).fault = lambda b: gate.wait(10)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/score", json={"query": "q", "chunks": ["a b c"] * 3})
            time.sleep(0.3)
            t0 = time.perf_counter()
            r = c.post("/score", json={"query": "q", "chunks": ["x y z"] * 20})
            elapsed = time.perf_counter() - t0
            gate.set()
            assert first.result().status_code == 200
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        assert elapsed < 1.0


def test_deadline_drops_work_before_inference(scorer: Scorer) -> None:
    gate = threading.Event()
    ran: list[int] = []

    def hold(batch: batching.Batch) -> None:
        gate.wait(10)
        ran.append(batch.rows)

    with make_client(scorer) as c:
        worker_of(c).fault = hold
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/score", json={"query": "q", "chunks": ["a"]})
            time.sleep(0.2)
            r = c.post("/score", json={"query": "late", "chunks": ["b"] * 7},
                       headers={"x-request-timeout": "0.3"})
            assert_error(r, 504)
            gate.set()
            assert first.result().status_code == 200
        time.sleep(0.3)
        assert 7 not in ran  # the timed-out request's pairs never reached the model
        assert c.post("/score", json={"query": "q", "chunks": ["a"]}).status_code == 200
        assert_error(c.post("/score", json={"query": "q", "chunks": ["a"]},
                            headers={"x-request-timeout": "soon"}), 422)


def test_inference_fault_fails_only_that_round(scorer: Scorer) -> None:
    with make_client(scorer) as c:
        calls = {"n": 0}

        def boom(batch: batching.Batch) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected failure")

        worker_of(c).fault = boom
        body = assert_error(c.post("/score", json={"query": "q", "chunks": ["a", "b"]}), 500)
        assert "Traceback" not in body["error"] and "injected" not in body["error"]
        assert c.post("/score", json={"query": "q", "chunks": ["a", "b"]}).status_code == 200
        assert c.get("/health").status_code == 200


def test_api_key(scorer: Scorer) -> None:
    with make_client(scorer, api_key="s3cret") as c:
        body = {"query": "q", "chunks": ["a"]}
        assert_error(c.post("/score", json=body), 401)
        r = c.post("/score", json=body, headers={"authorization": "Bearer wrong"})
        assert_error(r, 401)
        assert "s3cret" not in r.text
        assert c.post("/score", json=body,
                      headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes need no key
        assert_error(c.get("/info"), 401)
        info = c.get("/info", headers={"authorization": "Bearer s3cret"}).json()
        assert info["auth"] is True and "s3cret" not in json.dumps(info)
