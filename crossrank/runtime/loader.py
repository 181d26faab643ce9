"""The one loader: a RuntimeConfig in, a running Runtime out.

Only here is a model directory read for serving, the provider profile resolved, the int8
self-check run (with its fp32 fallback), the precision cascade wired and a `Service` built. Every
front end takes the `Runtime` this returns: the library's `Scorer` and `CrossEncoder`, the HTTP
app (`crossrank serve`), Ray Serve replicas, `crossrank score/info` and the exporter's
verification (`load_files`: one model file, no manifest).

Tests and benchmarks reach the device through one seam, `runner`: a function given the opener
of the real ONNX Runtime session that returns what the engine runs batches on (the real session
wrapped, a simulated device, a fake).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crossrank.runtime import modeldir, selfcheck
from crossrank.runtime.config import RuntimeConfig
from crossrank.runtime.core import cpu
from crossrank.runtime.core.cascade import CascadeStats
from crossrank.runtime.core.errors import ConfigError
from crossrank.runtime.core.options import ScoreRequest
from crossrank.runtime.core.profiles import BatchPolicy, ProviderProfile
from crossrank.runtime.execution.engine import Engine, Runner
from crossrank.runtime.execution.session import open_runner, resolve_provider, usable_cores
from crossrank.runtime.modeldir import VARIANT_FILES
from crossrank.runtime.service import Refiner, Service
from crossrank.runtime.text.pairs import PairTokenizer

log = logging.getLogger(__name__)

# A runtime that adopts another (a background int8 check passed) keeps the old engine this long:
# requests that took its service just before the switch finish on it, then it stops.
RETIRE_AFTER_S = 30.0

# The seams: what the engine runs on, given the opener of the real session; a batch policy change.
RunnerSeam = Callable[[Callable[[], Runner]], Runner]
PolicySeam = Callable[[BatchPolicy], BatchPolicy]


@dataclass(frozen=True)
class RuntimeInfo:
    """What a runtime serves, for /info and logs."""

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
    # what the backend computes in, where it decides (OpenVINO: bf16 with bf16 instructions,
    # f32 without); None for ONNX Runtime, whose variant says it
    computes_in: str | None = None


@dataclass
class Runtime:
    """One loaded model: its tokenizer, engine (thread, queue, session), the one service every
    request goes through, the activation its scores get, the provider profile and what it
    serves; with a precision cascade, `exact` is the fp32 runtime behind it."""

    config: RuntimeConfig
    tokenizer: PairTokenizer
    engine: Engine
    service: Service
    activation: str  # identity or sigmoid: the model's (or the config's)
    profile: ProviderProfile
    info: RuntimeInfo
    exact: Runtime | None = None
    seams: tuple[RunnerSeam | None, PolicySeam | None] = (None, None)  # as loaded (tests)
    # the int8 self-check running beside fp32 (int8_check_background), until it is done
    background: threading.Thread | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _closed: bool = field(default=False, repr=False, compare=False)
    _retired: list[Engine] = field(default_factory=list, repr=False, compare=False)

    @property
    def policy(self) -> BatchPolicy:
        return self.engine.policy

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for /info: the model, and the profile and policy in use."""
        d: dict[str, Any] = asdict(self.info)
        d["batch_policy"] = asdict(self.policy)
        d["profile"] = self.profile.describe()
        d["windows"] = asdict(self.config.windows)
        if self.service.refiner is not None:
            d["cascade"] = self.service.refiner.stats.as_dict()
        return d

    def close(self) -> None:
        """Stop the engine's thread (and the cascade's); later calls raise Unavailable."""
        with self._lock:
            self._closed = True
            retired, self._retired = self._retired, []
        self.engine.stop(timeout=5.0)
        for engine in retired:
            engine.stop(timeout=5.0)
        if self.exact is not None:
            self.exact.close()

    def adopt(self, other: Runtime, retire_after_s: float = RETIRE_AFTER_S) -> bool:
        """Serve `other`'s model from now on, in place: front ends holding this runtime (the
        HTTP app, a Scorer) take it at their next request, and the engine's hooks (the server's
        metrics) move with it. The old engine finishes what it was given and stops after
        retire_after_s. False, with `other` closed, when this runtime is closed already."""
        with self._lock:
            if self._closed:
                adopted = False
            else:
                old = self.engine
                for hooks in old.hooks:
                    other.engine.add_hooks(hooks)
                    old.remove_hooks(hooks)
                self.tokenizer, self.engine, self.service = (other.tokenizer, other.engine,
                                                             other.service)
                self.activation, self.profile, self.info = (other.activation, other.profile,
                                                            other.info)
                self._retired.append(old)
                adopted = True
        if not adopted:
            other.close()
            return False
        timer = threading.Timer(retire_after_s, self._retire, (old,))
        timer.daemon = True
        timer.start()
        return True

    def _retire(self, engine: Engine) -> None:
        with self._lock:
            if engine not in self._retired:
                return  # closed meanwhile: close() stopped it
            self._retired.remove(engine)
        engine.stop(timeout=5.0)


def load(config: RuntimeConfig, *, runner: RunnerSeam | None = None,
         policy: PolicySeam | None = None) -> Runtime:
    """The configured model directory loaded, its manifest and files checked first. The batch
    policy is the provider profile's for the variant and tokenizer; token_budget, max_rows and
    pipeline override it. int8 on a profile that asks for it (the CPU) serves only after the
    self-check passes on this CPU, else fp32; with cascade > 0, fp32 also loads and re-scores
    each request's top k (runtime/core/cascade.py)."""
    c = config.checked()
    if not c.model_dir:
        raise ConfigError("no model directory to load (model_dir is empty)")
    md = modeldir.load(c.model_dir)
    if c.max_length is not None and not c.max_length <= md.max_length:
        raise ConfigError(f"max_length must be between 1 and the model's {md.max_length}")
    length = c.max_length or md.max_length
    prof = resolve_provider(c.provider)
    chosen = md.choose_variant(c.variant, prof)
    tok = _tokenizer(md.tokenizer_file(), length, c, prof)
    act = md.activation if c.activation == "model" else c.activation
    if md.stand_in:
        log.warning("%s is a STAND-IN model with random weights: its scores are meaningless "
                    "(offline trials and benchmarks only)", md.path)

    def build(var: str, bounded: bool = True) -> Runtime:
        base = prof.policy_for(var, tok.backend if c.pipeline is None else "tokenizers")
        pol = _overridden(base, c)
        info = RuntimeInfo(model_dir=str(md.path), name=md.name, source=md.source,
                           stand_in=md.stand_in, variant=var, provider=prof.name,
                           threads=c.threads or usable_cores(), max_length=length,
                           activation=act, tokenizer=tok.backend)
        return _assemble(c, tok, md.model_file(var), pol, prof, info, md.pad_token_id,
                         runner=runner, policy=policy, bounded=bounded)

    max_check = length if length < md.max_length else None
    known: selfcheck.Int8Check | None = None  # a cached verdict, looked up for the option below
    if chosen == "int8" and prof.int8_self_check and c.int8_check and c.int8_check_background:
        known = self_check(None, md, max_check)
        if known is None and not c.cascade:
            return _checked_later(build, md, max_check)
        if known is None:
            log.info("int8_check_background does not apply with the cascade: checking first")
    rt = build(chosen)
    check: selfcheck.Int8Check | None = None
    refused: Runtime | None = None  # an int8 this CPU's self-check refused: the cascade may use it
    isa = None
    if chosen == "int8" and prof.int8_self_check:
        check = (known or self_check(rt, md, max_check)
                 or selfcheck.Int8Check(status="unavailable")
                 if c.int8_check else selfcheck.Int8Check(status="skipped"))
        if not check.ok:
            log.warning("%s; serving fp32 instead%s.", _failure(check, cpu.detect_isa()),
                        " (int8 only behind the cascade)" if c.cascade else "")
            refused, rt = rt, build("fp32")
        # The instruction-set warning is for an int8 served with no passed check behind it.
        isa = md.isa_check(chosen, warn=check.ok and check.status != "passed")
    served_int8 = rt.info.variant == "int8"
    k = c.cascade or _fallback_k(c, prof, md, refused)
    if k and prof.cascade and c.variant in ("auto", "int8"):
        rt = _with_cascade(rt, md, k, build, check, refused)
    if refused is not None and rt is not refused:
        refused.close()
    rt.info = replace(_verdict(rt.info, isa, check, served_int8),
                      computes_in=getattr(rt.engine.session, "precision", None))
    log.info("serving %s (%s, %s, %d threads, %s)%s", md.name, rt.info.variant, prof.name,
             rt.info.threads, tok.backend, _check_note(check))
    return rt


def load_files(model_file: Path, tokenizer_file: Path, max_length: int, *,
               variant: str = "fp32", provider: str = "cpu", activation: str = "identity",
               pad_token_id: int = 0, threads: int | None = None) -> Runtime:
    """A runtime on one model file and tokenizer, without a manifest, with the policy the
    profile gives the variant: the exporter verifies its staging files with this, so what is
    verified is what is served."""
    prof = resolve_provider(provider)
    c = RuntimeConfig(model_dir=str(model_file.parent), variant=variant, provider=prof.name,
                      threads=threads, max_length=max_length,
                      activation=activation).checked()
    tok = _tokenizer(tokenizer_file, max_length, c, prof)
    info = RuntimeInfo(model_dir=c.model_dir, name=model_file.name, source=str(model_file),
                       stand_in=False, variant=variant, provider=prof.name,
                       threads=threads or usable_cores(), max_length=max_length,
                       activation=activation, tokenizer=tok.backend)
    return _assemble(c, tok, model_file, prof.policy_for(variant), prof, info, pad_token_id)


def reload(rt: Runtime, *, runner: RunnerSeam | None = None, policy: PolicySeam | None = None,
           **changes: Any) -> Runtime:
    """The runtime's model loaded again with some configuration changed and (tests, benchmarks)
    a runner or policy seam. The seams it was loaded with still apply, beneath the new ones: a
    new runner's opener gives what the old runner gave, a new policy seam gets the old one's
    policy. `rt` is unchanged."""
    old_runner, old_policy = rt.seams
    if runner is not None and old_runner is not None:
        outer, inner = runner, old_runner
        runner = lambda open_session: outer(lambda: inner(open_session))  # noqa: E731
    if policy is not None and old_policy is not None:
        last, first = policy, old_policy
        policy = lambda p: last(first(p))  # noqa: E731
    return load(replace(rt.config, **changes), runner=runner or old_runner,
                policy=policy or old_policy)


def _tokenizer(file: Path, length: int, c: RuntimeConfig, prof: ProviderProfile) -> PairTokenizer:
    """The pair tokenizer for a runtime: the configured back end, its threads or the profile's
    (0: every usable core)."""
    return PairTokenizer(file, length, backend=c.tokenizer,
                         threads=c.tokenizer_threads or prof.tokenizer_threads or usable_cores())


def _overridden(policy: BatchPolicy, c: RuntimeConfig) -> BatchPolicy:
    """The profile's policy with the configuration's overrides (None: the profile's choice)."""
    changes: dict[str, Any] = {}
    if c.token_budget:
        changes["token_budget"] = c.token_budget
    if c.max_rows:
        changes["max_rows"] = c.max_rows
    if c.pipeline is not None:
        changes["pipeline"] = c.pipeline
    if c.lanes:
        changes["lanes"] = c.lanes
    return replace(policy, **changes)


def _assemble(c: RuntimeConfig, tok: PairTokenizer, model_file: Path, pol: BatchPolicy,
              prof: ProviderProfile, info: RuntimeInfo, pad_token_id: int, *,
              runner: RunnerSeam | None = None, policy: PolicySeam | None = None,
              bounded: bool = True) -> Runtime:
    """Session, engine and the one service of a runtime (the only `Service(` in the package).
    bounded=False: no queue bound (the cascade's fp32 stage must not refuse half a request)."""

    if policy is not None:
        pol = policy(pol)
    # lanes share the threads: at most one lane a thread, each session run on threads / lanes
    threads = c.threads or usable_cores()
    pol = replace(pol, lanes=min(pol.lanes, threads))
    lane_threads = threads // pol.lanes

    def open_session() -> Runner:
        return open_runner(model_file, prof, threads=lane_threads, lanes=pol.lanes, spin=c.spin)

    sess = runner(open_session) if runner is not None else open_session()
    engine = Engine(sess, pol, max_length=tok.max_length, pad_token_id=pad_token_id)
    service = Service(tok, engine, c.windows,
                      max_queued_tokens=c.max_queued_tokens if bounded else None)
    return Runtime(config=c, tokenizer=tok, engine=engine, service=service,
                   activation=info.activation, profile=prof, info=info, seams=(runner, policy))


def self_check(rt: Runtime | None, md: modeldir.ModelDir,
               max_length: int | None = None) -> selfcheck.Int8Check | None:
    """The int8 self-check on this runtime (runtime/selfcheck.py): does it reproduce the
    export's int8 scores, or else pass the export's gate on this CPU? Cached per int8 file,
    check data and CPU signature. rt=None only looks the verdict up (None: not cached)."""
    record = md.int8_self_check()
    found = md.int8_check_requests()
    requests = selfcheck.Requests.parse(found[0]) if found else None
    key = selfcheck.cache_key(md.file_sha256(VARIANT_FILES["int8"]), record,
                              found[1] if found else None, max_length)
    hit = selfcheck.cached(key)
    if hit is not None or rt is None:
        return hit
    result = selfcheck.check_here(
        record, requests, lambda pairs: rt.service.score(ScoreRequest.pairs(pairs)).logits,
        max_length=max_length)
    selfcheck.store(key, result)
    return result


def _verdict(info: RuntimeInfo, isa: modeldir.IsaCheck | None,
             check: selfcheck.Int8Check | None, served_int8: bool) -> RuntimeInfo:
    """info with the int8 check's verdict and the instruction-set note (the warning only where
    int8 serves)."""
    return replace(info, int8_isa=isa.made_for if isa else None,
                   cpu_isa=isa.this_cpu if isa else None,
                   isa_warning=isa.warning if isa and served_int8 else None,
                   int8_check=asdict(check) if check else None)


def _checked_later(build: Callable[..., Runtime], md: modeldir.ModelDir,
                   max_length: int | None) -> Runtime:
    """fp32 serving at once, and a thread beside it that loads int8, runs the self-check and,
    where it passes, has the runtime adopt int8 (its info then says so; a failed check leaves
    fp32 serving, with the verdict). The verdict is cached like a check at start-up."""
    rt = build("fp32")
    rt.info = replace(rt.info, int8_check=asdict(selfcheck.Int8Check(status="pending",
                                                                      how="background")))
    log.info("serving %s (fp32, %s) while the int8 self-check runs in the background",
             md.name, rt.profile.name)

    def work() -> None:
        try:
            candidate = build("int8")
        except Exception as exc:  # a damaged int8 file: fp32 serves on, and says why
            log.warning("int8 could not be loaded for its self-check (%s); serving fp32 on.",
                        exc)
            rt.info = replace(rt.info, int8_check=asdict(selfcheck.Int8Check(
                status="unavailable", how="background")))
            return
        try:
            check = self_check(candidate, md, max_length) or selfcheck.Int8Check(
                status="unavailable")
        except Exception as exc:
            candidate.close()
            log.warning("int8 self-check could not run (%s); serving fp32 on.", exc)
            rt.info = replace(rt.info, int8_check=asdict(selfcheck.Int8Check(
                status="unavailable", how="background")))
            return
        if not check.ok:
            candidate.close()
            rt.info = replace(rt.info, int8_check=asdict(check))
            log.warning("%s; serving fp32 on.", _failure(check, cpu.detect_isa()))
            return
        isa = md.isa_check("int8", warn=check.status != "passed")
        candidate.info = _verdict(candidate.info, isa, check, served_int8=True)
        if rt.adopt(candidate):
            log.info("now serving %s as int8%s", md.name, _check_note(check))

    rt.background = threading.Thread(target=work, name="crossrank-int8-check", daemon=True)
    rt.background.start()
    return rt


def _fallback_k(c: RuntimeConfig, prof: ProviderProfile, md: modeldir.ModelDir,
                refused: Runtime | None) -> int:
    """The cascade's k where an int8 was refused (by the export's gate, or by this CPU's check)
    and this CPU class runs the cascade faster than fp32; else 0 (fp32 serves)."""
    if not (c.cascade_fallback and c.variant == "auto" and prof.cascade
            and (md.cascade_only() or refused is not None)):
        return 0
    isa = cpu.detect_isa()
    if isa not in prof.cascade_fallback_isas:
        log.info("int8 refused: serving fp32 (the cascade is not faster than fp32 on %s CPUs)",
                 isa)
        return 0
    log.info("int8 refused: %s CPUs run it faster behind the precision cascade than fp32 "
             "alone, so the cascade serves it if the export has an error bound "
             "(--cascade-fallback 0: fp32)", isa)
    return prof.cascade_fallback_k


def _with_cascade(rt: Runtime, md: modeldir.ModelDir, k: int, build: Callable[..., Runtime],
                  check: selfcheck.Int8Check | None, refused: Runtime | None) -> Runtime:
    """int8 in front of fp32 (runtime/core/cascade.py): the served int8, or one the gate refused (at
    export, or on this CPU: `refused`, already loaded) and kept for this; unchanged where there is
    no int8 error bound.
    Where the self-check measured int8's error on this CPU, the bound is the larger of that and
    the export's."""
    bound = md.int8_error_bound()
    here = check.error_bound if check is not None else None
    if bound is not None and here is not None:
        bound = max(bound, here)
    refused_here = check is not None and check.status == "failed" and here is not None
    if rt.info.variant != "int8" and not (md.cascade_only() or refused_here):
        return rt
    if bound is None:
        log.warning("no int8 error bound in %s (exported before the cascade existed): no "
                    "cascade; export again with --force for exact top-k", md.path)
        return rt
    if rt.info.variant == "int8":
        first, exact = rt, build("fp32", bounded=False)
    else:  # the gate refused int8: it serves only behind the cascade
        first, exact = refused or build("int8"), rt
        exact.service.max_queued_tokens = None  # the second stage never refuses half a request
    first.service.refiner = Refiner(exact.service, bound, k, CascadeStats())
    first.exact = exact
    first.info = replace(first.info, variant="int8", cascade_k=k, cascade_bound=bound)
    log.info("precision cascade: int8, then fp32 for the pairs within %.3g logits of the k-th "
             "best (each request's top %d, or its own top_n/top_k, is fp32's)", bound, k)
    return first


def _check_note(check: selfcheck.Int8Check | None) -> str:
    if check is None:
        return ""
    when = " (cached verdict)" if check.cached else f" in {check.seconds:.2f}s"
    if check.status == "passed" and check.how == "judged":
        return "; int8 self-check passed on this CPU's own int8: " + judged(check) + when
    if check.status == "passed":
        return (f"; int8 self-check passed: {check.pairs} pairs reproduce the export's int8 "
                f"scores to {check.max_abs_diff:.2g}{when}")
    if check.status == "failed":
        return "; int8 self-check FAILED: serving fp32"
    return f"; int8 self-check {check.status}"


def judged(check: selfcheck.Int8Check | dict[str, Any]) -> str:
    """How this CPU's own int8 fared against the export's gate, in words (logs, `crossrank
    info`)."""
    d = check if isinstance(check, dict) else asdict(check)
    j = d.get("judgement") or {}
    diff = d.get("max_abs_diff")
    if d.get("status") != "passed":
        head = ""
    elif diff is None:  # judged at once (other architecture), no distance measured
        head = f"its int8 kernels are not those of the exporting CPU ({d.get('measured_on')}) but "
    else:
        head = (f"it does not reproduce the export's int8 scores (max |diff| {diff:.2g}, "
                "kernels differ) but ")
    verdict = "passes" if d.get("status") == "passed" else "fails"
    return (f"{head}{verdict} the export's gate on its {j.get('requests')} check requests "
            f"(clear top-10 misses {j.get('clear_misses')}, worst graded NDCG@10 "
            f"{j.get('worst_graded_ndcg', 0):.4f}, rms error {j.get('rms_error_over_spread')} "
            f"x std; bounds: {j.get('bound')})")


def _failure(check: selfcheck.Int8Check, isa: str) -> str:
    """Why int8 does not serve on this CPU, and what to do."""
    if check.how == "judged":
        return f"int8 self-check failed on this {isa} CPU: its int8 " + judged(check)
    return (f"int8 self-check failed on this {isa} CPU: {VARIANT_FILES['int8']} reproduces the "
            f"scores the exporter verified (measured on {check.measured_on}) only to "
            f"{check.max_abs_diff or 0.0:.3g}, over the tolerance {check.tolerance or 0.0:.3g}, "
            f"and the export keeps no check requests to judge it here (export it again with "
            f"this crossrank, or skip the check with --int8-check 0)")
