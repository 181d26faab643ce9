"""sentence-transformers' CrossEncoder interface, on crossrank's engine and an exported model.

    from crossrank import CrossEncoder
    model = CrossEncoder("models/ms-marco-MiniLM-L-12-v2")       # int8 on CPU, fp16 on CUDA
    model.predict([("who walked on the moon?", "Neil Armstrong ..."), ...])
    model.rank("who walked on the moon?", documents, top_k=3, return_documents=True)

The model is an exported directory (`crossrank export MODEL`); the constructor never downloads.
Scores follow sentence-transformers: the model's own activation (raw logits for
ms-marco-MiniLM-L-12-v2), numpy float32 from predict, `rank` sorted by score with ties in document
order. Differences: scores in `rank` are plain Python floats; batches are sized in tokens, so
`batch_size` is accepted for compatibility and does not change the scores; no torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.core.scores import rank
from crossrank.runtime.scorer import Scorer

_DEVICES = {None: "auto", "cpu": "cpu", "cuda": "cuda"}


class CrossEncoder:
    """predict() and rank() like sentence_transformers.CrossEncoder, served by ONNX Runtime."""

    def __init__(self, model_name_or_path: str | Path, *, max_length: int | None = None,
                 device: str | None = None, activation_fn: str | Callable[[np.ndarray],
                                                                          np.ndarray] | None = None,
                 variant: str = "auto", threads: int | None = None) -> None:
        path = Path(model_name_or_path)
        if not (path / "manifest.json").is_file():
            raise ConfigError(
                f"{model_name_or_path} is not a crossrank export (no manifest.json). Export the "
                f"model first: `crossrank export {model_name_or_path}`, then pass the directory "
                "it prints (models/<name>).")
        dev = device.split(":")[0] if isinstance(device, str) else device
        if dev not in _DEVICES:
            raise ConfigError(f"device must be cpu, cuda or None (auto), not {device!r}")
        self._activation_fn = None if isinstance(activation_fn, str) else activation_fn
        activation = activation_fn if isinstance(activation_fn, str) else "model"
        self.scorer = Scorer.from_dir(path, variant=variant, provider=_DEVICES[dev],
                                      threads=threads, activation=activation,
                                      max_length=max_length)

    @property
    def max_length(self) -> int:
        return self.scorer.tokenizer.max_length

    def predict(self, inputs: Sequence[Sequence[str]] | Sequence[str], batch_size: int = 32,
                show_progress_bar: bool | None = None,
                activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                apply_softmax: bool | None = False, convert_to_numpy: bool = True,
                convert_to_tensor: bool = False, **_: Any) -> Any:
        """Scores of (query, document) pairs in order: float32 array; a single pair gives a
        single score."""
        del show_progress_bar  # accepted for compatibility; crossrank logs, it has no bar
        if convert_to_tensor:
            raise ConfigError("convert_to_tensor needs torch; crossrank returns numpy arrays "
                              "(torch.from_numpy(scores) converts them)")
        if batch_size < 1:
            raise ConfigError("batch_size must be positive")
        single = len(inputs) == 2 and all(isinstance(x, str) for x in inputs)
        pairs = [tuple(inputs)] if single else list(inputs)
        for i, p in enumerate(pairs):
            if isinstance(p, str) or len(p) != 2:
                raise ConfigError(f"inputs[{i}] must be a (query, document) pair")
        logits = self.scorer.predict([(str(q), str(d)) for q, d in pairs], activation="identity")
        fn = activation_fn or self._activation_fn
        scores = (np.asarray(fn(logits), dtype=np.float32) if fn is not None
                  else self.scorer.apply_activation(logits).astype(np.float32))
        if apply_softmax and scores.ndim > 1:
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = e / e.sum(axis=1, keepdims=True)
        if single:
            return scores[0]
        return scores if convert_to_numpy else [float(s) for s in scores]

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int = 32,
             show_progress_bar: bool | None = None,
             activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
             **_: Any) -> list[dict[str, Any]]:
        """[{"corpus_id", "score"(, "text")}] sorted by score descending, ties by index."""
        if top_k is not None and top_k < 1:
            raise ConfigError("top_k must be positive (or None for all)")
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size,
                              show_progress_bar=show_progress_bar, activation_fn=activation_fn)
        out: list[dict[str, Any]] = []
        for i, score in rank(scores)[:top_k]:
            item: dict[str, Any] = {"corpus_id": i, "score": score}
            if return_documents:
                item["text"] = documents[i]
            out.append(item)
        return out

    def close(self) -> None:
        self.scorer.close()

    def __enter__(self) -> CrossEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
