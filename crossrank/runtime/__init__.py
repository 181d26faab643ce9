"""Serve cross-encoder scores with ONNX Runtime and the Rust tokenizers library; no torch."""

from __future__ import annotations

from crossrank import __version__

__all__ = ["__version__"]
