"""The HTTP server in process: every endpoint, every bad input, 429, deadlines, faults, API key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from crossrank.runtime.core.options import WindowLimits
from crossrank.runtime.core.scores import sigmoid
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.service import parts_of
from crossrank.runtime.settings import Settings
from tests.fake import fake_scorer
from tests.helpers import app_for, cuda_like, gated, library, reloaded, split, wait_until

SEED_QUERY = "Who was the first person to walk on the moon?"
SEED_CHUNKS = [
    "The moon landing was watched by millions around the world.",
    "Neil Armstrong was the first person to walk on the moon in 1969.",
    "The moon orbits the Earth every 27 days.",
]


@pytest.fixture(scope="module")
def scorer(fake_model_dir: Path) -> Scorer:
    return fake_scorer(fake_model_dir)


def make_client(scorer: Scorer, **overrides: Any) -> TestClient:
    return TestClient(app_for(scorer, replace(Settings(), **overrides)),
                      raise_server_exceptions=False)


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with make_client(scorer) as c:
        yield c


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
    assert client.post("/rerank", json={"query": "q", "texts": ["x"],
                                        "truncation_direction": "Left"}).status_code == 200
    assert_error(client.post("/rerank", json={"query": "q", "texts": ["x"],
                                              "truncation_direction": "up"}), 422)


@pytest.mark.parametrize("version", ["1", "2"])
def test_cohere_rerank(client: TestClient, scorer: Scorer, version: str) -> None:
    docs: list[Any] = [SEED_CHUNKS[0], {"text": SEED_CHUNKS[1]}, SEED_CHUNKS[2]]
    r = client.post(f"/v{version}/rerank", json={
        "model": "rerank-english-v3.0", "query": SEED_QUERY, "documents": docs, "top_n": 2,
        "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "results", "meta", "usage"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert body["meta"]["api_version"]["version"] == version
    expected = scorer.score(SEED_QUERY, SEED_CHUNKS)[:2]
    assert [x["index"] for x in body["results"]] == [i for i, _ in expected]
    for x in body["results"]:
        assert 0 < x["relevance_score"] < 1
        assert x["document"] == {"text": SEED_CHUNKS[x["index"]]}
    plain = client.post(f"/v{version}/rerank", json={"query": SEED_QUERY, "documents": docs})
    assert len(plain.json()["results"]) == 3
    assert all("document" not in x for x in plain.json()["results"])


def test_cohere_max_tokens_per_doc_cuts_documents(client: TestClient, scorer: Scorer,
                                                  fake_model_dir: Path) -> None:
    doc = "Neil Armstrong walked on the moon. " + "filler words here " * 50
    cut = client.post("/v2/rerank", json={"query": SEED_QUERY, "documents": [doc],
                                          "max_tokens_per_doc": 7})
    head = library(fake_model_dir / "tokenizer.json").encode(doc, add_special_tokens=False).offsets[6][1]
    expected = float(sigmoid(scorer.logits(SEED_QUERY, [doc[:head]]))[0])
    assert cut.json()["results"][0]["relevance_score"] == pytest.approx(expected, abs=1e-6)


def test_health_info_metrics_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["limits"]["max_chunks"] == 1000
    assert info["stand_in"] is True and info["variant"] == "fp32" and info["provider"] == "cpu"
    assert info["pipeline"] is False  # off on CPUs unless asked for
    client.post("/score", json={"query": "q", "chunks": ["a"]})
    metrics = client.get("/metrics").text
    assert 'crossrank_requests_total{endpoint="score",status="200"}' in metrics
    assert "crossrank_batch_rows_bucket" in metrics and "crossrank_queued_tokens" in metrics
    assert "process_resident_memory_bytes" in metrics
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/score", "/rerank", "/v1/rerank", "/v2/rerank", "/health", "/info",
            "/metrics"} <= set(spec["paths"])


def test_health_is_503_when_the_engine_is_gone(scorer: Scorer) -> None:
    own = reloaded(scorer)
    with make_client(own) as c:
        own.close()
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
    (b'{"query": "  \\n ", "chunks": ["a"]}', "application/json", 422),
]


@pytest.mark.parametrize(("body", "ctype", "status"), BAD)
def test_bad_input(client: TestClient, body: bytes, ctype: str, status: int) -> None:
    assert_error(client.post("/score", content=body, headers={"content-type": ctype}), status)
    assert client.post("/score", json={"query": "q", "chunks": ["a"]}).status_code == 200


@pytest.mark.parametrize(("field", "value"), [("rank_fields", ["title"]),
                                              ("max_chunks_per_doc", 3)])
def test_cohere_fields_that_would_change_the_meaning_are_refused(client: TestClient, field: str,
                                                                 value: Any) -> None:
    r = client.post("/v2/rerank", json={"query": "q", "documents": ["a"], field: value})
    assert field in assert_error(r, 422)["error"]


def test_unknown_fields_are_ignored(client: TestClient) -> None:
    plain = client.post("/score", json={"query": SEED_QUERY, "chunks": SEED_CHUNKS})
    extra = client.post("/score", json={"query": SEED_QUERY, "chunks": SEED_CHUNKS,
                                        "user": "x", "priority": 3})
    assert extra.status_code == 200 and extra.json() == plain.json()
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "any-name"})
    assert r.status_code == 200  # one model per server: `model` is accepted and ignored


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


def test_large_request_and_answer_are_handled_off_the_loop(client: TestClient,
                                                          scorer: Scorer) -> None:
    # Over 256 KB of body and 500 answers: parsed and rendered in a thread, same answer.
    texts = [f"passage {i} " + "the tides follow the moon " * 16 for i in range(700)]
    body = json.dumps({"query": SEED_QUERY, "chunks": texts})
    assert len(body) > 256 * 1024
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert [i for i, _ in r.json()] == [i for i, _ in scorer.score(SEED_QUERY, texts)]


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

def tokens(scorer: Scorer, query: str, chunks: list[str]) -> int:
    return int(scorer.tokenizer.encode(query, chunks).lengths.sum())


def test_concurrent_requests_batch_together_and_get_their_own_answers(fake_model_dir: Path
                                                                      ) -> None:
    base = fake_scorer(fake_model_dir, token_budget=100_000, max_rows=512)
    scorer, session = gated(base)
    requests = [(f"query {k}", [f"chunk {k} {j}" for j in range(5)]) for k in range(6)]
    total = sum(tokens(base, q, ch) for q, ch in requests)
    with make_client(scorer) as c, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(c.post, "/score", json={"query": q, "chunks": ch})
                   for q, ch in requests]
        # The first round is held at the device; the rest arrive and wait behind it.
        assert wait_until(lambda: scorer.engine.queued_tokens == total)
        session.gate.set()
        answers = [f.result().json() for f in futures]
    for (q, ch), ans in zip(requests, answers, strict=True):
        expected = base.score(q, ch)
        assert [i for i, _ in (tuple(a) for a in ans)] == [i for i, _ in expected]
        assert np.allclose([a[1] for a in ans], [s for _, s in expected], atol=1e-5)
    assert max(session.rows) > 5  # some batch mixed pairs from several requests


def test_overload_answers_429_at_once(scorer: Scorer) -> None:
    held, session = gated(scorer, max_queued_tokens=50)
    with make_client(held) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/score", json={"query": "q", "chunks": ["a b c"] * 3})
        assert session.entered.wait(60)
        r = c.post("/score", json={"query": "q", "chunks": ["x y z"] * 20})
        # answered while the device is still held: refused at once, not after the queue drained
        assert not session.gate.is_set()
        assert_error(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        session.gate.set()
        assert first.result().status_code == 200


def test_deadline_drops_work_before_inference(scorer: Scorer) -> None:
    held, session = gated(scorer)
    with make_client(held) as c:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/score", json={"query": "q", "chunks": ["a"]})
            assert session.entered.wait(60)
            r = c.post("/score", json={"query": "late", "chunks": ["b"] * 7},
                       headers={"x-request-timeout": "0.3"})
            assert_error(r, 504)
            session.gate.set()
            assert first.result().status_code == 200
        assert wait_until(lambda: held.engine.queued_tokens == 0)
        assert 7 not in session.rows  # the timed-out request's pairs never reached the model
        assert c.post("/score", json={"query": "q", "chunks": ["a"]}).status_code == 200
        assert_error(c.post("/score", json={"query": "q", "chunks": ["a"]},
                            headers={"x-request-timeout": "soon"}), 422)


def test_inference_fault_fails_only_that_round(scorer: Scorer) -> None:
    failing, _ = gated(scorer, gated=False, fail=[1])
    with make_client(failing) as c:
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
        assert c.get("/openapi.json").status_code == 200  # nor does the API description
        for path in ("/info", "/metrics"):
            assert_error(c.get(path), 401)
        info = c.get("/info", headers={"authorization": "Bearer s3cret"}).json()
        assert info["auth"] is True and "s3cret" not in json.dumps(info)


# -- large requests on the CUDA path: tokenized in parts (exercised here on the CPU) -------------

@pytest.fixture(scope="module")
def piped(scorer: Scorer) -> Scorer:
    return cuda_like(scorer)


def mixed_texts(n: int) -> list[str]:
    words = "tides moon ocean gravity water coast orbit pull".split()
    out = [" ".join(words[(i + k) % len(words)] for k in range(3 + (i * 37) % 90))
           for i in range(n)]
    out[5] = "moon " * 700  # over the limit: truncated, or split into windows
    out[6] = ""
    return out


def test_sliced_request_gives_the_one_part_answer(piped: Scorer, scorer: Scorer) -> None:
    texts = mixed_texts(150)
    parts = parts_of(texts, piped.policy)
    assert len(parts) == 4 and sorted(np.concatenate(parts).tolist()) == list(range(150))
    queued: list[int] = []
    submit = piped.engine.submit

    def counting(rows: Any, *args: Any, **kwargs: Any) -> Any:
        queued.append(len(rows))
        return submit(rows, *args, **kwargs)

    piped.engine.submit = counting  # type: ignore[method-assign]  # counts the parts
    try:
        with make_client(piped) as c, make_client(scorer) as one:
            for overflow in ("truncate", "split"):
                body = {"query": SEED_QUERY, "texts": texts, "raw_scores": True,
                        "overflow": overflow, "report_truncation": True}
                want = one.post("/rerank", json=body)  # the same model, one part, exact shapes
                queued.clear()
                got = c.post("/rerank", json=body)
                assert got.status_code == 200 and len(queued) == 4, queued
                assert [x["index"] for x in got.json()] == [x["index"] for x in want.json()]
                assert np.allclose([x["score"] for x in got.json()],
                                   [x["score"] for x in want.json()], atol=1e-4)
                for h in ("x-truncated-count", "x-truncated-chunks"):
                    assert got.headers[h] == want.headers[h]
                cut = "5:" if overflow == "truncate" else ""  # split windows leave nothing out
                assert got.headers["x-truncated-chunks"].startswith(cut)
    finally:
        del piped.engine.submit


def test_sliced_request_errors_name_the_callers_index(piped: Scorer) -> None:
    texts = mixed_texts(150)
    texts[5] = "short"
    texts[90] = "moon " * 700  # the longest text: last part, another index there
    with make_client(piped) as c:
        body = assert_error(c.post("/rerank", json={"query": "q", "texts": texts,
                                                    "truncate": False}), 422)
        assert "texts[90]" in body["error"]
        # the parts queued before the refusal were dropped
        assert wait_until(lambda: piped.engine.queued_tokens == 0)
        texts[7] = 7  # type: ignore[call-overload]  # a non-string: refused before tokenizing
        assert "[7]" in assert_error(c.post("/score", json={"query": "q", "chunks": texts}),
                                     422)["error"]


def test_accepted_sliced_request_is_not_refused_halfway(piped: Scorer) -> None:
    texts = mixed_texts(150)
    first_part = tokens(piped, "q", [texts[i] for i in parts_of(texts, piped.policy)[0]])
    total = tokens(piped, "q", texts)
    small = tokens(piped, "q", ["a"])
    held, session = gated(piped, max_queued_tokens=first_part + 10)
    with make_client(held) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/score", json={"query": "q", "chunks": ["a"]})
        assert session.entered.wait(60)  # holds the device: its tokens stay queued
        big = pool.submit(c.post, "/score", json={"query": "q", "chunks": texts})
        assert wait_until(lambda: held.engine.queued_tokens == small + total)  # all parts queued
        session.gate.set()
        assert first.result().status_code == 200
        r = big.result()
        assert total > first_part + 10  # the whole request is over the bound, its first part not
        assert r.status_code == 200 and len(r.json()) == 150
        assert wait_until(lambda: held.engine.queued_tokens == 0)


def test_failed_part_fails_the_sliced_request_and_nothing_hangs(piped: Scorer) -> None:
    failing, _ = gated(piped, gated=False, fail=[2])
    with make_client(failing) as c:
        assert_error(c.post("/score", json={"query": "q", "chunks": mixed_texts(150)}), 500)
        ok = c.post("/score", json={"query": "q", "chunks": mixed_texts(150)})
        assert ok.status_code == 200 and len(ok.json()) == 150
        assert wait_until(lambda: failing.engine.queued_tokens == 0)


def test_sliced_request_keeps_the_window_caps_per_request(piped: Scorer) -> None:
    texts = mixed_texts(150)  # texts[5] is ~700 tokens: more than one window
    body = {"query": "q", "chunks": texts, "overflow": "split"}
    need = split(piped.tokenizer, WindowLimits(128, 16, 10_000), "q", texts).n_rows
    assert need > 150 and len(parts_of(texts, piped.policy)) == 4  # each part is under `need`
    under = reloaded(piped, max_windows_per_request=need - 1)
    with make_client(under) as c:
        err = assert_error(c.post("/score", json=body), 422)["error"]
        assert "per request" in err
        assert wait_until(lambda: under.engine.queued_tokens == 0)
    with make_client(reloaded(piped, max_windows_per_request=need)) as c:
        assert c.post("/score", json=body).status_code == 200
    with make_client(reloaded(piped, max_windows_per_chunk=1)) as c:
        assert "chunk 5 needs" in assert_error(c.post("/score", json=body), 422)["error"]
