"""CUDA path (marker `cuda`, deselected by default; skips without onnxruntime-gpu and a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank.export.corpus import TOPICS, passages_for
from crossrank.runtime.execution.session import cuda_available
from crossrank.runtime.scorer import Scorer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available(), reason="no CUDA provider in this onnxruntime"),
]


def test_fp16_on_cuda_matches_fp32_on_cpu(tmp_path: Path, realistic_ckpt: Path) -> None:
    from crossrank.export.pipeline import Options, run

    out = run(Options(model=str(realistic_ckpt), out_dir=tmp_path / "m",
                      variants=("fp32", "fp16")))
    f32 = Scorer.from_dir(out, variant="fp32", provider="cpu")
    f16 = Scorer.from_dir(out, provider="cuda")
    assert f16.info is not None and f16.info.variant == "fp16" and f16.policy.pipeline
    assert (f16.policy.pad_multiple, f16.policy.row_multiple) == (64, 16)
    for topic in TOPICS:
        q, docs = passages_for(topic, 100, seed=2000)
        a, b = f32.logits(q, docs), f16.logits(q, docs)
        overlap = set(np.argsort(-a)[:10].tolist()) & set(np.argsort(-b)[:10].tolist())
        assert len(overlap) >= 9
        assert np.abs(a - b).max() < 0.1
