"""`jukebox-mir verify DIR`: recompute the SHA-256 of every file of a converted folder against its audit."""

from __future__ import annotations

import argparse

#: exit status when a file differs from conversion_audit.json
EXIT_MISMATCH = 4


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `verify` sub-command."""
    parser = subparsers.add_parser(
        "verify",
        help="check a converted folder's files against the SHA-256 sums of its conversion_audit.json",
        description=(
            "Recompute the SHA-256 and size of every file listed in DIR/conversion_audit.json and report each "
            f"missing, resized or changed one (exit status {EXIT_MISMATCH}). Files the audit does not list (a "
            "README.md written later by `jukebox-mir card`) are named but not errors."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="a folder written by `jukebox-mir convert`")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..conversion.audit import verify_folder

    report = verify_folder(args.folder)
    for note in report.notes:
        print(f"  not in the audit (not checked): {note}")
    if report.problems:
        print(f"{args.folder}: {len(report.problems)} of {report.checked} file(s) differ from conversion_audit.json:")
        for problem in report.problems:
            print(f"  {problem}")
        print("The folder was changed or damaged after conversion; copy or convert it again.")
        return EXIT_MISMATCH
    print(f"{args.folder}: all {report.checked} files match conversion_audit.json.")
    return 0


__all__ = ["EXIT_MISMATCH", "add_parser", "run"]
