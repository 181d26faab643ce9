"""The int8 self-check on fake logits (no model): reproducing the export's int8, judging this
CPU's own int8 with the exporter's gate where it does not, and the verdict's cache."""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.runtime import selfcheck
from crossrank.runtime.core import cpu, fidelity

RNG = np.random.default_rng(31)


@pytest.fixture(autouse=True)
def _an_x86_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake exports were "measured on" avx512_vnni; the checks below run as on an x86 CPU
    whatever CPU runs the tests (an ARM one would judge them at once: tested on its own)."""
    monkeypatch.setattr(cpu, "detect_isa", lambda *a, **k: "avx512_vnni")


def fake_export(requests: int = 8, per: int = 20) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fast-check record (32 pairs) and check requests as the exporter writes them."""
    fp32 = RNG.normal(0, 3, 32)
    record = {"pairs": [[f"q{i}", f"p{i}"] for i in range(32)], "tokens": [40] * 32,
              "fp32_logits": fp32.tolist(), "int8_logits": (fp32 + 0.01).tolist(),
              "tolerance": selfcheck.tolerance(fp32), "measured_on": "avx512_vnni"}
    pairs, groups, labels, ref, scales = [], [], [], [], {}
    for g in range(requests):
        full = RNG.normal(0, 2, 100)  # the whole request; the record keeps fp32's top + a spread
        ranked = np.argsort(-full)
        keep = np.concatenate([ranked[:15], ranked[15::17][:per - 15]])
        pairs += [[f"q{g}", f"p{g}-{i}"] for i in keep]
        groups += [g] * len(keep)
        labels += [int(i == ranked[0]) for i in keep]
        ref.append(full[keep])
        scales[str(g)] = [float(full.std()), float(full.min()), float(full.max())]
    requests_data = {"pairs": pairs, "groups": groups, "labels": labels,
                     "tokens": [60 + (i % 5) * 40 for i in range(len(pairs))],
                     "fp32_logits": np.concatenate(ref).tolist(), "scales": scales}
    return record, requests_data


Predict = Callable[[list[tuple[str, str]]], np.ndarray]


def predictor(record: dict[str, Any], data: dict[str, Any], noise: float,
              shift: float = 0.0) -> Predict:
    """A CPU's int8: the fast-check pairs shifted by `shift` from the export's int8; the check
    requests with gaussian error of `noise` x each request's std."""
    fast = {tuple(p): v + shift for p, v in zip(record["pairs"], record["int8_logits"],
                                                strict=True)}
    rng = np.random.default_rng(5)
    slow = {}
    for p, v, g in zip(data["pairs"], data["fp32_logits"], data["groups"], strict=True):
        slow[tuple(p)] = v + noise * data["scales"][str(g)][0] * rng.normal()
    calls: list[int] = []

    def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
        calls.append(len(pairs))
        return np.array([fast.get(tuple(p), slow.get(tuple(p), 0.0)) for p in pairs])

    predict.calls = calls  # type: ignore[attr-defined]
    return predict


def judged_with(record: dict[str, Any], data: dict[str, Any],
                scores: np.ndarray) -> selfcheck.Int8Check:
    """The check on a CPU with other kernels (the fast pairs off by 0.15) whose int8 gives these
    scores to the check requests' pairs."""
    table = {tuple(p): v for p, v in zip(data["pairs"], scores, strict=True)}
    fast = {tuple(p): v + 0.15 for p, v in zip(record["pairs"], record["int8_logits"],
                                               strict=True)}
    return selfcheck.check_here(
        record, selfcheck.Requests.parse(data),
        lambda ps: np.array([fast.get(tuple(p), table.get(tuple(p), 0.0)) for p in ps]))


def test_a_cpu_that_reproduces_the_export_passes_without_judging() -> None:
    record, data = fake_export()
    predict = predictor(record, data, noise=0.03)
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data), predict)
    assert got.status == "passed" and got.how == "reproduced" and got.judgement is None
    assert predict.calls == [32]  # type: ignore[attr-defined]


def test_other_kernels_with_a_faithful_int8_pass_the_gate_here() -> None:
    """ARM against an x86 export: the fast check cannot pass (kernels differ by ~0.15), the
    int8 is as faithful as the export's, so the gate passes it on this CPU."""
    record, data = fake_export()
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                               predictor(record, data, noise=0.02, shift=0.15))
    assert got.status == "passed" and got.how == "judged" and got.ok
    assert got.max_abs_diff == pytest.approx(0.15, abs=1e-6)
    j = got.judgement or {}
    assert j["requests"] == 8 and j["clear_misses"] == 0 and j["passed"]
    assert j["rms_error_over_spread"] <= j["rms_bound"] == fidelity.MAX_RMS_ERROR
    assert got.error_bound is not None and got.error_bound > 0


def test_an_arm_cpu_judges_an_x86_export_at_once() -> None:
    """ARM cannot reproduce an x86 export's int8 (kernels differ), so the fast check is not run
    there: only the check requests are scored, and the distance from the export's int8 is
    measured on them (where the export kept its int8 logits for them)."""
    record, data = fake_export()
    predict = predictor(record, data, noise=0.02, shift=0.15)
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data), predict, isa="arm64")
    assert predict.calls == [len(data["pairs"])]  # type: ignore[attr-defined]
    assert got.status == "passed" and got.how == "judged" and got.pairs == len(data["pairs"])
    assert got.max_abs_diff is None and got.tolerance == record["tolerance"]
    assert got.measured_on == "avx512_vnni" and (got.judgement or {})["passed"]
    slow = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                                predictor(record, data, noise=0.02, shift=0.15),
                                isa="avx512_vnni")  # x86 with other kernels: fast check first
    assert (slow.judgement, slow.error_bound) == (got.judgement, got.error_bound)
    assert slow.pairs == 32 and slow.max_abs_diff == pytest.approx(0.15, abs=1e-6)
    there = dict(data, int8_logits=[v + 0.07 for v in data["fp32_logits"]])
    with_int8 = selfcheck.check_here(record, selfcheck.Requests.parse(there),
                                     predictor(record, data, noise=0.0), isa="arm64")
    assert with_int8.max_abs_diff == pytest.approx(0.07, abs=1e-9)
    # an export made on ARM: an ARM CPU tries to reproduce it first, an x86 one judges at once
    arm = dict(record, measured_on="arm64")
    assert selfcheck.check_here(arm, selfcheck.Requests.parse(data),
                                predictor(record, data, noise=0.02), isa="arm64").how \
        == "reproduced"
    assert selfcheck.check_here(arm, selfcheck.Requests.parse(data),
                                predictor(record, data, noise=0.02), isa="avx2").how == "judged"
    # without check requests there is nothing to judge: the fast check decides, as before
    assert selfcheck.check_here(record, None, predictor(record, data, noise=0.0, shift=0.15),
                                isa="arm64").status == "failed"


def test_an_unfaithful_int8_fails_the_gate_here() -> None:
    record, data = fake_export()
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                               predictor(record, data, noise=0.5, shift=0.15))
    assert got.status == "failed" and got.how == "judged" and not got.ok
    assert (got.judgement or {})["clear_misses"] > 0


def test_a_near_tie_swap_of_a_relevant_passage_is_not_refused_here() -> None:
    """Quality kept is recorded, not enforced, on the serving CPU: on 8 requests one near-tie
    swap moves it past its 1% bound (measured: emulated cortex-a72, 0.986, no clear miss)."""
    record, data = fake_export()
    fp32 = np.asarray(data["fp32_logits"])
    for g in range(8):  # fp32's first two are a near-tie; only the first is relevant
        idx = [i for i, x in enumerate(data["groups"]) if x == g]
        top = sorted(idx, key=lambda i: -fp32[i])[:2]
        fp32[top[1]] = fp32[top[0]] - 0.001
        for i in idx:
            data["labels"][i] = int(i == top[0])
    data["fp32_logits"] = fp32.tolist()
    swapped = fp32.copy()
    for g in range(8):
        idx = [i for i, x in enumerate(data["groups"]) if x == g]
        a, b = sorted(idx, key=lambda i: -fp32[i])[:2]
        swapped[a], swapped[b] = fp32[b], fp32[a]
    got = judged_with(record, data, swapped)
    j = got.judgement or {}
    assert j["quality_kept"] < 0.9 and not j["labels_enforced"] and j["clear_misses"] == 0
    assert got.status == "passed"


def test_clear_misses_among_crowded_near_ties_are_recorded_not_enforced_here() -> None:
    """The judged pairs hold each request's 15 best, so near-ties crowd the top-10 boundary:
    small errors cross some of them wider than 0.1 x std. With the error within its bound and
    the graded NDCG kept, that is a kernel breaking other ties (measured: emulated cortex-a72,
    less error than the exporting Xeon's and 2 clear misses against its 0), not a refusal."""
    record, data = fake_export()
    fp32 = np.asarray(data["fp32_logits"])
    got_scores = fp32.copy()
    for g in range(2):  # fp32's 10th and 11th 0.12 std apart, crossed by 0.04 x std errors
        idx = [i for i, x in enumerate(data["groups"]) if x == g]
        ranked = sorted(idx, key=lambda i: -fp32[i])
        std = data["scales"][str(g)][0]
        fp32[ranked[10]] = fp32[ranked[9]] - 0.12 * std
        got_scores[ranked[10]] = fp32[ranked[9]] + 0.01 * std
        got_scores[ranked[9]] = fp32[ranked[9]]
    data["fp32_logits"] = fp32.tolist()
    got = judged_with(record, data, got_scores)
    j = got.judgement or {}
    assert j["clear_misses"] == 2 and j["widest_swap"] > 0.1
    assert j["rms_error_over_spread"] <= j["rms_bound"] and j["worst_graded_ndcg"] >= 0.98
    assert got.status == "passed" and "clear misses and quality kept recorded" in j["bound"]


@pytest.mark.parametrize(("export_rms", "passes"), [(None, False), (0.06, True)])
def test_the_error_size_is_bounded_here_by_the_search_bound_or_the_exports_own(
        export_rms: float | None, passes: bool) -> None:
    """An error of 0.07 x std (a shift that reorders nothing) is over fidelity.MAX_RMS_ERROR,
    but within 1.5x an export whose own int8 erred by 0.06 on the same pairs."""
    record, data = fake_export()
    std = {int(g): v[0] for g, v in data["scales"].items()}
    fp32 = np.asarray(data["fp32_logits"])
    err = np.array([std[g] for g in data["groups"]])
    if export_rms is not None:
        data["int8_logits"] = (fp32 + export_rms * err).tolist()
    table = {tuple(p): v for p, v in zip(data["pairs"], fp32 + 0.07 * err, strict=True)}
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                               lambda ps: np.array([table.get(tuple(p), 0.0) for p in ps]))
    j = got.judgement or {}
    assert j["clear_misses"] == 0 and j["rms_error_over_spread"] == pytest.approx(0.07)
    assert j["rms_bound"] == pytest.approx(0.05 if export_rms is None else 0.09)
    assert (got.status == "passed") == passes


def test_without_check_requests_a_kernel_difference_still_fails() -> None:
    record, data = fake_export()
    got = selfcheck.check_here(record, None, predictor(record, data, noise=0.0, shift=0.15))
    assert got.status == "failed" and got.how == "reproduced"


def test_a_shorter_max_length_judges_only_the_pairs_that_fit() -> None:
    record, data = fake_export()
    req = selfcheck.Requests.parse(data)
    assert req is not None
    short = req.within(150)  # drops the 180- and 220-token pairs: 12 of 20 left per request
    assert short is not None and all(n <= 150 for n in short.tokens)
    assert len(short.pairs) == 8 * 12
    assert req.within(70) is None  # 4 pairs a request: too few to judge a top 10
    assert req.within(None) is req


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("scales"),
    lambda d: d.update(groups=d["groups"][:-1]),
    lambda d: d.update(fp32_logits="x"),
    lambda d: d.update(scales={"0": [1.0, 0.0]}),
    lambda d: d.update(pairs=[]),
])
def test_damaged_check_requests_are_not_used(damage: Any) -> None:
    _, data = fake_export()
    damage(data)
    assert selfcheck.Requests.parse(data) is None
    assert selfcheck.Requests.parse(["not", "a", "record"]) is None


def test_whole_list_scale_keeps_the_bounds_meaning_on_part_of_a_request() -> None:
    """Judged on fp32's top 20 of 100 with the whole list's scale, the same error gives the
    same clear misses as on all 100; with the part's own (smaller) spread it would count more."""
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 100)
    got = ref + rng.normal(0, 0.08, 100)
    top = fidelity.order(ref)[:20]
    whole = fidelity.Scale.of(ref)
    assert fidelity.clear_misses(ref, got) == len(
        [g for g in fidelity.swap_gaps(ref[top], got[top], scale=whole)
         if g > fidelity.CLEAR_MARGIN])
    assert fidelity.rms_error_over_spread(ref[top], got[top], [0] * 20, {0: whole}) < \
        fidelity.rms_error_over_spread(ref[top], got[top], [0] * 20)


def test_the_verdict_is_cached_per_model_check_and_cpu(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(tmp_path))
    record, data = fake_export()
    key = selfcheck.cache_key("sha-a", record, "sha-r", None)
    assert selfcheck.cached(key) is None
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                               predictor(record, data, noise=0.02, shift=0.15))
    selfcheck.store(key, got)
    hit = selfcheck.cached(key)
    assert hit is not None and hit.cached and hit.status == got.status == "passed"
    assert hit.judgement == json.loads(json.dumps(got.judgement))
    # another int8 file, check data, length or CPU: another key
    assert len({key, selfcheck.cache_key("sha-b", record, "sha-r", None),
                selfcheck.cache_key("sha-a", record, "sha-x", None),
                selfcheck.cache_key("sha-a", record, "sha-r", 128)}) == 4
    monkeypatch.setattr(cpu, "signature", lambda: "another cpu")
    assert selfcheck.cache_key("sha-a", record, "sha-r", None) != key
    # a damaged entry is ignored; skipped checks are not kept; "off" keeps nothing
    (tmp_path / "int8-check" / f"{key}.json").write_text("{not json")
    assert selfcheck.cached(key) is None
    selfcheck.store("k2", selfcheck.Int8Check(status="skipped"))
    assert not (tmp_path / "int8-check" / "k2.json").exists()
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", "off")
    assert selfcheck.cache_dir() is None and selfcheck.cached(key) is None


def test_an_unwritable_cache_only_costs_time(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CROSSRANK_CACHE_DIR", str(blocker))  # a file where a folder must go
    selfcheck.store("k", selfcheck.Int8Check(status="passed"))
    assert selfcheck.cached("k") is None


def test_the_cpu_signature_names_machine_flags_and_runtime() -> None:
    sig = json.loads(cpu.signature())
    assert set(sig) == {"machine", "flags", "hwcap", "onnxruntime"}
    assert sig["onnxruntime"].startswith("onnxruntime")
    assert cpu.signature() == cpu.signature()


def test_the_arm64_tool_refuses_clearly_and_prints_its_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.arm64 import check as arm

    assert arm.main([str(tmp_path)]) == 2  # no aarch64 Python set up, or not an export
    with pytest.raises(SystemExit) as bad:  # a -cpu it does not know, before any work
        arm.main([str(tmp_path), "--cpu", "cortex-a53"])
    assert bad.value.code == 2 and "EPYC-Rome" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:  # a timeout that could never give a verdict
        arm.main([str(tmp_path), "--timeout", "-5"])
    assert bad.value.code == 2 and "--timeout must be a positive" in capsys.readouterr().err
    out = tmp_path / "arm.json"
    out.write_text(json.dumps({"results": [
        {"model": "m", "cpu": "cortex-a72", "variant": "int8", "int8_features": ["asimd"],
         "check": {"status": "passed", "how": "judged", "max_abs_diff": 0.06, "seconds": 9.0,
                   "error_bound": 0.38, "judgement": {
                       "clear_misses": 0, "worst_graded_ndcg": 0.998, "quality_kept": 0.986,
                       "rms_error_over_spread": 0.04, "rms_bound": 0.05}}},
        {"model": "m", "cpu": "max", "error": ["qemu: unknown cpu"]}]}))
    assert arm.main(["--table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| m | cortex-a72 | asimd | 0.060 | judged | 0 / 0.9980 / 0.04 (<= 0.05) / 0.986 |" in table
    assert "| m | max | error: qemu: unknown cpu |" in table


def test_the_emulation_tool_reports_a_row_that_runs_too_long(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from tools.arm64 import check as arm

    def too_long(*_a: Any, **_k: Any) -> Any:
        raise subprocess.TimeoutExpired("qemu", 5)

    monkeypatch.setattr(subprocess, "run", too_long)
    row = arm.run_one("qemu-x86_64", tmp_path, "EPYC-Rome", timeout_s=5)
    assert row == {"error": ["no verdict within 5 s of emulation (--timeout)"]}
    assert "| m | EPYC-Rome | error: no verdict within 5 s" in arm.row(Path("m"), "EPYC-Rome", row)


def test_the_avx2_runner_hides_avx512_from_cpuid_or_says_it_cannot() -> None:
    """tools/avx2/run.sh: where the CPU has CPUID faulting, a child sees AVX2 without AVX-512 or
    VNNI (numpy reads CPUID as ONNX Runtime does); elsewhere it stops with a reason, not a crash."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    probe = ("from numpy._core._multiarray_umath import __cpu_features__ as f; "
             "print(f['AVX2'], f.get('AVX512F'), f.get('AVX512VNNI'))")
    out = subprocess.run(["bash", str(root / "tools" / "avx2" / "run.sh"), sys.executable, "-c",
                          probe], capture_output=True, text=True, timeout=120)
    check = subprocess.run(["bash", str(root / "tools" / "avx2" / "run.sh"), "--check"],
                           capture_output=True, text=True, timeout=120)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if platform.machine() == "x86_64" and " cpuid_fault" in flags and shutil.which("gcc"):
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", "False", "False"]
        assert check.returncode == 0
    else:
        assert out.returncode == 2 and "tools/avx2/run.sh:" in out.stderr
        assert check.returncode == 2 and "tools/avx2/run.sh:" in check.stderr


# -- tools/arm64/resumable.py: the serving check in slices that survive being stopped ---------------

def test_the_resumable_check_judges_kept_logits_as_the_serving_check_does() -> None:
    """Logits kept slice by slice, judged on the host, give the serving check's verdict."""
    from tools.arm64 import resumable

    record, data = fake_export()
    for noise, want in ((0.02, "passed"), (0.6, "failed")):
        predict = predictor(record, data, noise=noise, shift=0.15)  # other kernels: judged
        pairs, n_fast = resumable.check_pairs(record, data)
        assert n_fast == 32 and len(pairs) == 32 + len(data["pairs"])
        logits = np.concatenate([predict([(q, c) for q, c in pairs[:n_fast]]),
                                 predict([(q, c) for q, c in pairs[n_fast:]])])
        got = resumable.judge(record, data, logits)
        direct = selfcheck.check_here(record, selfcheck.Requests.parse(data), predict,
                                      isa="arm64")
        assert got.status == want and got.how == "judged"
        assert (got.judgement, got.error_bound, got.max_abs_diff) == (
            direct.judgement, direct.error_bound, direct.max_abs_diff)
        # an x86 export on ARM: its fast-check pairs are never asked for, so never emulated
        first = resumable.first_needed(record, n_fast)
        assert first == 32
        unscored = np.concatenate([np.full(n_fast, np.nan), logits[n_fast:]])
        kept = {0: unscored[:first].tolist(), first: unscored[first:].tolist()}
        assert resumable.assembled(kept, len(pairs)) is None
        whole = resumable.assembled(kept, len(pairs), first)
        assert whole is not None
        assert resumable.judge(record, data, whole).judgement == got.judgement
    assert resumable.first_needed(dict(record, measured_on="arm64"), 32) == 0
    with pytest.raises(ValueError, match="logits for"):
        resumable.judge(record, data, logits[:-1])


def test_the_resumable_check_keeps_whole_slices_and_ignores_a_torn_line(tmp_path: Path) -> None:
    from tools.arm64 import resumable

    log = tmp_path / "logits.jsonl"
    log.write_text(json.dumps({"start": 0, "logits": [1.0, 2.0]}) + "\n"
                   + json.dumps({"start": 4, "logits": [5.0, 6.0]}) + "\n"
                   + '{"start": 2, "logi')  # a run killed mid-write
    kept = resumable.kept_logits(tmp_path, 6)
    assert kept == {0: [1.0, 2.0], 4: [5.0, 6.0]}
    timed = tmp_path / "timed"
    timed.mkdir()
    (timed / "logits.jsonl").write_text("".join(
        json.dumps({"start": s, "logits": [0.0, 0.0], "seconds": 10.0 * (s + 1)}) + "\n"
        for s in (0, 2, 4)) + json.dumps({"start": "x", "logits": [], "seconds": 99}) + "\n")
    assert resumable.emulated_seconds(timed) == 10 + 30 + 50
    assert resumable.emulated_seconds(timed, first=2) == 30 + 50  # slices the check never asks for
    assert resumable.assembled(kept, 6) is None  # pairs 2-3 still missing
    kept[2] = [3.0, 4.0]
    whole = resumable.assembled(kept, 6)
    assert whole is not None and whole.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_the_resumable_check_resumes_after_the_kept_slices(
        realistic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """End to end with this machine's Python in place of the emulated one: a slice kept by an
    earlier run is not scored again, the rest are, and the host's verdict is the serving one."""
    import sys

    from crossrank.runtime import modeldir
    from crossrank.runtime.scorer import Scorer
    from tests.helpers import shipped_int8
    from tools.arm64 import resumable

    shipped_int8(realistic_dir)
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(resumable, "command", lambda _cpu, md, work, size, threads, done: [
        sys.executable, "-c", resumable.SNIPPET, str(root), str(md), str(work), str(size),
        str(threads), json.dumps(done)])
    md = modeldir.load(realistic_dir)
    work = tmp_path / "work"
    found = md.int8_check_requests()
    sha = md.file_sha256(modeldir.VARIANT_FILES["int8"])
    pairs = resumable.prepare(sha, md.int8_self_check(), found[0] if found else None, work)
    (work / "logits.jsonl").write_text(json.dumps({"start": 0, "logits": [99.0] * 16}) + "\n")
    # as an export made on x86 (this machine may be any CPU): ARM never scores its 32 fast pairs
    x86 = dict(md.int8_self_check() or {}, measured_on="avx512_vnni")
    first = resumable.first_needed(x86, 32)
    assert first == 32
    resumable.emulate(realistic_dir, "neoverse-v1", work, 16, 1, 600.0, first)
    kept = resumable.kept_logits(work, len(pairs))
    assert kept[0] == [99.0] * 16  # kept, not scored again
    assert sorted(kept) == [0, *range(32, len(pairs), 16)]  # pairs 16-31 not emulated
    resumable.emulate(realistic_dir, "neoverse-v1", work, 16, 1, 600.0)  # as for an ARM export
    kept = resumable.kept_logits(work, len(pairs))
    assert sorted(kept) == list(range(0, len(pairs), 16))
    here = Scorer.from_dir(realistic_dir, variant="int8", int8_check=False)
    kept[0] = here.predict([(q, c) for q, c in pairs[:16]]).tolist()
    logits = resumable.assembled(kept, len(pairs))
    assert logits is not None
    assert np.array_equal(logits, here.predict([(q, c) for q, c in pairs]))  # slices = one call
    verdict = resumable.judge(x86, found[0] if found else None, logits)
    # judged as an ARM CPU would (at once), with the exporting CPU's own int8: it passes, and
    # it reproduces the export's int8 on the judged pairs
    assert (verdict.status, verdict.how) == ("passed", "judged")
    assert verdict.max_abs_diff is not None and verdict.tolerance is not None
    assert verdict.max_abs_diff <= verdict.tolerance
    other = tmp_path / "other"  # logits of another export are never mixed in
    other.mkdir()
    (other / "pairs.json").write_text(json.dumps({"int8_sha256": "0" * 64, "pairs": []}))
    with pytest.raises(SystemExit, match="another export"):
        resumable.prepare(sha, md.int8_self_check(), found[0] if found else None, other)


def test_the_resumable_check_refuses_clearly(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tools.arm64 import resumable

    assert resumable.main([str(tmp_path)]) == 2  # no aarch64 Python set up, or not an export
    assert capsys.readouterr().err.strip()
    with pytest.raises(SystemExit) as bad:
        resumable.main([str(tmp_path), "--slice", "0"])
    assert bad.value.code == 2 and "--slice must be" in capsys.readouterr().err


def test_the_instruction_counter_picks_its_pairs_and_reads_callgrind() -> None:
    from tools.arm64 import instructions as ins

    tokens = [50, 400, 120, 200, 90, 300, 150, 250, 60]
    warm, counted = ins.sample(tokens, 3)
    assert tokens[warm] == 150 and warm not in counted  # the median warms up, never counted
    assert sorted(tokens[i] for i in counted) == [90, 200, 250]  # the quartiles but the median
    assert ins.collected("version: 1\nevents: Ir\nsummary: 1234567\ntotals: 1234567\n") == 1234567
    assert ins.collected("version: 1\nevents: Ir\nfl=(1) a.c\n") is None  # still being written
    assert ins.features(ins.HWCAP["asimd"] | ins.HWCAP["asimddp"], ins.HWCAP2["i8mm"]) == [
        "asimd", "asimddp", "i8mm"]


def test_the_instruction_counter_refuses_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tools.arm64 import instructions as ins

    monkeypatch.setattr(ins, "ROOT", tmp_path / "no-root")  # valgrind's root not built
    assert ins.main([str(tmp_path)]) == 2
    assert "setup.sh valgrind" in capsys.readouterr().err
    for attr, where in (("CACHE", tmp_path), ("ROOT", tmp_path / "vg"), ("SITE", tmp_path / "s")):
        monkeypatch.setattr(ins, attr, where)  # set up, but the folder is no export
    (tmp_path / "qemu").write_text("qemu-aarch64\n")
    (tmp_path / "vg" / ins.TOOL).parent.mkdir(parents=True)
    (tmp_path / "vg" / ins.TOOL).write_text("")
    (tmp_path / "s").mkdir()
    assert ins.main([str(tmp_path / "s")]) == 2
    assert str(tmp_path / "s") in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        ins.main([str(tmp_path), "--sample", "0"])
    assert bad.value.code == 2 and "--sample must be" in capsys.readouterr().err


def test_the_instruction_counter_runs_its_snippet_and_counts_per_token(
        realistic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end with this machine's Python in place of callgrind under qemu: the snippet
    scores as served, and the count of the sample is the two runs' difference per token."""
    import sys

    from tests.helpers import shipped_int8
    from tools.arm64 import instructions as ins

    shipped_int8(realistic_dir)
    root = Path(__file__).resolve().parents[1]
    # a stand-in for callgrind: dumps 10^6 + 10^3 x pairs instructions, then runs the snippet
    dump = ("import json, sys; n = len(json.load(open(sys.argv[1]))); "
            "open(sys.argv[2] + '.1', 'w').write('totals: %d\\n' % (10**6 + 10**3 * n))")
    monkeypatch.setattr(ins, "command", lambda _q, _cpu, model, pairs, out: [
        "bash", "-c", '"$1" -c "$6" "$5" "$7" && "$1" -c "$2" "$3" "$4" "$5"', "-",
        sys.executable, ins.SNIPPET, str(root), str(model), str(pairs), dump, str(out)])
    for attr, where in (("CACHE", tmp_path), ("ROOT", tmp_path / "vg"), ("SITE", tmp_path / "s")):
        monkeypatch.setattr(ins, attr, where)
    (tmp_path / "qemu").write_text("qemu-aarch64\n")
    (tmp_path / "vg" / ins.TOOL).parent.mkdir(parents=True)
    (tmp_path / "vg" / ins.TOOL).write_text("")
    (tmp_path / "s").mkdir()
    out = tmp_path / "count.json"
    assert ins.main([str(realistic_dir), "--sample", "3", "--out", str(out)]) == 0
    got = json.loads(out.read_text())[f"{realistic_dir.name}/cortex-a72"]
    assert got["instructions"] == {"warm_up_run": 1_001_000, "with_sample": 1_004_000}
    assert got["instructions_per_token"] == round(3000 / sum(got["sample_tokens"]))
    assert got["check"]["instructions_estimated"] == round(
        3000 / sum(got["sample_tokens"]) * got["check"]["tokens"])
    assert got["warm_up_logit_agrees"] and got["sample_pairs"] == 3


def test_the_instruction_counter_stops_a_run_that_hangs_after_its_dump(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """valgrind under qemu can hang while ending a threaded process: once the dump is complete
    the run is stopped and counted; a run that ends with no dump is an error, not a hang."""
    import sys

    from tools.arm64 import instructions as ins

    hangs = ("import json, sys, time; open(sys.argv[1] + '.1', 'w').write('totals: 42\\n'); "
             "print('RESULT ' + json.dumps({'logits': [1.5], 'hwcap': 2, 'hwcap2': 0}), "
             "flush=True); time.sleep(600)")
    fails = "import sys; print('valgrind: failed to start tool', file=sys.stderr); sys.exit(1)"
    monkeypatch.setattr(ins, "command", lambda _q, _cpu, _m, pairs, out: [
        sys.executable, "-c", fails if "pairs1" in str(pairs) else hangs, str(out)])
    monkeypatch.setattr(ins, "EXIT_GRACE_S", 0.5)
    hung, failed = ins.counts("qemu", "cortex-a72", tmp_path, [[["q", "p"]], [["q", "p"]]],
                              timeout_s=60, poll_s=0.1)
    assert hung == {"instructions": 42, "logits": [1.5], "features": ["asimd"]}
    assert failed == {"error": "valgrind: failed to start tool"}


def test_the_verdict_in_words_names_the_kernels_when_no_difference_was_measured() -> None:
    """An ARM CPU judging an x86 export whose check requests carry no int8 logits has no
    distance to the export's int8 to give: the log says whose kernels it runs, not 'max |diff| 0'."""
    from crossrank.runtime.loader import judged

    record, data = fake_export()
    got = selfcheck.check_here(record, selfcheck.Requests.parse(data),
                               predictor(record, data, noise=0.02, shift=0.15), isa="arm64")
    words = judged(got)
    assert "not those of the exporting CPU (avx512_vnni)" in words and "passes" in words
    assert "max |diff|" not in words
    there = dict(data, int8_logits=[v + 0.07 for v in data["fp32_logits"]])
    got = selfcheck.check_here(record, selfcheck.Requests.parse(there),
                               predictor(record, data, noise=0.0), isa="arm64")
    assert "max |diff| 0.07" in judged(got)
