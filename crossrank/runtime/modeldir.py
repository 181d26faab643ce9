"""An exported model directory: its manifest, the variant to serve, and integrity checks.

Everything is checked at start-up so that a damaged directory fails before the first request.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.runtime.core import cpu
from crossrank.runtime.core.errors import ConfigError, ModelLoadError
from crossrank.runtime.core.profiles import ProviderProfile

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L-12-v2"
STAND_IN_NAME = "stand-in-L-12"  # the offline stand-in's export directory
# bf16: the plain fp32 graph (no ONNX Runtime fusions) that OpenVINO computes in bfloat16
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx",
                 "bf16": "model_bf16.onnx"}
VARIANTS = ("auto", *VARIANT_FILES)
# What `crossrank export` builds unless told: bf16 needs OpenVINO installed, so it is asked for.
DEFAULT_VARIANTS = ("fp32", "int8", "fp16")
# The runtime each variant's file is written for (profiles.ProviderProfile.backend): bf16 is
# OpenVINO's, the others carry ONNX Runtime's fused operators.
VARIANT_BACKEND = {"bf16": "openvino"}
INT8_CHECK_FILE = "int8_check.json"  # check requests for judging int8 on the serving CPU


def backend_of(variant: str) -> str:
    """The runtime that serves a variant's file."""
    return VARIANT_BACKEND.get(variant, "onnxruntime")


def data_file(name: str) -> str:
    """Where a model file keeps its weights when they are over protobuf's 2 GB limit (ONNX
    external data: one file beside it, as ONNX Runtime's tools name it)."""
    return name + ".data"


def export_name(model: str, stand_in: bool = False) -> str:
    """The directory name `crossrank export` gives a model under the models root (the last part
    of a hub id or path), or the stand-in's."""
    return STAND_IN_NAME if stand_in else Path(model.rstrip("/")).name


def sha256(path: Path) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unchanged(path: Path, entry: Any) -> bool:
    """The file hashes to what its manifest entry records (True when it records no hash): the one
    check of a file against its manifest."""
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    return not expected or sha256(path) == expected


@dataclass(frozen=True)
class IsaCheck:
    """The int8 variant's instruction set against this CPU's."""

    made_for: str
    this_cpu: str
    warning: str | None


@dataclass(frozen=True)
class ModelDir:
    """A verified export: manifest fields the runtime needs."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def source(self) -> str:
        return str(self.manifest.get("source", {}).get("id", "unknown"))

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def activation(self) -> str:
        return str(self.manifest.get("activation", "identity"))

    @property
    def stand_in(self) -> bool:
        return bool(self.manifest.get("stand_in", False))

    @property
    def pad_token_id(self) -> int:
        return int(self.manifest.get("pad_token_id", 0))

    def shipped(self, variant: str) -> bool:
        """True when the export wrote and accepted this variant (a shipped file that has gone
        missing is an error at load, not a silent fallback)."""
        v = self.manifest.get("variants", {}).get(variant, {})
        return bool(v.get("shipped"))

    def choose_variant(self, requested: str, profile: ProviderProfile) -> str:
        """The profile's default (int8 on CPU, fp16 on CUDA, bf16 on OpenVINO) for auto, fp32 when
        the default was not shipped (OpenVINO has no fp32 to fall back to: an error); a named
        variant must have been shipped and be one the profile's runtime serves."""
        if requested not in VARIANTS:
            raise ConfigError(f"Unknown variant {requested!r}; choose one of {', '.join(VARIANTS)}.")
        wanted = profile.default_variant if requested == "auto" else requested
        if backend_of(wanted) != profile.backend:
            served = [v for v in VARIANT_FILES if backend_of(v) == profile.backend]
            raise ConfigError(
                f"Variant {wanted} runs on {backend_of(wanted)}, not on provider={profile.name} "
                f"({profile.backend}), which serves {', '.join(served)}"
                + (": use provider=openvino" if wanted == "bf16" else "") + ".")
        if backend_of(profile.default_variant) != "onnxruntime" and not self.shipped(wanted):
            reason = self.manifest.get("variants", {}).get(wanted, {}).get("reason", "not exported")
            raise ConfigError(
                f"{self.path} has no {wanted} variant ({reason}), the only one "
                f"provider={profile.name} serves; export it with `crossrank export SOURCE "
                f"--variants fp32,int8,{wanted}`, or use provider=cpu.")
        if requested != "auto":
            if not self.shipped(requested):
                reason = self.manifest.get("variants", {}).get(requested, {}).get("reason", "")
                raise ConfigError(
                    f"Variant {requested} is not available in {self.path}"
                    + (f" ({reason})" if reason else "")
                    + f". Available: {', '.join(v for v in VARIANT_FILES if self.shipped(v))}."
                )
            return requested
        preferred = profile.default_variant
        if self.shipped(preferred):
            return preferred
        log.warning("%s has no %s variant (%s); falling back to fp32", self.path, preferred,
                    self.manifest.get("variants", {}).get(preferred, {}).get("reason", "not exported"))
        return "fp32"

    def cascade_only(self) -> bool:
        """True when the export kept an int8 that failed its gate, for the precision cascade."""
        return bool(self.manifest.get("variants", {}).get("int8", {}).get("cascade_only"))

    def int8_error_bound(self) -> float | None:
        """The cascade's bound on |int8 - fp32| (logits) the export measured, or None."""
        err = self.manifest.get("variants", {}).get("int8", {}).get("verification", {}).get(
            "error", {})
        bound = err.get("bound") if isinstance(err, dict) else None
        return float(bound) if isinstance(bound, (int, float)) and bound > 0 else None

    def int8_self_check(self) -> Any:
        """The exporter's self-check record for int8 (verify.self_check_record), or None."""
        return self.manifest.get("variants", {}).get("int8", {}).get("self_check")

    def int8_check_requests(self) -> tuple[Any, str] | None:
        """The export's check requests for judging int8 on this CPU (int8_check.json, checked
        against the manifest's hash) and that hash; None for exports without them. A damaged
        file only loses the judged check: int8 then serves only where it reproduces."""
        entry = self.manifest.get("files", {}).get(INT8_CHECK_FILE, {})
        path = self.path / INT8_CHECK_FILE
        if not entry or not path.is_file():
            return None
        if not entry.get("sha256") or not unchanged(path, entry):
            log.warning("%s does not match the hash in its manifest: ignored", path)
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8")), str(entry["sha256"])
        except (ValueError, UnicodeDecodeError):
            log.warning("%s is not valid JSON: ignored", path)
            return None

    def file_sha256(self, name: str) -> str:
        """The manifest's hash of one of its files ("" when it lists none)."""
        return str(self.manifest.get("files", {}).get(name, {}).get("sha256", ""))

    def isa_check(self, variant: str, warn: bool = True) -> IsaCheck | None:
        """For int8: the instruction set it was made and verified for against this CPU's, with a
        warning when they differ (None for other variants or exports that do not say); warn=False
        when a self-check has shown this CPU reproduces the verified scores."""
        if variant != "int8":
            return None
        recipe = self.manifest.get("variants", {}).get("int8", {}).get("recipe", {})
        made_for = recipe.get("isa") if isinstance(recipe, dict) else None
        if not isinstance(made_for, str):
            return None
        here = cpu.detect_isa()
        warning = None
        if made_for != here and warn:
            source = self.manifest.get("source", {}).get("id", "MODEL")
            warning = (
                f"{self.path / VARIANT_FILES['int8']} was made and verified for {made_for} CPUs; "
                f"this CPU is {here}, where its scores were not verified and it may be slower. "
                f"Export it again on this machine: `crossrank export {source} --force` (or "
                f"--isa {here}), or serve --variant fp32.")
            log.warning("%s", warning)
        return IsaCheck(made_for=made_for, this_cpu=here, warning=warning)

    def model_file(self, variant: str) -> Path:
        """The variant's file, after checking it against the manifest's hash."""
        name = VARIANT_FILES[variant]
        path = self.path / name
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing. Export the model again with "
                                 "`crossrank export SOURCE --force`.")
        files = self.manifest.get("files", {})
        for part in (name, data_file(name)):
            if part not in files:  # a model without external data lists no data file
                continue
            p = self.path / part
            if not p.is_file():
                raise ModelLoadError(f"{p} is missing (the weights of {name}). Export the model "
                                     "again with `crossrank export SOURCE --force`, or copy the "
                                     "whole directory.")
            if not unchanged(p, files[part]):
                raise ModelLoadError(f"{p} does not match the hash in its manifest: it was "
                                     "changed or damaged after export. Export the model again "
                                     "with --force.")
        return path

    def tokenizer_file(self) -> Path:
        path = self.path / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing. Export the model again with --force.")
        if not unchanged(path, self.manifest.get("files", {}).get("tokenizer.json")):
            raise ModelLoadError(f"{path} does not match the hash in its manifest. Export the "
                                 "model again with --force.")
        return path


def load(path: Path | str) -> ModelDir:
    """Read and check a model directory written by `crossrank export`."""
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(
            f"Model directory {p} does not exist. Export a model first: `crossrank export` (the "
            "hub's ms-marco-MiniLM-L-12-v2), `crossrank export /path/to/checkpoint` (local) or "
            "`crossrank export --stand-in` (offline "
            "stand-in)."
        )
    mpath = p / "manifest.json"
    if not mpath.is_file():
        raise ModelLoadError(f"{p} has no manifest.json, so it is not a finished crossrank export. "
                             "Export it with `crossrank export`.")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{mpath} is not valid JSON; export the model again with --force.") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{mpath} is not a crossrank manifest; export again with --force.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{p} was exported with manifest format {version!r}; this crossrank reads format "
            f"{FORMAT_VERSION}. Export the model again with this version (--force)."
        )
    for key in ("max_length", "variants", "files"):
        if key not in manifest:
            raise ModelLoadError(f"{mpath} lacks {key!r}; export the model again with --force.")
    return ModelDir(path=p, manifest=manifest)
