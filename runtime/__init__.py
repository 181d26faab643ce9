"""Serve cross-encoder scores with ONNX Runtime and the Rust tokenizers library; no torch."""

from __future__ import annotations

__version__ = "0.1.0"
