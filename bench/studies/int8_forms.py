"""Choosing an int8 form on data no gate or test sees: candidate forms side by side on the
fixtures' dev requests.

A form is a recipe (crossrank/export/quantize.py) with, optionally, other roles given a range per
token and another smoothing alpha:

    u8s8-smooth-pertoken                          the VNNI/ARM default
    u8s8-smooth-pertoken+attention-output+ffn-in  per-token ranges on every plain MatMul role
    u8s8-smooth-pertoken@0.3                      smoothing alpha 0.3
    u8s8-smooth-pertoken@ffn-in=0.85              alpha 0.85 for one role, the recipe's elsewhere

For each fixture (fixtures/reranker.py) the fp32 export is made once; each form is quantized in
full (no mixed precision) and scores the dev requests (fixtures/prose.py: packages neither trained
on nor tested on, 100 lexical candidates each). Per form: rms |int8 - fp32| over each request's
fp32 std, clear top-10 misses and the widest swap (runtime/core/fidelity.py), and the median time
of a 100-candidate request, fp32 and the forms timed round-robin in the same run. The gate's check
sets and the test requests stay unseen, so a form chosen here is then judged on them honestly.

    .venv/bin/python -m bench.studies.int8_forms FORM [FORM ...] [--fixture trained prose-head]

Writes bench/results/int8-forms-latest.json. About a minute a form per fixture on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies import start

log = logging.getLogger("int8_forms")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "int8-forms-latest.json"


def parse_form(text: str) -> Any:
    """RECIPE[+ROLE...][@ALPHA] as a quantize.Recipe named text."""
    from crossrank.export import quantize

    base, *alphas = text.split("@")
    name, *extra = base.split("+")
    if name not in quantize.RECIPES:
        raise SystemExit(f"unknown recipe {name!r}; known: {', '.join(quantize.RECIPES)}")
    recipe = quantize.RECIPES[name]
    alpha, per_role = recipe.smooth_alpha, []
    for a in alphas:
        role, _, value = a.rpartition("=")
        if role:
            extra_role = role
            per_role.append((role, float(value)))
        else:
            alpha = float(value)
            extra_role = None
        if extra_role and extra_role not in quantize.ROLES:
            raise SystemExit(f"unknown role {extra_role!r}; roles: {', '.join(quantize.ROLES)}")
    bad = [r for r in extra if r not in quantize.ROLES]
    if bad:
        raise SystemExit(f"unknown role(s) {bad}; roles: {', '.join(quantize.ROLES)}")
    per_token = tuple(dict.fromkeys(recipe.per_token + tuple(extra)))
    return dataclasses.replace(recipe, name=text, per_token=per_token, smooth_alpha=alpha,
                               role_alpha=recipe.role_alpha + tuple(per_role))


def study(fixture: str, forms: list[str], rounds: int, isa: str | None = None) -> dict[str, Any]:
    from crossrank.export import quantize
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime import loader
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.core.options import ScoreRequest
    from fixtures import prose, reranker

    reqs = prose.requests("dev")
    isa = isa or quantize.detect_isa()
    with tempfile.TemporaryDirectory(prefix="crossrank-forms-") as tmp:
        out = run(Options(model=str(reranker.build(fixture)), out_dir=Path(tmp) / "m",
                          variants=("fp32",), force=True))
        fp32_file, tok = out / "model.onnx", out / "tokenizer.json"
        max_length = json.loads((out / "manifest.json").read_text())["max_length"]
        runtimes = {"fp32": loader.load_files(fp32_file, tok, max_length)}
        for i, form in enumerate(forms):
            dst = Path(tmp) / f"form{i}" / "model_int8.onnx"
            dst.parent.mkdir()
            quantize.quantize(fp32_file, dst, isa, parse_form(form), tokenizer_file=tok,
                              max_length=max_length)
            runtimes[form] = loader.load_files(dst, tok, max_length, variant="int8")
        scores: dict[str, list[np.ndarray]] = {k: [] for k in runtimes}
        times: dict[str, list[float]] = {k: [] for k in runtimes}
        for rnd in range(rounds):
            for r in reqs:
                request = ScoreRequest.pairs([(r.query, p) for p in r.passages])
                for name, rt in runtimes.items():
                    t0 = time.perf_counter()
                    got = rt.service.score(request).logits
                    times[name].append(time.perf_counter() - t0)
                    if rnd == 0:
                        scores[name].append(np.asarray(got, dtype=np.float64))
        for rt in runtimes.values():
            rt.close()
    ref = scores["fp32"]
    groups = np.repeat(np.arange(len(reqs)), [len(s) for s in ref])
    fp32_ms = statistics.median(times["fp32"]) * 1e3
    rows = []
    for form in forms:
        lists = scores[form]
        gaps = [g for a, b in zip(ref, lists, strict=True) for g in fidelity.swap_gaps(a, b)]
        ms = statistics.median(times[form]) * 1e3
        rows.append({
            "form": form,
            "rms_over_spread": round(fidelity.rms_error_over_spread(
                np.concatenate(ref), np.concatenate(lists), groups.tolist()), 4),
            "clear_misses": sum(g > fidelity.CLEAR_MARGIN for g in gaps),
            "widest_swap": round(max(gaps, default=0.0), 3),
            "max_abs": round(float(max(np.abs(a - b).max() for a, b in zip(ref, lists, strict=True))), 3),
            "median_ms": round(ms, 1), "speed_vs_fp32": round(fp32_ms / ms, 2)})
    return {"fixture": fixture, "isa": isa, "requests": len(reqs), "rounds": rounds,
            "fp32_median_ms": round(fp32_ms, 1), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("forms", nargs="+")
    ap.add_argument("--fixture", nargs="+", default=["trained", "prose-head"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--isa", choices=["avx512_vnni", "avx2", "arm64"],
                    help="the CPU class the forms are for (default: this CPU's; under "
                         "tools/avx2/run.sh pass avx2, since /proc/cpuinfo still names the host)")
    args = ap.parse_args()
    for f in args.forms:
        parse_form(f)  # a bad name fails before any work
    res: dict[str, Any] = {**start(logging.WARNING),
           "fixtures": [study(f, args.forms, args.rounds, args.isa) for f in args.fixture]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for f in res["fixtures"]:
        print(f"\n{f['fixture']} ({f['isa']}, {f['requests']} dev requests, fp32 "
              f"{f['fp32_median_ms']} ms a request)")
        print(f"{'form':<52} {'rms/std':>8} {'misses':>6} {'widest':>7} {'max':>6} {'x fp32':>7}")
        for r in f["rows"]:
            print(f"{r['form']:<52} {r['rms_over_spread']:>8.4f} {r['clear_misses']:>6} "
                  f"{r['widest_swap']:>7.3f} {r['max_abs']:>6.3f} {r['speed_vs_fp32']:>7.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
