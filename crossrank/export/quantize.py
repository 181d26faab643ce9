"""Dynamic int8 quantization for CPUs: a recipe per instruction-set class, and the MatMul roles a
mixed-precision search can keep in fp32.

Every recipe is per-channel dynamic int8 of the MatMuls and the fused Attention, activations
uint8 with scales taken at run time. What differs per CPU class is how ONNX Runtime's int8
kernels add products up:
- avx512_vnni (AVX-512 VNNI or AVX-VNNI) and arm64: u8 x s8 dot products accumulate in int32,
  exactly: signed int8 weights, full range (u8s8).
- avx2 (x86 without VNNI): u8 x s8 pairs are summed in int16 first (vpmaddubsw) and saturate
  with full-range weights; 7-bit weights avoid that but lose ranking fidelity (measured: top-10
  8/10 on the realistic fixture). Unsigned weights (u8u8) take a kernel that widens to int16
  before multiplying: no saturation, full 8-bit weights.

Recipes ending in `-smooth` first move activation outliers into the weights (smooth.py, alpha
0.85 on every role), which halves the int8 error against fp32 on real encoder weights (docs/export.md
"int8 recipes" has the figures per CPU class). Recipes ending in `-pertoken` (the defaults) also
give the feed-forward outputs' activations one range per token (smooth.per_token_scales), with
smoothing at alpha 0.5: on the trained fixture's unseen requests the error fell from 0.21 to
0.06 x std for ~7% of int8's speed (docs/int8.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossrank.export import ExportError, onnxfile, smooth
from crossrank.runtime.core.cpu import ISAS, detect_isa

__all__ = ["ISAS", "RECIPES", "Quantizer", "Recipe", "detect_isa", "matmul_roles",
           "named_recipe", "node_weights", "quantizable_nodes", "quantize", "recipe_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How weights are stored; activations are always dynamic uint8."""

    name: str
    weights: str  # "int8" or "uint8"
    reduce_range: bool  # 7-bit weights
    per_channel: bool = True
    smooth_alpha: float | None = None  # outlier smoothing before quantizing (smooth.py)
    per_token: tuple[str, ...] = ()  # roles whose activations get a range per token (smooth.py)
    role_alpha: tuple[tuple[str, float], ...] = ()  # (role, alpha) pairs overriding smooth_alpha


SMOOTH_ALPHA = 0.85  # swept 0.5-0.95 on the realistic fixture (docs/export.md "int8 recipes")
# With a range per token on the feed-forward outputs, weaker smoothing is better (SmoothQuant pairs
# per-token ranges with 0.5 too): 0.3-0.85 swept on the dev requests of both int8 fixtures (never
# their test requests, never the gate's check sets); least rms error over both at 0.5 (docs/int8.md).
PER_TOKEN_ALPHA = 0.5
RECIPES = {
    "u8s8": Recipe("u8s8", weights="int8", reduce_range=False),
    "u8u8": Recipe("u8u8", weights="uint8", reduce_range=False),
    "u8s8-reduced": Recipe("u8s8-reduced", weights="int8", reduce_range=True),
    "u8s8-smooth": Recipe("u8s8-smooth", weights="int8", reduce_range=False,
                          smooth_alpha=SMOOTH_ALPHA),
    "u8u8-smooth": Recipe("u8u8-smooth", weights="uint8", reduce_range=False,
                          smooth_alpha=SMOOTH_ALPHA),
    # 7-bit weights cannot saturate the int16 sums of AVX2's u8 x s8 kernel, which is faster
    # there than u8u8's widening one (1.41x fp32 against 1.16x under AVX2 numerics, docs/int8.md).
    "u8s8-reduced-smooth": Recipe("u8s8-reduced-smooth", weights="int8", reduce_range=True,
                                  smooth_alpha=SMOOTH_ALPHA),
    # The feed-forward outputs carry most of int8's error (layer 0's alone 81% on the trained
    # fixture), from a few tokens' outliers; per-token ranges elsewhere bought nothing measurable.
    "u8s8-smooth-pertoken": Recipe("u8s8-smooth-pertoken", weights="int8", reduce_range=False,
                                   smooth_alpha=PER_TOKEN_ALPHA, per_token=("ffn-out",)),
    "u8u8-smooth-pertoken": Recipe("u8u8-smooth-pertoken", weights="uint8", reduce_range=False,
                                   smooth_alpha=PER_TOKEN_ALPHA, per_token=("ffn-out",)),
    # AVX2's faster choice (`--int8-recipe`): 7-bit weights take the u8 x s8 kernel without
    # saturating. Under AVX2 numerics (tools/avx2/run.sh) on the trained fixture's dev requests:
    # 1.36x fp32 against u8u8-smooth-pertoken's 1.13x, rms error 0.074 x std against 0.050;
    # ffn-in smoothed at 0.85 was the least error of five variants (docs/int8.md).
    "u8s8-reduced-smooth-pertoken": Recipe(
        "u8s8-reduced-smooth-pertoken", weights="int8", reduce_range=True,
        smooth_alpha=PER_TOKEN_ALPHA, per_token=("ffn-out",), role_alpha=(("ffn-in", 0.85),)),
}
_RECIPE_FOR_ISA = {"avx512_vnni": "u8s8-smooth-pertoken", "avx2": "u8u8-smooth-pertoken",
                   "arm64": "u8s8-smooth-pertoken"}
# Calibration pairs for smoothing: a seed no check, fixture or benchmark draws from.
CALIBRATION_PAIRS = 64
CALIBRATION_SEED = 31


def recipe_for(isa: str) -> Recipe:
    """The recipe chosen for a CPU class (docs/export.md "int8 recipes" has the measurements)."""
    if isa not in ISAS:
        raise ExportError(f"Unknown instruction set {isa!r}; choose one of {', '.join(ISAS)}.")
    return RECIPES[_RECIPE_FOR_ISA[isa]]


def named_recipe(name: str | None, isa: str) -> Recipe:
    """The recipe a user named (`crossrank export --int8-recipe`), else the one for isa. A
    u8 x s8 recipe with full-range weights saturates on AVX2 CPUs: allowed (the gate judges it on
    this CPU), but said."""
    if name is None:
        return recipe_for(isa)
    if name not in RECIPES:
        raise ExportError(f"Unknown int8 recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    r = RECIPES[name]
    if isa == "avx2" and r.weights == "int8" and not r.reduce_range:
        log.warning("int8 recipe %s: full-range int8 weights saturate AVX2's int16 sums; the "
                    "gate judges it on this CPU, and an AVX2 server's self-check may refuse it", name)
    return r


# What the role finder looks for: attention scores, the norms that bound a layer's blocks.
_ATTENTION_OPS = frozenset({"Softmax", "Attention", "MultiHeadAttention"})
_NORM_OPS = frozenset({"LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization",
                       "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"})
_REACH = 400  # nodes a walk visits at most (a DeBERTa attention block is ~150)
ROLES = ("attention", "attention-output", "ffn-in", "ffn-out")


def matmul_roles(model_file: Path) -> dict[str, list[str]]:
    """The encoder layers' quantizable nodes grouped by role, found by the graph's structure
    (node names differ per family: BERT's attention/output/dense, ModernBERT's Wqkv, Wo and Wi,
    DeBERTa's query_proj, Qwen3's q_proj): a fused Attention, or a MatMul by a constant weight
    whose output reaches attention (a Softmax, or a product of two activations: QK' and PV)
    before a norm or another weight, is an input projection of attention (a norm narrower than
    the projection's output, Qwen3's per-head q_norm and k_norm, is passed through); one whose
    input comes from attention is its output projection; one whose output reaches the graph's
    output before a norm or another weight is the score head (a decoder's, applied to every
    token before the last is picked) and stays fp32; of the rest, one that widens is a
    feed-forward input and one that narrows its output. Anything else (the head's square dense
    layer after pooling) is left out: it stays fp32."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    consts = {i.name for i in graph.initializer}
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    consumers = smooth.consumers(graph)
    producer = {name: node for node in graph.node for name in node.output}

    def weighted(node: Any) -> bool:
        return node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in consts

    def per_head(norm: Any, width: int) -> bool:
        """A norm whose scale is narrower than the projection's output: it normalizes each
        head (Qwen3's q_norm, k_norm), inside attention, not the layer's residual stream."""
        scale = norm.input[2] if norm.op_type.startswith("Skip") else norm.input[1]
        size: int = math.prod(shapes.get(scale, (width,)))
        return 0 < size < width

    def scores(n: Any) -> bool:
        """Attention scores, or a product of two activations (QK', PV)."""
        return n.op_type in _ATTENTION_OPS or (n.op_type == "MatMul" and not weighted(n))

    def stops(n: Any, width: int) -> bool:
        """Where a walk ends: a norm (other than a per-head one), a weighted MatMul or Gemm."""
        return ((n.op_type in _NORM_OPS and not per_head(n, width))
                or n.op_type == "Gemm" or weighted(n))

    def reaches(start: Any, forward: bool, width: int, hit: Callable[[Any], bool]) -> bool:
        """Does a walk from start (forward through consumers, or back through producers) meet
        a node `hit` accepts before one it stops at, or _REACH nodes?"""
        seen: set[int] = set()
        todo = [start]
        while todo and len(seen) < _REACH:
            node = todo.pop(0)
            names = node.output if forward else node.input
            for name in names:
                nxt = (consumers.get(name, []) if forward
                       else [producer[name]] if name in producer else [])
                for n in nxt:
                    if id(n) in seen:
                        continue
                    seen.add(id(n))
                    if hit(n):
                        return True
                    if stops(n, width):
                        continue
                    todo.append(n)
        return False

    outputs = {o.name for o in graph.output}

    def writes_output(n: Any) -> bool:
        return bool(outputs.intersection(n.output))

    def score_head(start: Any) -> bool:
        """Does start's output reach the graph's output before a norm or another weight?"""
        return writes_output(start) or reaches(
            start, forward=True, width=0, hit=lambda n: writes_output(n) and not stops(n, 0))

    roles: dict[str, list[str]] = {name: [] for name in ROLES}
    for node in graph.node:
        if node.op_type == "Attention":
            roles["attention"].append(node.name)
        elif weighted(node) and len(shapes[node.input[1]]) == 2:
            d_in, d_out = shapes[node.input[1]]
            if reaches(node, forward=True, width=d_out, hit=scores):
                roles["attention"].append(node.name)
            elif reaches(node, forward=False, width=d_in, hit=scores):
                roles["attention-output"].append(node.name)
            elif score_head(node):
                continue
            elif d_out > d_in:
                roles["ffn-in"].append(node.name)
            elif d_out < d_in:
                roles["ffn-out"].append(node.name)
    return {k: v for k, v in roles.items() if v}


def node_weights(model_file: Path, nodes: list[str]) -> dict[str, int]:
    """Each node's weight size (elements of its constant second input): what int8 saves on it."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    sizes = {i.name: math.prod(i.dims) for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    return {n: sizes.get(by_name[n].input[1], 0) for n in nodes}


def pair_feeds(tokenizer_file: Path, pairs: list[tuple[str, str]],
               max_length: int = 512) -> list[dict[str, Any]]:
    """ONNX Runtime feeds of one pair each (as the int8 runtime runs), truncated at the model's
    max length (a pair past a short model's position table would not run)."""
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length)
    tok.no_padding()
    return [{"input_ids": np.array([e.ids], np.int64),
             "attention_mask": np.array([e.attention_mask], np.int64),
             "token_type_ids": np.array([e.type_ids], np.int64)} for e in tok.encode_batch(pairs)]


def calibration_feeds(tokenizer_file: Path, max_length: int = 512) -> list[dict[str, Any]]:
    """The smoothing calibration pairs, one pair per feed."""
    from crossrank.export.corpus import sample_pairs

    return pair_feeds(tokenizer_file, sample_pairs(CALIBRATION_PAIRS, seed=CALIBRATION_SEED),
                      max_length)


def smooth_all_roles(src: Path, dst: Path, alpha: float, tokenizer_file: Path,
                     max_length: int = 512,
                     role_alpha: tuple[tuple[str, float], ...] = ()) -> dict[str, Any]:
    """Write src with every MatMul role smoothed at alpha (or role_alpha's for a role it names),
    calibrated on pairs tokenized with tokenizer_file; returns smooth.smooth's record for the
    manifest."""
    if not tokenizer_file.is_file():
        raise ExportError(f"Smoothing needs the model's tokenizer for calibration; "
                          f"{tokenizer_file} is missing.")
    roles = matmul_roles(src)
    special = dict(role_alpha)
    return smooth.smooth(src, dst, roles, {role: special.get(role, alpha) for role in roles},
                         calibration_feeds(tokenizer_file, max_length))


class Quantizer:
    """One fp32 model quantized as often as a mixed-precision search asks, with different nodes
    kept in fp32: the smoothing (its calibration run is most of a quantization's time) and the
    per-token rewrite run once, into a file beside the output that close() removes."""

    def __init__(self, src: Path, dst: Path, isa: str, recipe: Recipe | None = None,
                 tokenizer_file: Path | None = None, max_length: int = 512) -> None:
        self.dst, self.isa = dst, isa
        self.recipe = recipe or recipe_for(isa)
        self.smoothing: dict[str, Any] | None = None
        self.src = src
        self._work = dst.with_name(dst.stem + ".smoothed.onnx")
        self.per_token: dict[str, Any] | None = None
        try:
            if self.recipe.smooth_alpha is not None:
                self.smoothing = smooth_all_roles(
                    src, self._work, self.recipe.smooth_alpha,
                    tokenizer_file or src.parent / "tokenizer.json", max_length,
                    self.recipe.role_alpha)
                self.src = self._work
            # roles named before the per-token rewrite, whose extra nodes the role finder would
            # cross; node names survive it
            roles = matmul_roles(self.src)
            self._quantizable = quantizable_nodes(self.src, roles)
            chosen = [n for role in self.recipe.per_token for n in roles.get(role, [])]
            if chosen:
                if self.src == src:  # the rewrite is in place: never on the caller's file
                    onnxfile.copy(src, self._work)
                    self.src = self._work
                self.per_token = {"roles": list(self.recipe.per_token),
                                  "nodes": smooth.per_token_scales(self.src, chosen)}
        except BaseException:
            self.close()
            raise

    def write(self, fp32_nodes: tuple[str, ...] = ()) -> dict[str, Any]:
        """Write the int8 model with fp32_nodes left in fp32; returns the manifest's record."""
        nodes = [n for n in self._quantizable if n not in fp32_nodes]
        if nodes:
            _quantize_dynamic(self.src, self.dst, self.recipe, nodes)
        else:  # nothing left to quantize (an empty list would mean every node to ONNX Runtime)
            onnxfile.copy(self.src, self.dst)
        embedding = quantize_embeddings(self.dst)
        return {"method": "dynamic", "isa": self.isa, **asdict(self.recipe),
                "activations": "uint8", "ops": ["MatMul", "Attention"],
                "fp32_nodes": list(fp32_nodes), "smoothing": self.smoothing,
                "per_token_ranges": self.per_token, "embedding": embedding}

    def close(self) -> None:
        onnxfile.remove(self._work)

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quantize(src: Path, dst: Path, isa: str, recipe: Recipe | None = None,
             fp32_nodes: tuple[str, ...] = (), tokenizer_file: Path | None = None,
             max_length: int = 512) -> dict[str, Any]:
    """Write the int8 model; returns the recipe record for the manifest. fp32_nodes stay in fp32
    (mixed precision). A smoothing recipe calibrates on pairs tokenized with tokenizer_file
    (default: the tokenizer.json beside src)."""
    with Quantizer(src, dst, isa, recipe, tokenizer_file, max_length) as q:
        return q.write(fp32_nodes)


# A token embedding table smaller than this share of the weights saves too little to be worth
# its (small) error. XLM-R base's 250k rows are ~70% of its weights, bge-reranker-v2-m3's ~45%;
# BERT's table sits inside the fused EmbedLayerNormalization and is never touched.
EMBEDDING_MIN_SHARE = 0.10


def quantize_embeddings(model_file: Path) -> dict[str, Any] | None:
    """Store the token embedding table (the Gather of input_ids from a constant) in int8 with one
    symmetric scale per row, in place: Gather(table) becomes Gather(int8 rows) x Gather(row
    scales). Each element is off by at most half a step of its own row (max |row| / 254), the
    error the int8 gate then judges with the rest. Returns the manifest's record, or None where
    the graph has no such table (fused embeddings) or it is too small to matter."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_file))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses = smooth.consumers(graph)
    total = onnxfile.weight_bytes(model)
    for idx, node in enumerate(graph.node):
        if (node.op_type != "Gather" or len(node.input) != 2 or node.input[1] != "input_ids"
                or node.input[0] not in inits or len(uses.get(node.input[0], [])) != 1
                or any(a.name == "axis" and a.i != 0 for a in node.attribute)):
            continue
        table = numpy_helper.to_array(inits[node.input[0]])
        if table.ndim != 2 or table.dtype != np.float32 or table.nbytes < EMBEDDING_MIN_SHARE * total:
            return None
        scale = np.maximum(np.abs(table).max(axis=1), 1e-12) / 127.0
        rows = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
        name, out = node.input[0], node.output[0]
        graph.initializer.remove(inits[name])
        graph.initializer.extend([numpy_helper.from_array(rows, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32)[:, None],
                                                          f"{name}_row_scale")])
        new = [
            helper.make_node("Gather", [f"{name}_int8", "input_ids"], [f"{out}_int8"],
                             name=f"{node.name}_int8", axis=0),
            helper.make_node("Gather", [f"{name}_row_scale", "input_ids"], [f"{out}_scale"],
                             name=f"{node.name}_scale", axis=0),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{node.name}_cast",
                             to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out],
                             name=f"{node.name}_dequantize"),
        ]
        graph.node.remove(node)
        for k, n in enumerate(new):
            graph.node.insert(idx + k, n)
        onnxfile.save(model, model_file)
        log.info("token embeddings (%d rows) stored in int8 with a scale per row", len(rows))
        return {"node": node.name, "rows": int(table.shape[0]), "method": "int8, symmetric, "
                "one scale per row", "bytes_saved": int(table.nbytes - rows.nbytes
                                                        - scale.nbytes)}
    return None


def quantizable_nodes(model_file: Path,
                      roles: dict[str, list[str]] | None = None) -> list[str]:
    """The nodes int8 quantizes: the encoder layers' roles (matmul_roles), in graph order. The
    head (the pooler and classifier: Gemm nodes, or a MatMul after pooling, on one vector per
    pair) stays fp32: int8 would save nothing there, and on the prose-head fixture its error
    alone was 7% of int8's (bench/studies/int8_layers.py). roles: matmul_roles(model_file),
    where the caller has it already."""
    import onnx

    found = matmul_roles(model_file) if roles is None else roles
    chosen = {n for ns in found.values() for n in ns}
    graph = onnx.load(str(model_file), load_external_data=False).graph
    return [n.name for n in graph.node if n.name in chosen]


def _quantize_dynamic(src: Path, dst: Path, chosen: Recipe, nodes: list[str]) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnxfile.data_of(dst).unlink(missing_ok=True)  # ONNX would append to an old one
    quantize_dynamic(
        str(src),
        str(dst),
        # a source whose weights needed external data gets its int8 written the same way
        use_external_data_format=onnxfile.data_of(src).is_file(),
        per_channel=chosen.per_channel,
        reduce_range=chosen.reduce_range,
        weight_type=QuantType.QInt8 if chosen.weights == "int8" else QuantType.QUInt8,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_quantize=nodes,
        # Fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference;
        # their outputs are float tensors.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
