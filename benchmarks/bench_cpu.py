"""CPU benchmark: our Jukebox prior and VQ-VAE against the old transformers port (4.57.6).

Both sides get the same configuration, dtype (fp32), thread count and random-weight models; every
measurement runs in its own fresh process (``ours_runner.py`` in this interpreter, ``port_runner.py``
in ``benchmarks/.venv-port``, created on first use by ``port_env.py``) so timings and peak RSS are
comparable. Prints a table and appends one JSON line per run to ``benchmarks/results.jsonl``::

    python benchmarks/bench_cpu.py                   # medium config, both sides (a few minutes, 2 cores)
    python benchmarks/bench_cpu.py --sides ours      # our side only (no port environment needed)
    python benchmarks/bench_cpu.py --preset tiny --no-record    # seconds; what the smoke test runs

What is compared (see README.md):

* ``prior_forward``: full-depth prior, teacher-forced over one full window, logits + every layer's
  hidden states (port: forward hooks, the JukeMIR way);
* ``prior_layer``: layer-``k`` activations (ours: build only ``k`` layers; port: build all, slice);
* ``clip_layer``: the same for a clip shorter than the window (port: padded to ``n_ctx``);
* ``vqvae_encode``: top-level codes of ``--seconds`` of audio (port: all three encoders run).
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
    MEASURES,
    append_jsonl,
    git_commit,
    machine_info,
    run_paired,
    run_runner,
)

PRESETS = {
    # head dim 32 and block length 64 (as the real 5b prior); ~1-4 s per prior forward on 2 cores.
    "medium": dict(width=1024, depth=12, heads=8, n_ctx=4096, blocks=64, layer=6, seconds=10.0, repeats=5, warmup=1),
    # The configuration suggested in the task (head dim 16, block length 64); < 1 s per forward.
    "small": dict(width=512, depth=12, heads=8, n_ctx=2048, blocks=32, layer=6, seconds=10.0, repeats=7, warmup=1),
    # For tests: a few seconds in all (mostly interpreter start-up).
    "tiny": dict(width=64, depth=3, heads=2, n_ctx=256, blocks=4, layer=2, seconds=0.5, repeats=1, warmup=1),
}
RESULTS = BENCH_DIR / "results.jsonl"


def runner_args(cfg: dict, measure: str, threads: int, dtype: str) -> list[str]:
    return [
        "--measure",
        measure,
        "--width",
        str(cfg["width"]),
        "--depth",
        str(cfg["depth"]),
        "--heads",
        str(cfg["heads"]),
        "--n-ctx",
        str(cfg["n_ctx"]),
        "--blocks",
        str(cfg["blocks"]),
        "--layer",
        str(cfg["layer"]),
        *(["--clip-tokens", str(cfg["clip_tokens"])] if cfg.get("clip_tokens") else []),
        "--seconds",
        str(cfg["seconds"]),
        "--repeats",
        str(cfg["repeats"]),
        "--warmup",
        str(cfg["warmup"]),
        "--threads",
        str(threads),
        "--dtype",
        dtype,
        "--batch",
        str(cfg.get("batch", 1)),
    ]


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def compare(ours: dict | None, port: dict | None) -> dict:
    """Speed-up (port time / our time) and memory ratios (ours / port) of one measurement."""

    def get(side, key):
        return None if side is None or "error" in side else side.get(key)

    return {
        "speedup": _ratio(get(port, "median_s"), get(ours, "median_s")),
        "speedup_best": _ratio(get(port, "best_s"), get(ours, "best_s")),
        "speedup_cpu_time": _ratio(get(port, "cpu_median_s"), get(ours, "cpu_median_s")),
        "peak_rss_ratio": _ratio(get(ours, "peak_rss_mb"), get(port, "peak_rss_mb")),
        "peak_rss_over_imports_ratio": _ratio(
            get(ours, "peak_rss_over_imports_mb"), get(port, "peak_rss_over_imports_mb")
        ),
    }


def extraction_summary(results: dict[str, dict], cfg: dict) -> dict | None:
    """End-to-end layer-k extraction of one clip (top-level encode + prior up to layer k), ours vs the port,
    in seconds of audio per second of wall time, derived from the `vqvae_encode` and `clip_layer` rows.

    The clip of `clip_layer` covers `clip_tokens` top-level tokens (128 samples each); the encode row's time is
    scaled from its own audio length to the clip's.
    """
    enc, clip = results.get("vqvae_encode"), results.get("clip_layer")
    if not enc or not clip:
        return None
    out: dict = {}
    for side in ("ours", "port"):
        e, c = enc.get(side), clip.get(side)
        if not e or not c or "error" in e or "error" in c or "s_per_audio_second" not in e:
            return None
        tokens = c.get("clip_tokens") or c.get("tokens") or cfg["n_ctx"] * 3445 // 8192
        audio_s = tokens * 128 / 44100
        total = e["s_per_audio_second"] * audio_s + c["median_s"]
        out[side] = {
            "audio_seconds": audio_s,
            "wall_seconds": total,
            "audio_s_per_s": audio_s / total,
            "peak_rss_over_imports_mb": max(e["peak_rss_over_imports_mb"], c["peak_rss_over_imports_mb"]),
        }
    ratio = out["ours"]["audio_s_per_s"] / out["port"]["audio_s_per_s"]
    out["speedup"] = ratio
    out["text"] = (
        f"Layer-{cfg['layer']} extraction of a {out['ours']['audio_seconds']:.2f} s clip (encode + prior): "
        f"ours {out['ours']['audio_s_per_s']:.2f} s of audio per second "
        f"(peak {out['ours']['peak_rss_over_imports_mb']:.0f} MB over imports), "
        f"port {out['port']['audio_s_per_s']:.2f} s/s (peak {out['port']['peak_rss_over_imports_mb']:.0f} MB): "
        f"{ratio:.2f}x"
    )
    return out


def block_params(width: int) -> int:
    """Parameters of one 5b-style block: attention width W/4 (fused qkv + output), MLP width W, 2 LayerNorms."""
    attn = width // 4
    return (width * 3 * attn + 3 * attn) + (attn * width + width) + 2 * (width * width + width) + 4 * width


def useful_flops(cfg: dict, measure: str) -> float | None:
    """Matrix-multiply FLOP a measurement cannot avoid (attention adds well under 1 % at these shapes):
    2 x params x tokens of the blocks it must run, plus the output head where logits are asked for."""
    per_token_block = 2 * block_params(cfg["width"])
    if measure == "prior_forward":
        return cfg["n_ctx"] * (cfg["depth"] * per_token_block + 2 * cfg["width"] * 2048)
    if measure == "prior_layer":
        return cfg["n_ctx"] * cfg["layer"] * per_token_block
    if measure == "clip_layer":
        tokens = cfg.get("clip_tokens") or cfg["n_ctx"] * 3445 // 8192
        return tokens * cfg["layer"] * per_token_block
    return None


def gemm_gflops(cfg: dict, threads: int, dtype: str, repeats: int = 5) -> float:
    """This machine's GEMM rate at the prior's projection shape (n_ctx x width x width), same threads and dtype,
    of the fastest call (the roofline compares it with each side's fastest call)."""
    import torch

    from bench_gpu import matmul_tflops

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return 1e3 * matmul_tflops(
            torch.device("cpu"), getattr(torch, dtype), cfg["n_ctx"], cfg["width"], cfg["width"], repeats, fastest=True
        )
    finally:
        torch.set_num_threads(previous)


def roofline(results: dict[str, dict], cfg: dict, gemm: float) -> dict[str, dict]:
    """Per prior measurement: achieved GFLOP/s of each side (useful FLOP / its fastest call), as a fraction of
    the GEMM rate, and the largest speed-up over the port that ANY implementation doing the useful work at
    the GEMM rate could reach (port fastest call / ideal time)."""
    out = {}
    for measure, row in results.items():
        flops = useful_flops(cfg, measure)
        if flops is None:
            continue
        entry: dict = {"useful_gflop": flops / 1e9, "gemm_gflops": gemm, "ideal_s": flops / (gemm * 1e9)}
        for side in ("ours", "port"):
            res = row.get(side)
            if res and "error" not in res:
                best = res.get("best_s", res["min_s"])
                entry[f"{side}_gflops"] = flops / best / 1e9
                entry[f"{side}_of_gemm"] = entry[f"{side}_gflops"] / gemm
        if "port_gflops" in entry:
            entry["speedup_ceiling"] = gemm / entry["port_gflops"]
        out[measure] = entry
    return out


def format_roofline(lines_for: dict[str, dict]) -> str:
    lines = [
        "| measure | useful work | ours achieved (of GEMM rate) | port achieved (of GEMM rate) "
        "| ceiling of any speed-up over the port |",
        "|---|---|---|---|---|",
    ]
    for measure, e in lines_for.items():

        def cell(side, e=e):
            return (
                f"{e[side + '_gflops']:.0f} GFLOP/s ({e[side + '_of_gemm'] * 100:.0f} %)"
                if side + "_gflops" in e
                else "-"
            )

        ceiling = f"{e['speedup_ceiling']:.2f}x" if "speedup_ceiling" in e else "-"
        lines.append(f"| {measure} | {e['useful_gflop']:.3g} GFLOP | {cell('ours')} | {cell('port')} | {ceiling} |")
    return "\n".join(lines)


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per measurement, ours vs port."""
    header = (
        "| measure | ours median (best) | port median (best) | speed-up (median) | speed-up (best) "
        "| ours peak RSS (over imports) | port peak RSS (over imports) | memory ours/port |"
    )
    lines = [header, "|" + "---|" * 8]
    for measure, row in results.items():
        cells = [measure]
        for side in ("ours", "port"):
            res = row.get(side)
            if res is None:
                cells.append("not run")
            elif "error" in res:
                cells.append("error")
            else:
                extra = ""
                if "s_per_audio_second" in res:
                    extra = f", {res['s_per_audio_second'] * 1e3:.1f} ms/s audio"
                cells.append(f"{_fmt_s(res['median_s'])} ({_fmt_s(res.get('best_s', res['min_s']))}){extra}")
        cmp_ = row["compare"]
        for key in ("speedup", "speedup_best"):
            cells.append("-" if cmp_[key] is None else f"{cmp_[key]:.2f}x")
        for side in ("ours", "port"):
            res = row.get(side)
            ok = res is not None and "error" not in res
            cells.append(f"{_fmt_mb(res['peak_rss_mb'])} ({_fmt_mb(res['peak_rss_over_imports_mb'])})" if ok else "-")
        ratio = cmp_["peak_rss_over_imports_ratio"]
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--sides", default="ours,port", help="comma list of ours, port")
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"comma list of {', '.join(MEASURES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    for key in ("width", "depth", "heads", "n_ctx", "blocks", "layer", "repeats", "warmup", "batch", "clip_tokens"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help="override the preset")
    parser.add_argument("--seconds", type=float, default=None, help="override the preset's audio length")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines file to append to")
    parser.add_argument("--no-record", action="store_true", help="do not append to the results file")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement process")
    parser.add_argument(
        "--paired",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(default) keep one process per side alive and alternate their timed calls, so "
        "both sides see the same load; --no-paired runs the sides one after the other",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every (measure, side) pair this many times, alternating sides, and keep the "
        "round with the lowest median per side (robust to other load on shared machines)",
    )
    args = parser.parse_args(argv)

    cfg = dict(PRESETS[args.preset], batch=1)
    for key in (
        "width",
        "depth",
        "heads",
        "n_ctx",
        "blocks",
        "layer",
        "repeats",
        "warmup",
        "batch",
        "seconds",
        "clip_tokens",
    ):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    for side in sides:
        if side not in ("ours", "port"):
            parser.error(f"--sides: unknown side {side!r} (expected ours, port)")
    for measure in measures:
        if measure not in MEASURES:
            parser.error(f"--measures: unknown measure {measure!r} (expected {', '.join(MEASURES)})")

    pythons = {"ours": sys.executable}
    if "port" in sides:
        from port_env import ensure_port_env

        pythons["port"] = str(ensure_port_env())
    scripts = {"ours": BENCH_DIR / "ours_runner.py", "port": BENCH_DIR / "port_runner.py"}

    print(f"[bench_cpu] preset {args.preset}: {cfg}; threads {args.threads}, {args.dtype}", flush=True)
    gemm = gemm_gflops(cfg, args.threads, args.dtype)
    print(
        f"[bench_cpu] GEMM rate ({cfg['n_ctx']} x {cfg['width']} x {cfg['width']}, {args.threads} threads, "
        f"{args.dtype}): {gemm:.1f} GFLOP/s",
        flush=True,
    )
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    results: dict[str, dict] = {}
    for measure in measures:
        rounds: dict[str, list[dict]] = {side: [] for side in sides}
        pair_ratios: list[float] = []
        argv = runner_args(cfg, measure, args.threads, args.dtype)
        for index in range(max(args.rounds, 1)):
            if args.paired and len(sides) == 2:
                print(f"[bench_cpu] {measure}: ours and port, paired (round {index + 1}/{args.rounds}) ...", flush=True)
                commands = {side: [pythons[side], str(scripts[side]), *argv] for side in sides}
                records, pairs = run_paired(commands, cfg["repeats"], timeout=args.timeout)
                pair_ratios += [p["port"] / p["ours"] for p in pairs if p.get("ours")]
            else:
                records = {}
                for side in sides:
                    print(f"[bench_cpu] {measure} / {side} (round {index + 1}/{args.rounds}) ...", flush=True)
                    records[side] = run_runner(pythons[side], scripts[side], argv, timeout=args.timeout)
            for side in sides:
                res = records[side]
                if "error" in res:
                    print(f"[bench_cpu]   {side} failed: {res['error']}", flush=True)
                else:
                    print(
                        f"[bench_cpu]   {side}: median {_fmt_s(res['median_s'])}, min {_fmt_s(res['min_s'])}, "
                        f"peak RSS {_fmt_mb(res['peak_rss_mb'])}",
                        flush=True,
                    )
                rounds[side].append(res)
        row: dict = {}
        for side, runs in rounds.items():
            good = [r for r in runs if "error" not in r]
            best = min(good, key=lambda r: r["median_s"]) if good else runs[-1]
            if len(runs) > 1:
                best = dict(best, round_medians_s=[r.get("median_s") for r in runs])
            if good:  # fastest single call over all rounds: the least disturbed by other load
                best = dict(best, best_s=min(r["min_s"] for r in good))
            row[side] = best
        row["compare"] = compare(row.get("ours"), row.get("port"))
        if pair_ratios:  # call-by-call ratios of the paired mode replace the ratio of medians
            row["compare"]["speedup"] = statistics.median(pair_ratios)
            row["compare"]["pair_ratios"] = pair_ratios
        row["compare"]["paired"] = bool(pair_ratios)
        results[measure] = row

    print()
    print(format_table(results))
    lines = roofline(results, cfg, gemm)
    if lines:
        print()
        print(
            f"Roofline: useful matrix-multiply work of each prior measurement against this machine's GEMM rate "
            f"({gemm:.1f} GFLOP/s), fastest calls:"
        )
        print(format_roofline(lines))
    summary = extraction_summary(results, cfg)
    if summary:
        print()
        print(summary["text"])
    record = {
        "benchmark": "bench_cpu",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "preset": args.preset,
        "config": cfg,
        "threads": args.threads,
        "dtype": args.dtype,
        "rounds": args.rounds,
        "paired": args.paired,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": results,
        "gemm_gflops": gemm,
        "roofline": lines,
        "extraction_summary": {k: v for k, v in (summary or {}).items() if k != "text"},
    }
    if not args.no_record:
        append_jsonl(args.results, record)
        print(f"\n[bench_cpu] appended to {args.results}")
    return 1 if any("error" in r.get(s, {}) for r in results.values() for s in sides) else 0


if __name__ == "__main__":
    sys.exit(main())
