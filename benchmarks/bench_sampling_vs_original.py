"""Sampling speed (tokens/s) of our sampler against the ORIGINAL Jukebox sampling code, side by side.

Both sides sample from the SAME original-format checkpoint (the parity fixtures: the fixture-size top prior
`tests/fixtures/prior_5b_top` and bottom upsampler `tests/fixtures/upsampler_level_0`, width 64, 6 layers,
n_ctx 256): ours through our converter and the public `sample_prior` (`ours_sampling_runner.py`, main
environment; `--compile` adds `sample_prior(..., compile=True)` when our package offers it), the original
through its own `make_prior` / `SimplePrior.sample` with its KV cache (`orig_runner.py`, in
`benchmarks/.venv-orig` with the PyPI package `jukebox-infer`, created on first use by `orig_env.py`).

Same labels, prompt, upper-level codes (random, seeded, built by `_common.sampling_inputs` on both sides),
temperature, top-k/top-p, number of new tokens and batch size; one thread (`--threads`). Per (prior, batch),
one process per side lives side by side and their timed calls alternate (A B, B A, ...: `_common.run_paired`,
as `bench_cpu.py --paired`); each call is one whole window (conditioning + prompt + new tokens); tokens/s =
batch x new tokens / median call, by wall time and by process CPU time (one thread: the CPU time is what a
call costs without the load of other processes); the ratios are original / ours: the median of the
call-by-call wall-time ratios, and the ratio of the CPU-time medians.

Cross-check (cheap, `--no-check` to skip): with top-k 1 (greedy) both sides must return the same codes from
the same checkpoint and inputs, ancestral and primed; reported as equal / NOT EQUAL (and the exit status).
The timed calls also compare their seeded draws (the original seeds the global RNG, ours a generator, with
the same seed): "same codes as the original (seeded)" is informational, equal only while both sides draw
in the same way.

    python benchmarks/orig_env.py                           # once: ~1 min, needs the package registry
    python benchmarks/bench_sampling_vs_original.py         # both priors, batch 1 and 4, one thread (~2 min)
    python benchmarks/bench_sampling_vs_original.py --priors top --batches 1 --tokens 32 --repeats 2 --no-record

Prints a table and appends one JSON line to `benchmarks/results.jsonl` (`--no-record` to skip).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    SAMPLING_CHECKPOINTS,
    append_jsonl,
    git_commit,
    machine_info,
    run_paired,
    run_runner,
)

RESULTS = BENCH_DIR / "results.jsonl"
SCRIPTS = {
    "ours": BENCH_DIR / "ours_sampling_runner.py",
    "ours_compiled": BENCH_DIR / "ours_sampling_runner.py",
    "orig": BENCH_DIR / "orig_runner.py",
}
LABELS = {"ours": "ours eager", "ours_compiled": "ours compiled", "orig": "original"}


def runner_args(args: argparse.Namespace, prior: str, batch: int, **override) -> list[str]:
    values = dict(
        prior=prior,
        batch=batch,
        prime=args.prime,
        tokens=args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        chunk_size=args.chunk_size,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
    )
    values.update(override)
    argv: list[str] = []
    for key, value in values.items():
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def side_command(side: str, pythons: dict[str, str], argv: list[str]) -> list[str]:
    return [pythons[side], str(SCRIPTS[side]), *argv, *(["--compile"] if side == "ours_compiled" else [])]


def compile_status() -> str | None:
    """None when our package offers a compiled decode step, else why not (the runner's own message)."""
    from ours_sampling_runner import COMPILE_NOT_AVAILABLE, compile_supported

    return None if compile_supported() else COMPILE_NOT_AVAILABLE


def cross_check(args: argparse.Namespace, pythons: dict[str, str], prior: str, batch: int) -> list[dict]:
    """Greedy (top-k 1) codes of ours and the original, ancestral and primed: equal or not."""
    cases = [
        ("ancestral", dict(prime=0, tokens=args.check_tokens)),
        ("primed", dict(prime=args.check_prime, tokens=args.check_tokens)),
    ]
    out = []
    for name, override in cases:
        argv = runner_args(args, prior, batch, top_k=1, top_p=0.0, repeats=1, warmup=0, **override)
        records = {
            side: run_runner(pythons[side], SCRIPTS[side], [*argv, "--return-codes"], timeout=args.timeout)
            for side in ("ours", "orig")
        }
        errors = {side: r["error"] for side, r in records.items() if "error" in r}
        entry = {"prior": prior, "case": name, "batch": batch, **override}
        if errors:
            entry.update(equal=None, errors=errors)
        else:
            ours, orig = records["ours"]["codes"], records["orig"]["codes"]
            mismatches = sum(a != b for row_a, row_b in zip(ours, orig) for a, b in zip(row_a, row_b))
            entry.update(
                equal=ours == orig,
                mismatching_codes=mismatches,
                codes_sha256=records["ours"]["codes_sha256"],
                distinct_codes=records["ours"]["output"]["distinct_codes"],
                shape=records["ours"]["output"]["codes"],
            )
        out.append(entry)
        status = "equal" if entry["equal"] else ("ERROR" if entry["equal"] is None else "NOT EQUAL")
        print(
            f"[bench_sampling_vs_original] greedy cross-check {prior} {name} batch {batch}: {status}"
            + (
                f" ({entry['shape']}, {entry['distinct_codes']} distinct codes)"
                if entry["equal"] is not None
                else f": {errors}"
            ),
            flush=True,
        )
    return out


def measure(args: argparse.Namespace, pythons: dict[str, str], sides: list[str], prior: str, batch: int) -> dict:
    argv = runner_args(args, prior, batch)
    commands = {side: side_command(side, pythons, argv) for side in sides}
    print(f"[bench_sampling_vs_original] {prior} batch {batch}: {', '.join(sides)} paired ...", flush=True)
    records, pairs = run_paired(commands, args.repeats, timeout=args.timeout)
    row: dict = {"prior": prior, "batch": batch, "sides": records}
    for side, res in records.items():
        if "error" in res:
            print(f"[bench_sampling_vs_original]   {side} failed: {res['error']}", flush=True)
        else:
            print(
                f"[bench_sampling_vs_original]   {side}: {res['tokens_per_s']:.0f} tokens/s "
                f"(median {res['median_s'] * 1e3:.0f} ms per call of {res['config']['tokens']} tokens)",
                flush=True,
            )
    if "orig" in records:
        for side in sides:
            if side == "orig":
                continue
            ratios = [p["orig"] / p[side] for p in pairs if p.get(side) and p.get("orig")]
            if ratios:
                row[f"{side}_over_orig"] = statistics.median(ratios)
                row[f"{side}_over_orig_pairs"] = ratios
            ours, orig = records[side], records["orig"]
            if "error" not in ours and "error" not in orig:
                row[f"{side}_over_orig_cpu"] = orig["cpu_median_s"] / ours["cpu_median_s"]
                # same seed on both sides: equal codes when both draw the same way (informational, see README)
                row[f"{side}_same_codes_as_orig"] = ours["codes_sha256"] == orig["codes_sha256"]
    return row


def format_table(rows: list[dict], sides: list[str], compile_note: str | None) -> str:
    """One row per (prior, batch): tokens/s of each side (wall median / CPU-time median), ours / original."""
    cols = [s for s in ("ours", "ours_compiled", "orig") if s in sides or (s == "ours_compiled" and compile_note)]
    header = ["prior", "batch", "new tokens"] + [f"{LABELS[s]} tok/s (wall / CPU)" for s in cols]
    ratio_cols = [s for s in ("ours", "ours_compiled") if s in cols and "orig" in sides]
    header += [f"{LABELS[s]} / original (paired wall / CPU)" for s in ratio_cols]
    if ratio_cols:
        header.append("same codes as the original (seeded)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        tokens = next((r["config"]["tokens"] for r in row["sides"].values() if "config" in r), "-")
        cells = [row["prior"], str(row["batch"]), str(tokens)]
        for side in cols:
            res = row["sides"].get(side)
            if res is None:
                cells.append("not available" if side == "ours_compiled" else "not run")
            elif "error" in res:
                cells.append("error")
            else:
                cells.append(f"{res['tokens_per_s']:.0f} / {res.get('tokens_per_s_cpu', float('nan')):.0f}")
        for side in ratio_cols:
            wall, cpu = row.get(f"{side}_over_orig"), row.get(f"{side}_over_orig_cpu")
            if side not in row["sides"]:
                cells.append("not available")
            else:
                cells.append("-" if wall is None or cpu is None else f"{wall:.2f}x / {cpu:.2f}x")
        if ratio_cols:
            same = [row.get(f"{side}_same_codes_as_orig") for side in ratio_cols if side in row["sides"]]
            cells.append("-" if None in same or not same else ("yes" if all(same) else "no"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--priors", nargs="+", choices=sorted(SAMPLING_CHECKPOINTS), default=["top", "upsampler"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--sides", default="ours,orig", help="comma list of ours, orig")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(default) add our compiled decode step as a third side when sample_prior offers it",
    )
    parser.add_argument("--prime", type=int, default=0, help="prompt tokens (0: ancestral, the default)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per call (default: the whole window)")
    parser.add_argument("--temperature", type=float, default=0.99)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.0)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side (alternating)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(default) the greedy cross-check, ours vs the original",
    )
    parser.add_argument("--check-tokens", type=int, default=64, help="new tokens of the cross-check")
    parser.add_argument("--check-prime", type=int, default=48, help="prompt of the primed cross-check")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per runner process")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for side in sides:
        if side not in ("ours", "orig"):
            parser.error(f"--sides: unknown side {side!r} (expected ours, orig)")
    pythons = {"ours": sys.executable, "ours_compiled": sys.executable}
    if "orig" in sides:
        from orig_env import ensure_orig_env

        pythons["orig"] = str(ensure_orig_env())
    compile_note = None
    if args.compile and "ours" in sides:
        compile_note = compile_status()
        if compile_note is None:
            sides = ["ours", "ours_compiled", *[s for s in sides if s != "ours"]]
        else:
            print(f"[bench_sampling_vs_original] ours compiled: {compile_note}", flush=True)

    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    checks: list[dict] = []
    if args.check and "ours" in sides and "orig" in sides:
        for prior in args.priors:
            checks += cross_check(args, pythons, prior, max(args.batches))
    rows = [measure(args, pythons, sides, prior, batch) for prior in args.priors for batch in args.batches]

    print()
    print(
        f"Sampling, CPU, {args.threads} thread(s), fp32, temperature {args.temperature}, top-k {args.top_k}, "
        f"top-p {args.top_p}, prompt {args.prime} tokens; tokens/s = batch x new tokens / median call "
        f"({args.repeats} paired calls per side):"
    )
    print(format_table(rows, sides, compile_note))
    if checks:
        print()
        for c in checks:
            status = (
                "equal"
                if c["equal"]
                else ("error" if c["equal"] is None else f"NOT EQUAL ({c['mismatching_codes']} codes differ)")
            )
            print(
                f"greedy (top-k 1) cross-check, {c['prior']} {c['case']} (prompt {c['prime']}, {c['tokens']} new, "
                f"batch {c['batch']}): {status}"
            )
    record = {
        "benchmark": "sampling_vs_original",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "threads": args.threads,
        "settings": {
            k: getattr(args, k)
            for k in ("prime", "tokens", "temperature", "top_k", "top_p", "chunk_size", "repeats", "warmup", "seed")
        },
        "compiled": compile_note or "measured",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rows": rows,
        "cross_check": checks,
    }
    if not args.no_record:
        append_jsonl(args.results, record)
        print(f"\n[bench_sampling_vs_original] appended to {args.results}")
    failed = any("error" in r for row in rows for r in row["sides"].values())
    failed |= any(c["equal"] is not True for c in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
