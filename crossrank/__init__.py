"""crossrank: fast, dependable cross-encoder re-ranking with verified ONNX models.

    from crossrank import CrossEncoder      # sentence-transformers' predict() and rank()
    from crossrank import Scorer            # the library's full front end

`import crossrank` is cheap: the scoring classes (and ONNX Runtime) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CrossEncoder", "Scorer", "__version__"]

if TYPE_CHECKING:
    from crossrank.crossencoder import CrossEncoder
    from crossrank.runtime.scorer import Scorer


def __getattr__(name: str) -> Any:
    if name == "CrossEncoder":
        from crossrank.crossencoder import CrossEncoder

        return CrossEncoder
    if name == "Scorer":
        from crossrank.runtime.scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'crossrank' has no attribute {name!r}")
