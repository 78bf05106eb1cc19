"""`gemma-convert SRC OUT.gcpp [--dtype ...]`: pack a checkpoint into one .gcpp file."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..gcpp_format import write
from . import DEFAULT_DTYPE, DTYPES, GGUF_DEFAULT_DTYPE, dtype_summary, read_source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="gemma-convert",
        description="Convert a Hugging Face Gemma checkpoint directory (config.json, *.safetensors, "
                    "tokenizer.model) or a GGUF file into a single gemma_cpp .gcpp model file.")
    ap.add_argument("src", help="checkpoint directory or .gguf file")
    ap.add_argument("out", help="output .gcpp file")
    ap.add_argument("--dtype", "--quant", dest="dtype", default=None, choices=DTYPES,
                    help=f"storage type of the weight matrices (norms stay f32); 'source' keeps each tensor "
                         f"at its source precision without rounding it again (GGUF blocks the .gcpp format "
                         f"holds are copied exactly). Default: {GGUF_DEFAULT_DTYPE} for .gguf files, "
                         f"{DEFAULT_DTYPE} for Hugging Face checkpoints")
    ap.add_argument("--embed-dtype", choices=DTYPES, default=None,
                    help="storage type of the embedding/output matrix (default: same as --dtype)")
    ap.add_argument("--threads", type=int, default=0, help="threads for quantisation (default: all)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if not os.path.exists(args.src):
        print(f"gemma-convert: error: {args.src}: no such file or directory", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        source = read_source(args.src, dtype=args.dtype, embed_dtype=args.embed_dtype)
        if not args.quiet:
            print("weights (source -> stored):")
            for line in dtype_summary(source):
                print("  " + line)
        write(source, args.out, progress=not args.quiet, n_threads=args.threads)
    except (ValueError, OSError) as e:
        print(f"gemma-convert: error: {e}", file=sys.stderr)
        return 1
    size = os.path.getsize(args.out)
    if not args.quiet:
        print(f"wrote {args.out} ({size / 2**20:.1f} MiB) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
