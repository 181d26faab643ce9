"""The int8 self-check at start-up: does this CPU compute the int8 model that was verified?

Dynamic int8 scores depend on the CPU's integer kernels: the same u8u8 file gives logits that
differ by up to 0.43 (logits of std 4) between a Zen 4 (AVX-512 VNNI) and a Zen 3 (AVX2), and a
ranking the exporter accepted on one can fail on the other. The exporter therefore keeps, for a
fixed set of pairs, the fp32 and int8 logits it measured; at load the runtime scores the same
pairs with the int8 model through its own engine and serves int8 only when it reproduces the
exporter's int8 logits within the tolerance, so what is served is what was verified. A CPU with
the same kernels reproduces them to ~1e-6.

Why not compare with fp32 instead: the error against fp32 on a few pairs does not tell a faithful
int8 from an unfaithful one (the u8u8 file above: mean |int8 - fp32| 0.16 on the Zen 4, where it
passes the ranking check, and 0.17 on the Zen 3, where it fails it).

Where the CPU's kernels differ (ARM against an x86 export, AVX2 against VNNI), reproducing is
impossible though int8 may be as faithful there as where it was made: ONNX Runtime's ARM kernels
differ from x86's by 0.12-0.25 logits while their error against fp32 is the same size. So when
the fast check fails (or cannot pass: an export made on the other architecture, where it is not
run), the runtime judges int8 on this CPU itself: the export keeps a few of its
real-prose check requests with their fp32 logits (fp32 is the same on every CPU to ~5e-6), this
CPU's int8 scores them, and the exporter's measures decide (runtime/core/fidelity.py), scale-free:
graded NDCG@10 >= 0.98 (the gate's bound) and the error's size, rms |int8 - fp32| x std at most
fidelity.MAX_RMS_ERROR, or 1.5x the exporting CPU's own on the same pairs where that is larger
(an int8 that passed there with more error is not refused here for matching it). The gate's two
count-based bounds are recorded, not enforced, because on 8 requests they cannot tell a faithful
int8 from an unfaithful one:
- quality kept against labels: one near-tie swap of a relevant passage at rank 2 moves it by
  ~2.4%, more than its 1% bound (measured: emulated cortex-a72, error as small as x86's, no
  clear miss, refused at 0.986 by that bound);
- clear top-10 misses: the judged pairs hold each request's 15 best, so near-ties crowd the
  boundary. Measured on the prose-head fixture's export: cortex-a72's int8 had less error there
  than the exporting Xeon's on the same 160 pairs (rms 0.074 against 0.083 x std) yet 2 clear
  misses against its 0; the Xeon's own errors, shuffled within each request, give 2 or more in
  77% of 2,000 draws. The count measures which near-ties a kernel happens to break.
Its error here also gives the precision cascade its bound on this CPU. The verdict is cached per
(int8 file, check, CPU signature), so a restart on the same machine costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.runtime.core import cpu, fidelity
from crossrank.runtime.core.scores import spearman

log = logging.getLogger(__name__)

RELATIVE_TOLERANCE = 0.01  # of the fp32 logits' standard deviation on the check pairs
ABSOLUTE_FLOOR = 1e-4


def tolerance(fp32_logits: Sequence[float] | np.ndarray) -> float:
    """The largest |int8 here - int8 at export| still taken as the same computation."""
    return max(ABSOLUTE_FLOOR, RELATIVE_TOLERANCE * float(np.std(np.asarray(fp32_logits))))


@dataclass(frozen=True)
class Int8Check:
    """The self-check's outcome, for /info, `crossrank info` and the start-up log."""

    # passed | failed | skipped | unavailable (an export without check data) | pending (running
    # beside fp32: int8_check_background)
    status: str
    max_abs_diff: float | None = None  # |int8 here - int8 at export|, worst pair
    tolerance: float | None = None
    pairs: int = 0
    seconds: float = 0.0
    measured_on: str | None = None  # the CPU class the export's int8 logits come from
    spearman_vs_fp32: float | None = None  # this CPU's int8 against the export's fp32
    # how it passed or failed: "reproduced" (the fast check alone) or "judged" (this CPU's int8
    # against the export's fp32 on its check requests, by the exporter's gate)
    how: str | None = None
    judgement: dict[str, Any] | None = None  # the gate's figures on this CPU (fidelity.judge)
    error_bound: float | None = None  # the cascade's |int8 - fp32| bound measured on this CPU
    cached: bool = False  # the verdict came from the cache of an earlier start on this CPU

    @property
    def ok(self) -> bool:
        """True unless the check ran and failed."""
        return self.status != "failed"


MIN_PAIRS = 8  # fewer pairs within a short max_length: too little to judge


def check(record: Any, predict: Callable[[list[tuple[str, str]]], np.ndarray],
          max_length: int | None = None) -> Int8Check:
    """Score the record's pairs with predict (the int8 scorer's) and compare. With a max_length
    below the model's, only the pairs that fit are used (truncated pairs score otherwise)."""
    if not isinstance(record, dict) or not record.get("pairs"):
        return Int8Check(status="unavailable")
    try:
        pairs = [(str(q), str(c)) for q, c in record["pairs"]]
        want = np.asarray(record["int8_logits"], dtype=np.float64)
        fp32 = np.asarray(record["fp32_logits"], dtype=np.float64)
        tol = float(record.get("tolerance", tolerance(fp32)))
        tokens = [int(n) for n in record.get("tokens", [0] * len(pairs))]
    except (KeyError, TypeError, ValueError):
        return Int8Check(status="unavailable")
    if not len(want) == len(fp32) == len(tokens) == len(pairs):
        return Int8Check(status="unavailable")
    if max_length is not None:
        keep = [i for i, n in enumerate(tokens) if n <= max_length]
        if len(keep) < MIN_PAIRS:
            return Int8Check(status="unavailable")
        pairs = [pairs[i] for i in keep]
        want, fp32 = want[keep], fp32[keep]
    t0 = time.perf_counter()
    got = np.asarray(predict(pairs), dtype=np.float64)
    seconds = time.perf_counter() - t0
    worst = float(np.abs(got - want).max())
    return Int8Check(status="passed" if worst <= tol else "failed", max_abs_diff=worst,
                     tolerance=tol, pairs=len(pairs), seconds=round(seconds, 3),
                     measured_on=record.get("measured_on"),
                     spearman_vs_fp32=round(spearman(got, fp32), 5), how="reproduced")


@dataclass(frozen=True)
class Requests:
    """The export's check requests for judging int8 on the serving CPU (export/verify.py
    writes them to int8_check.json): part of each request's candidates (fp32's top and a spread
    of the rest), with its labels, the exporting CPU's fp32 logits and each request's whole-list
    fp32 scale, so that the gate's bounds keep their meaning on the part."""

    pairs: list[tuple[str, str]]
    groups: list[int]
    labels: list[int]
    tokens: list[int]
    fp32: np.ndarray
    scales: dict[int, fidelity.Scale]
    export_int8: np.ndarray | None = None  # the exporting CPU's int8 on the same pairs

    @classmethod
    def parse(cls, data: Any) -> Requests | None:
        """From int8_check.json's content; None when it is not a usable record."""
        try:
            pairs = [(str(q), str(c)) for q, c in data["pairs"]]
            groups = [int(g) for g in data["groups"]]
            labels = [int(x) for x in data["labels"]]
            tokens = [int(n) for n in data["tokens"]]
            fp32 = np.asarray(data["fp32_logits"], dtype=np.float64)
            scales = {int(g): fidelity.Scale(float(sd), float(lo), float(hi))
                      for g, (sd, lo, hi) in data["scales"].items()}
            int8 = (np.asarray(data["int8_logits"], dtype=np.float64)
                    if "int8_logits" in data else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        n = len(pairs)
        if not (n and len(groups) == len(labels) == len(tokens) == len(fp32) == n
                and set(groups) <= set(scales) and (int8 is None or len(int8) == n)):
            return None
        return cls(pairs, groups, labels, tokens, fp32, scales, int8)

    def within(self, max_length: int | None) -> Requests | None:
        """The pairs that fit max_length untruncated (a pair truncated here scores otherwise
        than at export), in requests that keep more than fidelity.K of them; None when fewer
        than two such requests remain."""
        if max_length is None:
            return self
        fits = [n <= max_length for n in self.tokens]
        left = Counter(g for g, ok in zip(self.groups, fits, strict=True) if ok)
        keep = [i for i, g in enumerate(self.groups) if fits[i] and left[g] > fidelity.K]
        if len({self.groups[i] for i in keep}) < 2:
            return None
        return Requests([self.pairs[i] for i in keep], [self.groups[i] for i in keep],
                        [self.labels[i] for i in keep], [self.tokens[i] for i in keep],
                        self.fp32[keep], self.scales,
                        None if self.export_int8 is None else self.export_int8[keep])

    def rms_bound(self) -> float:
        """The largest rms error over spread taken as faithful here (module docstring)."""
        if self.export_int8 is None:
            return fidelity.MAX_RMS_ERROR
        there = fidelity.rms_error_over_spread(self.fp32, self.export_int8, self.groups,
                                               self.scales)
        return max(fidelity.MAX_RMS_ERROR, fidelity.ERROR_MARGIN * there)


def judge_here(requests: Requests, predict: Callable[[list[tuple[str, str]]], np.ndarray]
               ) -> tuple[dict[str, Any], dict[str, float], float, np.ndarray]:
    """This CPU's int8 on the requests against the export's fp32: the judgement (the gate's
    figures, the rms error and its bound, and `passed`), the error record (with the cascade's
    bound), the seconds it took and the int8 logits."""
    t0 = time.perf_counter()
    got = np.asarray(predict(requests.pairs), dtype=np.float64)
    seconds = time.perf_counter() - t0
    j = fidelity.judge(requests.fp32, got, requests.groups, requests.labels, requests.scales,
                       label_bound=False)
    rms = fidelity.rms_error_over_spread(requests.fp32, got, requests.groups, requests.scales)
    bound = requests.rms_bound()
    passed = j.worst_graded_ndcg >= fidelity.MIN_GRADED_NDCG and rms <= bound
    judgement = {**j.as_dict(), "rms_error_over_spread": round(rms, 5),
                 "rms_bound": round(bound, 5), "passed": bool(passed),
                 "bound": f"per request: graded NDCG@{fidelity.K} >= {fidelity.MIN_GRADED_NDCG}"
                 f"; rms error <= {bound:.3g} x std; clear misses and quality kept recorded"}
    return judgement, fidelity.error_record(np.abs(got - requests.fp32)), seconds, got


def other_architecture(record: Any, isa: str) -> bool:
    """True when the export's int8 was measured on the other architecture (x86-64 against
    arm64): ONNX Runtime's int8 and float kernels differ there, so this CPU cannot reproduce
    the export's int8 scores (ARM against x86: 0.1-0.25 logits, docs/edge-arm64.md)."""
    there = record.get("measured_on") if isinstance(record, dict) else None
    return isinstance(there, str) and there in cpu.ISAS and (there == "arm64") != (isa == "arm64")


def check_here(record: Any, requests: Requests | None,
               predict: Callable[[list[tuple[str, str]]], np.ndarray],
               max_length: int | None = None, isa: str | None = None) -> Int8Check:
    """The fast check (does this CPU reproduce the export's int8?); where it fails, the gate on
    this CPU's own int8 (judge_here) decides instead. Where the export comes from the other
    architecture (isa: this CPU's class, detected when None) the fast check cannot pass, so
    the gate decides at once: an ARM board scores 160 pairs instead of 192 (~15% of the
    tokens), and how far this CPU is from the export's int8 is measured on the judged pairs."""
    usable = requests.within(max_length) if requests is not None else None
    if usable is not None and other_architecture(record, isa or cpu.detect_isa()):
        j, err, seconds, got = judge_here(usable, predict)
        there = usable.export_int8
        try:
            tol: float | None = float(record.get("tolerance")
                                      or tolerance(np.asarray(record["fp32_logits"], float)))
        except (KeyError, TypeError, ValueError):
            tol = None
        return Int8Check(
            status="passed" if j["passed"] else "failed",
            max_abs_diff=None if there is None else float(np.abs(got - there).max()),
            tolerance=tol, pairs=len(usable.pairs),
            seconds=round(seconds, 3), measured_on=record.get("measured_on"),
            spearman_vs_fp32=round(spearman(got, usable.fp32), 5), how="judged",
            judgement=j, error_bound=err["bound"])
    fast = check(record, predict, max_length)
    if fast.status != "failed" or usable is None:
        return fast
    j, err, seconds, _ = judge_here(usable, predict)
    return replace(fast, status="passed" if j["passed"] else "failed", how="judged",
                   judgement=j, error_bound=err["bound"],
                   seconds=round(fast.seconds + seconds, 3))


# -- the verdict's cache --------------------------------------------------------------------------

CACHE_VERSION = 3  # bump when the check or the gate changes meaning


def cache_dir() -> Path | None:
    """Where verdicts are kept: $CROSSRANK_CACHE_DIR, else $XDG_CACHE_HOME/crossrank, else
    ~/.cache/crossrank; None when CROSSRANK_CACHE_DIR is "off"."""
    env = os.environ.get("CROSSRANK_CACHE_DIR")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env) / "int8-check"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crossrank" / "int8-check"


def cache_key(int8_sha256: str, record: Any, requests: Any, max_length: int | None) -> str:
    """The same int8 file, check data and length on a CPU of the same signature give the same
    verdict."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "int8": int8_sha256, "cpu": cpu.signature(),
                         "max_length": max_length, "record": record, "requests": requests},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def cached(key: str) -> Int8Check | None:
    """A verdict cached under key, or None (none, unreadable or of another form)."""
    d = cache_dir()
    if d is None:
        return None
    try:
        data = json.loads((d / f"{key}.json").read_text())
        names = {f.name for f in fields(Int8Check)}
        return replace(Int8Check(**{k: v for k, v in data.items() if k in names}), cached=True)
    except (OSError, ValueError, TypeError):
        return None


def store(key: str, result: Int8Check) -> None:
    """Keep a verdict for the next start (best effort: an unwritable cache only costs time)."""
    d = cache_dir()
    if d is None or result.status not in ("passed", "failed"):
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(result)))
        tmp.replace(d / f"{key}.json")
    except OSError as exc:
        log.debug("int8 check verdict not cached (%s)", exc)
