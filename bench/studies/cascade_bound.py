"""Could the precision cascade use a bound per pair instead of the export's one bound E?

The cascade (runtime/core/cascade.py) re-scores in fp32 every pair whose int8 score could put it
in fp32's top k, using E = 1.5 x the largest |int8 - fp32| the export saw on its check pairs
(Python documentation, not the fixtures' prose). A tighter bound for some pairs would re-score
fewer, if something the runtime knows before fp32 runs tells which pairs err less: the pair's
token count or its int8 score. This measures that on an export's fp32 and int8, on the
fixture's prose requests (fixtures/prose.py), which neither the export's bound nor its gate saw:

- how |int8 - fp32| varies with tokens and with the int8 score (correlation, max per bin);
- a bound per token bin, fitted on the dev requests (each bin's max x the same 1.5 margin),
  applied on the test requests: how many pairs err past their bound there, and the cascade's
  re-scored share with it against E's, k = 10, both with the
  rounds rule (a pair is needed while int8 + its bound reaches the k-th best fp32 known).

    .venv/bin/python -m bench.studies.cascade_bound MODEL_DIR [--k 10] [--out FILE]

About 5 min a fixture on 2 cores (both splits, fp32 and int8). Writes
bench/results/cascade-bound-latest.json (one entry per model, merged).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.studies import start

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cascade-bound-latest.json"
TOKEN_BINS = (0, 100, 200, 300, 400, 513)


def scored(model: Path, split: str) -> list[dict[str, np.ndarray]]:
    """Each request of the split: fp32 and int8 logits and each pair's token count."""
    from crossrank.runtime import loader
    from crossrank.runtime.modeldir import VARIANT_FILES
    from crossrank.runtime.scorer import Scorer
    from fixtures import prose

    f32 = Scorer.from_dir(model, variant="fp32")
    i8 = Scorer(loader.load_files(model / VARIANT_FILES["int8"], model / "tokenizer.json",
                                  f32.engine.max_length, variant="int8"))
    tok = f32.tokenizer.library
    out = []
    try:
        for r in prose.requests(split):
            chunks = list(r.passages)
            enc = tok.encode_batch([(r.query, c) for c in chunks])
            out.append({"fp32": np.asarray(f32.logits(r.query, chunks), dtype=np.float64),
                        "int8": np.asarray(i8.logits(r.query, chunks), dtype=np.float64),
                        "tokens": np.minimum([len(e.ids) for e in enc], f32.engine.max_length)})
    finally:
        f32.close()
        i8.close()
    return out


def binned_max(err: np.ndarray, key: np.ndarray, edges: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (key >= lo) & (key < hi)
        if m.any():
            rows.append({"from": round(float(lo), 3), "to": round(float(hi), 3), "pairs": int(m.sum()),
                         "max_abs": round(float(err[m].max()), 4),
                         "mean_abs": round(float(err[m].mean()), 4)})
    return rows


def rescored(int8: np.ndarray, fp32: np.ndarray, bound: np.ndarray, k: int) -> int:
    """Pairs the rounds (cascade.window) re-score with a bound per pair: first every pair whose
    int8 + its bound reaches int8's k-th best, t (int8's top k among them), then, while any is
    left, every pair whose int8 + its bound reaches the k-th best fp32 found, s. With one bound
    for all this is the served rule; the top k found is fp32's whenever every |int8 - fp32| is
    within its pair's bound. Returns how many pairs were re-scored."""
    if k >= len(int8):
        return len(int8)
    t = float(np.sort(int8)[-k])
    known = int8 + bound >= t
    while True:
        s = float(np.sort(fp32[known])[-k])
        more = ~known & (int8 + bound >= s)
        if not more.any():
            return int(known.sum())
        known |= more


def served(int8: np.ndarray, fp32: np.ndarray, bound: float, k: int) -> int:
    """Pairs the served cascade (cascade.window, one bound) re-scores: rescored() cross-checked."""
    from crossrank.runtime.core import cascade

    exact = np.full(len(int8), np.nan)
    while len(pos := cascade.window(int8, k, bound, exact)):
        exact[pos] = fp32[pos]
    return int((~np.isnan(exact)).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    from crossrank.runtime import modeldir
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.core.errors import ModelLoadError

    where = start()
    try:
        export_bound = modeldir.load(args.model).int8_error_bound()
    except ModelLoadError as exc:
        p.error(f"{args.model}: {exc}")
    if export_bound is None:
        raise SystemExit(f"{args.model}: no int8 error bound in its manifest (an int8 export "
                         "made by `crossrank export` has one)")
    dev, test = scored(args.model, "dev"), scored(args.model, "test")
    result: dict[str, Any] = {"machine": where, "export_bound": export_bound, "k": args.k,
                              "margin": fidelity.ERROR_MARGIN}
    for name, reqs in (("dev", dev), ("test", test)):
        f, i, n = (np.concatenate([r[x] for r in reqs]) for x in ("fp32", "int8", "tokens"))
        e = np.abs(i - f)
        result[name] = {
            "requests": len(reqs), "pairs": len(e), "max_abs": round(float(e.max()), 4),
            "corr_error_tokens": round(float(np.corrcoef(e, n)[0, 1]), 3),
            "corr_error_int8": round(float(np.corrcoef(e, i)[0, 1]), 3),
            "by_tokens": binned_max(e, n, np.asarray(TOKEN_BINS)),
            "by_int8_quartile": binned_max(e, i, np.quantile(i, [0, .25, .5, .75, 1.0]) + [0, 0, 0, 0, 1e-9])}
    # a bound per token bin, fitted on dev (its max x the margin), judged on test
    fitted = {(r["from"], r["to"]): r["max_abs"] * fidelity.ERROR_MARGIN
              for r in result["dev"]["by_tokens"]}
    per_bin, one, as_served, broke = 0, 0, 0, 0
    for r in test:
        b = np.array([next((v for (lo, hi), v in fitted.items() if lo <= t < hi), export_bound)
                      for t in r["tokens"]])
        broke += int(np.sum(np.abs(r["int8"] - r["fp32"]) > b))
        per_bin += rescored(r["int8"], r["fp32"], b, args.k)
        one += rescored(r["int8"], r["fp32"], np.full(len(b), export_bound), args.k)
        as_served += served(r["int8"], r["fp32"], export_bound, args.k)
    pairs = result["test"]["pairs"]
    result["token_bin_bound"] = {
        "fitted_on": "dev", "bounds": {f"{lo:g}-{hi:g}": round(v, 4) for (lo, hi), v in fitted.items()},
        "test_pairs_past_their_bound": broke,
        "rescored_share_per_bin": round(per_bin / pairs, 4),
        "rescored_share_export_bound": round(one / pairs, 4),
        "rescored_share_served": round(as_served / pairs, 4)}
    print(json.dumps(result, indent=1))
    merged = json.loads(args.out.read_text()) if args.out.is_file() else {}
    merged[args.model.name] = result
    args.out.write_text(json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
