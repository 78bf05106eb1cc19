"""`gemma-cpp`: run, chat, perplexity, bench, info and serve from the command line.

One module per subcommand (run.py, chat.py, perplexity.py, bench.py, info.py, serve.py), each
with `add_parser(sub)` and `main(args, parser)`; options.py holds the shared flags and value
types, models.py turns a MODEL argument into a Model (a .gguf is converted once into the cache),
common.py the rest they share. This module builds the parser and runs a command.

Exit status: 0 success, 1 runtime error (missing or bad model file, context overflow, ...),
2 usage error (bad arguments), 130 interrupted. Errors are one line on stderr; set
GEMMA_CPP_DEBUG=1 to get tracebacks instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import bench, chat, info, perplexity, run, serve
from .common import PROG, CLIError
from .options import Parser

COMMANDS = (run, chat, perplexity, bench, info, serve)  # in the order `--help` lists them


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    ap = Parser(prog=PROG, description="Run Google's Gemma models fast on CPUs.",
                epilog=f"`{PROG} COMMAND --help` describes each command. Exit status: 0 ok, 1 runtime error, "
                       "2 usage error.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
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
        from ..gcpp_format import FormatError

        if isinstance(e, (CLIError, FormatError, ValueError, OSError, RuntimeError, MemoryError)):
            msg = str(e)
            if isinstance(e, OSError) and e.strerror and e.args[1:] == (e.strerror,):
                msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror  # drop "[Errno N]"
            print(f"{PROG}: error: {msg}", file=sys.stderr)
            return 1
        raise


__all__ = ["build_parser", "main", "CLIError"]
