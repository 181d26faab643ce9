"""Execution: the sessions (ONNX Runtime's, OpenVINO's) and the engine (queue, batches). Imports
only the core. Here: what every session shares (its info, the inputs it takes, one logit a row)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossrank.runtime.core.batching import Batch
from crossrank.runtime.core.errors import InferenceError, ModelLoadError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a session may be fed


@dataclass(frozen=True)
class SessionInfo:
    """What a session is running: file, provider and its inputs."""

    model_file: str
    provider: str
    threads: int
    input_names: tuple[str, ...]


def check_inputs(model_file: Path, types: dict[str, type]) -> None:
    """A model's inputs must be crossrank's: input_ids, attention_mask, optionally
    token_type_ids."""
    if set(types) - set(INPUTS) or "input_ids" not in types:
        raise ModelLoadError(f"{model_file} has inputs {sorted(types)}; crossrank expects "
                             "input_ids, attention_mask and optionally token_type_ids.")


def feed(batch: Batch, types: dict[str, type]) -> dict[str, np.ndarray]:
    """The batch's arrays for the model's inputs, contiguous, in the integer type each takes."""
    arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
              "token_type_ids": batch.token_type_ids}
    return {name: np.ascontiguousarray(arrays[name], dtype=dt) for name, dt in types.items()}


def one_per_row(logits: object) -> np.ndarray:
    """float32 logits, one per row: a [rows, 1] output flattened, any wider one refused."""
    out = np.asarray(logits, dtype=np.float32)
    if out.ndim == 2:
        if out.shape[1] != 1:
            raise InferenceError(f"the model returned {out.shape[1]} logits per pair, not 1")
        out = out[:, 0]
    return out
