"""The one timer the benchmark scripts share: warm up, then the median of several rounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def median_seconds(fn: Callable[..., Any], *args: Any, rounds: int = 5, warmup: int = 2,
                   **kwargs: Any) -> float:
    """Median wall time of fn(*args, **kwargs) over `rounds` calls after `warmup` calls
    (warm-up absorbs kernel compilation, allocator growth and autotuning)."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
