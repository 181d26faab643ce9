"""What a runtime is built from: one frozen value with every default defined here once.

The library (`Scorer.from_dir`, `CrossEncoder`), `crossrank serve`, Ray Serve replicas and
`crossrank score/info` all describe what they serve with a `RuntimeConfig`; the server's
`Settings` are this plus the HTTP fields. `loader.load` is the one function that turns it into a
running `Runtime`.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossrank.runtime.core.choices import ACTIVATIONS, TOKENIZER_BACKENDS
from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.core.options import DEFAULT_WINDOWS, WindowLimits
from crossrank.runtime.core.profiles import PROVIDER_CHOICES
from crossrank.runtime.modeldir import VARIANTS


@dataclass(frozen=True)
class RuntimeConfig:
    """One model served one way. None means the provider profile's (or the machine's) choice."""

    model_dir: str = ""  # an exported model directory
    variant: str = "auto"  # auto: the profile's default variant where the export shipped it
    provider: str = "auto"
    threads: int | None = None  # None: usable cores
    lanes: int | None = None  # batches at once, each on threads / lanes (None: the profile's)
    spin: bool = True  # ONNX Runtime threads spin-wait between runs (faster, busier)
    token_budget: int | None = None  # None: the provider's measured default
    max_rows: int | None = None  # None: the variant's default
    pipeline: bool | None = None  # None: the profile's (on with CUDA, off on CPUs)
    tokenizer: str = "auto"  # auto | nanotoken | tokenizers
    tokenizer_threads: int | None = None  # None: the profile's (CPU 1, CUDA every core)
    max_length: int | None = None  # None: the model's; less truncates pairs sooner
    activation: str = "model"  # model (the export's) | identity | sigmoid
    int8_check: bool = True  # serve int8 only if verified on this CPU (runtime/selfcheck.py)
    # serve fp32 at once while the check runs, then int8 if it passes (a new CPU's first start)
    int8_check_background: bool = False
    cascade: int = 0  # int8 on CPU: fp32's exact top k per request (0: off)
    # where int8 was refused (at export, or by this CPU's check) and this CPU class runs the
    # cascade faster than fp32 (the profile's cascade_fallback_isas): serve int8 behind a top-k
    # cascade (the profile's k) instead of fp32
    cascade_fallback: bool = True
    window_stride: int = DEFAULT_WINDOWS.stride  # overflow=split: tokens shared by windows
    max_windows_per_chunk: int = DEFAULT_WINDOWS.max_per_chunk
    max_windows_per_request: int = DEFAULT_WINDOWS.max_per_request
    max_queued_tokens: int | None = None  # tokens waiting before new work is refused (None: never)

    @property
    def windows(self) -> WindowLimits:
        return WindowLimits(self.window_stride, self.max_windows_per_chunk,
                            self.max_windows_per_request)

    def checked(self) -> RuntimeConfig:
        """This configuration, if every value is in range; else ConfigError naming the first
        that is not (the model's own limits are checked when it is loaded)."""
        one_of("provider", self.provider, PROVIDER_CHOICES)
        one_of("variant", self.variant, VARIANTS)
        one_of("tokenizer", self.tokenizer, TOKENIZER_BACKENDS)
        one_of("activation", self.activation, ACTIVATIONS)
        for name in ("threads", "lanes", "tokenizer_threads", "token_budget", "max_rows", "max_length",
                     "max_queued_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be positive (or auto)")
        if self.cascade < 0:
            raise ConfigError("cascade must be 0 (off) or the k of the exact top-k")
        if not 0 <= self.window_stride <= 256:
            raise ConfigError("window_stride must be between 0 and 256 tokens")
        if self.max_windows_per_chunk < 1 or self.max_windows_per_request < 1:
            raise ConfigError("window limits must be positive")
        return self


def one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
