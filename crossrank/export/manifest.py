"""manifest.json: what was exported, from what, with which tools, and how it verified."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from crossrank.runtime.modeldir import FORMAT_VERSION, sha256

_LIBS = ("crossrank", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
         "onnxruntime-gpu", "sentence-transformers", "tokenizers")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shaped the export."""
    out: dict[str, str] = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def file_entries(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """sha256 and size of each named file that exists."""
    return {
        n: {"sha256": sha256(directory / n), "bytes": (directory / n).stat().st_size}
        for n in names
        if (directory / n).is_file()
    }


def write(directory: Path, fields: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Write manifest.json last, so its presence marks a complete, verified export."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "files": file_entries(directory, files),
        "versions": library_versions(),
        "platform": {"machine": platform.machine(), "python": platform.python_version()},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
