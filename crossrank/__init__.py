"""crossrank: fast, dependable cross-encoder re-ranking with verified ONNX models.

`import crossrank` is cheap: the scoring classes load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
