"""The known re-rankers (crossrank/export/known.py) exported from the hub and scored against
sentence-transformers: `network` tests, deselected by default (the hub is unreachable where
crossrank is developed); run them with `pytest -m network tests/test_known_models.py`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank.export import known
from crossrank.export.pipeline import Options, run

EXPORTABLE = [m for m in known.MODELS if m.verified.startswith("not exported here")]


def test_every_known_model_names_a_known_family() -> None:
    names = {f.name for f in known.FAMILIES}
    assert all(m.family in names for m in known.MODELS)
    assert known.family_of("xlm-roberta") is not None and known.family_of("gpt2") is None
    assert known.table(markdown=True).count("\n") == len(known.MODELS) + 1


@pytest.mark.network
@pytest.mark.parametrize("model", EXPORTABLE, ids=[m.hub_id for m in EXPORTABLE])
def test_known_model_exports_and_matches_sentence_transformers(model: known.KnownModel,
                                                               tmp_path: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    from crossrank.runtime.scorer import Scorer

    out = run(Options(model=model.hub_id, out_dir=tmp_path / "m"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["variants"]["fp32"]["verification"]["passed"]
    assert known.family_of(m["model_type"]).name == model.family  # type: ignore[union-attr]
    q = "Who was the first person to walk on the moon?"
    chunks = ["The moon landing was watched by millions around the world.",
              "Neil Armstrong was the first person to walk on the moon in 1969.",
              "The moon orbits the Earth every 27 days."]
    ce = CrossEncoder(model.hub_id, max_length=512, activation_fn=torch.nn.Identity())
    want = np.asarray(ce.predict([(q, c) for c in chunks]))
    with Scorer.from_dir(out, variant="fp32") as s:
        got = s.logits(q, chunks)
    assert np.abs(got - want).max() <= 1e-3
    assert int(np.argmax(got)) == 1


def test_models_command_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    from crossrank.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(m.hub_id in out for m in known.MODELS)
    assert main(["models", "--families"]) == 0
    assert "modernbert" in capsys.readouterr().out
