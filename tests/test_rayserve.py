"""crossrank as a Ray Serve application: a local Ray instance (started and stopped here, bounded
in time), two replicas of the tiny model, the same answers as `crossrank serve`, requests spread
over both, a replica killed under load."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from crossrank.rayserve import QueuedTokensPolicy, RayServeConfig
from crossrank.runtime.core.errors import ConfigError
from tests.helpers import free_port, start, wait_until

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

QUERY = "Who was the first person to walk on the moon?"
SEED_CHUNKS = ["The moon orbits the Earth every 27 days.",
               "Neil Armstrong was the first person to walk on the moon in 1969.",
               "Bread needs flour, water and salt."]


def chunks(n: int) -> list[str]:
    words = "tides moon ocean gravity water coast orbit pull".split()
    return [" ".join(words[(i + k) % len(words)] for k in range(3 + (i * 37) % 90))
            for i in range(n)]


def replica_pids() -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "ServeReplica:crossrank" in cmd and p.status() != psutil.STATUS_ZOMBIE:
            out.append(p.pid)
    return out


def running_replicas() -> int:
    status = serve.status().applications.get("crossrank")
    if status is None:
        return 0
    dep = status.deployments.get("crossrank")
    return int(dep.replica_states.get("RUNNING", 0)) if dep is not None else 0


# On a loaded 2-core machine Ray's HTTP proxy can take longer to start than Ray's default
# checks allow (5 s ready check, 10 s health check): the controller then kills and restarts it.
RAY_PATIENCE = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
                "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "120"}


def start_serve(port: int) -> None:
    """serve.start, tried again if the proxy did not come up within Ray's fixed 60 s."""
    for attempt in range(3):
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            return
        except (TimeoutError, ray.exceptions.RayError):
            if attempt == 2:
                raise


@pytest.fixture(scope="module")
def ray_app(tiny_dir: Path) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        for k, v in RAY_PATIENCE.items():
            env.setenv(k, v)  # inherited by the local cluster's processes
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        port = free_port()
        try:
            start_serve(port)
            from crossrank.rayserve import deployment

            cfg = RayServeConfig.from_args({"model_dir": str(tiny_dir), "variant": "fp32",
                                            "replicas": 2, "num_cpus": 0.5})
            serve.run(deployment(cfg).bind(), name="crossrank", route_prefix="/")
            base = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: running_replicas() == 2, 120)
            yield base
        finally:
            serve.shutdown()
            ray.shutdown()


def test_same_answers_as_crossrank_serve(ray_app: str, tiny_dir: Path) -> None:
    proc, base = start(tiny_dir, "--variant", "fp32")
    try:
        for docs in (SEED_CHUNKS, chunks(100)):
            body = {"query": QUERY, "chunks": docs}
            want = httpx.post(base + "/score", json=body, timeout=60).json()
            got = httpx.post(ray_app + "/score", json=body, timeout=60)
            assert got.status_code == 200
            assert [i for i, _ in got.json()] == [i for i, _ in want]
            assert np.allclose([s for _, s in got.json()], [s for _, s in want], atol=1e-5)
        bad = httpx.post(ray_app + "/v2/rerank", json={"query": " ", "documents": ["a"]},
                         timeout=60)
        assert bad.status_code == 422 and bad.json()["error_type"] == "invalid_request"
        assert httpx.get(ray_app + "/health", timeout=60).json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(60)


def test_cohere_sdk_against_ray(ray_app: str) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key="unused", base_url=ray_app)
    res = co.rerank(model="rerank-v3.5", query=QUERY, documents=SEED_CHUNKS, top_n=2)
    direct = httpx.post(ray_app + "/score", json={"query": QUERY, "chunks": SEED_CHUNKS},
                        timeout=60).json()
    assert [r.index for r in res.results] == [i for i, _ in direct][:2]


def load(base: str, clients: int, per_client: int, docs: list[str],
         answered: threading.Event | None = None) -> Counter[Any]:
    seen: Counter[Any] = Counter()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(per_client):
                try:
                    r = c.post("/score", json={"query": QUERY, "chunks": docs})
                    key: Any = (r.status_code, r.headers.get("x-crossrank-replica"))
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    seen[key] += 1
                if answered is not None:
                    answered.set()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return seen


def test_requests_spread_over_both_replicas(ray_app: str) -> None:
    seen = load(ray_app, clients=6, per_client=5, docs=chunks(20))
    replicas = {key[1] for key in seen if isinstance(key, tuple) and key[0] == 200}
    assert sum(seen.values()) == 30 and all(k[0] == 200 for k in seen)
    assert len(replicas) == 2


def test_a_killed_replica_is_replaced_and_nothing_hangs(ray_app: str) -> None:
    pids = replica_pids()
    assert len(pids) == 2
    result: dict[str, Counter[Any]] = {}
    answered = threading.Event()
    t = threading.Thread(target=lambda: result.update(
        seen=load(ray_app, 4, 8, chunks(20), answered)))
    t.start()
    assert answered.wait(120)  # traffic is flowing
    os.kill(pids[0], signal.SIGKILL)
    t.join(300)
    seen = result["seen"]
    # every request was answered: 200, or a 5xx for those in flight on the killed replica
    assert sum(seen.values()) == 32
    assert all(isinstance(k, tuple) and (k[0] == 200 or k[0] >= 500) for k in seen), seen
    assert wait_until(lambda: running_replicas() == 2, 120)  # Ray brought it back
    assert pids[0] not in replica_pids()
    after = httpx.post(ray_app + "/score", json={"query": QUERY, "chunks": SEED_CHUNKS},
                       timeout=60)
    assert after.status_code == 200


def test_queued_tokens_policy_sizes_by_tokens() -> None:
    class Ctx:
        def __init__(self, queued: list[float]) -> None:
            self.aggregated_metrics = {"queued_tokens": dict(enumerate(queued))}
            self.capacity_adjusted_min_replicas = 1
            self.capacity_adjusted_max_replicas = 4
            self.policy_state: dict[str, Any] = {}

    policy = QueuedTokensPolicy(target_queued_tokens=10_000)
    assert policy(Ctx([0, 0]))[0] == 1  # idle: the minimum
    assert policy(Ctx([15_000, 14_000]))[0] == 3  # 29k tokens / 10k per replica
    assert policy(Ctx([90_000]))[0] == 4  # capped at the maximum


def test_config_from_args() -> None:
    cfg = RayServeConfig.from_args({"model_dir": "/m", "replicas": "3", "num-cpus": "4",
                                    "max_queued_tokens": "5000", "variant": "fp32"})
    assert cfg.replicas == 3 and cfg.num_cpus == 4.0
    assert cfg.settings.model_dir == "/m" and cfg.settings.max_queued_tokens == 5000
    assert cfg.settings.threads == 4  # ONNX Runtime gets the replica's cores
    with pytest.raises(ConfigError, match="unknown argument 'replica'"):
        RayServeConfig.from_args({"replica": 2})
    with pytest.raises(ConfigError, match="not a valid int"):
        RayServeConfig.from_args({"replicas": "two"})
    with pytest.raises(ConfigError, match="max_replicas"):
        RayServeConfig.from_args({"min_replicas": 3, "max_replicas": 2})
