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

from crossrank.runtime.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}
VARIANTS = ("auto", *VARIANT_FILES)


def sha256(path: Path) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

    def choose_variant(self, requested: str, provider: str) -> str:
        """int8 on CPU, fp16 on CUDA, fp32 when asked or when the preferred one was not shipped."""
        if requested not in VARIANTS:
            raise ConfigError(f"Unknown variant {requested!r}; choose one of {', '.join(VARIANTS)}.")
        if requested != "auto":
            if not self.shipped(requested):
                reason = self.manifest.get("variants", {}).get(requested, {}).get("reason", "")
                raise ConfigError(
                    f"Variant {requested} is not available in {self.path}"
                    + (f" ({reason})" if reason else "")
                    + f". Available: {', '.join(v for v in VARIANT_FILES if self.shipped(v))}."
                )
            return requested
        preferred = "fp16" if provider == "cuda" else "int8"
        if self.shipped(preferred):
            return preferred
        log.warning("%s has no %s variant (%s); falling back to fp32", self.path, preferred,
                    self.manifest.get("variants", {}).get(preferred, {}).get("reason", "not exported"))
        return "fp32"

    def model_file(self, variant: str, check_hash: bool = True) -> Path:
        """The variant's file, after checking it against the manifest's hash."""
        name = VARIANT_FILES[variant]
        path = self.path / name
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing. Export the model again (`make export "
                                 "--force` or `python -m export ... --force`).")
        expected = self.manifest.get("files", {}).get(name, {}).get("sha256")
        if check_hash and expected and sha256(path) != expected:
            raise ModelLoadError(f"{path} does not match the hash in its manifest: it was changed "
                                 "or damaged after export. Export the model again with --force.")
        return path

    def tokenizer_file(self) -> Path:
        path = self.path / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing. Export the model again with --force.")
        expected = self.manifest.get("files", {}).get("tokenizer.json", {}).get("sha256")
        if expected and sha256(path) != expected:
            raise ModelLoadError(f"{path} does not match the hash in its manifest. Export the "
                                 "model again with --force.")
        return path


def load(path: Path | str) -> ModelDir:
    """Read and check a model directory written by `python -m export`."""
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(
            f"Model directory {p} does not exist. Export a model first: `make export` (hub), "
            "`make export MODEL=/path/to/checkpoint` (local) or `make export STANDIN=1` (offline "
            "stand-in)."
        )
    mpath = p / "manifest.json"
    if not mpath.is_file():
        raise ModelLoadError(f"{p} has no manifest.json, so it is not a finished crossrank export. "
                             "Export it with `python -m export` (make export).")
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
