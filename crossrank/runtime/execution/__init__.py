"""Execution: the sessions (ONNX Runtime's, OpenVINO's) and the engine (queue, batches). Imports
only the core."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionInfo:
    """What a session is running: file, provider and its inputs."""

    model_file: str
    provider: str
    threads: int
    input_names: tuple[str, ...]
