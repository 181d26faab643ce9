"""Writing ONNX models of any size: over protobuf's 2 GB limit (an XLM-R large checkpoint such
as bge-reranker-v2-m3 is ~2.3 GB in fp32), the weights go to one external data file beside the
graph (`model.onnx` -> `model.onnx.data`, runtime/modeldir.data_file), as ONNX Runtime's own
tools write them; the manifest lists and hashes both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossrank.runtime.modeldir import data_file

# Weights above this go to external data: protobuf refuses 2 GiB, and the graph needs room.
EXTERNAL_DATA_BYTES = 1_800_000_000


def weight_bytes(model: Any) -> int:
    """The bytes of a model's initializers (loaded ones: external references count nothing)."""
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) \
            + 8 * (len(t.int64_data) + len(t.double_data))
    return total


def external(model: Any) -> bool:
    """Whether a model this size must keep its weights in external data."""
    return weight_bytes(model) > EXTERNAL_DATA_BYTES


def data_of(path: Path) -> Path:
    return path.with_name(data_file(path.name))


def save(model: Any, path: Path) -> None:
    """Write model to path, its weights beside it in path.data when they are too large for one
    file (an old data file is removed first: ONNX would append to it)."""
    import onnx

    data = data_of(path)
    data.unlink(missing_ok=True)
    if external(model):
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def remove(path: Path) -> None:
    """Delete a model file and its external data, if any."""
    path.unlink(missing_ok=True)
    data_of(path).unlink(missing_ok=True)


def copy(src: Path, dst: Path) -> None:
    """Copy a model file with its weights (re-saved: the data file's name is inside the graph)."""
    import onnx

    save(onnx.load(str(src)), dst)


def session_input(model: Any, scratch: Path) -> str | bytes:
    """What onnxruntime.InferenceSession takes for an in-memory model: its bytes, or for one too
    large to serialize, a path in scratch (a directory) where it is written with its data."""
    if not external(model):
        return bytes(model.SerializeToString())
    path = scratch / "model.onnx"
    save(model, path)
    return str(path)
