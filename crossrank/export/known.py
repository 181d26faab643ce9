"""Popular re-rankers on the Hugging Face hub and what crossrank knows of each family: the table
`crossrank models` prints and docs/families.md explains.

What is verified is said per row, and honestly: every family runs offline in the test suite on a
tiny checkpoint with its own kind of tokenizer (tests/test_families.py: export with the defaults,
parity with sentence-transformers, every request shape, truncation, windows, the int8 gate). The
hub checkpoints themselves cannot be downloaded where crossrank is developed, so each keeps a
`network` test (tests/test_known_models.py) that exports it from the hub where the hub can be
reached; until one has run, the row says "not exported here".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """What crossrank does with a model_type, as measured on its offline fixture."""

    name: str
    model_types: tuple[str, ...]
    tokenizer: str
    fused: str  # what ONNX Runtime's optimizer fuses, and what stays unfused
    int8: str


@dataclass(frozen=True)
class KnownModel:
    hub_id: str
    family: str
    max_length: int  # the model's own limit, which the export takes (--max-length caps it)
    params: str
    verified: str = "not exported here (no hub access); family tested offline"


FAMILIES = (
    Family("bert", ("bert",), "WordPiece (nanotoken fast path)",
           "everything (embeddings, attention, GELU, skip LayerNorm)",
           "smoothed; the gate decides per checkpoint (the trained MiniLM fixture ships)"),
    Family("electra", ("electra",), "WordPiece (nanotoken fast path)",
           "everything", "smoothed; the gate decides per checkpoint"),
    Family("xlm-roberta", ("xlm-roberta", "roberta", "camembert"),
           "Unigram/BPE (tokenizers library)",
           "attention, GELU, skip LayerNorm; embeddings unfused (RoBERTa positions)",
           "smoothed, token table int8 per row; the gate decides per checkpoint"),
    Family("modernbert", ("modernbert",), "byte-level BPE (tokenizers library)",
           "GELU, LayerNorm; attention unfused (rotary, local windows)",
           "smoothed (1/s folded into its pre-norms), token table int8 per row; the gate "
           "decides per checkpoint"),
    Family("deberta-v2", ("deberta-v2",), "Unigram (tokenizers library; spm.model converts)",
           "GELU, LayerNorm; attention unfused (disentangled relative positions)",
           "smoothed (q, k, v and the shared position keys as one group), token table int8 "
           "per row; the gate decides per checkpoint"),
    Family("qwen3", ("qwen3",), "byte-level BPE (tokenizers library; a pair is A then B)",
           "RMSNorm, skip RMSNorm; attention unfused (grouped-query, rotary, causal)",
           "smoothed (q, k, v one group, SwiGLU's gate and up another, 1/s folded into the "
           "norms), token table int8 per row, score head fp32; the gate decides per checkpoint"),
)

MODELS = (
    KnownModel("cross-encoder/ms-marco-MiniLM-L-12-v2", "bert", 512, "33M"),
    KnownModel("cross-encoder/ms-marco-MiniLM-L-6-v2", "bert", 512, "23M"),
    KnownModel("cross-encoder/ms-marco-TinyBERT-L-2-v2", "bert", 512, "4M"),
    KnownModel("cross-encoder/ms-marco-electra-base", "electra", 512, "109M"),
    KnownModel("BAAI/bge-reranker-base", "xlm-roberta", 512, "278M"),
    KnownModel("BAAI/bge-reranker-large", "xlm-roberta", 512, "560M"),
    KnownModel("BAAI/bge-reranker-v2-m3", "xlm-roberta", 8192, "568M",
               "not exported here (no hub access); its fp32 is over 2 GB: the external-data "
               "path is tested offline on a small model forced to use it"),
    KnownModel("Alibaba-NLP/gte-reranker-modernbert-base", "modernbert", 8192, "150M"),
    KnownModel("mixedbread-ai/mxbai-rerank-xsmall-v1", "deberta-v2", 512, "71M"),
    KnownModel("mixedbread-ai/mxbai-rerank-base-v1", "deberta-v2", 512, "184M"),
    KnownModel("mixedbread-ai/mxbai-rerank-large-v1", "deberta-v2", 512, "435M"),
    KnownModel("tomaarsen/Qwen3-Reranker-0.6B-seq-cls", "qwen3", 40960, "0.6B",
               "not exported here (no hub access); family tested offline; queries and chunks "
               "go in the prompt format of its model card"),
)


def family_of(model_type: str) -> Family | None:
    """The family a config.json's model_type belongs to, or None for one never tested."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def table(markdown: bool = False) -> str:
    """The known models, one row each, as plain columns or a Markdown table."""
    head = ("hub id", "family", "max length", "params", "verified")
    rows = [(m.hub_id, m.family, str(m.max_length), m.params, m.verified)
            for m in MODELS]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True))
                     + "  " + r[-1] for r in [head, *rows])
