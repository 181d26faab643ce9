"""Where int8's error comes from: each quantized node of each layer alone in int8, on requests
independent of the exporter's check set.

For a fixture (fixtures/reranker.py: `trained`, `prose-head`), export fp32, then quantize with the
CPU's recipe keeping every node in fp32 but one (a layer's fused attention, attention output,
feed-forward in or out), each layer's four nodes together, each role across the layers, and all
of them, and score the fixture's test requests (fixtures/prose.py: packages the trained fixture
never saw, 100 candidates each; `--split dev`, the default, takes the dev packages, so that what
the study decides is judged later on requests it never saw). Per configuration:
- rms_over_spread: root-mean-square |int8 - fp32| over the pairs, each request's errors divided
  by that request's fp32 std (scale-free, as the gate);
- share: its mean squared error over the full int8's (errors of independent nodes add in
  squares, so the shares of the nodes sum to ~1 when they are independent);
- max_abs: the largest |int8 - fp32| in logits.

    .venv/bin/python -m bench.studies.int8_layers [--fixture trained prose-head] [--requests 8]

Writes bench/results/int8-layers-latest.json. ~7 minutes a 6-layer fixture on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies import start

log = logging.getLogger("int8_layers")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "int8-layers-latest.json"


def error_figures(ref: np.ndarray, got: np.ndarray, groups: np.ndarray,
                  full_ms: float | None = None) -> dict[str, float]:
    """rms error over each request's fp32 std, its share of full_ms, and the max |error|."""
    from crossrank.runtime.core.fidelity import rms_error_over_spread

    rms = rms_error_over_spread(ref, got, groups.tolist())
    out = {"rms_over_spread": round(rms, 5), "max_abs": round(float(np.abs(got - ref).max()), 4),
           "mean_square": rms**2}
    if full_ms:
        out["share"] = round(rms**2 / full_ms, 3)
    return out


def study(name: str, requests: int, isa: str | None = None, split: str = "test") -> dict[str, Any]:
    from crossrank.export import quantize
    from crossrank.export.pipeline import Options, run
    from crossrank.export.verify import Staged
    from crossrank.runtime.modeldir import VARIANT_FILES
    from fixtures import prose, reranker

    reqs = prose.requests(split)[:requests]
    pairs = [(r.query, p) for r in reqs for p in r.passages]
    groups = np.repeat(np.arange(len(reqs)), [len(r.passages) for r in reqs])
    isa = isa or quantize.detect_isa()
    recipe = quantize.recipe_for(isa)
    with tempfile.TemporaryDirectory(prefix="crossrank-layers-") as tmp:
        out = run(Options(model=str(reranker.build(name)), out_dir=Path(tmp) / "m",
                          variants=("fp32",), force=True))
        fp32_file, tok = out / "model.onnx", out / "tokenizer.json"
        max_length = json.loads((out / "manifest.json").read_text())["max_length"]
        staged = Staged(out, max_length, 0)
        ref = staged.logits("fp32", pairs).astype(np.float64)
        roles = quantize.matmul_roles(fp32_file)
        every = [n for nodes in roles.values() for n in nodes]
        layers = len(next(iter(roles.values())))
        q = quantize.Quantizer(fp32_file, out / VARIANT_FILES["int8"], isa, recipe,
                               tokenizer_file=tok)

        def only(nodes: list[str]) -> np.ndarray:
            q.write(tuple(n for n in every if n not in nodes))
            return staged.logits("int8", pairs).astype(np.float64)

        t0 = time.perf_counter()
        full = error_figures(ref, only(every), groups)
        rows: list[dict[str, Any]] = [{"int8": "all", **full}]
        for role, nodes in roles.items():
            rows.append({"int8": role, **error_figures(ref, only(nodes), groups,
                                                       full["mean_square"])})
        for i in range(layers):
            nodes = [v[i] for v in roles.values() if len(v) == layers]
            rows.append({"int8": f"layer {i}", **error_figures(ref, only(nodes), groups,
                                                                full["mean_square"])})
        for i in range(layers):
            for role, nodes in roles.items():
                if len(nodes) == layers:
                    rows.append({"int8": f"layer {i} {role}",
                                 **error_figures(ref, only([nodes[i]]), groups,
                                                 full["mean_square"])})
            log.warning("%s: layer %d done (%.0f s)", name, i, time.perf_counter() - t0)
        q.close()
        staged.close()
        for r in rows:
            r.pop("mean_square")
        return {"fixture": name, "recipe": recipe.name, "isa": isa, "layers": layers,
                "split": split, "requests": len(reqs), "pairs": len(pairs),
                "fp32_std_mean": round(float(np.mean([ref[groups == g].std()
                                                      for g in range(len(reqs))])), 4),
                "rows": rows, "study_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", nargs="+", default=["trained", "prose-head"])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--split", choices=("dev", "test"), default="dev",
                    help="whose requests: dev to decide on, test only to report (fixtures/prose.py)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res: dict[str, Any] = {**start(), "fixtures": [study(f, args.requests, split=args.split)
                                                   for f in args.fixture]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for f in res["fixtures"]:
        print(f"\n{f['fixture']} ({f['recipe']}, {f['pairs']} pairs)")
        print(f"{'int8':<32} {'rms/std':>8} {'share':>6} {'max':>7}")
        for r in f["rows"]:
            print(f"{r['int8']:<32} {r['rms_over_spread']:>8.4f} {r.get('share', 1.0):>6.3f} "
                  f"{r['max_abs']:>7.3f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
