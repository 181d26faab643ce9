"""The export stage: model dir contents, manifest, parity records, bad input, no-op re-runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.export import ExportError
from crossrank.export.convert import activation, read_config, resolve
from crossrank.export.pipeline import Options, run
from crossrank.export.quantize import detect_isa, quantize
from crossrank.runtime.modeldir import sha256
from tests.helpers import refused_int8_serves, shipped_int8

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "crossrank.export", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def test_tiny_export_writes_every_file(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"model.onnx", "model_fp16.onnx", "tokenizer.json", "config.json",
            "manifest.json"} <= names
    assert not any(n.startswith((".", "raw")) for n in names)
    assert not list(tiny_dir.parent.glob(".*partial*"))


def test_manifest_content(tiny_dir: Path) -> None:
    m = json.loads((tiny_dir / "manifest.json").read_text())
    assert m["format_version"] == 1
    assert m["max_length"] == 512
    assert m["activation"] == "identity"
    assert m["stand_in"] is True  # the tiny fixture carries the stand-in mark: random weights
    assert m["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["opset"] >= 14
    for name, entry in m["files"].items():
        assert sha256(tiny_dir / name) == entry["sha256"]
    assert {"torch", "onnxruntime", "transformers"} <= set(m["versions"])
    fp32 = m["variants"]["fp32"]
    assert fp32["verification"]["passed"] is True
    assert fp32["verification"]["max_abs_diff"] <= 1e-3
    assert fp32["fused_ops"]["Attention"] == 2  # eager attention export: fusable
    assert m["variants"]["fp16"]["verification"]["status"] == "unchecked"
    int8 = m["variants"]["int8"]
    assert int8["verification"]["enforced"] is False  # random weights: recorded only
    assert int8["shipped"] is True
    assert int8["recipe"]["per_channel"] is True
    for stage in ("load", "export", "optimize", "quantize", "verify"):
        assert stage in m["timings_s"]


def test_tokenizer_json_has_no_baked_truncation(tiny_dir: Path) -> None:
    tok = json.loads((tiny_dir / "tokenizer.json").read_text())
    assert tok["truncation"] is None and tok["padding"] is None


def test_realistic_int8_is_enforced_and_passes(realistic_dir: Path) -> None:
    from crossrank.runtime.core import fidelity

    m = json.loads((realistic_dir / "manifest.json").read_text())
    assert m["stand_in"] is False and m["variants"]["int8"]["verification"]["enforced"] is True
    shipped_int8(realistic_dir)
    v = m["variants"]["int8"]["verification"]
    assert v["passed"] is True
    assert v["check_set"]["sha256"] and "pydoc_data" in v["check_set"]["source"]
    for name in ("ranking", "held_out"):  # the check set and the exporter's held-out set
        j = v[name]
        assert j["requests"] == 8 and j["clear_misses"] <= fidelity.MAX_CLEAR_MISSES
        assert j["worst_graded_ndcg"] >= fidelity.MIN_GRADED_NDCG
        # quality kept is judged against chance where fp32 itself ranks the check set's labels
        assert j["labels_enforced"] == (j["fp32_ndcg"] >= fidelity.MIN_FP32_NDCG_FOR_LABELS)
        assert not j["labels_enforced"] or j["quality_kept_chance_p"] >= fidelity.MIN_CHANCE_P
    err = v["error"]  # what the precision cascade re-scores within
    assert 0 < err["mean_abs"] <= err["max_abs"] < err["bound"] == pytest.approx(
        err["max_abs"] * fidelity.ERROR_MARGIN, rel=1e-3)
    assert m["variants"]["fp32"]["verification"]["max_abs_diff"] <= 1e-3
    # what the runtime's start-up self-check needs, measured on this CPU
    sc = m["variants"]["int8"]["self_check"]
    assert len(sc["pairs"]) == len(sc["fp32_logits"]) == len(sc["int8_logits"]) == 32
    assert sc["measured_on"] == detect_isa() and 0 < sc["tolerance"] < 0.1
    # and what it needs to judge int8 on a CPU that does not reproduce it: check requests
    from crossrank.runtime.modeldir import INT8_CHECK_FILE
    from crossrank.runtime.selfcheck import Requests

    data = json.loads((realistic_dir / INT8_CHECK_FILE).read_text())
    assert m["files"][INT8_CHECK_FILE]["sha256"]
    req = Requests.parse(data)
    assert req is not None and len(req.scales) == 8 and len(req.pairs) == 8 * 20
    assert data["export_judgement"]["passed"]  # a part of the sets int8 passed passes too
    assert m["variants"]["int8"]["self_check_requests"]["pairs"] == 160


def counting_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the exports that really build (the stages after the up-to-date check)."""
    from crossrank.export import pipeline

    calls: list[int] = []
    build = pipeline._build

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_build", counted)
    return calls


def test_rerun_is_a_noop(tiny_ckpt: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (tiny_dir / "manifest.json").read_text()
    builds = counting_builds(monkeypatch)
    out = run(Options(model=str(tiny_ckpt), out_dir=tiny_dir))
    assert out == tiny_dir and builds == []  # no export, no verification
    assert (tiny_dir / "manifest.json").read_text() == before


def test_force_and_changed_files_rebuild(tiny_ckpt: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m"
    builds = counting_builds(monkeypatch)
    run(Options(model=str(tiny_ckpt), out_dir=out, variants=("fp32",)))
    run(Options(model=str(tiny_ckpt), out_dir=out, variants=("fp32",), force=True))
    assert len(builds) == 2
    # a file changed in place, same size: the hash says so, and the export is rebuilt
    with open(out / "model.onnx", "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    run(Options(model=str(tiny_ckpt), out_dir=out, variants=("fp32",)))
    assert len(builds) == 3
    m = json.loads((out / "manifest.json").read_text())
    assert sha256(out / "model.onnx") == m["files"]["model.onnx"]["sha256"]


def test_int8_failing_on_real_weights_is_not_shipped(tiny_ckpt: Path, tmp_path: Path) -> None:
    # The tiny fixture's random scores have near-random int8 ranks; unmarked as a stand-in, the
    # check is enforced, fails, and the variant is not shipped: it stays only for the cascade.
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["crossrank_stand_in"] = False
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = run(Options(model=str(ckpt), out_dir=tmp_path / "m", variants=("fp32", "int8")))
    m = json.loads((out / "manifest.json").read_text())
    assert m["variants"]["int8"]["shipped"] is False
    assert m["variants"]["int8"]["cascade_only"] is True and (out / "model_int8.onnx").exists()
    assert m["variants"]["int8"]["verification"]["passed"] is False
    from crossrank.runtime.scorer import Scorer

    with Scorer.from_dir(out, cascade_fallback=False) as plain:  # never served alone
        assert plain.info is not None and plain.info.variant == "fp32"
    with Scorer.from_dir(out) as default:  # behind a top-10 cascade where that beats fp32
        assert default.info is not None and default.info.variant == refused_int8_serves()
        assert default.info.cascade_k == (10 if default.info.variant == "int8" else None)
    with Scorer.from_dir(out, cascade=5) as cas:  # only behind the cascade
        assert cas.info is not None and cas.info.variant == "int8" and cas.info.cascade_k == 5
    # the mixed-precision search ran first: every node alone, then half the weights in fp32
    search = m["variants"]["int8"]["search"]
    assert len(search[0]["int8_alone_rms_error_over_spread"]) == 8  # 2 layers x 4 nodes
    assert search[1]["fp32_weight_share"] <= 0.5 and search[1]["passed"] is False


@pytest.mark.parametrize(("harmful", "hair"), [(2, False), (1, False), (1, True)])
def test_mixed_precision_keeps_the_harmful_nodes_in_fp32(tiny_dir: Path, tmp_path: Path,
                                                         harmful: int, hair: bool) -> None:
    # A stand-in check that fails while a harmful feed-forward output MatMul is int8 (both
    # layers' or only the last's): the search ranks the nodes by the error each adds alone and
    # keeps exactly the harmful ones in fp32; the file left is the one chosen. With `hair`, the
    # cheapest passing configuration passes with an rms error of 0.08 std, over the search's
    # bound: the search does not accept it and keeps the next node in fp32 too.
    import onnx

    from crossrank.export import pipeline, quantize

    staging = tmp_path / "s"
    staging.mkdir()
    shutil.copy(tiny_dir / "model.onnx", staging / "model.onnx")
    shutil.copy(tiny_dir / "tokenizer.json", staging / "tokenizer.json")  # smoothing calibrates
    roles = quantize.matmul_roles(staging / "model.onnx")
    ffn_out = roles["ffn-out"]
    assert len(ffn_out) == 2  # one per layer of the tiny fixture
    bad_nodes = ffn_out[-harmful:]
    every = [n for ns in roles.values() for n in ns]

    class Check:
        def in_int8(self) -> set[str]:
            graph = onnx.load(str(staging / "model_int8.onnx")).graph
            # quantized nodes become DynamicQuantizeMatMul / QAttention named after the original
            return {f for f in every for n in graph.node
                    if n.op_type not in ("MatMul", "Mul", "Attention")  # Mul: the smoothing
                    and n.name.startswith(f) and "_per_token" not in n.name}

        def quick(self) -> float:
            return sum(1.0 if f in bad_nodes else 0.1 if f in ffn_out else 0.01
                       for f in self.in_int8())

        def __call__(self) -> dict[str, Any]:
            bad = bool(self.in_int8() & set(bad_nodes))
            rms = 0.08 if hair and self.in_int8() & set(ffn_out) else 0.01
            ranking = {"clear_misses": 3 if bad else 0, "worst_graded_ndcg": 0.9 if bad else 0.999,
                       "quality_kept": 0.95 if bad else 1.0, "passed": not bad}
            return {"spearman": 0.99, "ranking": ranking, "held_out": ranking, "passed": not bad,
                    "rms_error_over_spread": 0.3 if bad else rms}

    recipe = quantize.quantize(staging / "model.onnx", staging / "model_int8.onnx", "avx2")
    assert recipe["name"] == "u8u8-smooth-pertoken" and recipe["fp32_nodes"] == []
    assert Check().in_int8() == set(every)  # the head's Gemms are not among them: fp32
    found = pipeline._mixed_precision(staging, recipe, Check())  # type: ignore[arg-type]
    kept = set(ffn_out) if hair else set(bad_nodes)
    assert set(found["recipe"]["fp32_nodes"]) == kept
    assert Check().in_int8() == set(every) - kept
    assert 0 < found["fp32_weight_share"] <= pipeline.MAX_FP32_WEIGHT_SHARE
    assert found["recipe"]["smoothing"]["nodes"] > 0
    assert not list(staging.glob("*.smoothed.onnx"))


def test_the_head_stays_fp32(tiny_dir: Path, tmp_path: Path) -> None:
    # The pooler and classifier (Gemm on one vector per pair) are never quantized: ONNX Runtime
    # would turn them into MatMuls and quantize them, for no speed and 7% of the prose-head's
    # int8 error.
    import onnx

    from crossrank.export import quantize

    quantize.quantize(tiny_dir / "model.onnx", tmp_path / "q.onnx", "avx512_vnni",
                      tokenizer_file=tiny_dir / "tokenizer.json")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    head = [n for n in graph.node if "pooler" in n.name or "classifier" in n.name]
    assert head and not any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
                            for n in head)
    assert any(n.op_type == "MatMulInteger" for n in graph.node)  # the layers are int8


def test_weights_over_the_protobuf_limit_go_to_external_data(tiny_ckpt: Path, tiny_dir: Path,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What a model over 2 GB (bge-reranker-v2-m3's fp32) takes, forced on the tiny one: every
    variant keeps its weights in FILE.data, hashed in the manifest; smoothing, quantization and
    verification read them; it serves the same scores; a damaged data file is refused."""
    from crossrank.export import onnxfile
    from crossrank.runtime.core.errors import ModelLoadError
    from crossrank.runtime.scorer import Scorer

    monkeypatch.setattr(onnxfile, "EXTERNAL_DATA_BYTES", 0)
    out = run(Options(model=str(tiny_ckpt), out_dir=tmp_path / "ext"))
    m = json.loads((out / "manifest.json").read_text())
    for name in ("model.onnx", "model_int8.onnx", "model_fp16.onnx"):
        assert (out / f"{name}.data").is_file() and f"{name}.data" in m["files"]
        assert (out / name).stat().st_size < (out / f"{name}.data").stat().st_size
    assert sorted(p.name for p in out.iterdir()) == sorted([*m["files"], "manifest.json"])
    pairs = [("who walked on the moon?", "Neil Armstrong did."), ("q", "a longer passage " * 9)]
    for variant in ("fp32", "int8"):
        with Scorer.from_dir(out, variant=variant, int8_check=False) as a, \
                Scorer.from_dir(tiny_dir, variant=variant, int8_check=False) as b:
            assert np.abs(a.predict(pairs) - b.predict(pairs)).max() <= 1e-5
    (out / "model.onnx.data").write_bytes(b"damaged")
    with pytest.raises(ModelLoadError, match="model.onnx.data"):
        Scorer.from_dir(out, variant="fp32")
    (out / "model.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        Scorer.from_dir(out, variant="fp32")


def test_a_graph_without_recognised_layers_gets_no_int8(tiny_ckpt: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.export import quantize as q
    from crossrank.runtime.scorer import Scorer

    monkeypatch.setattr(q, "matmul_roles", lambda model_file: {})
    out = run(Options(model=str(tiny_ckpt), out_dir=tmp_path / "m", variants=("fp32", "int8")))
    int8 = json.loads((out / "manifest.json").read_text())["variants"]["int8"]
    assert int8["shipped"] is False and "no encoder-layer nodes" in int8["reason"]
    assert not (out / "model_int8.onnx").exists()
    with Scorer.from_dir(out) as s:  # auto serves fp32
        assert s.info is not None and s.info.variant == "fp32"


def test_a_model_with_a_short_position_table_exports_int8(tmp_path: Path) -> None:
    """128 positions: calibration, checks and serving all truncate at the model's limit (pairs
    past it would index beyond the position table)."""
    from crossrank.runtime.scorer import Scorer
    from fixtures.tiny import build_tiny

    ckpt = build_tiny(tmp_path / "ckpt", max_position_embeddings=128)
    out = run(Options(model=str(ckpt), out_dir=tmp_path / "m", variants=("fp32", "int8")))
    m = json.loads((out / "manifest.json").read_text())
    assert m["max_length"] == 128 and m["variants"]["int8"]["recipe"]["smoothing"]["nodes"]
    with Scorer.from_dir(out, variant="int8", int8_check=False) as s:
        assert len(s.logits("q", ["a long passage " * 200])) == 1


def test_int8_recipe_per_cpu_class() -> None:
    from crossrank.export.quantize import recipe_for

    assert recipe_for("avx512_vnni").name == "u8s8-smooth-pertoken"
    assert recipe_for("arm64").name == "u8s8-smooth-pertoken"
    avx2 = recipe_for("avx2")
    assert avx2.weights == "uint8" and not avx2.reduce_range  # no int16 saturation, 8-bit weights
    assert all(recipe_for(isa).smooth_alpha == 0.5 for isa in ("avx512_vnni", "avx2", "arm64"))
    assert all(recipe_for(isa).per_token == ("ffn-out",) for isa in ("avx512_vnni", "avx2", "arm64"))
    with pytest.raises(ExportError):
        recipe_for("sse2")


def test_activation_read_like_sentence_transformers() -> None:
    assert activation({"sbert_ce_default_activation_function":
                       "torch.nn.modules.linear.Identity"}) == "identity"
    assert activation({"sentence_transformers": {
        "activation_fn": "torch.nn.modules.activation.Sigmoid"}}) == "sigmoid"
    assert activation({}) == "sigmoid"  # CrossEncoder's default for one label
    with pytest.raises(ExportError):
        activation({"sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"})


def test_isa_detection_and_override(tmp_path: Path, tiny_dir: Path) -> None:
    assert detect_isa() in ("avx512_vnni", "avx2", "arm64")
    recipe = quantize(tiny_dir / "model.onnx", tmp_path / "q.onnx", "avx2")
    assert recipe["name"] == "u8u8-smooth-pertoken" and recipe["reduce_range"] is False
    assert recipe["isa"] == "avx2" and recipe["weights"] == "uint8"
    with pytest.raises(ExportError):
        quantize(tiny_dir / "model.onnx", tmp_path / "q2.onnx", "sse2")


def test_a_named_int8_recipe_replaces_the_cpu_class_one(tmp_path: Path, tiny_dir: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from crossrank.export.quantize import RECIPES, named_recipe, recipe_for

    assert named_recipe(None, "avx2") == recipe_for("avx2")
    fast = named_recipe("u8s8-reduced-smooth-pertoken", "avx2")
    assert fast.weights == "int8" and fast.reduce_range  # AVX2's u8 x s8 kernel, unsaturated
    assert fast.per_token == ("ffn-out",) and dict(fast.role_alpha) == {"ffn-in": 0.85}
    with pytest.raises(ExportError, match="Unknown int8 recipe 'u9s9'.*u8u8-smooth-pertoken"):
        named_recipe("u9s9", "avx2")
    with caplog.at_level("WARNING", logger="crossrank.export.quantize"):
        named_recipe("u8s8-smooth-pertoken", "avx2")  # allowed, judged by the gate, but said
    assert "saturate" in caplog.text
    record = quantize(tiny_dir / "model.onnx", tmp_path / "q.onnx", "avx2", fast)
    assert record["name"] == "u8s8-reduced-smooth-pertoken" and record["reduce_range"] is True
    assert record["isa"] == "avx2" and record["weights"] == "int8"
    assert set(RECIPES) >= {"u8s8-smooth-pertoken", "u8u8-smooth-pertoken", fast.name}


def test_cli_unknown_int8_recipe_is_one_paragraph(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli(str(tiny_ckpt), "--out", str(out), "--int8-recipe", "u9s9")
    assert r.returncode == 2
    assert "Unknown int8 recipe 'u9s9'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


# -- bad input: one clear paragraph, non-zero exit, nothing half-written -----------------------

def test_not_a_cross_encoder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ExportError, match="not a cross-encoder"):
        read_config(tmp_path)


def test_generative_reranker_names_the_sequence_classification_form(tmp_path: Path) -> None:
    """Qwen3-Reranker as published is a causal LM (yes/no token logits): refused with the
    sequence-classification conversion to use instead, not called an embedding model."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"],
                                                      "model_type": "qwen3"}))
    with pytest.raises(ExportError) as e:
        read_config(tmp_path)
    msg = str(e.value)
    assert "Qwen3ForCausalLM" in msg and "seq-cls" in msg and "bi-encoder" not in msg


def test_wrong_num_labels(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["BertForSequenceClassification"], "num_labels": 3}))
    with pytest.raises(ExportError, match="3 output labels"):
        read_config(tmp_path)


def test_missing_directory() -> None:
    with pytest.raises(ExportError, match="No such checkpoint directory"):
        resolve("./no/such/dir")


def test_unknown_hub_id_offline_says_how_to_export_locally() -> None:
    # The hub is unreachable here: the message must say so and name the local alternatives.
    with pytest.raises(ExportError) as err:
        resolve("crossrank-test/definitely-not-a-model")
    msg = str(err.value)
    assert "local checkpoint" in msg and "stand-in" in msg


def test_corrupt_weights(tiny_ckpt: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    out = tmp_path / "out"
    r = cli(str(ckpt), "--out", str(out))
    assert r.returncode != 0
    assert "corrupt" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_unwritable_output(tiny_ckpt: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/crossrank-out")  # unwritable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "out"
    r = cli(str(tiny_ckpt), "--out", str(target))
    assert r.returncode == 2
    assert "Cannot write" in r.stderr and "Traceback" not in r.stderr


def test_cli_bad_hub_id_is_one_paragraph() -> None:
    r = cli("crossrank-test/nope")
    assert r.returncode == 2
    assert "crossrank export: " in r.stderr and "Traceback" not in r.stderr
    assert "hub is unreachable" in r.stderr and "crossrank export --stand-in" in r.stderr


@pytest.mark.network
def test_real_model_matches_the_seed(tmp_path: Path) -> None:
    """The real model from the hub: the seed's query, scored by the export and by the seed.

    The seed's three example chunks were not available offline, so the expected scores come
    from the seed's own code (CrossEncoder.predict on the same checkpoint) rather than from
    hard-coded numbers; the answer chunk must rank first.
    """
    from sentence_transformers import CrossEncoder

    from crossrank.runtime.scorer import Scorer

    out = run(Options(model="cross-encoder/ms-marco-MiniLM-L-12-v2", out_dir=tmp_path / "m"))
    q = "Who was the first person to walk on the moon?"
    chunks = [
        "The moon landing was watched by millions around the world.",
        "Neil Armstrong was the first person to walk on the moon in 1969.",
        "The moon orbits the Earth every 27 days.",
    ]
    seed = CrossEncoder("cross-encoder/ms-marco-MiniLM-L-12-v2", max_length=512).predict(
        [(q, c) for c in chunks])
    fp32 = Scorer.from_dir(out, variant="fp32").score(q, chunks)
    assert fp32[0][0] == 1
    assert [i for i, _ in fp32] == sorted(range(3), key=lambda i: -float(seed[i]))
    for i, s in fp32:
        assert abs(s - float(seed[i])) <= 0.01
    for i, s in Scorer.from_dir(out, variant="int8").score(q, chunks):
        assert abs(s - float(seed[i])) <= 0.5


def test_torch_exporter_fallback_is_fused_and_faithful(tiny_ckpt: Path, tmp_path: Path) -> None:
    # The path used where optimum is absent (the GPU machine): same fusions, same parity bound.
    out = run(Options(model=str(tiny_ckpt), out_dir=tmp_path / "m", variants=("fp32", "fp16"),
                      exporter="torch"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["variants"]["fp32"]["fused_ops"]["Attention"] == 2
    assert m["variants"]["fp32"]["verification"]["max_abs_diff"] <= 1e-3
    assert m["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]


def _ops(model: Any) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in model.graph.node))


def test_cpu_graphs_carry_split_norms_that_the_cpu_session_keeps(tiny_dir: Path,
                                                                  tmp_path: Path) -> None:
    # ONNX Runtime's CPU SkipLayerNormalization is ~4x slower than the LayerNormalization and Adds
    # it stands for: the CPU files carry them split, and the CPU profile's session must not fuse
    # them back (an optimizer renamed in a new ONNX Runtime would be ignored silently: caught here).
    import onnx
    import onnxruntime as ort

    from crossrank.runtime.core.profiles import profile

    m = json.loads((tiny_dir / "manifest.json").read_text())
    assert m["variants"]["fp32"]["fused_ops"]["SkipLayerNormalization split for the CPU"] == 4
    for name in ("model.onnx", "model_int8.onnx"):
        ops = _ops(onnx.load(str(tiny_dir / name)))
        assert "SkipLayerNormalization" not in ops and ops["LayerNormalization"] == 4, name
    assert _ops(onnx.load(str(tiny_dir / "model_fp16.onnx")))["SkipLayerNormalization"] == 4
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(tiny_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"],
                         disabled_optimizers=list(profile("cpu").disabled_optimizers))
    loaded = _ops(onnx.load(str(tmp_path / "loaded.onnx")))
    assert "SkipLayerNormalization" not in loaded and loaded["LayerNormalization"] == 4
    assert profile("cpu").describe()["disabled_optimizers"] == ["SkipLayerNormFusion"]  # /info


def _skip_norm_graph(read_mean: bool = False, opset: int = 17) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    h = 8
    inits = [numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), n)
             for n in ("gamma", "beta", "bias")]
    outs = ["y", "mean"] if read_mean else ["y"]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outs,
                            domain="com.microsoft", name="norm0", epsilon=1e-5)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, h]) for n in ("x", "skip")]
    graph_outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, h if n == "y" else 1])
                  for n in outs]
    model = helper.make_model(helper.make_graph([node], "g", io, graph_outs, inits),
                              opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_split_skip_norm_computes_what_the_fused_node_computes() -> None:
    import onnxruntime as ort

    from crossrank.export.optimize import split_skip_norms

    fused = _skip_norm_graph()
    split = _skip_norm_graph()
    assert split_skip_norms(split) == 1
    assert _ops(split) == {"Add": 2, "LayerNormalization": 1}
    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal((1, 3, 8)).astype(np.float32) for n in ("x", "skip")}
    a, b = (ort.InferenceSession(mp.SerializeToString(), providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["SkipLayerNormFusion"]).run(None, feed)[0]
            for mp in (fused, split))
    assert np.abs(a - b).max() <= 1e-5
    # left fused: a node whose mean is read, and a graph whose opset has no LayerNormalization
    for model in (_skip_norm_graph(read_mean=True), _skip_norm_graph(opset=16)):
        assert split_skip_norms(model) == 0
        assert _ops(model) == {"SkipLayerNormalization": 1}


def test_tokenizer_json_written_from_vocab_txt_alone(tiny_ckpt: Path, tmp_path: Path) -> None:
    from crossrank.runtime.text.pairs import PairTokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    (ckpt / "tokenizer.json").unlink()
    assert (ckpt / "vocab.txt").is_file()
    out = run(Options(model=str(ckpt), out_dir=tmp_path / "m", variants=("fp32",)))
    a = PairTokenizer(out / "tokenizer.json", 512).encode("who walked", ["on the moon"])
    b = PairTokenizer(tiny_ckpt / "tokenizer.json", 512).encode("who walked", ["on the moon"])
    assert a.rows.ids.tolist() == b.rows.ids.tolist()


def test_cli_export_logs_its_stages_and_nothing_that_reads_like_a_failure(tiny_ckpt: Path,
                                                                          tmp_path: Path) -> None:
    r = cli(str(tiny_ckpt), "--out", str(tmp_path / "m"), "--variants", "fp32,int8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "m")
    for stage in ("load", "export", "optimize", "quantize", "verify"):
        assert f"[{stage}] done" in r.stderr
    for noise in ("Opset", "accelerate", "pre-processing", "WARNING root", "Traceback"):
        assert noise not in r.stderr, r.stderr


def test_missing_export_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_torch(name: str, *args: Any) -> Any:
        return None if name == "torch" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_torch)
    with pytest.raises(ExportError, match=r"needs torch.*crossrank\[export\]"):
        run(Options(stand_in=True, out_dir=tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_a_refused_int8_is_kept_for_the_cascade_only(tiny_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A gate that nothing passes: int8 is not shipped, but its file (the plain recipe, not the
    # search's last attempt) stays, marked cascade_only, with the error the cascade needs.
    from crossrank.export import pipeline, quantize, verify
    from crossrank.runtime import modeldir
    from crossrank.runtime.core.profiles import PROFILES

    staging = tmp_path / "s"
    staging.mkdir()
    for f in ("model.onnx", "tokenizer.json"):
        shutil.copy(tiny_dir / f, staging / f)
    recipe = quantize.quantize(staging / "model.onnx", staging / "model_int8.onnx", "avx512_vnni")
    plain = (staging / "model_int8.onnx").read_bytes()
    j = {"clear_misses": 2, "worst_graded_ndcg": 0.9, "quality_kept": 0.9, "passed": False}
    refused = {"spearman": 0.9, "ranking": j, "held_out": j, "passed": False,
               "error": {"mean_abs": 0.1, "max_abs": 0.4, "bound": 0.6}}

    class Check:
        def __init__(self, *args: Any) -> None:
            pass

        def quick(self) -> float:
            return 0.1

        def __call__(self) -> dict[str, Any]:
            return dict(refused)

    monkeypatch.setattr(pipeline, "_GateCheck", Check)
    entry: dict[str, Any] = {"file": "model_int8.onnx", "shipped": True, "recipe": recipe}
    pipeline._verify_int8(verify.Staged(staging, 512, 0), entry, True, np.zeros(1), [("q", "p")])
    assert entry["shipped"] is False and entry["cascade_only"] is True
    assert entry["reason"] == "failed int8 verification" and entry["search"]
    assert (staging / "model_int8.onnx").read_bytes() == plain
    md = modeldir.ModelDir(staging, {"variants": {"int8": entry}, "max_length": 512})
    assert md.cascade_only() and md.int8_error_bound() == 0.6
    assert md.choose_variant("auto", PROFILES["cpu"]) == "fp32"  # never served alone
