"""Shared helpers of the benchmark runners (standard library + torch only).

``port_runner.py`` (run inside ``benchmarks/.venv-port`` with transformers 4.57.6), ``orig_runner.py``
(inside ``benchmarks/.venv-orig`` with the original Jukebox code) and ``ours_runner.py`` /
``ours_sampling_runner.py`` (run in the main environment) import this file, so it must not import
``transformers``, ``hf_jukebox_mir`` or ``jukebox_infer``. Each runner process performs ONE measurement and
prints ONE JSON object on its last stdout line; the drivers (``bench_cpu.py``,
``bench_sampling_vs_original.py``) start a fresh process per measurement so that peak-memory figures are
comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

MEASURES = ("prior_forward", "prior_layer", "clip_layer", "vqvae_encode")
SAMPLING_RATE = 44100
TOP_HOP = 128  # raw samples per top-level token (8 * 4 * 4)
# JukeMIR conditioning: 62 s total length (above the 5b prior's 60 s minimum), offset 0,
# artist 0 and genre 0 ("unknown"), remaining genre slots empty (-1).
TOTAL_LENGTH = 62 * SAMPLING_RATE // TOP_HOP * TOP_HOP


def metadata_row(n_ctx: int) -> list[int]:
    """5b-style label row ``[total_length, offset, sample_length, artist, genre x 5]``."""
    return [TOTAL_LENGTH, 0, n_ctx * TOP_HOP, 0, 0, -1, -1, -1, -1]


def audio_samples(seconds: float) -> int:
    """Number of 44.1 kHz samples for ``seconds``, rounded down to whole top-level tokens."""
    return int(seconds * SAMPLING_RATE) // TOP_HOP * TOP_HOP


def rss_now_mb() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_peak_mb() -> float:
    """High-water mark of this process's resident set size in MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by both runners (same names, same defaults)."""
    parser.add_argument("--measure", choices=MEASURES, required=True)
    parser.add_argument("--width", type=int, default=512, help="prior hidden size")
    parser.add_argument("--depth", type=int, default=12, help="prior number of layers")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=2048, help="tokens per window")
    parser.add_argument("--blocks", type=int, default=32, help="n_ctx // blocks = block length")
    parser.add_argument("--layer", type=int, default=6, help="layer to extract (prior_layer, clip_layer)")
    parser.add_argument(
        "--clip-tokens",
        type=int,
        default=None,
        help="clip_layer: codes of the clip (default: a 10 s clip in a 23.8 s window, scaled "
        "to n_ctx, i.e. n_ctx * 3445 // 8192)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (vqvae_encode)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="timed calls driven from stdin (bench_cpu.py --paired); --repeats is ignored",
    )


# ---------------------------------------------------------------------------------------------- sampling
# Sampling side by side with the original code (bench_sampling_vs_original.py): both runners (ours_sampling_runner.py
# here, orig_runner.py in benchmarks/.venv-orig) load the SAME original-format checkpoint and build the same inputs
# with the helpers below (seeded torch generators: identical on both sides, which run the same torch build).
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SAMPLING_CHECKPOINTS = {  # prior kind -> original-format checkpoint (hps inside, hps.json beside it)
    "top": FIXTURES / "prior_5b_top" / "prior_level_2.pth.tar",
    "upsampler": FIXTURES / "upsampler_level_0" / "prior_level_0.pth.tar",
}
LEVEL_HOP = {0: 8, 1: 32, 2: 128}  # raw samples per token of each level (5b VQ-VAE)
UPPER_FACTOR = 4  # tokens of a level per token of the level above (downs_t 2, stride 2 at levels 1 and 2)


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the two sampling runners (same names, same defaults)."""
    parser.add_argument("--prior", choices=sorted(SAMPLING_CHECKPOINTS), default="top")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="original-format prior checkpoint (default: the fixture of --prior)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prime", type=int, default=0, help="prompt tokens (0 = ancestral sampling)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per call (default: fill the window)")
    parser.add_argument("--temperature", type=float, default=0.99)
    parser.add_argument("--top-k", type=int, default=0, help="1 = greedy (the cross-check)")
    parser.add_argument("--top-p", type=float, default=0.0)
    parser.add_argument("--chunk-size", type=int, default=32, help="prefill chunk of the prompt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--return-codes", action="store_true", help="put the sampled codes in the JSON line")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="timed calls driven from stdin (bench_sampling_vs_original.py); --repeats is ignored",
    )


def sampling_inputs(args: argparse.Namespace, level: int, n_ctx: int, max_genres: int = 5) -> dict[str, Any]:
    """Labels, prompt and upper-level codes of one sampling call, identical on both sides.

    Labels (5b layout, no lyrics): a 62 s song, this window at offset 0 and of this level's length, artist 10,
    genre 1 (other genre slots -1). Prompt: random codes of this level; upper-level codes (upsamplers): random
    codes covering the window (``n_ctx // 4``).
    """
    import torch

    tokens = args.tokens if args.tokens is not None else n_ctx - args.prime
    if args.prime < 0 or tokens < 1 or args.prime + tokens > n_ctx:
        raise SystemExit(f"--prime {args.prime} + --tokens {tokens} must fit one window of {n_ctx} tokens")
    generator = torch.Generator().manual_seed(args.seed + 1)
    row = [TOTAL_LENGTH, 0, n_ctx * LEVEL_HOP[level], 10, 1] + [-1] * (max_genres - 1)
    labels = torch.tensor([row] * args.batch, dtype=torch.long)
    prime = torch.randint(0, 2048, (args.batch, args.prime), generator=generator)
    upper = torch.randint(0, 2048, (args.batch, n_ctx // UPPER_FACTOR), generator=generator) if level < 2 else None
    return {"labels": labels, "prime": prime, "upper": upper, "tokens": tokens}


def sampling_record(
    args: argparse.Namespace,
    *,
    side: str,
    impl: str,
    torch_version: str,
    threads: int,
    import_s: float,
    level: int,
    n_ctx: int,
    tokens: int,
) -> dict[str, Any]:
    """The fields both sampling runners' JSON lines start with (same keys on both sides)."""
    return {
        "side": side,
        "measure": "sample",
        "impl": impl,
        "torch": torch_version,
        "threads": threads,
        "dtype": "float32",
        "device": "cpu",
        "repeats": args.repeats,
        "serve": args.serve,
        "warmup": args.warmup,
        "import_s": import_s,
        "rss_imports_mb": rss_now_mb(),
        "config": {
            "prior": args.prior,
            "checkpoint": str(args.checkpoint or SAMPLING_CHECKPOINTS[args.prior]),
            "level": level,
            "n_ctx": n_ctx,
            "batch": args.batch,
            "prime": args.prime,
            "tokens": tokens,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "chunk_size": args.chunk_size,
            "seed": args.seed,
        },
    }


def finish_sampling_record(
    record: dict[str, Any], times: list[float], cpu_times: list[float], codes, return_codes: bool = False
) -> None:
    """Timing summary, tokens/s (new tokens x batch / median call) and the codes' digest into ``record``."""
    import hashlib

    record.update(summarize(times, cpu_times))
    config = record["config"]
    record["tokens_per_s"] = config["batch"] * config["tokens"] / record["median_s"]
    record["tokens_per_s_best"] = config["batch"] * config["tokens"] / record["min_s"]
    if cpu_times:  # process CPU time: with one thread, what a call costs without other processes' load
        record["tokens_per_s_cpu"] = config["batch"] * config["tokens"] / record["cpu_median_s"]
    codes = codes.detach().to("cpu").long().contiguous()
    record["output"] = {"codes": list(codes.shape), "distinct_codes": int(codes.unique().numel())}
    record["codes_sha256"] = hashlib.sha256(codes.numpy().tobytes()).hexdigest()
    if return_codes:
        record["codes"] = codes.tolist()
    record["peak_rss_mb"] = rss_peak_mb()


def clip_tokens(args: argparse.Namespace) -> int:
    """Tokens of the short clip of ``clip_layer`` (<= n_ctx)."""
    tokens = args.clip_tokens if args.clip_tokens is not None else args.n_ctx * 3445 // 8192
    if not 1 <= tokens <= args.n_ctx:
        raise SystemExit(f"--clip-tokens must be in 1..{args.n_ctx} (n_ctx), got {tokens}")
    return tokens


def prior_config_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "width": args.width,
        "depth": args.depth,
        "heads": args.heads,
        "n_ctx": args.n_ctx,
        "blocks": args.blocks,
        "attention_pattern": "raw_column_previous_row_attention",
        "metadata": "5b top prior (v2 labels, 128 timing bins, 60-600 s)",
        "batch": args.batch,
    }


def base_record(
    args: argparse.Namespace,
    *,
    side: str,
    impl: str,
    torch_version: str,
    transformers_version: str,
    threads: int,
    import_s: float,
) -> dict[str, Any]:
    """The fields every runner's JSON line starts with (same keys on both sides)."""
    return {
        "side": side,
        "measure": args.measure,
        "impl": impl,
        "torch": torch_version,
        "transformers": transformers_version,
        "threads": threads,
        "dtype": args.dtype,
        "device": args.device,
        "repeats": args.repeats,
        "serve": args.serve,
        "warmup": args.warmup,
        "import_s": import_s,
        "rss_imports_mb": rss_now_mb(),
        "config": prior_config_dict(args),
    }


def time_callable(
    fn: Callable[[], Any],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] | None = None,
    serve: bool = False,
) -> tuple[list[float], Any, list[float]]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns (wall seconds per call, last result, process CPU seconds per call). CPU time (all threads)
    is less sensitive than wall time to other processes sharing the cores.

    With ``serve=True`` (``--serve``, used by ``bench_cpu.py --paired``) the timed calls are driven
    from stdin instead: after the warm-up the process prints ``{"ready": true}``, then runs one timed
    call per ``run`` line (answering ``{"call": i, "t": ..., "cpu": ...}``) until a ``done`` line. The
    driver alternates the two sides call by call, so both see the same load from other processes.
    """
    result = None
    for _ in range(warmup):
        result = fn()
        if sync is not None:
            sync()
    times: list[float] = []
    cpu_times: list[float] = []

    def one_call() -> None:
        nonlocal result
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)

    if not serve:
        for _ in range(repeats):
            one_call()
        return times, result, cpu_times
    emit({"ready": True})
    for line in sys.stdin:
        command = line.strip()
        if command == "done":
            break
        if command == "run":
            one_call()
            emit({"call": len(times) - 1, "t": times[-1], "cpu": cpu_times[-1]})
    if not times:
        raise SystemExit("--serve: no timed call was requested before 'done'")
    return times, result, cpu_times


def summarize(times: list[float], cpu_times: list[float] | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": list(times),
    }
    if cpu_times:
        summary["cpu_median_s"] = statistics.median(cpu_times)
        summary["cpu_times_s"] = list(cpu_times)
    try:
        summary["load_average"] = os.getloadavg()[0]
    except (AttributeError, OSError):
        pass
    return summary


def emit(record: dict[str, Any]) -> None:
    """Print ``record`` as one JSON line (the last line of stdout is the result)."""
    sys.stdout.flush()
    print(json.dumps(record, sort_keys=True), flush=True)


def parse_last_json(stdout: str) -> dict[str, Any]:
    """The JSON object printed last by a runner (earlier lines may be library chatter)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise ValueError(f"no JSON result line in runner output:\n{stdout[-2000:]}")


def run_runner(
    python: str | os.PathLike, script: Path, args: list[str], timeout: float | None = None
) -> dict[str, Any]:
    """Run ``script`` with ``python`` in a fresh process and return its JSON result.

    A failing runner yields ``{"error": ...}`` instead of raising, so one broken side does not stop a
    table.
    """
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [str(python), str(script), *args]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s: {' '.join(cmd)}"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"error": f"exit {proc.returncode}: " + "\n".join(tail)}
    try:
        return parse_last_json(proc.stdout)
    except ValueError as exc:
        return {"error": str(exc)}


def _read_json_line(proc: subprocess.Popen, key: str) -> dict[str, Any]:
    """Next JSON line of ``proc``'s stdout that has ``key`` (other lines are library chatter)."""
    for line in proc.stdout:  # type: ignore[union-attr]
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            obj = json.loads(line)
            if key in obj:
                return obj
    raise RuntimeError("the runner exited early")


def run_paired(
    commands: dict[str, list[str]], calls: int, timeout: float | None = None
) -> tuple[dict[str, dict[str, Any]], list[dict[str, float]]]:
    """Run the runners of ``commands`` (side -> argv, without ``--serve``) side by side in ``--serve``
    mode and alternate their timed calls: A B, B A, A B, ... so that both sides see the same load.

    Returns (side -> final JSON record or ``{"error": ...}``, one ``{side: seconds}`` dict per pair).
    """
    import tempfile
    import threading

    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    procs: dict[str, subprocess.Popen] = {}
    errlogs = {}
    records: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, float]] = []
    for side, argv in commands.items():
        errlogs[side] = tempfile.TemporaryFile(mode="w+")
        procs[side] = subprocess.Popen(
            [*argv, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlogs[side],
            text=True,
            bufsize=1,
            env=env,
        )
    timer = None
    if timeout:
        timer = threading.Timer(timeout, lambda: [p.kill() for p in procs.values() if p.poll() is None])
        timer.start()
    current = None
    try:
        for side, proc in procs.items():
            current = side
            _read_json_line(proc, "ready")
        order = list(procs)
        for index in range(calls):
            pair = {}
            for side in order if index % 2 == 0 else order[::-1]:
                current = side
                procs[side].stdin.write("run\n")  # type: ignore[union-attr]
                procs[side].stdin.flush()  # type: ignore[union-attr]
                pair[side] = _read_json_line(procs[side], "call")["t"]
            pairs.append(pair)
        for side, proc in procs.items():
            current = side
            out, _ = proc.communicate("done\n", timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"exit {proc.returncode}")
            records[side] = parse_last_json(out)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        errlog = errlogs[current]
        errlog.seek(0)
        tail = "\n".join(errlog.read().strip().splitlines()[-15:])
        records = {side: records.get(side, {"error": "stopped: the other side failed"}) for side in procs}
        records[current] = {"error": f"{exc}: {tail}"}
    finally:
        if timer is not None:
            timer.cancel()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for errlog in errlogs.values():
            errlog.close()
    return records, pairs


def machine_info() -> dict[str, Any]:
    """CPU model, core count and OS of this machine (for the results file)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO_ROOT, capture_output=True, text=True
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
