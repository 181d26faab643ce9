"""The OpenVINO session (the only openvino import): the bf16 variant on CPUs with bfloat16
matrix units (AMX on Xeons from Sapphire Rapids on).

The file is the export's plain fp32 graph (no ONNX Runtime contrib operators); OpenVINO computes
it in bfloat16 where the CPU has bf16 instructions and in fp32 elsewhere, and says which
(`precision`). One compiled model serves every lane: one stream a lane, one infer request a lane
thread, so lanes run at once as ONNX Runtime's do on the CPU provider.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.runtime.core.batching import Batch
from crossrank.runtime.core.errors import ConfigError, InferenceError, ModelLoadError
from crossrank.runtime.execution import SessionInfo, check_inputs, feed, one_per_row

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'crossrank[openvino]'"


def available() -> bool:
    """True when the openvino package imports and offers its CPU device."""
    try:
        import openvino as ov
    except ImportError:
        return False
    try:
        return "CPU" in ov.Core().available_devices
    except Exception:  # a broken install: say unavailable, resolve_provider explains
        return False


def reason(exc: BaseException) -> str:
    """OpenVINO's message without its trace of source locations ("Exception from src/...")."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("Exception from")]
    return " ".join(lines)[:300] or type(exc).__name__


def computes_in(precision: str) -> str:
    """What OpenVINO's CPU device computes a `precision` hint in here: bf16 only where the CPU
    has bfloat16 instructions (AMX, AVX-512 BF16), f32 elsewhere."""
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return precision if precision.upper() in [str(c).upper() for c in caps] else "f32"


class OVSession:
    """One compiled OpenVINO model; `run` is safe from several lane threads at once."""

    def __init__(self, model_file: Path, precision: str, threads: int, lanes: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ConfigError(f"provider=openvino needs the openvino package: {INSTALL_HINT}") from exc
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision,
                                  "INFERENCE_NUM_THREADS": max(1, threads * lanes),
                                  "NUM_STREAMS": max(1, lanes)}
        try:
            core = ov.Core()
            model = core.read_model(str(model_file))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError with a long trace of its own
            raise ModelLoadError(
                f"OpenVINO cannot load {model_file}: {reason(exc)}. The file is damaged, was not "
                "written by `crossrank export --variants ...,bf16`, or holds an operator "
                "OpenVINO's CPU plug-in does not run: export the model again (`crossrank export "
                "SOURCE --variants fp32,int8,bf16 --force`), or serve with provider=cpu."
            ) from exc
        self._inputs: dict[str, type] = {
            p.get_any_name(): (np.int32 if "i32" in str(p.get_element_type()) else np.int64)
            for p in self._compiled.inputs}
        check_inputs(model_file, self._inputs)
        self._local = threading.local()
        # what the CPU computes in: bf16 asked for runs in f32 on CPUs without bf16 instructions
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.info = SessionInfo(model_file=str(model_file), provider="openvino",
                                threads=threads, input_names=tuple(self._inputs))
        if precision == "bf16" and "bf16" not in self.precision:
            log.warning("OpenVINO computes in %s on this CPU (no bfloat16 instructions): the bf16 "
                        "variant is exact here but no faster than fp32", self.precision)

    def run(self, batch: Batch) -> np.ndarray:
        """float32 logits, one per row."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        try:  # a copy: the request reuses its output buffer on the next run
            logits = np.array(req.infer(feed(batch, self._inputs))[0])
        except Exception as exc:
            raise InferenceError(f"inference failed: {reason(exc)[:200]}") from exc
        return one_per_row(logits)
