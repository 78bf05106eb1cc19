"""`gemma-cpp perplexity [MODEL] FILE`: perplexity as llama-perplexity computes it, and with
--kl-base the mean KL divergence (base || model) and top-1 agreement against a reference model."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Sequence

from .common import CLIError
from .models import default_model, open_model
from .options import MODEL_HELP, add_device, add_kv_dtype, add_threads, positive


def add_parser(sub) -> None:
    p = sub.add_parser("perplexity", help="perplexity of a text file (and KL divergence to a base model)",
                       description="Perplexity of FILE as llama-perplexity computes it: non-overlapping chunks "
                                   "of --ctx tokens, each starting with BOS, scoring the second half of each "
                                   "chunk. With --kl-base, also the mean KL divergence (base || model) and "
                                   "top-1 agreement against BASE on the same tokens.")
    p.add_argument("positionals", nargs="+", metavar="[MODEL] FILE",
                   help="FILE: UTF-8 text; MODEL: " + MODEL_HELP)
    p.add_argument("-c", "--ctx", type=positive, default=None, help="chunk length in tokens (default 512)")
    p.add_argument("--chunks", type=positive, default=None, help="score at most this many chunks")
    p.add_argument("--kl-base", default=None, metavar="BASE", help="reference model (e.g. the f32 or bf16 file)")
    add_kv_dtype(p)
    add_threads(p)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


# ---------------------------------------------------------------------------- the math
def log_softmax(x):
    import numpy as np

    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def perplexity_chunks(tokens: Sequence[int], ctx: int, bos: int, max_chunks: int | None = None):
    """llama-perplexity's chunking: non-overlapping chunks of `ctx` tokens, the first of each
    replaced by BOS; the scored positions are the second half (logits at first..ctx-2 predict
    tokens first+1..ctx-1, with first = ctx // 2). Yields (chunk_ids, first)."""
    n_chunk = len(tokens) // ctx
    if max_chunks:
        n_chunk = min(n_chunk, max_chunks)
    for i in range(n_chunk):
        chunk = list(tokens[i * ctx:(i + 1) * ctx])
        chunk[0] = bos
        yield chunk, ctx // 2


def ppl_stats(nll) -> dict[str, float]:
    """PPL = exp(mean NLL) with llama-perplexity's error estimate (delta method)."""
    mean = float(nll.mean())
    ppl = math.exp(mean)
    err = float(nll.std(ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else 0.0
    return {"ppl": ppl, "ppl_error": ppl * err, "mean_nll": mean}


def _score(model, base, chunks: list, ctx: int, quiet: bool):
    """Per scored token: the model's NLL and, with `base`, the base's NLL, KL(base || model) and
    whether the top-1 tokens agree. Returns (nll, base_nll, kl, agree) as lists of arrays."""
    import numpy as np
    from tqdm import tqdm

    nll_all, base_nll_all, kl_all, agree_all = [], [], [], []
    bar = tqdm(chunks, desc="perplexity", unit="chunk", file=sys.stderr, disable=quiet, dynamic_ncols=True)
    for chunk, first in bar:
        targets = np.asarray(chunk[first + 1:])
        logits = model.logits(chunk)[first:ctx - 1]
        blogits = base.logits(chunk)[first:ctx - 1] if base is not None else None
        for s in range(0, len(targets), 32):  # rows at a time: the vocabulary can be large
            rows = slice(s, s + 32)
            lp = log_softmax(logits[rows])
            tgt = targets[rows]
            nll_all.append(-lp[np.arange(len(tgt)), tgt])
            if blogits is not None:
                blp = log_softmax(blogits[rows])
                base_nll_all.append(-blp[np.arange(len(tgt)), tgt])
                kl_all.append((np.exp(blp) * (blp - lp)).sum(axis=-1))
                agree_all.append(blp.argmax(axis=-1) == lp.argmax(axis=-1))
        nll_so_far = np.concatenate(nll_all)
        bar.set_postfix(ppl=f"{math.exp(nll_so_far.mean()):.4f}", refresh=False)
    bar.close()
    return nll_all, base_nll_all, kl_all, agree_all


# ---------------------------------------------------------------------------- the command
def main(args, parser) -> int:
    import numpy as np

    pos = args.positionals
    if len(pos) > 2:
        parser.error(f"expected [MODEL] FILE, got {len(pos)} arguments")
    if len(pos) == 1 and pos[0].lower().endswith((".gcpp", ".gguf")):
        parser.error(f"missing FILE after MODEL {pos[0]}")
    model_path, args.file = (pos[0], pos[1]) if len(pos) == 2 else (None, pos[0])
    model = open_model(model_path or default_model(),
                       argparse.Namespace(threads=args.threads, ctx=None, kv_dtype=args.kv_dtype, device=args.device))
    ctx = args.ctx if args.ctx is not None else min(512, model.max_seq_len)
    if ctx > model.max_seq_len:
        # Like `run --ctx`: whether it fits depends on the file, so a runtime error (exit 1).
        raise CLIError(f"--ctx {ctx} exceeds the model's context length ({model.max_seq_len} tokens)")
    if ctx < 4:
        parser.error("--ctx must be at least 4")
    base = None
    if args.kl_base:
        # The reference keeps an exact (f32) cache, whatever --kv-dtype the model uses.
        base = open_model(args.kl_base, argparse.Namespace(threads=args.threads, ctx=None, kv_dtype="f32",
                                                           device=args.device))
        if base.config.vocab_size != model.config.vocab_size:
            raise CLIError(f"--kl-base model has vocabulary {base.config.vocab_size}, the model "
                           f"{model.config.vocab_size}: they must share a tokenizer")
        if ctx > base.max_seq_len:
            raise CLIError(f"--ctx {ctx} exceeds the base model's context length ({base.max_seq_len} tokens)")
    try:
        with open(args.file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise CLIError(f"cannot read {args.file}: {e.strerror or e}") from None
    tokens = model.tokenize(text, add_bos=True)
    if base is not None and base.tokenize(text, add_bos=True) != tokens:
        raise CLIError("--kl-base model tokenizes the text differently: the models must share a tokenizer")
    chunks = list(perplexity_chunks(tokens, ctx, model.tokenizer.bos_id, args.chunks))
    if not chunks:
        raise CLIError(f"{args.file} has {len(tokens)} tokens, fewer than one chunk of --ctx {ctx}; "
                       f"use a smaller --ctx or a longer text")
    t0 = time.perf_counter()
    nll_all, base_nll_all, kl_all, agree_all = _score(model, base, chunks, ctx, args.quiet)
    nll = np.concatenate(nll_all)
    res: dict[str, Any] = {"model": model.path, "file": args.file, "ctx": ctx, "chunks": len(chunks),
                           "tokens": len(tokens), "scored_tokens": int(nll.size)}
    res.update(ppl_stats(nll))
    res["seconds"] = time.perf_counter() - t0
    if base is not None:
        kl = np.concatenate(kl_all)
        agree = np.concatenate(agree_all).astype(np.float64)
        bstats = ppl_stats(np.concatenate(base_nll_all))
        res["base_model"] = base.path
        res["base_ppl"], res["base_ppl_error"] = bstats["ppl"], bstats["ppl_error"]
        res["mean_kld"] = float(kl.mean())
        res["mean_kld_error"] = float(kl.std(ddof=1) / math.sqrt(kl.size)) if kl.size > 1 else 0.0
        res["top1_agreement"] = float(agree.mean())
        res["top1_agreement_error"] = float(math.sqrt(agree.mean() * (1 - agree.mean()) / agree.size))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{len(chunks)} chunks of {ctx} tokens, {res['scored_tokens']} tokens scored")
    print(f"PPL = {res['ppl']:.4f} +/- {res['ppl_error']:.4f}")
    if base is not None:
        print(f"base PPL = {res['base_ppl']:.4f} +/- {res['base_ppl_error']:.4f}")
        print(f"mean KL divergence (base || model) = {res['mean_kld']:.6f} +/- {res['mean_kld_error']:.6f}")
        print(f"top-1 agreement = {100 * res['top1_agreement']:.3f} % +/- "
              f"{100 * res['top1_agreement_error']:.3f} %")
    return 0
