"""crossrank: fast, dependable cross-encoder re-ranking with verified ONNX models.

    from crossrank import CrossEncoder      # sentence-transformers' predict() and rank()
    from crossrank import Scorer            # the library's full front end
    from crossrank import ScoreRequest, ScoreOptions  # a request with any option HTTP takes

`import crossrank` is cheap: the scoring classes (and ONNX Runtime) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CrossEncoder", "ScoreOptions", "ScoreRequest", "Scorer", "__version__"]

if TYPE_CHECKING:
    from crossrank.crossencoder import CrossEncoder
    from crossrank.runtime.core.options import ScoreOptions, ScoreRequest
    from crossrank.runtime.scorer import Scorer


def __getattr__(name: str) -> Any:
    if name == "CrossEncoder":
        from crossrank.crossencoder import CrossEncoder

        return CrossEncoder
    if name == "Scorer":
        from crossrank.runtime.scorer import Scorer

        return Scorer
    if name in ("ScoreOptions", "ScoreRequest"):
        from crossrank.runtime.core import options

        return getattr(options, name)
    raise AttributeError(f"module 'crossrank' has no attribute {name!r}")
