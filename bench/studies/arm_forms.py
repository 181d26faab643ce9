"""Which int8 weight form errs least on ARM, judged on requests no gate or test sees.

ONNX Runtime sends u8 x u8 and u8 x s8 products on ARM64 to the same integer kernels (NEON,
UDOT with dotprod, UMMLA with i8mm: its platform dispatch), so on ARM the weight form changes
the error and, through the exporter's gate, how many nodes stay fp32, not the kernels' speed.
This compares exports of one fixture made with different recipes (`crossrank export
--int8-recipe`) on the fixture's dev requests (fixtures/prose.py; never the gate's check sets,
which the serving check judges with, nor the test requests): for each request, fp32's top
`--top` passages (where the top 10 is decided) are scored by each export's int8 natively on
this x86 CPU and under qemu-user as each ARM CPU (tools/arm64), and compared with fp32 (the same
on every ISA to 5e-6): rms error over the request's fp32 std (all its candidates), clear top-10
misses (fp32 gap > 0.1 x std), the widest swap and the largest |int8 - fp32|.

    .venv/bin/python -m bench.studies.arm_forms models/A models/B [--cpu cortex-a72] [--top 20]

Needs tools/arm64/setup.sh first. About 15 min of one core per export and ARM CPU at --top 20
(280 pairs) on cortex-a72. Writes bench/results/arm-forms-latest.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies import start
from tools.arm64.check import emulated_logits

RESULTS = Path(__file__).resolve().parents[1] / "results" / "arm-forms-latest.json"


def subset(model: Path, top: int) -> tuple[list[list[str]], np.ndarray, list[int], list[Any]]:
    """The dev requests' pairs among fp32's top `top`, their fp32 logits, each pair's request
    and each request's fp32 scale over all its candidates."""
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose

    fp32 = Scorer.from_dir(model, variant="fp32")
    pairs: list[list[str]] = []
    ref: list[float] = []
    groups: list[int] = []
    scales = []
    for i, r in enumerate(prose.requests("dev")):
        passages = list(r.passages)
        full = np.asarray(fp32.predict([(r.query, p) for p in passages]), dtype=np.float64)
        scales.append(fidelity.Scale.of(full))
        for j in np.argsort(-full, kind="stable")[:top]:
            pairs.append([r.query, passages[j]])
            ref.append(float(full[j]))
            groups.append(i)
    return pairs, np.asarray(ref), groups, scales


def measures(ref: np.ndarray, got: np.ndarray, groups: list[int], scales: list[Any]) -> dict[str, Any]:
    from crossrank.runtime.core import fidelity

    g = np.asarray(groups)
    gaps = [x for i in np.unique(g)
            for x in fidelity.swap_gaps(ref[g == i], got[g == i], scale=scales[int(i)])]
    return {"rms_over_spread": round(fidelity.rms_error_over_spread(
                ref, got, groups, dict(enumerate(scales))), 4),
            "clear_misses": sum(x > fidelity.CLEAR_MARGIN for x in gaps),
            "widest_swap": round(max(gaps, default=0.0), 3),
            "max_abs": round(float(np.abs(got - ref).max()), 3)}


def study(model: Path, cpus: list[str], top: int, timeout_s: float) -> dict[str, Any]:
    from crossrank.runtime.scorer import Scorer

    recipe = json.loads((model / "manifest.json").read_text())["variants"]["int8"]["recipe"]
    pairs, ref, groups, scales = subset(model, top)
    native = Scorer.from_dir(model, variant="int8", int8_check=False)
    rows = [{"cpu": "x86 (this CPU)", **measures(
        ref, np.asarray(native.predict([(q, t) for q, t in pairs]), dtype=np.float64),
        groups, scales)}]
    for cpu in cpus:
        got = emulated_logits(cpu, model.resolve(), pairs, timeout_s)
        if "logits" not in got:
            rows.append({"cpu": cpu, "error": got.get("error")})
            continue
        rows.append({"cpu": cpu, "seconds": got["seconds"],
                     **measures(ref, np.asarray(got["logits"]), groups, scales)})
    return {"model": model.name, "recipe": recipe["name"],
            "fp32_nodes": len(recipe.get("fp32_nodes") or []),
            "pairs": len(pairs), "requests": len(scales), "top": top, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--cpu", nargs="*", default=["cortex-a72"])
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    for m in args.models:  # every export checked before minutes of emulation start
        try:
            json.loads((m / "manifest.json").read_text())["variants"]["int8"]["recipe"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            p.error(f"{m}: not an export with an int8 variant (make one with `crossrank export "
                    "CKPT --variants fp32,int8 [--int8-recipe NAME]`)")
    res: dict[str, Any] = {**start(),
                           "models": [study(m, args.cpu, args.top, args.timeout) for m in args.models]}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for m in res["models"]:
        print(f"\n{m['model']} ({m['recipe']}, {m['fp32_nodes']} nodes fp32; {m['pairs']} pairs: "
              f"fp32's top {m['top']} of {m['requests']} dev requests)")
        for r in m["rows"]:
            print(f"  {r['cpu']:<16}", r.get("error") or
                  f"rms {r['rms_over_spread']:.4f} x std, clear misses {r['clear_misses']}, "
                  f"widest {r['widest_swap']:.3f}, max {r['max_abs']:.3f}"
                  + (f", {r['seconds']} s emulated" if "seconds" in r else ""))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
