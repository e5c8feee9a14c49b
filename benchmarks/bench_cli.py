"""Wall time of the `jukebox-mir` CLI where it should answer at once: `--help`, a command's `--help`, an argument
error. Each case runs once to warm the caches (bytecode, page cache), then `--runs` times; the table gives the
median, min and max wall time in seconds.

    python benchmarks/bench_cli.py --runs 10

The CLI runs as `python -m hf_jukebox_mir.cli` with this interpreter, so it measures the checkout on
`sys.path` (set PYTHONPATH=src to measure a work tree other than the installed one).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "--help": ["--help"],
    "convert --help": ["convert", "--help"],
    "argument error (convert --bogus)": ["convert", "--bogus"],
    "argument error (extract, no input)": ["extract"],
}


def time_case(argv: list[str], runs: int) -> list[float]:
    command = [sys.executable, "-m", "hf_jukebox_mir.cli", *argv]
    subprocess.run(command, capture_output=True, check=False)  # warm-up: the "first run"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per case (default 10)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    print("| case | median s | min s | max s | runs |\n|---|---|---|---|---|")
    for name, case in CASES.items():
        times = time_case(case, args.runs)
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | {args.runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
