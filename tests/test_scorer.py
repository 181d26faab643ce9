"""Parity with the seed's CrossEncoder.predict, ordering, int8 fidelity and determinism."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.export.corpus import UNICODE, mixed_chunks, passages_for
from crossrank.runtime.core.errors import (
    ConfigError,
    InferenceError,
    ModelLoadError,
    Unavailable,
)
from crossrank.runtime.core.profiles import PROFILES
from crossrank.runtime.core.scores import rank, sigmoid
from crossrank.runtime.scorer import Scorer
from crossrank.runtime.service import parts_of
from tests.helpers import gated, refused_int8_serves, reloaded, shipped_int8, wait_until

ROOT = Path(__file__).resolve().parent.parent
QUERY = "Who was the first person to walk on the moon?"


def varied_chunks(n: int) -> list[str]:
    base = mixed_chunks(n, seed=3)
    base[0] = ""
    base[1] = "moon " * 700  # far over 512 tokens
    base[2] = " ".join(UNICODE)
    return base


def seed_predict(ckpt: Path, query: str, chunks: list[str]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(ckpt), max_length=512, device="cpu")
    return np.asarray(ce.predict([(query, c) for c in chunks], batch_size=32,
                                 show_progress_bar=False), dtype=np.float32)


@pytest.mark.parametrize("fixture", ["tiny", "realistic"])
@pytest.mark.parametrize("n", [1, 300])
def test_fp32_matches_seed(fixture: str, n: int, request: pytest.FixtureRequest) -> None:
    ckpt: Path = request.getfixturevalue(f"{fixture}_ckpt")
    mdir: Path = request.getfixturevalue(f"{fixture}_dir")
    chunks = varied_chunks(max(n, 3))[:n] if n > 1 else ["Neil Armstrong walked on the moon."]
    ref = seed_predict(ckpt, QUERY, chunks)
    got = Scorer.from_dir(mdir, variant="fp32").logits(QUERY, chunks)
    assert np.abs(ref - got).max() <= 1e-3


def test_score_contract(tiny_dir: Path) -> None:
    s = Scorer.from_dir(tiny_dir, variant="fp32")
    chunks = varied_chunks(20)
    out = s.score(QUERY, chunks)
    assert sorted(i for i, _ in out) == list(range(20))
    assert all(type(i) is int and type(v) is float for i, v in out)
    assert all(out[k][1] >= out[k + 1][1] for k in range(len(out) - 1))
    assert s.score(QUERY, []) == []
    raw = dict(s.score(QUERY, chunks))
    sig = dict(s.score(QUERY, chunks, activation="sigmoid"))
    for i in raw:
        assert abs(sig[i] - 1 / (1 + np.exp(-raw[i]))) < 1e-6


def test_ties_broken_by_index() -> None:
    assert rank(np.array([1.0, 2.0, 1.0, 2.0], dtype=np.float32)) == [
        (1, 2.0), (3, 2.0), (0, 1.0), (2, 1.0)]


def test_stable_sigmoid_extremes() -> None:
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert out.tolist() == [0.0, 0.5, 1.0]


def test_caller_data_untouched(tiny_dir: Path) -> None:
    chunks = ["b", "a", "c"]
    Scorer.from_dir(tiny_dir, variant="fp32").score(QUERY, chunks)
    assert chunks == ["b", "a", "c"]


def test_bucketing_never_changes_fp32_scores(realistic_dir: Path) -> None:
    s = Scorer.from_dir(realistic_dir, variant="fp32")
    chunks = varied_chunks(40)
    together = s.logits(QUERY, chunks)
    one_by_one = np.array([s.logits(QUERY, [c])[0] for c in chunks])
    perm = np.random.default_rng(0).permutation(len(chunks))
    shuffled = s.logits(QUERY, [chunks[i] for i in perm])
    assert np.abs(together - one_by_one).max() <= 1e-4
    assert np.abs(together[perm] - shuffled).max() <= 1e-4
    tight = Scorer.from_dir(realistic_dir, variant="fp32", token_budget=256, max_rows=3)
    assert np.abs(together - tight.logits(QUERY, chunks)).max() <= 1e-4


# The gate's honesty on data it never saw: an int8 the exporter shipped (judged on the Python
# language reference) must keep the trained fixture's quality on its own held-out test requests
# (test-split packages: summary and sentence queries, 100 candidates from a lexical first stage)
# by the same measures and bounds (runtime/core/fidelity.py).
def test_int8_the_exporter_shipped_keeps_quality_on_requests_it_never_saw(
        realistic_dir: Path) -> None:
    from crossrank.runtime.core import fidelity
    from fixtures import prose

    shipped_int8(realistic_dir)
    f32 = Scorer.from_dir(realistic_dir, variant="fp32")
    i8 = Scorer.from_dir(realistic_dir, variant="int8")
    ref, got, groups, labels = [], [], [], []
    for g, r in enumerate(prose.requests("test")):
        ref.append(f32.logits(r.query, list(r.passages)))
        got.append(i8.logits(r.query, list(r.passages)))
        groups += [g] * len(r.passages)
        labels += list(r.labels)
    j = fidelity.judge(np.concatenate(ref), np.concatenate(got), groups, labels)
    print(f"\nint8 on the trained fixture's unseen test requests: {j.as_dict()}")
    assert j.requests >= 20 and j.labels_enforced, j
    # What users lose holds on data the gate never saw: int8's errors do not fall on relevant
    # passages more than chance would put them there (measured on an Intel Xeon with AVX-512
    # VNNI: quality kept 1.009, chance p 0.80). Top-10 swaps a little wider than the gate's
    # near-tie margin do occur there (7 in 42 requests, the widest 0.15 x std, docs/int8.md), so
    # they are reported, not asserted: the cascade is the answer for users who need fp32's
    # exact top 10.
    assert j.quality_kept_chance_p is not None, j
    assert j.quality_kept_chance_p >= fidelity.MIN_CHANCE_P, j
    assert j.worst_graded_ndcg >= fidelity.MIN_GRADED_NDCG, j


def test_int8_score_does_not_depend_on_batch_mates(realistic_dir: Path) -> None:
    shipped_int8(realistic_dir)
    i8 = Scorer.from_dir(realistic_dir, variant="int8")
    assert i8.policy.max_rows == 1
    q, chunks = passages_for("moon", 100, seed=2000)
    inside = i8.logits(q, chunks)
    alone = np.array([i8.logits(q, [c])[0] for c in chunks[:25]])
    assert np.abs(inside[:25] - alone).max() <= 1e-5


def test_auto_variant_prefers_int8_on_cpu(realistic_dir: Path) -> None:
    shipped_int8(realistic_dir)
    s = Scorer.from_dir(realistic_dir)
    assert s.info is not None and s.info.variant == "int8" and s.info.provider == "cpu"


def test_missing_int8_falls_back_to_fp32(realistic_dir: Path, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "m"
    shutil.copytree(realistic_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["variants"]["int8"]["shipped"] = False
    m["variants"]["int8"]["reason"] = "failed int8 verification"
    (d / "manifest.json").write_text(json.dumps(m))
    s = Scorer.from_dir(d)
    assert s.info is not None and s.info.variant == "fp32"
    assert "falling back to fp32" in caplog.text
    with pytest.raises(ConfigError, match="int8 is not available"):
        Scorer.from_dir(d, variant="int8")


def test_cuda_requested_without_cuda_is_a_clear_error(tiny_dir: Path) -> None:
    from crossrank.runtime.execution.session import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider"):
        Scorer.from_dir(tiny_dir, provider="cuda")


def test_damaged_model_dir_fails_at_load(tiny_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    with open(d / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 16)
    with pytest.raises(ModelLoadError, match="does not match the hash"):
        Scorer.from_dir(d, variant="fp32")
    (d / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        Scorer.from_dir(d)
    with pytest.raises(ModelLoadError, match="does not exist"):
        Scorer.from_dir(tmp_path / "nothing")


def test_incompatible_manifest_version(tiny_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match="format 99"):
        Scorer.from_dir(d)


def test_thread_safe(tiny_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = Scorer.from_dir(tiny_dir, variant="fp32")
    chunks = varied_chunks(30)
    expected = s.logits(QUERY, chunks)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: s.logits(QUERY, chunks), range(8)))
    for r in results:
        assert np.abs(r - expected).max() <= 1e-5


def test_serving_never_imports_torch(tiny_dir: Path) -> None:
    code = (
        "import sys\n"
        "from crossrank.runtime.scorer import Scorer\n"
        "import crossrank.runtime.http.server\n"
        f"s = Scorer.from_dir({str(tiny_dir)!r})\n"
        "s.score('q', ['a', 'b'])\n"
        "bad = [m for m in ('torch', 'transformers', 'optimum', 'sentence_transformers')"
        " if m in sys.modules]\n"
        "print('HEAVY', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipelined_path_gives_the_same_scores(realistic_dir: Path) -> None:
    # The CUDA profile's pipelining (pad prefetch, tokenizing in runs) exercised on the CPU.
    plain = Scorer.from_dir(realistic_dir, variant="fp32", token_budget=1024, max_rows=8)
    chunks = varied_chunks(70)
    expected = plain.logits(QUERY, chunks)
    piped = reloaded(plain, policy=replace(plain.policy, pipeline=True, slices=5))
    assert len(parts_of(chunks, piped.policy)) == 5
    for multiple, rows in ((1, 1), (64, 1), (64, 16)):  # CUDA rounds shapes: same scores
        with reloaded(piped, policy=replace(piped.policy, pad_multiple=multiple,
                                            row_multiple=rows)) as shaped:
            assert np.abs(expected - shaped.logits(QUERY, chunks)).max() <= 1e-4
    piped.close()
    assert plain.policy.pipeline is False  # reloading never changes the original


def test_lanes_share_the_threads_and_give_the_same_scores(realistic_dir: Path) -> None:
    # Lanes run batches at once, each on threads / lanes (the CPU profile's default: 2 lanes).
    chunks = varied_chunks(40)
    for variant in ("fp32", "int8"):
        one = Scorer.from_dir(realistic_dir, variant=variant, threads=2, lanes=1,
                              int8_check=False)
        two = reloaded(one, lanes=2)
        assert (one.policy.lanes, two.policy.lanes) == (1, 2)
        assert two.describe()["batch_policy"]["lanes"] == 2
        threads = [s.engine.session.info.threads for s in (one, two)]  # type: ignore[attr-defined]
        assert threads == [2, 1]  # each lane's session runs on threads / lanes
        assert np.abs(one.logits(QUERY, chunks) - two.logits(QUERY, chunks)).max() <= 1e-4
        one.close()
        two.close()
    cpu, cuda = PROFILES["cpu"], PROFILES["cuda"]
    assert (cpu.policy_for("int8").lanes, cpu.policy_for("fp32").lanes) == (2, 1)
    assert cuda.policy_for("fp16").lanes == 1
    with Scorer.from_dir(realistic_dir, variant="fp32", threads=1, lanes=4) as narrow:
        assert narrow.policy.lanes == 1  # at most one lane a thread
    with pytest.raises(ConfigError, match="lanes"):
        Scorer.from_dir(realistic_dir, lanes=0)


def test_lanes_run_batches_at_once_and_a_failing_one_fails_only_its_round(
        tiny_dir: Path) -> None:
    base = Scorer.from_dir(tiny_dir, variant="fp32", threads=2, lanes=2, max_rows=1)
    held, session = gated(base)
    chunks = ["alpha", "beta gamma", "delta", "epsilon zeta eta"]
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(held.logits, QUERY, chunks)
        assert wait_until(lambda: session.calls == 2)  # two batches on the "device" at once
        assert not fut.done() and session.calls == 2  # and no third until one finishes
        session.gate.set()
        assert np.abs(fut.result() - base.logits(QUERY, chunks)).max() <= 1e-5
    held.close()
    failing, _ = gated(base, gated=False, fail=[3])
    with pytest.raises(InferenceError):
        failing.logits(QUERY, chunks)
    assert failing.logits(QUERY, chunks).shape == (4,)  # the next round is served
    assert failing.engine.healthy
    failing.close()
    base.close()


def test_pipeline_is_on_with_cuda_only_unless_asked(tiny_dir: Path) -> None:
    plain = Scorer.from_dir(tiny_dir, variant="fp32")
    assert not plain.policy.pipeline and plain.describe()["batch_policy"]["pipeline"] is False
    piped = Scorer.from_dir(tiny_dir, variant="fp32", pipeline=True)
    assert piped.policy.pipeline and piped.describe()["batch_policy"]["pipeline"] is True
    assert len(parts_of(["x"] * 65, piped.policy)) == piped.policy.slices
    assert len(parts_of(["x"] * 65, plain.policy)) == 1
    assert PROFILES["cuda"].batch.pipeline and not PROFILES["cpu"].batch.pipeline


def test_pipelined_path_raises_a_tokenizer_failure(tiny_dir: Path) -> None:
    piped = Scorer.from_dir(tiny_dir, variant="fp32", pipeline=True)
    encode = piped.tokenizer.encode
    calls = {"n": 0}

    def flaky(query: str, chunks: list[str], with_truncation: bool = False,
              side: str = "right") -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("tokenizer failed")
        return encode(query, chunks, with_truncation, side)

    piped.tokenizer.encode = flaky  # type: ignore[method-assign]  # this instance only
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        piped.logits(QUERY, [f"chunk {i}" for i in range(100)])
    piped.tokenizer.encode = encode  # type: ignore[method-assign]
    assert len(piped.logits(QUERY, [f"chunk {i}" for i in range(100)])) == 100
    assert piped.engine.queued_tokens == 0  # the failed request's queued parts were dropped


def test_library_calls_from_threads_share_the_engines_batches(tiny_dir: Path) -> None:
    # One engine for every caller: concurrent library calls are batched together, as the
    # server's requests are, and each gets its own answer.
    base = Scorer.from_dir(tiny_dir, variant="fp32", token_budget=100_000, max_rows=512)
    scorer, session = gated(base)
    requests = [(f"query {k}", [f"chunk {k} {j}" for j in range(5)]) for k in range(6)]
    total = sum(int(base.tokenizer.encode(q, ch).lengths.sum()) for q, ch in requests)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(scorer.score, q, ch) for q, ch in requests]
        assert wait_until(lambda: scorer.engine.queued_tokens == total)
        session.gate.set()
        answers = [f.result() for f in futures]
    for (q, ch), ans in zip(requests, answers, strict=True):
        expected = base.score(q, ch)
        assert [i for i, _ in ans] == [i for i, _ in expected]
        assert np.allclose([v for _, v in ans], [v for _, v in expected], atol=1e-5)
    assert max(session.rows) > 5


def test_closed_scorer_refuses_calls(tiny_dir: Path) -> None:
    with Scorer.from_dir(tiny_dir, variant="fp32") as s:
        assert len(s.logits(QUERY, ["a"])) == 1
    with pytest.raises(Unavailable):
        s.logits(QUERY, ["a"])


def copy_with_manifest(src: Path, dst: Path, edit: Any) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_int8_self_check_passes_where_it_was_exported(realistic_dir: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    shipped_int8(realistic_dir)
    caplog.set_level(logging.INFO, logger="crossrank")
    s = Scorer.from_dir(realistic_dir)
    assert s.info is not None and s.info.variant == "int8"
    check = s.info.int8_check
    assert check is not None and check["status"] == "passed" and check["pairs"] == 32
    assert check["max_abs_diff"] <= check["tolerance"]
    assert check["spearman_vs_fp32"] >= 0.98
    assert "self-check passed" in caplog.text


def test_int8_self_check_with_a_shorter_max_length_uses_the_pairs_that_fit(
        realistic_dir: Path) -> None:
    shipped_int8(realistic_dir)
    record = json.loads((realistic_dir / "manifest.json").read_text())["variants"]["int8"]
    fit = sum(n <= 128 for n in record["self_check"]["tokens"])
    assert 8 <= fit < 32  # some check pairs are longer than 128 tokens
    info = Scorer.from_dir(realistic_dir, max_length=128).info
    assert info is not None and info.variant == "int8"
    assert info.int8_check is not None and info.int8_check["status"] == "passed"
    assert info.int8_check["pairs"] == fit


def other_kernels(m: dict[str, Any]) -> None:
    """As if exported on a CPU whose int8 kernels compute other scores (measured: 0.43 between a
    Zen 4 and a Zen 3 for the same u8u8 file, 0.16-0.23 between x86 and ARM): the export's int8
    logits are not reproduced here."""
    sc = m["variants"]["int8"]["self_check"]
    sc["int8_logits"] = [x + 0.4 for x in sc["int8_logits"]]
    sc["measured_on"] = "avx2"


def edit_check_requests(d: Path, edit: Any) -> None:
    """Change the export's int8_check.json (and its hash in the manifest, as an export would)."""
    from crossrank.runtime.modeldir import INT8_CHECK_FILE, sha256

    path = d / INT8_CHECK_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    m = json.loads((d / "manifest.json").read_text())
    m["files"][INT8_CHECK_FILE]["sha256"] = sha256(path)
    (d / "manifest.json").write_text(json.dumps(m))


def test_int8_on_other_kernels_is_judged_here_and_served_when_faithful(
        realistic_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ARM against an x86 export, say: int8 cannot reproduce the export's scores, but this
    CPU's own int8 passes the export's gate on its check requests, so int8 serves; the verdict
    is cached for the next start."""
    shipped_int8(realistic_dir)
    caplog.set_level(logging.INFO, logger="crossrank")
    d = copy_with_manifest(realistic_dir, tmp_path / "m", other_kernels)
    s = Scorer.from_dir(d)
    assert s.info is not None and s.info.variant == "int8"
    check = s.info.int8_check
    assert check is not None and check["status"] == "passed" and check["how"] == "judged"
    assert check["max_abs_diff"] == pytest.approx(0.4, abs=1e-3) and not check["cached"]
    assert check["judgement"]["requests"] == 8 and check["judgement"]["clear_misses"] == 0
    assert "passes the export's gate" in caplog.text
    again = Scorer.from_dir(d).info
    assert again is not None and again.variant == "int8" and again.int8_check is not None
    assert again.int8_check["cached"] and again.int8_check["judgement"] == check["judgement"]


def test_int8_failing_the_gate_here_serves_fp32_and_says_why(
        realistic_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shipped_int8(realistic_dir)
    d = copy_with_manifest(realistic_dir, tmp_path / "m", other_kernels)

    def unfaithful(data: dict[str, Any]) -> None:  # as if this CPU's int8 ranked otherwise
        data["fp32_logits"] = data["fp32_logits"][::-1]

    edit_check_requests(d, unfaithful)
    s = Scorer.from_dir(d, cascade_fallback=False)
    assert s.info is not None and s.info.variant == "fp32"
    check = s.info.int8_check
    assert check is not None and check["status"] == "failed" and check["how"] == "judged"
    assert check["judgement"]["clear_misses"] > 0
    assert "fails the export's gate" in caplog.text and "serving fp32 instead" in caplog.text
    want = Scorer.from_dir(realistic_dir, variant="fp32").logits(QUERY, ["a", "moon landing"])
    assert np.allclose(s.logits(QUERY, ["a", "moon landing"]), want)
    # an explicit int8 request is checked too; the flag skips the check and serves int8 as is
    assert Scorer.from_dir(d, variant="int8").info.variant == "fp32"
    skipped = Scorer.from_dir(d, int8_check=False)
    assert skipped.info is not None and skipped.info.variant == "int8"
    assert skipped.info.int8_check is not None
    assert skipped.info.int8_check["status"] == "skipped"
    # the cascade still serves int8 here, within the larger of the export's and this CPU's bound
    cas = Scorer.from_dir(d, cascade=10).info
    export_bound = json.loads((d / "manifest.json").read_text())["variants"]["int8"][
        "verification"]["error"]["bound"]
    assert cas is not None and cas.variant == "int8" and cas.cascade_k == 10
    assert cas.cascade_bound == max(export_bound, check["error_bound"])
    # by default, where the cascade beats fp32 (VNNI), the refused int8 serves behind it: two
    # chunks are within its top 10, so both are fp32's scores
    default = Scorer.from_dir(d)
    assert default.info is not None and default.info.variant == refused_int8_serves()
    if default.info.variant == "int8":
        assert default.info.cascade_k == 10
    assert np.allclose(default.logits(QUERY, ["a", "moon landing"]), want, atol=1e-5)
    default.close()


def test_int8_on_other_kernels_without_check_requests_serves_fp32(
        realistic_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An export from before the judged check: only reproducing its int8 counts."""
    shipped_int8(realistic_dir)
    from crossrank.runtime.modeldir import INT8_CHECK_FILE

    def older(m: dict[str, Any]) -> None:
        other_kernels(m)
        del m["files"][INT8_CHECK_FILE]

    s = Scorer.from_dir(copy_with_manifest(realistic_dir, tmp_path / "m", older))
    assert s.info is not None and s.info.variant == "fp32"
    assert s.info.int8_check is not None and s.info.int8_check["how"] == "reproduced"
    assert "keeps no check requests" in caplog.text and "serving fp32 instead" in caplog.text


def test_export_without_check_pairs_serves_int8_with_the_isa_note(
        realistic_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shipped_int8(realistic_dir)
    from crossrank.runtime.core import cpu

    here = cpu.detect_isa()
    other = "arm64" if here != "arm64" else "avx2"

    def older(m: dict[str, Any]) -> None:  # an export from before the self-check, elsewhere
        del m["variants"]["int8"]["self_check"]
        m["variants"]["int8"]["recipe"]["isa"] = other

    s = Scorer.from_dir(copy_with_manifest(realistic_dir, tmp_path / "m", older))
    assert s.info is not None and s.info.variant == "int8"
    assert s.info.int8_check is not None and s.info.int8_check["status"] == "unavailable"
    assert s.info.int8_isa == other and s.info.cpu_isa == here
    assert s.info.isa_warning is not None and "crossrank export" in s.info.isa_warning
    assert "were not verified" in caplog.text


def test_int8_made_for_another_cpu_class_that_reproduces_its_scores(
        realistic_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shipped_int8(realistic_dir)
    from crossrank.runtime.core import cpu

    here = cpu.detect_isa()
    other = "arm64" if here != "arm64" else "avx2"

    def relabel(m: dict[str, Any]) -> None:
        assert m["variants"]["int8"]["recipe"]["isa"] == here  # exported on this machine
        m["variants"]["int8"]["recipe"]["isa"] = other

    s = Scorer.from_dir(copy_with_manifest(realistic_dir, tmp_path / "m", relabel))
    # the self-check shows the verified scores are reproduced: no warning
    assert s.info is not None and s.info.variant == "int8" and s.info.int8_isa == other
    assert s.info.isa_warning is None and "were not verified" not in caplog.text


def test_cpu_class_detection() -> None:
    from crossrank.runtime.core.cpu import detect_isa

    assert detect_isa("flags : fpu avx2 avx512f avx512_vnni\n", "x86_64") == "avx512_vnni"
    assert detect_isa("flags : fpu avx2 avx_vnni\n", "x86_64") == "avx512_vnni"
    assert detect_isa("flags : fpu avx2 avx512f avx512bw\n", "x86_64") == "avx2"
    assert detect_isa("flags : fpu avx2\n", "x86_64") == "avx2"
    assert detect_isa("", "aarch64") == "arm64"


def test_provider_auto_takes_the_first_available_profile() -> None:
    from crossrank.runtime.core.profiles import PROVIDER_ORDER, profile
    from crossrank.runtime.execution.session import available, resolve_provider

    chosen = resolve_provider("auto")
    assert chosen.name == next(p for p in PROVIDER_ORDER if available(p))
    assert profile("cpu").policy_for("int8").max_rows == 1  # one pair per int8 run
    assert profile("cpu").policy_for("fp32").max_rows == profile("cpu").batch.max_rows
    with pytest.raises(ConfigError, match="Unknown provider"):
        resolve_provider("tpu")
