"""Outlier smoothing before int8: the fp32 function is unchanged, the activations are flatter."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from crossrank.export import quantize, smooth
from crossrank.export.quantize import RECIPES, calibration_feeds, matmul_roles


def logits(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return np.array([sess.run(None, {k: v for k, v in f.items() if k in names})[0].ravel()[0]
                     for f in feeds])


def test_smoothing_keeps_the_fp32_function(realistic_dir: Path, tmp_path: Path) -> None:
    src = realistic_dir / "model.onnx"
    roles = matmul_roles(src)
    feeds = calibration_feeds(realistic_dir / "tokenizer.json")
    rec = smooth.smooth(src, tmp_path / "s.onnx", roles, {r: 0.85 for r in roles}, feeds[:16])
    layers = len(roles["attention"])
    # attention and both feed-forward inputs get a Mul; the attention output folds into V
    assert rec["nodes"] == 4 * layers and rec["folded"] == layers
    assert rec["mul_nodes"] == 3 * layers
    check = feeds[16:32]  # not the pairs the factors came from
    a, b = logits(src, check), logits(tmp_path / "s.onnx", check)
    assert np.abs(a - b).max() <= 1e-3 * max(1.0, float(np.abs(a).max()))


def test_smoothing_flattens_the_outlier_channels(realistic_dir: Path, tmp_path: Path) -> None:
    src = realistic_dir / "model.onnx"
    roles = matmul_roles(src)
    feeds = calibration_feeds(realistic_dir / "tokenizer.json")[:16]
    smooth.smooth(src, tmp_path / "s.onnx", roles, {"ffn-in": 0.85}, feeds)
    node = roles["ffn-in"][0]
    before_t = next(n for n in onnx.load(str(src)).graph.node if n.name == node).input[0]
    after_t = next(n for n in onnx.load(str(tmp_path / "s.onnx")).graph.node
                   if n.name == node).input[0]
    before = smooth.activation_maxima(src, [before_t], feeds)[before_t]
    after = smooth.activation_maxima(tmp_path / "s.onnx", [after_t], feeds)[after_t]
    # the largest channel against the median one: what sets the int8 step for all the others
    assert after.max() / np.median(after) < 0.5 * before.max() / np.median(before)


def test_smooth_recipe_records_its_calibration(tiny_dir: Path, tmp_path: Path) -> None:
    rec = quantize.quantize(tiny_dir / "model.onnx", tmp_path / "q.onnx", "avx2",
                            RECIPES["u8u8-smooth"])
    assert rec["smoothing"]["alpha"] == {r: 0.85 for r in matmul_roles(tiny_dir / "model.onnx")}
    assert rec["smoothing"]["calibration_pairs"] == quantize.CALIBRATION_PAIRS
    assert not list(tmp_path.glob("*.smoothed.onnx"))  # the intermediate is removed
    plain = quantize.quantize(tiny_dir / "model.onnx", tmp_path / "p.onnx", "avx2",
                              RECIPES["u8u8"])
    assert plain["smoothing"] is None


def test_smoothing_without_a_tokenizer_is_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    from crossrank.export import ExportError

    shutil.copy(tiny_dir / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(ExportError, match="tokenizer"):
        quantize.quantize(tmp_path / "model.onnx", tmp_path / "q.onnx", "avx2")


def _one_matmul(w: np.ndarray, path: Path, opset: int = 17) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]),
              str(path))


@pytest.mark.parametrize("opset", [17, 18])
def test_per_token_ranges_keep_the_function_and_spare_the_ordinary_tokens(
        opset: int, tmp_path: Path) -> None:
    """A few tokens tens of times larger than the rest set dynamic int8's one range per tensor;
    with a range per token the other tokens' error falls, and the fp32 function is unchanged."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(64, 24))
    x = rng.normal(size=(1, 40, 64)).astype(np.float32)
    x[0, [0, 17]] *= 40.0  # two outlier tokens, as [CLS] and [SEP] after GELU
    _one_matmul(w, tmp_path / "f.onnx", opset)
    shutil.copy(tmp_path / "f.onnx", tmp_path / "t.onnx")
    assert smooth.per_token_scales(tmp_path / "t.onnx", ["mm"]) == 1

    def run(f: str) -> np.ndarray:
        sess = ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
        out: np.ndarray = np.asarray(sess.run(None, {"x": x})[0])[0]
        return out

    exact = (x[0].astype(np.float64) @ w)
    assert np.abs(run("t.onnx") - exact).max() < 1e-4 * np.abs(exact).max()
    # uint8 weights: exact integer sums on every x86 class (an AVX2 CPU's u8 x s8 kernel
    # saturates int16 pair sums, and full-range rows, which per-token ranges give, would meet it)
    for f in ("f", "t"):
        quantize._quantize_dynamic(tmp_path / f"{f}.onnx", tmp_path / f"{f}q.onnx",
                                   RECIPES["u8u8"], ["mm"])
    ordinary = np.ones(40, bool)
    ordinary[[0, 17]] = False
    plain = np.abs(run("fq.onnx") - exact)[ordinary].mean()
    per_token = np.abs(run("tq.onnx") - exact)[ordinary].mean()
    assert per_token < plain / 5


def test_a_per_token_recipe_records_its_nodes_and_leaves_the_source_alone(
        tiny_dir: Path, tmp_path: Path) -> None:
    import dataclasses

    src = tmp_path / "model.onnx"
    shutil.copy(tiny_dir / "model.onnx", src)
    before = src.read_bytes()
    bare = dataclasses.replace(RECIPES["u8s8"], name="u8s8-pertoken", per_token=("ffn-out",))
    rec = quantize.quantize(src, tmp_path / "q.onnx", "avx512_vnni", bare)
    layers = len(matmul_roles(src)["ffn-out"])
    assert rec["per_token_ranges"] == {"roles": ["ffn-out"], "nodes": layers}
    assert src.read_bytes() == before  # the rewrite went to a scratch copy, now removed
    assert not list(tmp_path.glob("*.smoothed.onnx"))
    assert quantize.quantize(src, tmp_path / "p.onnx", "avx512_vnni",
                             RECIPES["u8s8"])["per_token_ranges"] is None
