"""Provider policy in one table: a frozen profile per ONNX Runtime execution provider.

Everything that differs between hardware targets lives here and is read everywhere else: the
ONNX Runtime provider and its options, the variant served by default, batch budgets, shape
rounding, whether tokenizing overlaps the device, IO binding and tokenizer threads. Adding a
provider (ROCm, CoreML) is one entry in PROFILES and one in PROVIDER_ORDER; the openvino entry is
the one served by another runtime than ONNX Runtime (its `backend`).

Settings that callers vary are varied by building a new frozen object (dataclasses.replace),
never by changing a live one; /info reports the objects actually in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from crossrank.runtime.core.errors import ConfigError


@dataclass(frozen=True)
class BatchPolicy:
    """How pairs become batches and when tokenizing overlaps the device."""

    token_budget: int  # rows x padded width per batch
    max_rows: int
    # Widths rounded up to pad_multiple tokens and row counts to row_multiple rows: fewer distinct
    # shapes for kernels that plan per shape (see batching.pad).
    pad_multiple: int = 1
    row_multiple: int = 1
    # pipeline: a request of more than slice_min_chunks chunks is tokenized in `slices` runs, each
    # scored as soon as it is ready, and the next batch is padded while the device runs this one.
    pipeline: bool = False
    slices: int = 6
    slice_min_chunks: int = 64
    # lanes: batches that run at once, each on threads / lanes of the session's threads (at most
    # one lane per thread: runtime/loader.py); ProviderProfile.variant_lanes sets it per variant.
    lanes: int = 1

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_rows < 1 or self.lanes < 1:
            raise ConfigError("token_budget, max_rows and lanes must be positive integers")
        if self.pad_multiple < 1 or self.row_multiple < 1 or self.slices < 1:
            raise ConfigError("pad_multiple, row_multiple and slices must be positive integers")


@dataclass(frozen=True)
class ProviderProfile:
    """One hardware target: what ONNX Runtime runs on and the policy measured for it."""

    name: str  # what users pass as --provider
    ort_provider: str  # ONNX Runtime's execution provider name ("" for another backend)
    ort_options: tuple[tuple[str, str | int | bool], ...]  # that provider's options
    default_variant: str  # what variant=auto serves when the export shipped it
    batch: BatchPolicy
    io_binding: bool  # bind inputs once per batch (device memory) instead of plain run()
    tokenizer_threads: int  # 0: every usable core (the device does the math); 1: one thread
    preload_libraries: bool = False  # onnxruntime.preload_dlls() before the session (CUDA)
    # ONNX Runtime graph optimizers turned off for this provider: on the CPU, SkipLayerNormFusion,
    # which would fuse the exporter's split norms back into its slower kernel (export/optimize.py)
    disabled_optimizers: tuple[str, ...] = ()
    # Per variant: rows per batch overriding batch.max_rows (dynamic int8 takes its activation
    # scales from the whole batch, so one row per run makes a pair's score its own; docs/performance.md)
    variant_max_rows: tuple[tuple[str, int], ...] = field(default=(("int8", 1),))
    # Per variant: lanes overriding batch.lanes. On 2 cores two lanes ran int8's one-pair batches
    # of a 100-chunk request 1.15x faster (10 chunks 0.96x, 1 chunk 0.68x); fp32's many-row
    # batches ran 0.95x (docs/performance.md), so fp32 keeps one lane.
    variant_lanes: tuple[tuple[str, int], ...] = ()
    # int8 serves only after the start-up self-check (runtime/selfcheck.py): int8 kernels differ
    # between CPUs, so the export's verdict may not hold here.
    int8_self_check: bool = False
    # int8 may serve behind the precision cascade (fp32 re-scores each request's top k).
    cascade: bool = False
    # CPU classes (cpu.detect_isa) where an int8 the gate refused serves behind the cascade by
    # default, and the k a request gets when it names none: where the cascade was measured faster
    # than fp32 (docs/int8.md, "The precision cascade")
    cascade_fallback_isas: tuple[str, ...] = ()
    cascade_fallback_k: int = 10
    # Tokenizing in runs hides tokenizing behind the device; with nanotoken there is little left
    # to hide and each run costs a hand-off (simulated device at the H200's ratio: 100 chunks
    # 36.2 ms in one part vs 40.0 ms in runs; docs/performance.md "GPU"), so it tokenizes in one
    # run unless pipelining was asked for explicitly.
    slices_with_nanotoken: int = 1
    # What runs the graph: "onnxruntime" (execution/session.py) or "openvino"
    # (execution/ovsession.py, which computes in `precision`).
    backend: str = "onnxruntime"
    precision: str = ""

    def policy_for(self, variant: str, tokenizer: str = "tokenizers") -> BatchPolicy:
        """The batch policy for serving this variant on this provider with this tokenizer back
        end (nanotoken or tokenizers)."""
        rows = dict(self.variant_max_rows).get(variant)
        policy = self.batch if rows is None else replace(self.batch, max_rows=rows)
        lanes = dict(self.variant_lanes).get(variant)
        if lanes is not None:
            policy = replace(policy, lanes=lanes)
        if tokenizer == "nanotoken" and policy.slices > self.slices_with_nanotoken:
            policy = replace(policy, slices=self.slices_with_nanotoken)
        return policy

    def describe(self) -> dict[str, object]:
        """JSON-able, for /info and `crossrank info`."""
        return {"name": self.name, "backend": self.backend, "ort_provider": self.ort_provider,
                "default_variant": self.default_variant, "io_binding": self.io_binding,
                "tokenizer_threads": self.tokenizer_threads,
                "disabled_optimizers": list(self.disabled_optimizers)}


PROFILES: dict[str, ProviderProfile] = {
    # Measured on 2 cores (stand-in L-12, int8, 100-chunk mixed request; docs/performance.md "Batch budgets"):
    # small batches keep activations in cache. ONNX Runtime already has every core, so no
    # pipelining and one tokenizer thread.
    "cpu": ProviderProfile(
        name="cpu",
        ort_provider="CPUExecutionProvider",
        ort_options=(),
        default_variant="int8",
        batch=BatchPolicy(token_budget=2048, max_rows=64),
        variant_lanes=(("int8", 2),),
        io_binding=False,
        tokenizer_threads=1,
        int8_self_check=True,
        cascade=True,
        # VNNI (2-core Xeon, trained and prose-head fixtures, same run): the cascade 1.50-1.57x
        # fp32; under AVX2 numerics int8 is only 1.29x fp32 and the cascade 1.00x, so fp32 serves
        # a refused int8 there
        cascade_fallback_isas=("avx512_vnni",),
        disabled_optimizers=("SkipLayerNormFusion",),
    ),
    # Measured on an H200 (docs/performance.md "GPU"): 32k-token batches; widths rounded to 64 tokens and rows
    # to 16 because cuDNN attention plans per shape (fresh 2000-chunk requests 1.08M tokens/s
    # exact, 2.36M rounded); tokenizing on every core overlaps the device.
    "cuda": ProviderProfile(
        name="cuda",
        ort_provider="CUDAExecutionProvider",
        ort_options=(("device_id", 0), ("arena_extend_strategy", "kSameAsRequested"),
                     ("do_copy_in_default_stream", True)),
        default_variant="fp16",
        batch=BatchPolicy(token_budget=32768, max_rows=512, pad_multiple=64, row_multiple=16,
                          pipeline=True),
        io_binding=True,
        tokenizer_threads=0,
        preload_libraries=True,
    ),
    # OpenVINO on the CPU, computing the bf16 variant in bfloat16 (AMX on Xeons from Sapphire
    # Rapids on). bf16 has no activation ranges, so rows batch freely. One lane (one OpenVINO
    # stream on every thread): on a 2-core Xeon (model 207), stand-in L-12, two lanes were no
    # faster at 100 and 1000 chunks and slower at 1 and 10 (31 against 18 ms for one chunk);
    # 2048-token batches as on the CPU provider (docs/performance.md "bf16 with OpenVINO").
    # Asked for by name (`--provider openvino`): auto keeps ONNX Runtime.
    "openvino": ProviderProfile(
        name="openvino",
        ort_provider="",
        ort_options=(),
        default_variant="bf16",
        batch=BatchPolicy(token_budget=2048, max_rows=64),
        variant_max_rows=(),
        io_binding=False,
        tokenizer_threads=1,
        backend="openvino",
        precision="bf16",
    ),
}
# provider=auto takes the first of these that this onnxruntime build offers.
PROVIDER_ORDER = ("cuda", "cpu")
PROVIDER_CHOICES = ("auto", *PROFILES)


def profile(name: str) -> ProviderProfile:
    """The profile of a provider name (not 'auto': see session.resolve_provider)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"Unknown provider {name!r}; choose one of "
                          f"{', '.join(PROVIDER_CHOICES)}.") from None
