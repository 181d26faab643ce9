"""Parity of each ONNX variant against the PyTorch reference, before a manifest is written.

The reference is the seed's own scorer: sentence_transformers.CrossEncoder(path,
max_length=L).predict(pairs), L the export's max length (512 for the seed's model). Each variant
is scored through the runtime's own Scorer on the CPU provider (fp16 on CUDA when it exists),
with the pad id the manifest gives the runtime, so what is verified is what is served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.export.corpus import UNICODE, sample_pairs
from crossrank.runtime.core.scores import spearman

log = logging.getLogger(__name__)

FP32_MAX_ABS = 1e-3
INT8_MIN_SPEARMAN = 0.98
FP16_MIN_SPEARMAN = 0.98
# The start-up self-check: pairs whose fp32 and int8 logits the manifest keeps, so the runtime
# can tell whether this CPU computes the int8 model that was verified (runtime/selfcheck.py).
SELF_CHECK_PAIRS = 32
SELF_CHECK_SEED = 6000
# Where this CPU does not reproduce the export's int8 (another kernel family: ARM, AVX2 against a
# VNNI export), the runtime judges its own int8 with the gate on part of the check requests
# (runtime/selfcheck.py): the first JUDGE_REQUESTS of each set, each cut to fp32's top JUDGE_TOP
# (where the top 10 can change: a passage below fp32's 15th entering the top 10 needs an error
# far past anything measured) and JUDGE_SPREAD others spread over the rest (they keep the error
# measure honest over the whole list). 8 requests x 20 pairs: ~29k tokens, a seventh of the
# sets, so that a 2-core ARM board judges in well under a minute.
JUDGE_REQUESTS = 4
JUDGE_TOP = 15
JUDGE_SPREAD = 5


def fixed_pairs() -> list[tuple[str, str]]:
    """Short, long, over-512-token, unicode and empty chunks, and a long query; seeded, fixed."""
    pairs = sample_pairs(56, seed=1001)
    long_text = " ".join(p for _, p in sample_pairs(8, seed=1002, max_sentences=40))
    q = "Who was the first person to walk on the moon?"
    pairs += [
        (q, ""),
        (q, "moon"),
        (q, long_text),  # far over 512 tokens: truncated
        (q, " ".join(UNICODE)),
        ("東京 Москва café?", UNICODE[1]),
        (" ".join([q] * 40), "Neil Armstrong walked on the moon."),  # query alone over the limit
        (q, "Neil Armstrong was the first person to walk on the moon in July 1969."),
        ("", "An empty query still gets a score."),
    ]
    return pairs


def self_check_pairs() -> list[tuple[str, str]]:
    """Seeded pairs of typical length (the check costs start-up time: ~3k tokens)."""
    return sample_pairs(SELF_CHECK_PAIRS, seed=SELF_CHECK_SEED)


def judge_subset(ref: np.ndarray) -> np.ndarray:
    """Which of one request's candidates the serving self-check scores: fp32's top JUDGE_TOP and
    JUDGE_SPREAD evenly spaced below them, in candidate order."""
    from crossrank.runtime.core.fidelity import order

    ranked = order(ref)
    rest = ranked[JUDGE_TOP:]
    spread = rest[np.unique(np.linspace(0, len(rest) - 1, JUDGE_SPREAD).round().astype(int))] \
        if len(rest) else rest
    return np.sort(np.concatenate([ranked[:JUDGE_TOP], spread]))


def pair_tokens(tokenizer_file: Path, pairs: list[tuple[str, str]]) -> list[int]:
    """Each pair's length in tokens, untruncated (specials included)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(pairs)]


def self_check_record(fp32: np.ndarray, int8: np.ndarray, pairs: list[tuple[str, str]],
                      measured_on: str, tokens: list[int]) -> dict[str, Any]:
    """What the manifest keeps for the runtime's self-check: the pairs and their lengths, both
    variants' logits on the exporting CPU, and the tolerance (1% of the fp32 logits' spread: a
    CPU running the same integer kernels reproduces them to ~1e-6; another class of kernels
    differs by ~10%)."""
    from crossrank.runtime.selfcheck import tolerance

    return {"measured_on": measured_on, "pairs": [list(p) for p in pairs], "tokens": tokens,
            "fp32_logits": [float(x) for x in fp32], "int8_logits": [float(x) for x in int8],
            "tolerance": tolerance(fp32)}


def reference_logits(checkpoint: Path, pairs: list[tuple[str, str]],
                     max_length: int = 512) -> np.ndarray:
    """The seed's scores with its activation removed: raw logits from CrossEncoder.predict."""
    import torch
    from sentence_transformers import CrossEncoder

    try:
        ce = CrossEncoder(str(checkpoint), max_length=max_length, device="cpu",
                          activation_fn=torch.nn.Identity())
        inverse = False
    except TypeError:  # a sentence-transformers without the activation_fn argument
        ce = CrossEncoder(str(checkpoint), max_length=max_length, device="cpu")
        inverse = "Sigmoid" in type(getattr(ce, "activation_fn", None)).__name__
    out = np.asarray(ce.predict(pairs, batch_size=32, show_progress_bar=False), dtype=np.float64)
    if inverse:
        p = np.clip(out, 1e-12, 1 - 1e-12)
        out = np.log(p / (1 - p))
    return out.astype(np.float32)


@dataclass
class Staged:
    """An export being verified, scored as it will be served: its directory, the max length and
    pad id the manifest will give the runtime. One runtime per variant and provider, reused
    across the checks and loaded again only when its file changes (the int8 search rewrites it);
    `close` (or the with block) stops them."""

    dir: Path
    max_length: int
    pad_token_id: int
    _runtimes: dict[tuple[str, str], tuple[tuple[int, int, int], Any]] = field(
        default_factory=dict, repr=False)

    def logits(self, variant: str, pairs: list[tuple[str, str]],
               provider: str = "cpu") -> np.ndarray:
        """The variant's raw logits for the pairs, through the runtime's service."""
        from crossrank.runtime import loader
        from crossrank.runtime.core.options import ScoreRequest
        from crossrank.runtime.modeldir import VARIANT_FILES

        path = self.dir / VARIANT_FILES[variant]
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        held = self._runtimes.get((variant, provider))
        if held is None or held[0] != stamp:
            if held is not None:
                held[1].close()
            runtime = loader.load_files(path, self.dir / "tokenizer.json", self.max_length,
                                        variant=variant, provider=provider,
                                        pad_token_id=self.pad_token_id)
            held = self._runtimes[(variant, provider)] = (stamp, runtime)
        return held[1].service.score(ScoreRequest.pairs(pairs)).logits

    def close(self) -> None:
        for _, runtime in self._runtimes.values():
            runtime.close()
        self._runtimes.clear()

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Max and mean |difference|, Spearman, top-10 overlap of got against ref."""
    k = min(10, len(ref))
    top_ref = set(np.argsort(-ref, kind="stable")[:k].tolist())
    top_got = set(np.argsort(-got, kind="stable")[:k].tolist())
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {
        "pairs": int(len(ref)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "spearman": spearman(ref, got),
        "top10_overlap": len(top_ref & top_got),
    }
