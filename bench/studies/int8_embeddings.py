"""Real-weights evidence for int8 token embeddings (quantize.quantize_embeddings).

The trained MiniLM fixture (fixtures/reranker.py: a real 30,522-row vocabulary) is exported with
its embeddings left unfused, as XLM-R's, ModernBERT's and DeBERTa's are; its table is then stored
int8 with a scale per row and nothing else changes. Both graphs score the exporter's two check
sets (800 pairs each), and the int8-table graph is judged against fp32 with the int8 gate's own
measures. Writes bench/results/int8-embeddings-latest.json.

    python -m bench.studies.int8_embeddings
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.compare import cpu_name
from bench.workload import ROOT


def main() -> int:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from crossrank.export import checkset, convert, quantize
    from crossrank.runtime import loader
    from crossrank.runtime.core import fidelity
    from crossrank.runtime.scorer import Scorer
    from fixtures import reranker

    ckpt = reranker.build("trained")
    out: dict[str, Any] = {"cpu": cpu_name(), "checkpoint": "trained MiniLM fixture"}
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        cfg = convert.read_config(ckpt)
        convert.export_onnx(convert.load_model(ckpt), w / "raw.onnx", 17)
        convert.write_tokenizer(ckpt, w)
        options = FusionOptions("bert")
        options.enable_embed_layer_norm = False  # the table stays a Gather, as in XLM-R
        model = optimize_model(str(w / "raw.onnx"), model_type="bert",
                               num_heads=int(cfg["num_attention_heads"]),
                               hidden_size=int(cfg["hidden_size"]), opt_level=0,
                               optimization_options=options)
        model.save_model_to_file(str(w / "fp32.onnx"))
        shutil.copyfile(w / "fp32.onnx", w / "table.onnx")
        out["embedding"] = quantize.quantize_embeddings(w / "table.onnx")
        for name in checkset.SETS:
            cs = checkset.load(name)
            scores = []
            for f in ("fp32.onnx", "table.onnx"):
                with Scorer(loader.load_files(w / f, w / "tokenizer.json", 512)) as s:
                    scores.append(s.predict(list(cs.pairs)))
            ref, got = scores
            out[name] = {"judgement": fidelity.judge(ref, got, cs.groups, cs.labels).as_dict(),
                         "rms_error_over_spread": round(fidelity.rms_error_over_spread(
                             ref, got, cs.groups), 5),
                         "max_abs_diff": float(np.abs(ref - got).max()), "pairs": len(ref)}
            print(name, json.dumps(out[name]), flush=True)
    path = ROOT / "bench" / "results" / "int8-embeddings-latest.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
