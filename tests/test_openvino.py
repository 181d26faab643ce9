"""The bf16 variant served by OpenVINO (runtime/execution/ovsession.py): what the exporter writes
and records, scores against fp32, and the errors a user meets. OpenVINO computes in bfloat16
where the CPU has bf16 instructions (AMX, AVX-512 BF16) and in f32 elsewhere: every bound here
holds either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank.export import ExportError
from crossrank.export.pipeline import Options, run
from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.execution import ovsession
from crossrank.runtime.modeldir import VARIANT_FILES
from crossrank.runtime.scorer import Scorer

needs_openvino = pytest.mark.skipif(not ovsession.available(),
                                    reason="openvino is not installed (crossrank[openvino])")

PAIRS = [
    ("how do I set the cache size", "The cache size is set with --cache-mb; the default is 256."),
    ("how do I set the cache size", "Bananas are rich in potassium."),
    ("what is a cross-encoder", "A cross-encoder reads the query and the passage together. " * 40),
    ("what is a cross-encoder", ""),
    ("rust tokenizers", "Fast state-of-the-art tokenizers, written in Rust, for research."),
]


@pytest.fixture(scope="module")
def bf16_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(Options(model=str(tiny_ckpt), out_dir=tmp_path_factory.mktemp("ov") / "tiny",
                       variants=("fp32", "bf16")))


@needs_openvino
def test_export_writes_the_plain_graph_and_records_its_check(bf16_dir: Path) -> None:
    import json

    import onnx

    m = json.loads((bf16_dir / "manifest.json").read_text())
    v = m["variants"]["bf16"]
    assert v["shipped"] and v["file"] == VARIANT_FILES["bf16"] and v["runtime"] == "openvino"
    assert v["verification"]["computed_in"] in ("bf16", "f32")
    assert v["verification"]["status"] == ("checked" if v["verification"]["computed_in"] == "bf16"
                                           else "unchecked")
    assert v["verification"]["enforced"] is False  # random weights: recorded only
    assert VARIANT_FILES["bf16"] in m["files"]
    graph = onnx.load(str(bf16_dir / VARIANT_FILES["bf16"]), load_external_data=False).graph
    assert not [n.op_type for n in graph.node if n.domain == "com.microsoft"]


@needs_openvino
def test_bf16_scores_follow_fp32(bf16_dir: Path) -> None:
    fp32 = Scorer.from_dir(bf16_dir, variant="fp32")
    bf16 = Scorer.from_dir(bf16_dir, provider="openvino")
    try:
        assert bf16.info.variant == "bf16" and bf16.info.provider == "openvino"
        assert bf16.info.computes_in in ("bf16", "f32") and fp32.info.computes_in is None
        assert bf16.runtime.describe()["profile"]["backend"] == "openvino"
        ref = np.array(fp32.predict(PAIRS))
        got = np.array(bf16.predict(PAIRS))
        # bfloat16 keeps 8 bits of mantissa: a few 1e-3 of the scores' scale on a tiny model
        assert np.abs(got - ref).max() <= 0.02 * max(1.0, float(np.abs(ref).max()))
        one = bf16.predict(PAIRS[:1])  # a pair's score does not move with its batch-mates
        assert abs(one[0] - got[0]) <= 0.01 * max(1.0, abs(float(ref[0])))
    finally:
        fp32.close()
        bf16.close()


@needs_openvino
def test_a_trained_reranker_ships_bf16_through_the_gate(realistic_ckpt: Path,
                                                         tmp_path: Path) -> None:
    import json

    out = run(Options(model=str(realistic_ckpt), out_dir=tmp_path / "real",
                      variants=("fp32", "bf16")))
    v = json.loads((out / "manifest.json").read_text())["variants"]["bf16"]["verification"]
    assert v["enforced"] and v["passed"], v
    # the same measures as int8's gate, on both check sets
    assert {"ranking", "held_out"} <= set(v) and v["rms_error_over_spread"] < 0.05


def test_openvino_provider_needs_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.runtime.execution.session import resolve_provider

    monkeypatch.setattr(ovsession, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"crossrank\[openvino\]"):
        resolve_provider("openvino")


def test_bf16_export_needs_openvino(tiny_ckpt: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovsession, "available", lambda: False)
    with pytest.raises(ExportError, match=r"crossrank\[openvino\]"):
        run(Options(model=str(tiny_ckpt), out_dir=tmp_path / "x", variants=("fp32", "bf16")))
    assert not (tmp_path / "x").exists()


@needs_openvino
def test_variants_go_to_their_runtime(bf16_dir: Path, tiny_dir: Path) -> None:
    with pytest.raises(ConfigError, match="use provider=openvino"):
        Scorer.from_dir(bf16_dir, variant="bf16", provider="cpu")
    with pytest.raises(ConfigError, match="serves bf16"):
        Scorer.from_dir(bf16_dir, variant="fp32", provider="openvino")
    # an export without bf16: OpenVINO has nothing to serve, and says how to get it
    with pytest.raises(ConfigError, match="--variants fp32,int8,bf16"):
        Scorer.from_dir(tiny_dir, provider="openvino")


@needs_openvino
def test_a_damaged_bf16_file_is_refused(bf16_dir: Path, tmp_path: Path) -> None:
    from crossrank.runtime.core.errors import ModelLoadError
    from crossrank.runtime.execution.ovsession import OVSession

    bad = tmp_path / "model_bf16.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError, match="export the model again"):
        OVSession(bad, "bf16", threads=1)


def test_serving_on_openvino_exports_bf16_too(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`crossrank serve --provider openvino` with no export yet builds bf16 beside the defaults."""
    from crossrank import cli
    from crossrank.export import pipeline

    asked: list[tuple[str, ...]] = []
    monkeypatch.setattr(pipeline, "run", lambda opts: asked.append(opts.variants))
    cli._export_for_serving("some/model", str(tmp_path), False, tmp_path / "m", with_bf16=True)
    cli._export_for_serving("some/model", str(tmp_path), False, tmp_path / "m")
    assert "bf16" in asked[0] and "bf16" not in asked[1] and "int8" in asked[0]


@needs_openvino
def test_a_graph_openvino_cannot_run_ships_no_bf16(tiny_ckpt: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """As DeBERTa's (a dynamic-rank `If` OpenVINO's CPU plug-in refuses): the export goes on
    without bf16 and the manifest says why; the other variants ship."""
    import json

    from crossrank.export import verify
    from crossrank.runtime.core.errors import ModelLoadError

    real = verify.Staged.logits

    def logits(self: verify.Staged, variant: str, pairs: list[tuple[str, str]],
               provider: str = "cpu") -> np.ndarray:
        if variant == "bf16":
            try:
                raise RuntimeError("Exception from src/x.cpp:1:\nCPU plug-in doesn't support If")
            except RuntimeError as cause:
                raise ModelLoadError("OpenVINO cannot load it") from cause
        return real(self, variant, pairs, provider)

    monkeypatch.setattr(verify.Staged, "logits", logits)
    out = run(Options(model=str(tiny_ckpt), out_dir=tmp_path / "m", variants=("fp32", "bf16")))
    m = json.loads((out / "manifest.json").read_text())
    assert not m["variants"]["bf16"]["shipped"]
    assert m["variants"]["bf16"]["reason"] == ("OpenVINO cannot run this graph: CPU plug-in "
                                               "doesn't support If")
    assert not (out / VARIANT_FILES["bf16"]).exists() and VARIANT_FILES["bf16"] not in m["files"]
    assert m["variants"]["fp32"]["shipped"]
