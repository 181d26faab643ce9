"""How much of int8's quality kept is chance: the gate's labelled measure against the same errors
placed at random, and whether the gate still catches int8 that pushes relevant passages down.

For a fixture (fixtures/reranker.py: `trained` by default), export fp32 and the full int8 of
this CPU's recipe (every node quantized, no search), then score the exporter's two check sets
(crossrank/export/checkset.py) and the fixture's dev and test requests (fixtures/prose.py). Per
set of requests:
- the gate's measures (runtime/core/fidelity.py) on the observed int8;
- quality kept by chance: each request's int8 errors permuted among its passages, CHANCE_DRAWS
  times (the gate's own draws): mean, sd, 1st and 5th percentiles, the share of draws under 0.99
  (the fixed bound the gate used before), and the observed ratio's p-value;
- clear misses by chance: the same permutations counted by the near-tie rule (200 draws);
- power, on the check sets: the observed int8 with every relevant passage also lowered by
  delta x the request's std, judged by the gate.

    .venv/bin/python -m bench.studies.int8_chance [--fixture trained]

Writes bench/results/int8-chance-latest.json. ~6 minutes a fixture on 2 cores.
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

log = logging.getLogger("int8_chance")
RESULTS = Path(__file__).resolve().parents[1] / "results" / "int8-chance-latest.json"
DELTAS = (0.05, 0.1, 0.2)
MISS_DRAWS = 200
Set = tuple[list[tuple[str, str]], np.ndarray, np.ndarray]


def request_sets() -> dict[str, Set]:
    """Pairs, request ids and labels of the check sets and the fixture's dev and test requests."""
    from crossrank.export import checkset
    from fixtures import prose

    sets: dict[str, Set] = {}
    for name in checkset.SETS:
        cs = checkset.load(name)
        sets[name] = (list(cs.pairs), np.asarray(cs.groups), np.asarray(cs.labels))
    for split in ("dev", "test"):
        reqs = prose.requests(split)
        sets[split] = ([(r.query, p) for r in reqs for p in r.passages],
                       np.repeat(np.arange(len(reqs)), [len(r.passages) for r in reqs]),
                       np.concatenate([np.asarray(r.labels) for r in reqs]))
    return sets


def by_chance(ref: np.ndarray, got: np.ndarray, groups: np.ndarray, labels: np.ndarray,
              j: Any) -> dict[str, Any]:
    """The chance distribution of quality kept and of clear misses for int8's errors; j: the
    gate's judgement of the same scores (its ratio, fp32 NDCG@10 and p-value)."""
    from crossrank.runtime.core import fidelity

    reqs = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    labelled = [(ref[i], got[i] - ref[i], labels[i].astype(np.float64)) for i in reqs
                if labels[i].max() > 0]
    ratios = fidelity.chance_ratios(labelled, j.fp32_ndcg)  # the gate's own draws
    rng = np.random.default_rng(fidelity.CHANCE_SEED)
    misses = [sum(fidelity.clear_misses(ref[i], ref[i] + rng.permutation(got[i] - ref[i]))
                  for i in reqs) for _ in range(MISS_DRAWS)]
    return {"quality_kept": round(j.quality_kept, 5),
            "chance_mean": round(j.quality_kept_by_chance, 5),
            "chance_sd": round(float(ratios.std()), 5),
            "chance_p1": round(float(np.quantile(ratios, 0.01)), 5),
            "chance_p5": round(float(np.quantile(ratios, 0.05)), 5),
            "chance_share_below_0.99": round(float(np.mean(ratios < 0.99)), 4),
            "p": round(j.quality_kept_chance_p, 5),
            "clear_misses_by_chance_mean": round(float(np.mean(misses)), 3),
            "clear_misses_by_chance_none": round(float(np.mean(np.asarray(misses) == 0)), 3)}


def study(name: str) -> dict[str, Any]:
    from crossrank.export import quantize
    from crossrank.export.pipeline import Options, run
    from crossrank.export.verify import Staged
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.modeldir import VARIANT_FILES
    from fixtures import reranker

    sets = request_sets()
    isa = quantize.detect_isa()
    recipe = quantize.recipe_for(isa)
    t0 = time.perf_counter()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crossrank-chance-") as tmp:
        out = run(Options(model=str(reranker.build(name)), out_dir=Path(tmp) / "m",
                          variants=("fp32",), force=True))
        max_length = json.loads((out / "manifest.json").read_text())["max_length"]
        staged = Staged(out, max_length, 0)
        with quantize.Quantizer(out / "model.onnx", out / VARIANT_FILES["int8"], isa, recipe,
                                tokenizer_file=out / "tokenizer.json") as q:
            q.write(())
            for set_name, (pairs, groups, labels) in sets.items():
                ref = staged.logits("fp32", pairs).astype(np.float64)
                got = staged.logits("int8", pairs).astype(np.float64)
                j = fidelity.judge(ref, got, groups.tolist(), labels.tolist())
                row: dict[str, Any] = {"requests": j.requests, "pairs": len(pairs),
                                       "fp32_ndcg": round(j.fp32_ndcg or 0.0, 5),
                                       "gate": {k: v for k, v in j.as_dict().items()
                                                if k != "bound"},
                                       "chance": by_chance(ref, got, groups, labels, j)}
                if set_name in ("ranking", "held_out"):
                    std = np.array([ref[groups == g].std() for g in range(groups.max() + 1)])
                    std = std[groups]  # each pair's request's spread
                    power = []
                    for delta in DELTAS:
                        lowered = got - delta * std * (labels > 0)
                        p = fidelity.judge(ref, lowered, groups.tolist(), labels.tolist())
                        power.append({"delta_std": delta, "quality_kept": round(
                            p.quality_kept or 0.0, 5), "p": p.quality_kept_chance_p,
                            "clear_misses": p.clear_misses, "passed": p.passed})
                    row["power"] = power
                rows[set_name] = row
                log.warning("%s %s: kept %.4f, chance %.4f (p %.3f), %.0f s", name, set_name,
                            row["chance"]["quality_kept"], row["chance"]["chance_mean"],
                            row["chance"]["p"], time.perf_counter() - t0)
        staged.close()
    return {"fixture": name, "recipe": recipe.name, "isa": isa, "sets": rows,
            "draws": fidelity.CHANCE_DRAWS, "study_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", nargs="+", default=["trained"], choices=["trained", "prose-head"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res: dict[str, Any] = {**start(), "fixtures": [study(f) for f in args.fixture]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for f in res["fixtures"]:
        print(f"\n{f['fixture']} ({f['recipe']}, full int8, {f['draws']} draws)")
        print(f"{'set':<9} {'kept':>7} {'chance':>7} {'sd':>6} {'p1':>7} {'<0.99':>6} {'p':>6} "
              f"{'misses':>6} {'by chance':>9}")
        for name, r in f["sets"].items():
            c = r["chance"]
            print(f"{name:<9} {c['quality_kept']:>7.4f} {c['chance_mean']:>7.4f} "
                  f"{c['chance_sd']:>6.4f} {c['chance_p1']:>7.4f} "
                  f"{c['chance_share_below_0.99']:>6.2f} {c['p']:>6.3f} "
                  f"{r['gate']['clear_misses']:>6} {c['clear_misses_by_chance_mean']:>9.2f}")
            for pw in r.get("power", []):
                print(f"  relevant lowered {pw['delta_std']} x std: kept {pw['quality_kept']:.4f}"
                      f", p {pw['p']:.4f}, clear misses {pw['clear_misses']}, "
                      f"{'passed' if pw['passed'] else 'refused'}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
