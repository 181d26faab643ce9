"""The export stages in order: load, export, optimize, quantize, verify, manifest.

Work happens in a staging directory beside the output; only a fully verified export is moved
into place, so a failure never leaves a half-written model directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.export import (
    ExportError,
    checkset,
    convert,
    manifest,
    onnxfile,
    optimize,
    quantize,
    verify,
)
from crossrank.export.standin import STANDIN_MARK
from crossrank.runtime.core import fidelity
from crossrank.runtime.core.errors import InferenceError, ModelLoadError
from crossrank.runtime.execution import ovsession
from crossrank.runtime.modeldir import (
    DEFAULT_MODEL,
    DEFAULT_VARIANTS,
    FORMAT_VERSION,
    INT8_CHECK_FILE,
    VARIANT_FILES,
    data_file,
    export_name,
    unchanged,
)

log = logging.getLogger(__name__)

OPSET = 17
MIN_MAX_LENGTH = 16  # a query, a few tokens of chunk and the special tokens
STANDIN_ID = "crossrank/stand-in-ms-marco-MiniLM-L-12-v2"


@dataclass(frozen=True)
class Options:
    """What to export and how."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    out_dir: Path | None = None
    models_root: Path = Path("models")
    stand_in: bool = False
    isa: str | None = None
    int8_recipe: str | None = None  # a recipe of quantize.RECIPES (None: the one for isa)
    force: bool = False
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    exporter: str = "auto"
    tokenizer_dir: Path | None = None  # stand-in only: where its tokenizer files come from
    max_length: int | None = None  # a cap below the model's own limit (None: the model's)


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log the start and duration of a stage so no one stares at a silent terminal."""
    log.info("[%s] ...", name)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 2)
    log.info("[%s] done in %.1fs", name, timings[name])


def _fingerprint(src: Path | None, opts: Options) -> str:
    """What the output was built from: source files' hashes plus the options that shape it."""
    h = hashlib.sha256()
    # a recipe named only when one was: exports made before the option keep their fingerprint
    named = {"int8_recipe": opts.int8_recipe} if opts.int8_recipe else {}
    # norms split for the CPU (optimize.split_skip_norms): earlier exports are rebuilt
    h.update(json.dumps({"format": FORMAT_VERSION, "stand_in": opts.stand_in, "isa": opts.isa,
                         **named, "variants": opts.variants, "opset": OPSET, "norms": "split",
                         "max_length": opts.max_length}, sort_keys=True).encode())
    if src is not None:
        for p in sorted(src.iterdir()):
            if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def up_to_date(out: Path, fingerprint: str) -> bool:
    """True when out holds a complete export of the same input whose files are unchanged (their
    sha256 against the manifest's)."""
    mpath = out / "manifest.json"
    if not mpath.is_file():
        return False
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if m.get("format_version") != FORMAT_VERSION or m.get("fingerprint") != fingerprint:
        return False
    for name, entry in m.get("files", {}).items():
        f = out / name
        if not f.is_file() or f.stat().st_size != entry.get("bytes"):
            return False  # cheap first: a changed size needs no hashing
        if not entry.get("sha256") or not unchanged(f, entry):
            return False
    return True


def _staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the published model dir should not be
        return staging
    except OSError as exc:
        raise ExportError(
            f"Cannot write to {out.parent}: {exc.strerror}. Choose a writable output with "
            "--out DIR (or MODELS=DIR for make), or fix the directory's permissions."
        ) from exc


# What exporting imports beyond serving (the `export` extra).
_EXPORT_MODULES = {"torch": "torch", "transformers": "transformers", "onnx": "onnx",
                   "sentence_transformers": "sentence-transformers"}


def require_export_extra() -> None:
    """Raise ExportError naming the install command when the export extra is missing."""
    import importlib.util

    missing = [dist for mod, dist in _EXPORT_MODULES.items()
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ExportError(
            f"Exporting needs {', '.join(missing)}, which this installation lacks: `pip install "
            "'crossrank[export]'` (it pins torch==2.13.0, the CPU build; `make install` in a "
            "clone). Serving needs none of them: serve a model exported elsewhere with "
            "--model-dir DIR.")


def run(opts: Options) -> Path:
    """Export, verify and publish one model directory; returns its path."""
    require_export_extra()
    if opts.max_length is not None and opts.max_length < MIN_MAX_LENGTH:
        raise ExportError(f"max_length {opts.max_length} is too short: at least "
                          f"{MIN_MAX_LENGTH} tokens (a query, a few tokens of chunk and the "
                          "special tokens).")
    timings: dict[str, float] = {}
    out = opts.out_dir or (opts.models_root / export_name(opts.model, opts.stand_in))
    isa = opts.isa or quantize.detect_isa()
    recipe = quantize.named_recipe(opts.int8_recipe, isa)  # a bad name fails before any work
    if "bf16" in opts.variants and not ovsession.available():
        raise ExportError("The bf16 variant is computed and verified by OpenVINO, which is not "
                          f"installed: {ovsession.INSTALL_HINT}, or leave bf16 out of --variants.")
    src_tmp: Path | None = None
    try:
        with stage("load", timings):
            if opts.stand_in:
                from crossrank.export.standin import build_standin

                src_tmp = Path(tempfile.mkdtemp(prefix="crossrank-standin-"))
                ckpt = build_standin(src_tmp / "ckpt", tokenizer_dir=opts.tokenizer_dir)
                src = convert.Source(spec=STANDIN_ID, path=ckpt,
                                     revision="seed-0", is_local=True)
            else:
                src = convert.resolve(opts.model, opts.revision)
            cfg = convert.read_config(src.path)
            act = convert.activation(cfg)
            fp = _fingerprint(src.path, opts)
            if not opts.force and up_to_date(out, fp):
                log.info("%s is up to date (use --force to rebuild)", out)
                return out
            model = convert.load_model(src.path)
        staging = _staging(out)
        try:
            manifest_fields = _build(src, cfg, act, model, staging, isa, recipe, opts, timings)
            manifest_fields["fingerprint"] = fp
            manifest_fields["name"] = out.name
            files = ["tokenizer.json", "config.json"] + [
                name for name in (*VARIANT_FILES.values(), *map(data_file, VARIANT_FILES.values()),
                                  INT8_CHECK_FILE)
                if (staging / name).exists()]
            manifest.write(staging, manifest_fields, files)
            _publish(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if src_tmp is not None:
            shutil.rmtree(src_tmp, ignore_errors=True)
    log.info("wrote %s (%s)", out, ", ".join(f"{k} {v}s" for k, v in timings.items()))
    return out


def _build(src: convert.Source, cfg: dict[str, Any], act: str, model: Any, staging: Path,
           isa: str, recipe: quantize.Recipe, opts: Options,
           timings: dict[str, float]) -> dict[str, Any]:
    raw = staging / "raw.onnx"
    with stage("export", timings):
        input_names = convert.export_onnx(model, raw, OPSET, opts.exporter)
        facts = convert.write_tokenizer(src.path, staging)
        # pads as sentence-transformers pads (the tokenizer's pad token), in checks and serving
        pad_id = facts.pad_token_id
        if pad_id is None:
            pad_id = int(cfg.get("pad_token_id") or 0)
        own_limit = convert.model_max_length(cfg, facts.model_max_length)
        max_length = own_limit if opts.max_length is None else min(opts.max_length, own_limit)
        shutil.copyfile(src.path / "config.json", staging / "config.json")
    variants: dict[str, dict[str, Any]] = {}
    with stage("optimize", timings):
        fused = optimize.fuse_fp32(raw, staging / VARIANT_FILES["fp32"], cfg)
        variants["fp32"] = {"file": VARIANT_FILES["fp32"], "shipped": True, "fused_ops": fused}
        if "fp16" in opts.variants:
            fused16 = optimize.fuse_fp16(raw, staging / VARIANT_FILES["fp16"], cfg)
            variants["fp16"] = {"file": VARIANT_FILES["fp16"], "shipped": True,
                                "fused_ops": fused16}
        if "bf16" in opts.variants:  # OpenVINO reads the plain graph and computes it in bf16
            onnxfile.copy(raw, staging / VARIANT_FILES["bf16"])
            variants["bf16"] = {"file": VARIANT_FILES["bf16"], "shipped": True,
                                "runtime": "openvino", "precision": "bf16"}
    if "int8" in opts.variants and not quantize.quantizable_nodes(staging / VARIANT_FILES["fp32"]):
        # an architecture whose layers the role finder does not recognise: say so, build no
        # int8 that would be fp32 under another name
        reason = (f"no encoder-layer nodes found to quantize in this graph (model_type "
                  f"{cfg.get('model_type')!r}); int8 was not built, fp32 serves")
        log.warning("int8: %s", reason)
        variants["int8"] = {"shipped": False, "reason": reason}
    elif "int8" in opts.variants:
        with stage("quantize", timings):
            record = quantize.quantize(staging / VARIANT_FILES["fp32"],
                                       staging / VARIANT_FILES["int8"], isa, recipe,
                                       max_length=max_length)
            variants["int8"] = {"file": VARIANT_FILES["int8"], "shipped": True, "recipe": record}
    onnxfile.remove(raw)
    del model
    real_weights = not opts.stand_in and not bool(cfg.get(STANDIN_MARK, False))
    with stage("verify", timings):
        with verify.Staged(staging, max_length, pad_id) as staged:
            _verify(src.path, staged, variants, real_weights)
    log.info("max length %d tokens (the model's own: %d)", max_length, own_limit)
    return {
        "source": {"id": src.spec, "revision": src.revision, "local": src.is_local},
        "stand_in": not real_weights,
        "max_length": max_length,
        "model_max_length": own_limit,
        "activation": act,
        "opset": OPSET,
        "input_names": input_names,
        "pad_token_id": pad_id,
        "model_type": cfg.get("model_type"),
        "variants": variants,
        "timings_s": timings,
    }


def _verify(checkpoint: Path, st: verify.Staged, variants: dict[str, dict[str, Any]],
            real_weights: bool) -> None:
    from crossrank.runtime.execution.session import cuda_available

    pairs = verify.fixed_pairs()
    ref = verify.reference_logits(checkpoint, pairs, st.max_length)
    fp32 = st.logits("fp32", pairs)
    res = verify.compare(ref, fp32)
    res["passed"] = res["max_abs_diff"] <= verify.FP32_MAX_ABS
    res["bound"] = f"max_abs_diff <= {verify.FP32_MAX_ABS}"
    variants["fp32"]["verification"] = res
    log.info("fp32 vs PyTorch: max |diff| %.2e over %d pairs", res["max_abs_diff"], res["pairs"])
    if not res["passed"]:
        raise ExportError(
            f"Verification failed: the fp32 ONNX model differs from PyTorch by up to "
            f"{res['max_abs_diff']:.3g} (allowed {verify.FP32_MAX_ABS}). The export is not "
            "faithful for this architecture; please report it with the checkpoint's config.json."
        )
    if "recipe" in variants.get("int8", {}):
        check = _verify_int8(st, variants["int8"], real_weights, fp32, pairs)
        if variants["int8"]["shipped"] and check is not None:
            record = check.judged_requests()
            (st.dir / INT8_CHECK_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
            variants["int8"]["self_check_requests"] = {
                "file": INT8_CHECK_FILE, "requests": len(record["scales"]),
                "pairs": len(record["pairs"]), "tokens": sum(record["tokens"]),
                "export_judgement_passed": record["export_judgement"]["passed"]}
        if variants["int8"]["shipped"]:
            check_pairs = verify.self_check_pairs()
            variants["int8"]["self_check"] = verify.self_check_record(
                st.logits("fp32", check_pairs), st.logits("int8", check_pairs),
                check_pairs, quantize.detect_isa(),
                verify.pair_tokens(st.dir / "tokenizer.json", check_pairs))
    if "bf16" in variants:
        _verify_bf16(st, variants["bf16"], real_weights, fp32, pairs)
    if "fp16" in variants:
        if cuda_available():
            got16 = st.logits("fp16", pairs, provider="cuda")
            r16 = verify.compare(fp32, got16)
            r16["enforced"] = real_weights
            r16["passed"] = r16["spearman"] >= verify.FP16_MIN_SPEARMAN
            r16["status"] = "checked"
            variants["fp16"]["verification"] = r16
            if real_weights and not r16["passed"]:
                _not_shipped(st, variants["fp16"], "fp16", "failed fp16 verification")
        else:
            variants["fp16"]["verification"] = {"status": "unchecked",
                                                "reason": "no CUDA provider at export time"}
            log.info("fp16: unchecked (no CUDA provider here)")


QUICK_REQUESTS = 2  # per check set, for ranking nodes in the mixed-precision search
# Past half of the quantized weights kept in fp32, an int8 model is not worth shipping: it would
# be little faster than fp32 and still lossy.
MAX_FP32_WEIGHT_SHARE = 0.5
# The search picks, among several configurations, the cheapest that the check sets pass: a choice
# made on the check itself, so it passes by a hair and fails more often on requests it never saw.
# So it also bounds the error itself (fidelity.MAX_RMS_ERROR: rms |int8 - fp32| over the check
# pairs at most half the gate's near-tie margin, x each request's std).
SEARCH_MAX_RMS = fidelity.MAX_RMS_ERROR


def _not_shipped(st: verify.Staged, entry: dict[str, Any], variant: str, reason: str) -> None:
    """A variant refused after it was written: its file goes, its entry says why."""
    onnxfile.remove(st.dir / VARIANT_FILES[variant])
    entry.update(shipped=False, reason=reason)


def _recorded_only(fp32_fixed: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """A lossy variant of random weights against fp32 on the fixed pairs: rankings mean nothing
    there, so the Spearman bound is recorded, never enforced."""
    r = verify.compare(fp32_fixed, got)
    r.update(enforced=False, passed=bool(r["spearman"] >= verify.INT8_MIN_SPEARMAN),
             bound=f"spearman >= {verify.INT8_MIN_SPEARMAN} vs fp32 (recorded only)")
    return r


def _verify_bf16(st: verify.Staged, entry: dict[str, Any], real_weights: bool,
                 fp32_fixed: np.ndarray, pairs: list[tuple[str, str]]) -> None:
    """bf16 through OpenVINO against the fp32 export: on real weights by the int8 gate (what
    users lose on the check sets), refused when it fails; on random weights recorded only. A
    graph OpenVINO cannot run (DeBERTa's dynamic-rank `If`) ships no bf16, and says why."""
    try:
        got = st.logits("bf16", pairs, provider="openvino")
    except (ModelLoadError, InferenceError) as exc:
        why = ovsession.reason(exc.__cause__) if exc.__cause__ else str(exc)
        log.warning("bf16: OpenVINO cannot run this graph, not shipping it: %s", why)
        _not_shipped(st, entry, "bf16", f"OpenVINO cannot run this graph: {why}")
        return
    if not real_weights:
        r = _recorded_only(fp32_fixed, got)
    else:
        r = _GateCheck(st, fp32_fixed, pairs, variant="bf16", provider="openvino")()
        r["enforced"] = True
    r["computed_in"] = ovsession.computes_in("bf16")
    # a CPU without bf16 instructions computes it in f32: the check then says nothing of bf16
    r["status"] = "checked" if r["computed_in"] == "bf16" else "unchecked"
    entry["verification"] = r
    log.info("bf16 (OpenVINO, computed in %s) vs fp32: Spearman %.4f, max |diff| %.3g (%s)",
             r["computed_in"], r["spearman"], r["max_abs_diff"],
             ("passed" if r["passed"] else "FAILED") if real_weights else "recorded only")
    if real_weights and not r["passed"]:
        log.warning("bf16 failed its check: not shipping it")
        _not_shipped(st, entry, "bf16", "failed bf16 verification")


class _GateCheck:
    """The gate of a lossy variant (int8; bf16 on OpenVINO) against the fp32 export
    (runtime/core/fidelity.py): the real-prose check requests and a held-out second set
    (export/checkset.py), judged by what users lose; the variant passes only if both sets pass.
    The fixed pairs' Spearman is recorded beside it."""

    def __init__(self, st: verify.Staged, fp32_fixed: np.ndarray,
                 pairs: list[tuple[str, str]], variant: str = "int8",
                 provider: str = "cpu") -> None:
        self.st = st
        self.variant = variant
        self.provider = provider
        self.pairs = pairs
        self.fp32_fixed = fp32_fixed
        self.sets = {}
        for name in checkset.SETS:
            cs = checkset.load(name)
            fp32 = st.logits("fp32", list(cs.pairs))
            self.sets[name] = (cs, fp32)
        # A quick measure for ranking nodes in the search: the first QUICK_REQUESTS requests of
        # each set, by their rms error alone (no verdict).
        self.quick_pairs: list[tuple[str, str]] = []
        self.quick_groups: list[int] = []
        ref = []
        for k, (cs, fp32) in enumerate(self.sets.values()):
            idx = [i for i, g in enumerate(cs.groups) if g < QUICK_REQUESTS]
            self.quick_pairs += [cs.pairs[i] for i in idx]
            self.quick_groups += [k * QUICK_REQUESTS + cs.groups[i] for i in idx]
            ref.append(fp32[idx])
        self.quick_ref = np.concatenate(ref)

    def quick(self) -> float:
        """The int8 file's rms error over spread on the quick requests."""
        got = self.st.logits(self.variant, self.quick_pairs, provider=self.provider)
        return fidelity.rms_error_over_spread(self.quick_ref, got, self.quick_groups)

    def judged_requests(self) -> dict[str, Any]:
        """What the runtime needs to judge int8 on the CPU that serves it (runtime/selfcheck.py,
        int8_check.json): part of the first verify.JUDGE_REQUESTS requests of each set
        (verify.judge_subset) with labels, fp32 logits and each request's whole-list scale, and
        the shipped int8's verdict on them here."""
        pairs: list[tuple[str, str]] = []
        groups: list[int] = []
        labels: list[int] = []
        ref: list[np.ndarray] = []
        scales: dict[str, list[float]] = {}
        for cs, fp32 in self.sets.values():
            g = np.asarray(cs.groups)
            for i in range(verify.JUDGE_REQUESTS):
                idx = np.flatnonzero(g == i)
                if len(idx) <= fidelity.K:
                    continue
                sel = idx[verify.judge_subset(fp32[idx])]
                req = len(scales)
                sc = fidelity.Scale.of(fp32[idx])
                scales[str(req)] = [sc.std, sc.lo, sc.hi]
                pairs += [cs.pairs[j] for j in sel]
                groups += [req] * len(sel)
                labels += [cs.labels[j] for j in sel]
                ref.append(fp32[sel])
        fp32_all = np.concatenate(ref)
        int8 = self.st.logits("int8", pairs)
        # judged as the serving CPU judges it: labels recorded, not enforced (runtime/selfcheck.py)
        j = fidelity.judge(fp32_all, int8, groups, labels,
                           {int(k): fidelity.Scale(*v) for k, v in scales.items()},
                           label_bound=False)
        if not j.passed:  # the whole sets passed; a part of them should too
            log.warning("int8 passes the check sets but not their part kept for the serving "
                        "self-check: %s", j.as_dict())
        return {"about": "int8 check requests: judged on the serving CPU when it does not "
                         "reproduce the export's int8 (crossrank/runtime/selfcheck.py)",
                "check_set": checkset.describe(), "measured_on": quantize.detect_isa(),
                "pairs": [list(p) for p in pairs], "groups": groups, "labels": labels,
                "tokens": verify.pair_tokens(self.st.dir / "tokenizer.json", pairs),
                "fp32_logits": [float(x) for x in fp32_all],
                "int8_logits": [float(x) for x in int8], "scales": scales,
                "export_judgement": j.as_dict(),
                "export_error": fidelity.error_record(np.abs(int8 - fp32_all))}

    def __call__(self) -> dict[str, Any]:
        got = self.st.logits(self.variant, self.pairs, provider=self.provider)
        r = verify.compare(self.fp32_fixed, got)
        r["bound"] = fidelity.bounds() + " (on each set: ranking, held_out)"
        r["check_set"] = checkset.describe()
        passed = True
        errors = [np.abs(got - self.fp32_fixed)]
        refs: list[np.ndarray] = []
        gots: list[np.ndarray] = []
        groups: list[int] = []
        for name, (cs, fp32) in self.sets.items():
            rank_got = self.st.logits(self.variant, list(cs.pairs), provider=self.provider)
            j = fidelity.judge(fp32, rank_got, cs.groups, cs.labels)
            r[name] = j.as_dict()
            passed = passed and j.passed
            errors.append(np.abs(rank_got - fp32))
            refs.append(fp32)
            gots.append(rank_got)
            offset = len(set(groups))  # request ids run on across the sets
            groups += [offset + g for g in cs.groups]
        r["error"] = fidelity.error_record(np.concatenate(errors))
        r["rms_error_over_spread"] = round(fidelity.rms_error_over_spread(
            np.concatenate(refs), np.concatenate(gots), groups), 5)
        r["passed"] = passed
        return r


def _verify_int8(st: verify.Staged, entry: dict[str, Any], real_weights: bool,
                 fp32_fixed: np.ndarray, pairs: list[tuple[str, str]]) -> _GateCheck | None:
    """Check the int8 model; on real weights, if it fails, keep the nodes that hurt the check
    most in fp32 (fewest first) until it passes; if nothing passes, do not ship it. Returns the
    check (None on random weights, which have no rankings to check)."""
    if not real_weights:  # random weights: rankings mean nothing; record the fixed pairs only
        r = _recorded_only(fp32_fixed, st.logits("int8", pairs))
        entry["verification"] = r
        log.info("int8 vs fp32: Spearman %.4f (recorded only: stand-in)", r["spearman"])
        return None
    check = _GateCheck(st, fp32_fixed, pairs)
    r = check()
    r["enforced"] = True
    entry["verification"] = r
    _log_int8("int8 vs fp32", r, "enforced")
    if r["passed"]:
        return check
    search = _mixed_precision(st.dir, entry["recipe"], check, st.max_length)
    entry["search"] = search["trail"]
    if search["passed"] is not None:
        entry["recipe"] = search["recipe"]
        entry["verification"] = {**search["passed"], "enforced": True,
                                 "search_bound": f"rms error <= {SEARCH_MAX_RMS} x std"}
        log.info("int8 passes with %d of its nodes kept in fp32 (%.1f%% of its quantized weights)",
                 len(search["recipe"]["fp32_nodes"]), 100 * search["fp32_weight_share"])
        return check
    log.warning("int8 failed its check even with mixed precision: not shipping it; the runtime "
                "serves fp32, or with --cascade K int8 with fp32's exact top K")
    # the search left its last attempt on disk: put back the recipe whose error was recorded
    quantize.quantize(st.dir / VARIANT_FILES["fp32"], st.dir / VARIANT_FILES["int8"],
                      entry["recipe"]["isa"], quantize.RECIPES[entry["recipe"]["name"]],
                      max_length=st.max_length)
    entry["shipped"] = False
    entry["cascade_only"] = True  # kept for the precision cascade, never served alone
    entry["reason"] = "failed int8 verification"
    return check


def _log_int8(what: str, r: dict[str, Any], note: str) -> None:
    parts = []
    for name in checkset.SETS:
        j = r[name]
        kept = "n/a" if j["quality_kept"] is None else f"{j['quality_kept']:.4f}"
        if j.get("quality_kept_chance_p") is not None:
            kept += (f" (chance keeps {j['quality_kept_by_chance']:.4f}, p "
                     f"{j['quality_kept_chance_p']:.3f})")
        parts.append(f"{name}: worst graded NDCG@10 {j['worst_graded_ndcg']:.4f}, clear misses "
                     f"{j['clear_misses']}, quality kept {kept}")
    log.info("%s: %s (%s, %s)", what, "; ".join(parts), "passed" if r["passed"] else "FAILED",
             note)


def _worst(r: dict[str, Any]) -> dict[str, Any]:
    """A check's figures on each set, for the search's trail."""
    return {f"{name}_{k}": r[name].get(k) for name in checkset.SETS
            for k in ("worst_graded_ndcg", "clear_misses", "widest_swap", "quality_kept",
                      "quality_kept_chance_p")}


def _mixed_precision(staging: Path, recipe: dict[str, Any], check: _GateCheck,
                     max_length: int = 512) -> dict[str, Any]:
    """Keep in fp32 the fewest quantized nodes with which the check passes, most harmful first.

    Every node (a layer's fused attention, attention output, feed-forward in or out) is ranked
    by the error it adds alone in int8 (check.quick; squares of independent errors add, so the
    ranking apportions int8's error: bench/studies/int8_layers.py found one layer's feed-forward output
    carrying 81% of it on the trained fixture). Then the smallest m for which the m most harmful
    nodes kept in fp32 pass is found by bisection, taking that more nodes in fp32 never hurt:
    m = 0 is the full int8, which failed; the largest m allowed (MAX_FP32_WEIGHT_SHARE) is
    tried first, and if it fails int8 is refused. A configuration is accepted only if its rms
    error is also within SEARCH_MAX_RMS (half the gate's near-tie margin)."""
    fp32_file = staging / VARIANT_FILES["fp32"]
    int8_file = staging / VARIANT_FILES["int8"]
    nodes = [n for ns in quantize.matmul_roles(fp32_file).values() for n in ns]
    weights = quantize.node_weights(fp32_file, nodes)
    total = sum(weights.values()) or 1
    trail: list[dict[str, Any]] = []
    with quantize.Quantizer(fp32_file, int8_file, recipe["isa"],
                            quantize.RECIPES[recipe["name"]],
                            max_length=max_length) as q:
        alone: dict[str, float] = {}
        for node in nodes:
            q.write(tuple(n for n in nodes if n != node))
            alone[node] = check.quick()
        trail.append({"int8_alone_rms_error_over_spread":
                      {n: round(v, 5) for n, v in alone.items()}})
        ranked = sorted(nodes, key=lambda n: -alone[n])
        share = [sum(weights[n] for n in ranked[:m]) / total for m in range(len(ranked) + 1)]
        allowed = max((m for m in range(len(ranked)) if share[m] <= MAX_FP32_WEIGHT_SHARE),
                      default=0)

        def attempt(m: int) -> tuple[dict[str, Any], dict[str, Any]]:
            rec, r = q.write(tuple(ranked[:m])), check()
            ok = r["passed"] and r.get("rms_error_over_spread", 0.0) <= SEARCH_MAX_RMS
            trail.append({"fp32_nodes": m, "fp32_weight_share": round(share[m], 4),
                          **_worst(r), "rms_error_over_spread": r.get("rms_error_over_spread"),
                          "passed": r["passed"], "accepted": ok})
            _log_int8(f"{m} of {len(ranked)} nodes in fp32", r,
                      "mixed precision, " + ("accepted" if ok else "not accepted"))
            return rec, {**r, "accepted": ok}

        if allowed == 0:
            return {"passed": None, "recipe": None, "trail": trail}
        best = attempt(allowed)
        if not best[1]["accepted"]:
            return {"passed": None, "recipe": None, "trail": trail}
        lo, hi = 0, allowed  # lo fails, hi passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            rec, r = attempt(mid)
            if r["accepted"]:
                hi, best = mid, (rec, r)
            else:
                lo = mid
        q.write(tuple(best[0]["fp32_nodes"]))  # the last attempt may have failed
    best[1].pop("accepted")
    return {"passed": best[1], "recipe": best[0], "fp32_weight_share": round(share[hi], 4),
            "trail": trail}


def _publish(staging: Path, out: Path) -> None:
    """Swap the verified staging directory into place, keeping the old one until it succeeds."""
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
