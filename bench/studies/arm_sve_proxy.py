"""Is neoverse-v1 with SVE turned off a fair stand-in for Graviton3's int8 numerics?

qemu-user emulates SVE so slowly that the ARM check (tools/arm64/check.py) gave no verdict for
neoverse-v1 (Graviton3) within an hour. The hope: ONNX Runtime picks its ARM int8 matrix kernels
by dotprod and i8mm, which `-cpu neoverse-v1,sve=off` keeps, so that CPU would give Graviton3's
int8 numbers fast. This scores a few pairs of the trained fixture's test requests with the int8
file under each -cpu given (default: neoverse-v1, neoverse-v1 without SVE, neoverse-n1) and
prints how far apart their logits are, and how long each took.

Answer (2026-12-05, qemu 10.0.13, 4 pairs, bench/results/arm-sve-proxy-latest.json): no.
Without SVE, neoverse-v1's logits equal neoverse-n1's bit for bit; with SVE they differ by up to
0.046, and the emulation took 372 s against 35 s. So no fast stand-in for Graviton3 here.

    .venv/bin/python -m bench.studies.arm_sve_proxy MODEL_DIR [--pairs 8] [--cpu ...]

Needs tools/arm64/setup.sh first. Writes bench/results/arm-sve-proxy-latest.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tools.arm64.check import emulated_logits

RESULTS = Path(__file__).resolve().parents[1] / "results" / "arm-sve-proxy-latest.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--cpu", nargs="+",
                   default=["neoverse-v1", "neoverse-v1,sve=off", "neoverse-n1"])
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    from fixtures import prose

    r = prose.requests("test")[0]
    pairs = [[r.query, t] for t in list(r.passages)[: args.pairs]]
    rows = [emulated_logits(c, args.model.resolve(), pairs, args.timeout) for c in args.cpu]
    for a in rows:
        diffs = {str(b["cpu"]): float(np.abs(np.subtract(a["logits"], b["logits"])).max())
                 for b in rows if b is not a and "logits" in a and "logits" in b}
        if diffs:
            a["max_abs_diff"] = diffs
    for a in rows:
        print(a["cpu"], a.get("seconds"), a.get("max_abs_diff") or a.get("error"))
    args.out.write_text(json.dumps({"model": args.model.name, "pairs": len(pairs),
                                    "rows": rows}, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
