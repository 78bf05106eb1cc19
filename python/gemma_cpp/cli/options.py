"""The argparse pieces the subcommands share: the parser class (usage errors are one line, exit
2), value types, and the option groups (MODEL, threads, context, KV type, sampling). Sampling
values are checked against the shared bounds table (gemma_cpp/params.py)."""

from __future__ import annotations

import argparse

from ..params import DEFAULT_KV_DTYPE, KV_DTYPES


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------------------- argument types
def int_at_least(lo: int, what: str):
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{what} must be >= {lo}, got {v}")
        return v
    return conv


def int_list(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in s.split(",") if x.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {s!r}")
    return vals


def positive_list(s: str) -> tuple[int, ...]:
    vals = int_list(s)
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {s!r}")
    return vals


def param(name: str):
    """An argparse type checked against the shared bounds table (params.py): the same rule and
    message as Model.generate and the server, reported as a usage error (exit 2)."""
    from ..params import BOUNDS, InvalidRequestError, check

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


def unescape(s: str) -> str:
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


positive = int_at_least(1, "value")
nonneg = int_at_least(0, "value")


# ---------------------------------------------------------------------------- option groups
MODEL_HELP = ("a .gcpp file, or a .gguf file (converted once into the cache); default: the demo model, "
              "Gemma 3 270M base (`gemma-cpp info` shows its path)")


def add_model(p) -> None:
    """The optional MODEL positional (chat, bench, info, serve)."""
    p.add_argument("model", nargs="?", metavar="MODEL", help=MODEL_HELP)


def add_threads(p) -> None:
    p.add_argument("-t", "--threads", type=param("n_threads"), default=None,
                   help="compute threads (default: all cores)")


def add_runtime(p, ctx_help="context (KV cache) length; default: the model's") -> None:
    add_threads(p)
    p.add_argument("-c", "--ctx", type=positive, default=None, help=ctx_help)
    add_kv_dtype(p)
    add_device(p)


def _device(s: str) -> str:
    from ..device import parse_device
    from ..params import InvalidRequestError

    try:
        return parse_device(s)
    except InvalidRequestError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device(p) -> None:
    p.add_argument("--device", type=_device, default="cpu",
                   help="where the model runs: cpu (default), cuda or cuda:N (a build with CUDA: docs/cuda.md)")


def add_kv_dtype(p) -> None:
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default=DEFAULT_KV_DTYPE,
                   help=f"KV cache element type (default {DEFAULT_KV_DTYPE}; f16/bf16 halve its memory, int8 takes 28%%)")


def add_sampling(p) -> None:
    from ..params import DEFAULT_MAX_TOKENS

    g = p.add_argument_group("sampling (defaults: greedy)")
    g.add_argument("-n", "--max-new-tokens", type=param("max_new_tokens"), default=DEFAULT_MAX_TOKENS,
                   help=f"most tokens to generate (default {DEFAULT_MAX_TOKENS})")
    g.add_argument("--temperature", "--temp", type=param("temperature"), default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=param("top_k"), default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--top-p", type=param("top_p"), default=1.0, help="nucleus sampling, in (0, 1] (1 = off)")
    g.add_argument("--min-p", type=param("min_p"), default=0.0, help="drop tokens below min_p * p_max, in [0, 1)")
    g.add_argument("--repetition-penalty", "--repeat-penalty", type=param("repetition_penalty"), default=1.0,
                   help="penalise tokens already seen (1 = off)")
    g.add_argument("--presence-penalty", type=param("presence_penalty"), default=0.0,
                   help="subtract from the logit of every token generated so far, in [-2, 2] (0 = off)")
    g.add_argument("--frequency-penalty", type=param("frequency_penalty"), default=0.0,
                   help="subtract this times its count from a generated token's logit, in [-2, 2] (0 = off)")
    g.add_argument("-s", "--seed", type=param("seed"), default=None,
                   help="sampling seed: the same seed gives the same text (default: a fresh random seed)")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", type=unescape,
                   help="stop when TEXT is generated (repeatable; not included in the output; "
                        "\\n, \\t, \\\\ are unescaped)")


def constraint_file(kind: str, flag: str):
    """An argparse type: the text of a --json-schema / --grammar FILE, checked by the constraint
    compiler (structured.py), so a bad file is a usage error naming the flag."""
    def conv(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {e}") from None
        return check_constraint(kind, text, flag)
    return conv


def check_constraint(kind: str, value: str, flag: str) -> str:
    from ..params import InvalidRequestError
    from ..structured import StructuredOutputUnavailable, grammar_of

    try:
        grammar_of(**{kind: value}, names={kind: flag})
    except (InvalidRequestError, StructuredOutputUnavailable) as e:
        msg = str(e)
        raise argparse.ArgumentTypeError(msg[len(flag) + 2:] if msg.startswith(flag + ": ") else msg) from None
    return value


def add_constraints(p) -> None:
    """--json-schema FILE, --grammar FILE, --regex RE: the output must match (docs/structured.md)."""
    g = p.add_argument_group("output constraint (one at most; needs the [structured] extra)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--json-schema", metavar="FILE", type=constraint_file("json_schema", "--json-schema"),
                   default=None, help="the output is JSON valid under the JSON schema in FILE")
    x.add_argument("--grammar", metavar="FILE", type=constraint_file("grammar", "--grammar"), default=None,
                   help="the output matches the grammar in FILE: llguidance's Lark syntax, or llama.cpp's GBNF")
    x.add_argument("--regex", metavar="RE", type=lambda v: check_constraint("regex", v, "--regex"), default=None,
                   help="the whole output matches the regular expression RE")


def add_speculative(p) -> None:
    """--speculative ngram / --draft MODEL, --draft-len, --ngram-min/max (docs/speculative.md)."""
    g = p.add_argument_group("speculative decoding (greedy output unchanged; sampled keeps its distribution)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--speculative", choices=("ngram",), default=None,
                   help="ngram: draft by prompt lookup (copies what followed the last words earlier in the text)")
    x.add_argument("--draft", metavar="MODEL", default=None,
                   help="draft with this smaller model (.gcpp or .gguf) of the same vocabulary")
    g.add_argument("--draft-len", type=param("draft_len"), default=None,
                   help="tokens drafted per step (default 8 with ngram, 4 with --draft)")
    g.add_argument("--ngram-min", type=param("ngram_min"), default=None, help="shortest n-gram looked up (default 2)")
    g.add_argument("--ngram-max", type=param("ngram_max"), default=None, help="longest n-gram looked up (default 4)")


def check_speculative(args, parser) -> None:
    """Usage errors among the speculative flags (the values are checked by their types)."""
    if args.speculative is None and args.draft is None:
        for flag in ("draft_len", "ngram_min", "ngram_max"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} needs --speculative ngram or --draft MODEL")
    elif args.draft is not None and (args.ngram_min is not None or args.ngram_max is not None):
        parser.error("--ngram-min/--ngram-max apply to --speculative ngram, not --draft")
