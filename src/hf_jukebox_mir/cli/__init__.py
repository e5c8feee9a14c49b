"""The `jukebox-mir` command line: thin wrappers over library functions.

Each sub-command lives in `hf_jukebox_mir/cli/<name>.py` and exposes `add_parser(subparsers)` (which sets
`func` on its parser): argument parsing and checks, then one library call. Those modules import only the
standard library and `models/errors.py` at module level; torch, transformers and datasets are imported inside
the command functions, so `--help` and argument errors answer in a fraction of a second
(`benchmarks/bench_cli.py` measures it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command modules, in the order they appear in `--help`
COMMANDS = [
    "demo",
    "convert",
    "extract",
    "probe",
    "sample",
    "card",
    "push",
]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jukebox-mir",
        description="OpenAI Jukebox for music information retrieval (hf-jukebox-mir).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hf_jukebox_mir.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except ValueError as err:  # our errors subclass ValueError: print them without a traceback
        print(f"jukebox-mir {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)
