"""The library's front end: synchronous calls on the same engine the server uses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from crossrank.runtime import cpu, modeldir, selfcheck
from crossrank.runtime.cascade import CascadeStats
from crossrank.runtime.engine import Engine, Runner
from crossrank.runtime.errors import ConfigError
from crossrank.runtime.modeldir import VARIANT_FILES
from crossrank.runtime.options import DEFAULT_WINDOWS, WindowLimits
from crossrank.runtime.profiles import BatchPolicy, ProviderProfile
from crossrank.runtime.scores import ACTIVATIONS, activate, rank
from crossrank.runtime.service import Refiner, Scored, ScoreRequest, Service
from crossrank.runtime.session import Session, resolve_provider, usable_cores
from crossrank.runtime.tokenization import PairTokenizer

log = logging.getLogger(__name__)


def _check_note(check: selfcheck.Int8Check | None) -> str:
    if check is None:
        return ""
    when = " (cached verdict)" if check.cached else f" in {check.seconds:.2f}s"
    if check.status == "passed" and check.how == "judged":
        j = check.judgement or {}
        return (f"; int8 self-check passed on this CPU's own int8: it does not reproduce the "
                f"export's int8 scores (max |diff| {check.max_abs_diff:.2g}, kernels differ) "
                f"but passes the export's gate on its {j.get('requests')} check requests "
                f"(clear misses {j.get('clear_misses')}, worst graded NDCG@10 "
                f"{j.get('worst_graded_ndcg', 0):.4f}){when}")
    if check.status == "passed":
        return (f"; int8 self-check passed: {check.pairs} pairs reproduce the export's int8 "
                f"scores to {check.max_abs_diff:.2g}{when}")
    if check.status == "failed":
        return "; int8 self-check FAILED: serving fp32"
    return f"; int8 self-check {check.status}"


def _failure(check: selfcheck.Int8Check, isa: str) -> str:
    """Why int8 does not serve on this CPU, and what to do."""
    if check.how == "judged":
        j = check.judgement or {}
        return (f"int8 self-check failed on this {isa} CPU: its int8 fails the export's gate "
                f"on the check requests (clear top-10 misses {j.get('clear_misses')}, worst "
                f"graded NDCG@10 {j.get('worst_graded_ndcg', 0):.4f}, rms error "
                f"{j.get('rms_error_over_spread')} x std; bounds: {j.get('bound')})")
    return (f"int8 self-check failed on this {isa} CPU: {VARIANT_FILES['int8']} reproduces the "
            f"scores the exporter verified (measured on {check.measured_on}) only to "
            f"{check.max_abs_diff or 0.0:.3g}, over the tolerance {check.tolerance or 0.0:.3g}, "
            f"and the export keeps no check requests to judge it here (export it again with "
            f"this crossrank, or skip the check with --int8-check 0)")


@dataclass(frozen=True)
class ScorerInfo:
    """What a Scorer serves, for /info and logs."""

    model_dir: str
    name: str
    source: str
    stand_in: bool
    variant: str
    provider: str
    threads: int
    max_length: int
    activation: str
    tokenizer: str = "tokenizers"  # what tokenizes texts: nanotoken or the tokenizers library
    int8_isa: str | None = None  # the instruction set the int8 was made and verified for
    cpu_isa: str | None = None  # this CPU's
    isa_warning: str | None = None  # set when the two differ and no self-check passed
    int8_check: dict[str, Any] | None = None  # the start-up self-check (selfcheck.Int8Check)
    # the precision cascade: k of the exact top-k a request gets when it names none, and the
    # int8 error bound it re-scores within (None: no cascade)
    cascade_k: int | None = None
    cascade_bound: float | None = None


class Scorer:
    """Scores (query, chunk) pairs with an exported cross-encoder. Thread-safe: concurrent calls
    are batched together by the engine, as the server's requests are."""

    def __init__(self, tokenizer: PairTokenizer, engine: Engine, *, activation: str,
                 info: ScorerInfo | None = None, profile: ProviderProfile | None = None,
                 windows: WindowLimits = DEFAULT_WINDOWS) -> None:
        if activation not in ("identity", "sigmoid"):
            raise ConfigError(f"activation must be identity or sigmoid, not {activation!r}")
        self.tokenizer = tokenizer
        self.engine = engine
        self.activation = activation
        self.info = info
        self.profile = profile
        self.windows = windows
        self.service = Service(tokenizer, engine, windows)
        self.refine_scorer: Scorer | None = None  # the cascade's fp32 stage

    @classmethod
    def from_dir(cls, path: Path | str, *, variant: str = "auto", provider: str = "auto",
                 threads: int | None = None, token_budget: int | None = None,
                 max_rows: int | None = None, activation: str = "model", spin: bool = True,
                 pipeline: bool | None = None, windows: WindowLimits = DEFAULT_WINDOWS,
                 max_length: int | None = None, tokenizer: str = "auto",
                 int8_check: bool = True, cascade: int = 0) -> Scorer:
        """Load an exported model directory, checking its manifest and files first. The batch
        policy is the provider profile's for the variant; token_budget, max_rows and pipeline
        (None: the profile's choice) override it. max_length truncates pairs shorter than the
        model's own limit. tokenizer: auto (nanotoken when installed and in agreement with the
        tokenizers library), nanotoken, or tokenizers. int8_check: before serving int8 on the
        CPU, score the export's check pairs and serve fp32 unless this CPU reproduces the int8
        scores the exporter verified (runtime/selfcheck.py). cascade: where int8 serves on the
        CPU, also load fp32 and give every request an exact top `cascade` (its own top_n/top_k
        when it names one): the pairs int8 could misplace there are re-scored in fp32
        (runtime/cascade.py); 0: off."""
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if cascade < 0:
            raise ConfigError("cascade must be 0 (off) or the k of the exact top-k")
        md = modeldir.load(path)
        if max_length is not None and not 0 < max_length <= md.max_length:
            raise ConfigError(f"max_length must be between 1 and the model's {md.max_length}")
        length = max_length or md.max_length
        prof = resolve_provider(provider)
        chosen = md.choose_variant(variant, prof)
        overrides: dict[str, Any] = {}
        if token_budget:
            overrides["token_budget"] = token_budget
        if max_rows:
            overrides["max_rows"] = max_rows
        if pipeline is not None:
            overrides["pipeline"] = pipeline
        tok = PairTokenizer(md.tokenizer_file(), length,
                            threads=prof.tokenizer_threads or usable_cores(), backend=tokenizer)
        act = md.activation if activation == "model" else activation
        if md.stand_in:
            log.warning("%s is a STAND-IN model with random weights: its scores are meaningless "
                        "(offline trials and benchmarks only)", md.path)

        def build(var: str) -> Scorer:
            policy = replace(prof.policy_for(var), **overrides)
            if tok.backend == "nanotoken" and pipeline is None and policy.slices > 1:
                # Tokenizing in runs hides tokenizing behind the device; with nanotoken there is
                # little left to hide and each run costs a hand-off (simulated device at the
                # H200's ratio: 100 chunks 36.2 ms in one part vs 40.0 ms in runs; docs/performance.md "GPU").
                policy = replace(policy, slices=1)
            sess = Session(md.model_file(var), profile=prof, threads=threads, spin=spin)
            info = ScorerInfo(model_dir=str(md.path), name=md.name, source=md.source,
                              stand_in=md.stand_in, variant=var, provider=prof.name,
                              threads=sess.info.threads, max_length=length, activation=act,
                              tokenizer=tok.backend)
            engine = Engine(sess, policy, max_length=length, pad_token_id=md.pad_token_id)
            return cls(tok, engine, activation=act, info=info, profile=prof, windows=windows)

        scorer = build(chosen)
        check: selfcheck.Int8Check | None = None
        isa = None
        if chosen == "int8" and prof.name == "cpu":
            check = (scorer.self_check(md, max_length=length if length < md.max_length else None)
                     if int8_check else selfcheck.Int8Check(status="skipped"))
            if not check.ok:
                log.warning("%s; serving fp32 instead%s.", _failure(check, cpu.detect_isa()),
                            " (int8 only behind the cascade)" if cascade else "")
                scorer.close()
                scorer = build("fp32")
            # The instruction-set warning is for an int8 served with no passed check behind it.
            isa = md.isa_check(chosen, warn=check.ok and check.status != "passed")
        assert scorer.info is not None
        served_int8 = scorer.info.variant == "int8"
        if cascade and prof.name == "cpu" and variant in ("auto", "int8"):
            scorer = cls._with_cascade(scorer, md, cascade, build, check)
        assert scorer.info is not None
        scorer.info = replace(scorer.info, int8_isa=isa.made_for if isa else None,
                              cpu_isa=isa.this_cpu if isa else None,
                              isa_warning=isa.warning if isa and served_int8 else None,
                              int8_check=asdict(check) if check else None)
        log.info("serving %s (%s, %s, %d threads, %s)%s", md.name, scorer.info.variant,
                 prof.name, scorer.info.threads, tok.backend, _check_note(check))
        return scorer

    @staticmethod
    def _with_cascade(scorer: Scorer, md: modeldir.ModelDir, k: int,
                      build: Callable[[str], Scorer],
                      check: selfcheck.Int8Check | None) -> Scorer:
        """int8 in front of fp32 (runtime/cascade.py): the served int8, or one the gate refused
        (at export, or on this CPU) and kept for this; unchanged where there is no int8 error
        bound. Where the self-check measured int8's error on this CPU, the bound is the larger
        of that and the export's."""
        assert scorer.info is not None
        bound = md.int8_error_bound()
        here = check.error_bound if check is not None else None
        if bound is not None and here is not None:
            bound = max(bound, here)
        refused_here = check is not None and check.status == "failed" and here is not None
        if scorer.info.variant != "int8" and not (md.cascade_only() or refused_here):
            return scorer
        if bound is None:
            log.warning("no int8 error bound in %s (exported before the cascade existed): no "
                        "cascade; export again with --force for exact top-k", md.path)
            return scorer
        if scorer.info.variant == "int8":
            first, exact = scorer, build("fp32")
        else:  # the gate refused int8: it serves only behind the cascade
            first, exact = build("int8"), scorer
        assert first.info is not None
        first.service.refiner = Refiner(exact.service, bound, k, CascadeStats())
        first.refine_scorer = exact
        first.info = replace(scorer.info, variant="int8", cascade_k=k, cascade_bound=bound)
        log.info("precision cascade: int8, then fp32 for every pair within %.3g logits x 2 of "
                 "the k-th best (each request's top %d, or its own top_n/top_k, is fp32's)",
                 bound, k)
        return first

    @classmethod
    def from_files(cls, model_file: Path, tokenizer_file: Path, max_length: int, *,
                   variant: str = "fp32", provider: str = "cpu", activation: str = "identity",
                   policy: BatchPolicy | None = None, pad_token_id: int = 0,
                   threads: int | None = None) -> Scorer:
        """A scorer on one model file and tokenizer, without a manifest, with the policy the
        profile gives the variant (the exporter verifies its staging files with this: what is
        verified is what is served)."""
        prof = resolve_provider(provider)
        tok = PairTokenizer(tokenizer_file, max_length,
                            threads=prof.tokenizer_threads or usable_cores())
        sess = Session(model_file, profile=prof, threads=threads)
        engine = Engine(sess, policy or prof.policy_for(variant), max_length=max_length,
                        pad_token_id=pad_token_id)
        return cls(tok, engine, activation=activation, profile=prof)

    def derive(self, *, policy: BatchPolicy | None = None, session: Runner | None = None,
               windows: WindowLimits | None = None) -> Scorer:
        """A new scorer on the same model and tokenizer with another batch policy, session
        (a simulated device, say) or window limits, and an engine of its own; this one is
        unchanged."""
        engine = Engine(session or self.engine.session, policy or self.policy,
                        max_length=self.engine.max_length, pad_token_id=self.engine.pad_token_id)
        return Scorer(self.tokenizer, engine, activation=self.activation, info=self.info,
                      profile=self.profile, windows=windows or self.windows)

    @property
    def policy(self) -> BatchPolicy:
        return self.engine.policy

    def self_check(self, md: modeldir.ModelDir,
                   max_length: int | None = None) -> selfcheck.Int8Check:
        """The int8 self-check on this scorer (runtime/selfcheck.py): does it reproduce the
        export's int8 scores, or else pass the export's gate on this CPU? Cached per int8 file,
        check data and CPU signature."""
        record = md.int8_self_check()
        found = md.int8_check_requests()
        requests = selfcheck.Requests.parse(found[0]) if found else None
        key = selfcheck.cache_key(md.file_sha256(VARIANT_FILES["int8"]), record,
                                  found[1] if found else None, max_length)
        hit = selfcheck.cached(key)
        if hit is not None:
            return hit
        result = selfcheck.check_here(
            record, requests, lambda pairs: self.predict(pairs, activation="identity"),
            max_length=max_length)
        selfcheck.store(key, result)
        return result

    # -- the calls (each one through the service) -------------------------------------------------

    def score_request(self, request: ScoreRequest) -> Scored:
        """Score one request (the server runs the same through the same service, asynchronously)."""
        return self.service.score(request)

    def logits(self, query: str, chunks: Sequence[str]) -> np.ndarray:
        """Raw float32 logits, one per chunk, in the caller's order."""
        return self.score_request(ScoreRequest(query, chunks)).logits

    def predict(self, pairs: Sequence[tuple[str, str]],
                activation: str | None = None) -> np.ndarray:
        """Scores for arbitrary (query, text) pairs in order, like CrossEncoder.predict."""
        return self.apply_activation(self.score_request(ScoreRequest.pairs(pairs)).logits,
                                     activation)

    def score(self, query: str, chunks: Sequence[str],
              activation: str | None = None) -> list[tuple[int, float]]:
        """[(index, score)] sorted by score descending, ties by index; the seed's contract."""
        if len(chunks) == 0:
            return []
        return rank(self.apply_activation(self.logits(query, chunks), activation))

    def apply_activation(self, logits: np.ndarray, activation: str | None = None) -> np.ndarray:
        """Scores as the caller asked: the model's activation by default."""
        return activate(logits, activation or "model", self.activation)

    # -- state ------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for /info: the model, and the profile and policy in use."""
        d: dict[str, Any] = asdict(self.info) if self.info else {}
        d["batch_policy"] = asdict(self.policy)
        d["profile"] = self.profile.describe() if self.profile else None
        d["windows"] = asdict(self.windows)
        if self.service.refiner is not None:
            d["cascade"] = self.service.refiner.stats.as_dict()
        return d

    def close(self) -> None:
        """Stop the engine's thread (and the cascade's); later calls raise Unavailable."""
        self.engine.stop(timeout=5.0)
        if self.refine_scorer is not None:
            self.refine_scorer.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
