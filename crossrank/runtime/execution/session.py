"""The ONNX Runtime session: provider choice, thread settings, and running one Batch."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from crossrank.runtime.core import profiles
from crossrank.runtime.core.batching import Batch
from crossrank.runtime.core.errors import ConfigError, InferenceError, ModelLoadError
from crossrank.runtime.core.profiles import ProviderProfile
from crossrank.runtime.execution import SessionInfo, check_inputs, feed, one_per_row, ovsession
from crossrank.runtime.execution.ovsession import OVSession

log = logging.getLogger(__name__)



def usable_cores() -> int:
    """Cores this process may run on (affinity and cgroup-aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def available(name: str) -> bool:
    """True when the named profile's runtime is here: this onnxruntime build's execution
    provider, or the openvino package for the openvino profile."""
    prof = profiles.profile(name)
    if prof.backend == "openvino":
        return ovsession.available()
    return prof.ort_provider in ort.get_available_providers()


def cuda_available() -> bool:
    """True when this onnxruntime build has the CUDA provider."""
    return available("cuda")


def resolve_provider(provider: str) -> ProviderProfile:
    """The profile for a requested provider: 'auto' takes the first available in
    profiles.PROVIDER_ORDER; a named one must be available."""
    if provider == "auto":
        return profiles.profile(next(p for p in profiles.PROVIDER_ORDER if available(p)))
    prof = profiles.profile(provider)
    if not available(provider) and prof.backend == "openvino":
        raise ConfigError(f"provider={provider} needs the openvino package: "
                          f"{ovsession.INSTALL_HINT} (or use provider=cpu).")
    if not available(provider):
        raise ConfigError(
            f"provider={provider} was requested but this onnxruntime has no {prof.ort_provider} "
            f"(available: {', '.join(ort.get_available_providers())}). Install the matching build "
            "(for CUDA: `make install GPU=1` or `pip install 'crossrank[gpu]'` on a machine with an "
            "NVIDIA GPU), or use provider=cpu."
        )
    return prof


class Session:
    """One ONNX Runtime inference session; input names come from the model, never the data."""

    def __init__(self, model_file: Path, profile: ProviderProfile | None = None,
                 threads: int | None = None, spin: bool = True) -> None:
        prof = profile or profiles.profile("cpu")
        if prof.preload_libraries:
            _preload_libraries()
        opts = ort.SessionOptions()
        n_threads = threads if threads else usable_cores()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if not spin:
            # Idle intra-op threads otherwise spin-wait after each run, taking cores from the
            # event loop and from other processes; servers turn it off.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cpu = profiles.profile("cpu").ort_provider
        providers: list[Any] = [(prof.ort_provider, dict(prof.ort_options))]
        if prof.ort_provider != cpu:
            providers.append(cpu)  # for the few operators a device provider leaves to the CPU
        try:
            self._sess = ort.InferenceSession(str(model_file), sess_options=opts, providers=providers,
                                              disabled_optimizers=list(prof.disabled_optimizers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(
                f"ONNX Runtime cannot load {model_file}: {str(exc)[:300]}. The file is damaged or "
                "was written by an incompatible exporter: export the model again "
                "(`crossrank export SOURCE --force`)."
            ) from exc
        if prof.ort_provider not in self._sess.get_providers():
            raise ConfigError(f"{prof.ort_provider} failed to initialise for {model_file}; check "
                              "the device's libraries (CUDA and cuDNN for cuda), or use "
                              "provider=cpu.")
        inputs = self._sess.get_inputs()
        self._input_types: dict[str, type] = {
            i.name: (np.int32 if "int32" in i.type else np.int64) for i in inputs}
        check_inputs(model_file, self._input_types)
        outputs = self._sess.get_outputs()
        self._output = outputs[0].name
        # On a device, bind inputs so each is copied once per batch and the logits are read back
        # once; on the CPU provider plain run() already shares host memory.
        self._io_binding = prof.io_binding
        self.info = SessionInfo(model_file=str(model_file), provider=prof.name, threads=n_threads,
                                input_names=tuple(self._input_types))

    def run(self, batch: Batch) -> np.ndarray:
        """float32 logits, one per row."""
        arrays = feed(batch, self._input_types)
        try:
            if self._io_binding:
                binding = self._sess.io_binding()
                for name, arr in arrays.items():
                    binding.bind_cpu_input(name, arr)
                binding.bind_output(self._output, "cpu")
                self._sess.run_with_iobinding(binding)
                logits = binding.copy_outputs_to_cpu()[0]
            else:
                (logits,) = self._sess.run([self._output], arrays)
        except Exception as exc:
            raise InferenceError(f"inference failed: {str(exc)[:200]}") from exc
        return one_per_row(logits)


def open_runner(model_file: Path, profile: ProviderProfile, threads: int, lanes: int = 1,
                spin: bool = True) -> Session | OVSession:
    """The session for a profile's backend: ONNX Runtime's, one shared by the lanes (each run on
    `threads`), or OpenVINO's (one stream a lane, `threads` each)."""
    if profile.backend == "openvino":
        return OVSession(model_file, profile.precision, threads=threads, lanes=lanes)
    return Session(model_file, profile=profile, threads=threads, spin=spin)


def _preload_libraries() -> None:
    # onnxruntime-gpu >= 1.21 can load the CUDA/cuDNN libraries from the nvidia-* pip packages,
    # so CUDA works without torch in the process.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # best effort: the system libraries may still be found
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
