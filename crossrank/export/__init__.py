"""Turn a Hugging Face cross-encoder into verified ONNX models (fp32, int8, fp16)."""

from __future__ import annotations

__all__ = ["ExportError", "HubUnreachable"]


class ExportError(Exception):
    """An export failed for a reason the user can fix; the message names the cause and the fix."""


class HubUnreachable(ExportError):
    """The Hugging Face hub cannot be reached and the model is not in the local cache."""
