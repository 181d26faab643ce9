"""int8 on real checkpoints: the exporter's gate, quality kept on independent requests, and the
precision cascade's share and speed, all in one run on this CPU.

For each fixture (fixtures/reranker.py: `trained`, `prose-head`; or `realistic`, the head fitted
on the synthetic corpus), export fp32 + int8 with `crossrank export`'s pipeline, then on the
fixture's held-out test requests (fixtures/prose.py: packages never trained on, 100 candidates
each from a lexical first stage):
- the gate's figures on the exporter's check sets (from the manifest) and its verdict;
- int8 against fp32 on the test requests by the same measures (runtime/core/fidelity.py);
- fp32, int8 and the cascade (exact top 10) timed per request, round-robin, medians, with the
  cascade's re-scored share (and the share one window of 2E would have re-scored); and whether
  each cascade top 10 equals fp32's.

    .venv/bin/python -m bench.studies.int8_fidelity [--fixture trained prose-head] [--rounds 3]

Writes bench/results/int8-fidelity-latest.json. Takes ~5-10 minutes a fixture on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results" / "int8-fidelity-latest.json"


def checkpoint(name: str, root: Path) -> Path:
    if name == "realistic":
        from fixtures.reranker import build_realistic

        return build_realistic(root / "realistic")
    from fixtures import reranker

    return reranker.build(name)


def measure(name: str, rounds: int, k: int = 10, isa: str | None = None,
            recipe: str | None = None) -> dict[str, Any]:
    from bench.studies.cascade_rounds import one_window
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime import loader
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.modeldir import VARIANT_FILES
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose

    with tempfile.TemporaryDirectory(prefix="crossrank-int8-") as tmp:
        t0 = time.perf_counter()
        out = run(Options(model=str(checkpoint(name, Path(tmp))), out_dir=Path(tmp) / "m",
                          variants=("fp32", "int8"), force=True, isa=isa,
                          int8_recipe=recipe))
        export_s = time.perf_counter() - t0
        entry = json.loads((out / "manifest.json").read_text())["variants"]["int8"]
        v = entry["verification"]
        reqs = prose.requests("test")
        f32 = Scorer.from_dir(out, variant="fp32")
        i8 = Scorer(loader.load_files(out / VARIANT_FILES["int8"], out / "tokenizer.json",
                                      f32.engine.max_length, variant="int8"))
        cas = Scorer.from_dir(out, cascade=k)
        ref, got, groups, labels = [], [], [], []
        times: dict[str, list[float]] = {"fp32": [], "int8": [], "cascade": []}
        exact = 0
        for g, r in enumerate(reqs):
            chunks = list(r.passages)
            for rnd in range(rounds):
                for who, s in (("fp32", f32), ("int8", i8), ("cascade", cas)):
                    t = time.perf_counter()
                    x = s.logits(r.query, chunks)
                    times[who].append(time.perf_counter() - t)
                    if rnd == 0 and who == "fp32":
                        ref.append(x)
                    elif rnd == 0 and who == "int8":
                        got.append(x)
                    elif rnd == 0:
                        top = fidelity.order(ref[-1])[:k]
                        exact += int(fidelity.order(x)[:k].tolist() == top.tolist()
                                     and np.allclose(x[top], ref[-1][top], atol=1e-5))
            groups += [g] * len(chunks)
            labels += list(r.labels)
        j = fidelity.judge(np.concatenate(ref), np.concatenate(got), groups, labels)
        rms = fidelity.rms_error_over_spread(np.concatenate(ref), np.concatenate(got), groups)
        stats = cas.describe().get("cascade", {})
        # what the earlier one-round cascade re-scored: every int8 score within 2E of the k-th best
        bound = cas.info.cascade_bound if cas.info else None
        one_round = (sum(len(one_window(x, k, bound)) for x in got)
                     / sum(len(x) for x in got)) if bound else None
        med = {w: statistics.median(ts) for w, ts in times.items()}
        for s in (f32, i8, cas):
            s.close()
    every = np.concatenate(ref)
    return {
        "fixture": name, "export_s": round(export_s, 1),
        "int8_shipped": entry["shipped"], "recipe": entry["recipe"]["name"],
        "fp32_nodes": entry["recipe"]["fp32_nodes"],
        "gate": {n: {key: v[n].get(key) for key in ("worst_graded_ndcg", "clear_misses",
                                                    "widest_swap",
                                                "quality_kept", "quality_kept_chance_p",
                                                "fp32_ndcg",
                                                "mean_abs_error_over_spread", "passed")}
                 for n in ("ranking", "held_out")},
        "error": v.get("error"),
        "test_requests": {**j.as_dict(), "rms_error_over_spread": round(rms, 5), "fp32_logits": {
            "min": round(float(every.min()), 2), "max": round(float(every.max()), 2),
            "std": round(float(every.std()), 3)}},
        "cascade": {"k": k, **stats, "exact_top_k_requests": f"{exact}/{len(reqs)}",
                    "one_round_share": None if one_round is None else round(one_round, 4)},
        "median_s_per_request": {w: round(t, 4) for w, t in med.items()},
        "speed_vs_fp32": {w: round(med["fp32"] / t, 2) for w, t in med.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", nargs="+", default=["trained", "prose-head"],
                   choices=["trained", "prose-head", "realistic"])
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the requests")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--isa", choices=["avx512_vnni", "avx2", "arm64"],
                   help="export for this CPU class (default: this CPU's; under tools/avx2/run.sh "
                        "pass avx2)")
    p.add_argument("--recipe", help="an int8 recipe instead of the one for --isa "
                   "(crossrank export --int8-recipe)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("crossrank.export", "fixtures"):  # progress; the quantizer's notes stay out
        logging.getLogger(name).setLevel(logging.INFO)
    from bench.studies import machine

    result: dict[str, Any] = {**machine(), "export_isa": args.isa or "this CPU's", "fixtures": []}
    for name in args.fixture:
        print(f"[{name}] exporting and measuring ...", flush=True)
        r = measure(name, args.rounds, isa=args.isa, recipe=args.recipe)
        result["fixtures"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
