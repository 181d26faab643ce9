"""Hugging Face checkpoint -> ONNX (fp32, unoptimized), with the checks that make errors clear."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.export import ExportError, HubUnreachable

log = logging.getLogger(__name__)

_HUB_FILES = [
    "config.json", "*.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
    "vocab.txt", "special_tokens_map.json", "sentencepiece.bpe.model", "spm.model",
]
IDENTITY = "torch.nn.modules.linear.Identity"
SIGMOID = "torch.nn.modules.activation.Sigmoid"


@dataclass(frozen=True)
class Source:
    """Where a checkpoint came from and where its files are on disk."""

    spec: str
    path: Path
    revision: str | None
    is_local: bool


def resolve(spec: str, revision: str | None = None) -> Source:
    """A local checkpoint directory, or a hub id fetched into the Hugging Face cache."""
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ExportError(f"{spec} is a file, not a checkpoint directory. Pass the directory "
                              "that holds config.json and the weights.")
        return Source(spec=str(local.resolve()), path=local.resolve(), revision=None, is_local=True)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ExportError(f"No such checkpoint directory: {spec}. Check the path, or pass a hub id "
                          "such as cross-encoder/ms-marco-MiniLM-L-12-v2.")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:
        raise ExportError("Exporting from the hub needs huggingface-hub: `make install`.") from exc
    try:
        path = Path(snapshot_download(spec, revision=revision, allow_patterns=_HUB_FILES))
    except RepositoryNotFoundError as exc:
        raise ExportError(
            f"The Hugging Face hub has no model called {spec!r} (or it is private). Check the id, "
            "log in with `huggingface-cli login` for a private model, or pass a local checkpoint "
            "directory instead."
        ) from exc
    except RevisionNotFoundError as exc:
        raise ExportError(f"Model {spec!r} has no revision {revision!r}. Pass an existing branch, "
                          "tag or commit with --revision.") from exc
    except GatedRepoError as exc:
        raise ExportError(f"Model {spec!r} is gated: accept its terms on the hub and log in with "
                          "`huggingface-cli login`, then export again.") from exc
    except (LocalEntryNotFoundError, OSError) as exc:
        raise HubUnreachable(
            f"Cannot download {spec!r}: the Hugging Face hub is unreachable and the model is not in "
            "the local cache. Either export from a local checkpoint directory "
            "(`crossrank export /path/to/checkpoint`), point HF_ENDPOINT at a hub mirror you can "
            "reach, or build the offline stand-in (`crossrank export --stand-in`; its scores are "
            "meaningless, for trials and benchmarks only)."
        ) from exc
    return Source(spec=spec, path=path, revision=path.name if revision is None else revision,
                  is_local=False)


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a checkpoint, checked to be a one-score sequence-classification model."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ExportError(f"{path} has no config.json, so it is not a Hugging Face checkpoint. "
                          "Pass the directory that holds config.json and the model weights.")
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{cfg_path} is not valid JSON ({exc}). The checkpoint is damaged: "
                          "copy or download it again.") from exc
    archs = cfg.get("architectures") or []
    if any(str(a).endswith("ForCausalLM") for a in archs):
        raise ExportError(
            f"{path} is a generative language model ({', '.join(map(str, archs))}): re-rankers "
            "built on one (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma) score a pair "
            "with the logits of a yes/no token, which crossrank does not serve. crossrank serves "
            "*ForSequenceClassification checkpoints with one score: export a sequence-"
            "classification conversion of the model where one exists (for Qwen3-Reranker: "
            "tomaarsen/Qwen3-Reranker-0.6B-seq-cls, -4B-, -8B-), and send queries and chunks in "
            "the prompt format its model card gives."
        )
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ExportError(
            f"{path} is not a cross-encoder: its architectures are {archs or 'unset'}, with no "
            "sequence-classification head. Re-rankers such as cross-encoder/ms-marco-MiniLM-L-12-v2 "
            "are *ForSequenceClassification models; an embedding model (bi-encoder) cannot score "
            "pairs."
        )
    num_labels = _num_labels(cfg)
    if num_labels != 1:
        raise ExportError(
            f"{path} has {num_labels} output labels; crossrank serves re-rankers with exactly one "
            "relevance score per pair (num_labels=1). Classifiers such as NLI models are not "
            "re-rankers."
        )
    return cfg


def _num_labels(cfg: dict[str, Any]) -> int:
    if "num_labels" in cfg:
        return int(cfg["num_labels"])
    id2label = cfg.get("id2label")
    return len(id2label) if isinstance(id2label, dict) else 2


def activation(cfg: dict[str, Any]) -> str:
    """'identity' or 'sigmoid', read the way sentence-transformers' CrossEncoder reads it."""
    st = cfg.get("sentence_transformers")
    path: str | None = None
    if isinstance(st, dict) and "activation_fn" in st:
        path = st["activation_fn"]
    elif cfg.get("sbert_ce_default_activation_function") is not None:
        path = cfg["sbert_ce_default_activation_function"]
    if path is None:
        return "sigmoid"  # CrossEncoder's default for one label
    if path == IDENTITY or path.endswith(".Identity"):
        return "identity"
    if path == SIGMOID or path.endswith(".Sigmoid"):
        return "sigmoid"
    raise ExportError(f"The checkpoint's score activation {path!r} is not supported (only Identity "
                      "and Sigmoid are); remove it from config.json to get the default.")


def load_model(path: Path) -> Any:
    """The PyTorch model with eager attention: the form ONNX Runtime fuses into Attention ops."""
    import torch
    from transformers import AutoModelForSequenceClassification

    weights = list(path.glob("*.safetensors")) + list(path.glob("pytorch_model*.bin"))
    if not weights:
        raise ExportError(f"{path} has no model weights (*.safetensors or pytorch_model.bin). "
                          "Copy the complete checkpoint directory.")
    try:
        # float32 explicitly: newer transformers load a checkpoint in its stored dtype (often fp16).
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), attn_implementation="eager", dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for unreadable weights
        raise ExportError(
            f"Could not load the weights in {path}: {type(exc).__name__}: {str(exc)[:300]}. The "
            "files are probably truncated or corrupt: copy or download the checkpoint again."
        ) from exc
    return model.eval()


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


@dataclass(frozen=True)
class TokenizerFacts:
    """What the exporter reads from a checkpoint's tokenizer: its pad id (what
    sentence-transformers pads with) and the longest input it declares (None if unset)."""

    pad_token_id: int | None
    model_max_length: int | None


def write_tokenizer(path: Path, out: Path) -> TokenizerFacts:
    """tokenizer.json (fast tokenizer, even from vocab.txt alone) with no baked-in truncation;
    returns the tokenizer's pad id and declared max length."""
    from transformers import AutoTokenizer

    spm = [p.name for p in path.glob("*.model")]
    if not (path / "tokenizer.json").is_file() and spm:
        missing = [m for m in ("sentencepiece", "google.protobuf") if not _importable(m)]
        if missing:
            raise ExportError(
                f"{path} has no tokenizer.json, only a SentencePiece model ({', '.join(spm)}); "
                f"converting it needs {' and '.join(m.split('.')[-1] for m in missing)}, which "
                "this installation lacks: `pip install 'crossrank[export]'` installs them.")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    except Exception as exc:
        raise ExportError(f"Could not load a tokenizer from {path}: {type(exc).__name__}: "
                          f"{str(exc)[:300]}. The checkpoint needs tokenizer.json or vocab.txt.") from exc
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{path} has no fast (Rust) tokenizer; crossrank needs tokenizer.json.")
    backend = tok.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(out / "tokenizer.json"))
    pad = getattr(tok, "pad_token_id", None)
    limit = getattr(tok, "model_max_length", None)
    # transformers writes a huge sentinel (1e30) when the checkpoint declares no limit
    return TokenizerFacts(int(pad) if isinstance(pad, int) else None,
                          int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None)


def model_max_length(cfg: dict[str, Any], tokenizer_limit: int | None) -> int:
    """The longest pair the model itself takes: its position table (less RoBERTa's reserved
    offset), and no more than its tokenizer declares."""
    offset = 2 if str(cfg.get("model_type", "")) in ("roberta", "xlm-roberta", "camembert") else 0
    limit = int(cfg.get("max_position_embeddings") or 512) - offset
    if tokenizer_limit is not None:
        limit = min(limit, tokenizer_limit)
    return limit


EXPORTERS = ("auto", "optimum", "torch")


def export_onnx(model: Any, out_file: Path, opset: int, exporter: str = "auto") -> list[str]:
    """Export to ONNX; returns the graph's input names.

    optimum's exporter is preferred; without optimum (e.g. a GPU box with only torch and
    transformers) torch.onnx's TorchScript exporter is used. Both see the eager-attention model,
    the form ONNX Runtime fuses into Attention ops.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"Unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}.")
    use_optimum = exporter == "optimum"
    if exporter == "auto":
        try:
            import optimum.exporters.onnx  # noqa: F401

            use_optimum = True
        except ImportError:
            log.info("optimum is not installed: exporting with torch.onnx")
    if use_optimum:
        _export_optimum(model, out_file, opset)
    else:
        _export_torch(model, out_file, opset)
    import onnx

    graph = onnx.load(str(out_file), load_external_data=False).graph
    return [i.name for i in graph.input]


def _export_optimum(model: Any, out_file: Path, opset: int) -> None:
    import tempfile

    try:
        from optimum.exporters.onnx import onnx_export_from_model
    except ImportError as exc:
        raise ExportError("--exporter optimum needs optimum-onnx: `make install`.") from exc
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        onnx_export_from_model(model, output=Path(tmp), task="text-classification", opset=opset,
                               do_validation=False)
        produced = Path(tmp) / "model.onnx"
        if any(p != produced for p in Path(tmp).iterdir()):
            # over 2 GB: optimum wrote the weights apart (model.onnx_data); one data file
            # beside out_file, under crossrank's name for it
            import onnx

            from crossrank.export import onnxfile

            onnxfile.save(onnx.load(str(produced)), out_file)
        else:
            produced.replace(out_file)


def _export_torch(model: Any, out_file: Path, opset: int) -> None:
    import torch

    names = ["input_ids", "attention_mask"]
    if int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")

    class Logits(torch.nn.Module):  # type: ignore[misc]  # torch is Any here (untyped import)
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    dummy = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in names)
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    with torch.no_grad():
        torch.onnx.export(Logits(model), dummy, str(out_file), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
