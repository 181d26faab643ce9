"""bf16 on OpenVINO against int8 on ONNX Runtime, on real checkpoints, in one run on this CPU.

For each fixture (fixtures/reranker.py: `trained`, `prose-head`), export fp32 + int8 + bf16 with
`crossrank export`'s pipeline (each lossy variant judged by the same gate), then on the fixture's
held-out test requests (fixtures/prose.py: packages never trained on, 100 candidates each from
a lexical first stage) score every request with fp32 and int8 (ONNX Runtime, the CPU provider)
and bf16 (`--provider openvino`), round-robin, and report per lossy variant the same measures as
int8's evidence (runtime/core/fidelity.py: clear misses, worst graded NDCG@10, quality kept,
rms error over each request's spread) and the median seconds per request with the speed-up
over fp32. What OpenVINO computed in (bf16, or f32 on a CPU without bf16 instructions) is
recorded: only a bf16 row says anything of bf16.

    .venv/bin/python -m bench.studies.bf16_fidelity [--fixture trained prose-head] [--rounds 3]

Writes bench/results/bf16-fidelity-latest.json. About 10 minutes a fixture on 2 cores.
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

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bf16-fidelity-latest.json"
LOSSY = ("int8", "bf16")


def measure(name: str, rounds: int) -> dict[str, Any]:
    from crossrank.export.pipeline import Options, run
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.execution import ovsession
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose, reranker

    with tempfile.TemporaryDirectory(prefix="crossrank-bf16-") as tmp:
        out = run(Options(model=str(reranker.build(name)), out_dir=Path(tmp) / "m",
                          variants=("fp32", "int8", "bf16"), force=True))
        manifest = json.loads((out / "manifest.json").read_text())["variants"]
        scorers = {"fp32": Scorer.from_dir(out, variant="fp32"),
                   # int8 as shipped (mixed precision where the gate needed it), no self-check
                   "int8": Scorer.from_dir(out, variant="int8", int8_check=False),
                   "bf16": Scorer.from_dir(out, provider="openvino")}
        reqs = prose.requests("test")
        logits: dict[str, list[np.ndarray]] = {w: [] for w in scorers}
        times: dict[str, list[float]] = {w: [] for w in scorers}
        groups: list[int] = []
        labels: list[int] = []
        for g, r in enumerate(reqs):
            chunks = list(r.passages)
            for rnd in range(rounds):
                for who, s in scorers.items():
                    t = time.perf_counter()
                    x = s.logits(r.query, chunks)
                    times[who].append(time.perf_counter() - t)
                    if rnd == 0:
                        logits[who].append(x)
            groups += [g] * len(chunks)
            labels += list(r.labels)
        for s in scorers.values():
            s.close()
    ref = np.concatenate(logits["fp32"])
    med = {w: statistics.median(ts) for w, ts in times.items()}
    rows: dict[str, Any] = {}
    for v in LOSSY:
        got = np.concatenate(logits[v])
        j = fidelity.judge(ref, got, groups, labels)
        rows[v] = {
            "shipped": manifest[v]["shipped"],
            "gate": {n: {k: manifest[v]["verification"][n].get(k)
                         for k in ("worst_graded_ndcg", "clear_misses", "quality_kept", "passed")}
                     for n in ("ranking", "held_out")},
            "test_requests": {**j.as_dict(), "rms_error_over_spread": round(
                fidelity.rms_error_over_spread(ref, got, groups), 5),
                "max_abs": round(float(np.abs(got - ref).max()), 4)},
            "median_s_per_request": round(med[v], 4),
            "speed_vs_fp32": round(med["fp32"] / med[v], 2),
        }
    rows["int8"]["fp32_nodes"] = len(manifest["int8"].get("recipe", {}).get("fp32_nodes") or [])
    rows["bf16"]["computed_in"] = ovsession.computes_in("bf16")
    return {"fixture": name, "requests": len(reqs), "rounds": rounds,
            "fp32_median_s_per_request": round(med["fp32"], 4), **rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", nargs="+", default=["trained", "prose-head"],
                   choices=["trained", "prose-head"])
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the requests")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from bench.compare import cpu_name
    from crossrank.runtime.core.cpu import detect_isa

    report: dict[str, Any] = {"cpu": cpu_name(), "isa": detect_isa(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "fixtures": [measure(f, args.rounds) for f in args.fixture]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for f in report["fixtures"]:
        for v in LOSSY:
            t = f[v]["test_requests"]
            print(f"{f['fixture']:10s} {v}: shipped {f[v]['shipped']}, test requests: clear "
                  f"misses {t['clear_misses']}, worst graded NDCG@10 {t['worst_graded_ndcg']}, "
                  f"quality kept {t['quality_kept']}, rms error {t['rms_error_over_spread']} x "
                  f"spread; {f[v]['speed_vs_fp32']}x fp32")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
