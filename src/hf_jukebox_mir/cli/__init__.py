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
import os
import sys
import traceback

# sub-command modules, in the order they appear in `--help`
COMMANDS = [
    "demo",
    "convert",
    "extract",
    "probe",
    "sample",
    "card",
    "push",
    "verify",
]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jukebox-mir",
        description="OpenAI Jukebox for music information retrieval (hf-jukebox-mir).",
        epilog="Errors you can fix are printed as one paragraph; add --debug (anywhere) to see their traceback.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hf_jukebox_mir.cli.{name}").add_parser(sub)
    return parser


#: exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130


def _user_error(err: BaseException) -> str | None:
    """The one-paragraph message of an error the user can cause and fix, else None (a bug: show the traceback)."""
    if isinstance(err, ValueError):  # our errors subclass ValueError and carry their fix
        return str(err)
    if isinstance(err, PermissionError):
        return (
            f"{err.strerror}: '{err.filename}'. Check the permissions of that path, or choose another one "
            "(e.g. another --output)."
        )
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        where = f" ('{err.filename}')" if err.filename else ""
        return (
            f"{err.strerror}{where}. Fix the cause (disk space, a path, a mount) and run the same command again; "
            "finished work is kept."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("JUKEBOX_MIR_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = get_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(
            f"\njukebox-mir {args.command}: interrupted. Finished work is kept: run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - user errors as one paragraph, bugs with their traceback
        message = _user_error(err)
        if message is None or debug:
            traceback.print_exc()
        if message is None:
            raise
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"jukebox-mir {args.command}: error: {message}{hint}", file=sys.stderr)
        return 1
    return int(result or 0)
