"""Real size on CPU: convert, load and run full-size Jukebox checkpoints under a resident-memory watchdog.

Writes full-size random checkpoints in OpenAI's LEGACY file format (torch < 1.6, as released in 2020) from the
full-size inventory that the tests ship (`tests/fixtures/full_size_inventory.json`: every real key, shape and
dtype; the 5b top prior is 10.3 GB with float16 Conv1D weights), one tensor at a time, then runs each step in its
own process and records its peak resident memory (`ru_maxrss` of that process) and wall time:

| step | what |
|---|---|
| `write` | the legacy checkpoints (vqvae, prior_5b_level_2, upsampler_level_0) |
| `startup` | `python -c "import hf_jukebox_mir.cli.convert, ..."`: interpreter, torch, transformers, once a command |
| `copy:<x>` | a plain sequential read of the source file(s) + write of as many bytes as conversion `<x>` writes |
| `convert:mir36-bf16` | `jukebox-mir convert --vqvae --prior --num-layers 36 --dtype bfloat16` (JukeMIR folder) |
| `convert:prior72-fp32` | the whole 72-layer top prior, float32 (20 GB of output) |
| `convert:upsampler0-fp32` / `convert:vqvae` | the bottom upsampler, the VQ-VAE |
| `load:bf16` | `from_pretrained(mir folder, num_hidden_layers=36, dtype=torch.bfloat16)` |
| `extract:bf16` | the same load, then a 5 s clip through the 36 bfloat16 blocks |
| `extract:auto` | `from_pretrained(mir folder)` (compute dtype chosen for this CPU), a 5 s clip, one 23.8 s window |

Before every copy and conversion run, pending writes are flushed and the sources are evicted from the page cache
(`--cache cold`, the default: a first conversion after a download; reading them is part of the work) or read into
it (`--cache warm`); copy and conversion run in pairs (`--repeat N` pairs, medians reported), so both see the same
machine. A watchdog kills a step whose resident memory passes `--rss-limit-gb` (default 8). Needs ~45 GB of free disk
(`--keep` keeps the files). Opt-in: it takes 20-40 minutes on 2 cores.

    python benchmarks/bench_real_size.py --workdir /tmp/jukebox-real-size
    python benchmarks/bench_real_size.py --workdir /tmp/jrs --steps write convert:mir36-bf16 load:bf16

Prints a table and appends one JSON line to `benchmarks/results.jsonl` (`--no-record` to skip).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, append_jsonl, git_commit, machine_info  # noqa: E402

REPO = BENCH_DIR.parent
INVENTORY = REPO / "tests" / "fixtures" / "full_size_inventory.json"
FILES = {
    "vqvae": "vqvae.pth.tar",
    "prior_5b_level_2": "prior_level_2.pth.tar",
    "upsampler_level_0": "prior_level_0.pth.tar",
}
STEPS = [
    "write",
    "startup",
    "copy:mir36-bf16",
    "convert:mir36-bf16",
    "copy:prior72-fp32",
    "convert:prior72-fp32",
    "copy:upsampler0-fp32",
    "convert:upsampler0-fp32",
    "convert:vqvae",
    "load:bf16",
    "extract:bf16",
    "extract:auto",
]


# ----------------------------------------------------------------------------------- legacy checkpoint writer


class _Storage:
    def __init__(self, key: str, storage_name: str, numel: int):
        self.key, self.storage_name, self.numel = key, storage_name, numel


class _Tensor:
    """Pickles as torch's `_rebuild_tensor_v2` call on a storage, exactly as `torch.save` writes a tensor."""

    def __init__(self, storage: _Storage, shape: list[int]):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        import torch

        stride, step = [], 1
        for size in reversed(self.shape):
            stride.append(step)
            step *= size
        return (
            torch._utils._rebuild_tensor_v2,
            (self.storage, 0, self.shape, tuple(reversed(stride)), False, collections.OrderedDict()),
        )


def write_legacy_checkpoint(path: Path, hps: dict, keys: dict[str, list], seed: int = 0) -> int:
    """Write `{"hps", "model", "step"}` in torch's legacy format, one tensor in memory at a time; returns bytes."""
    import torch

    storage_names = {"torch.float16": "HalfStorage", "torch.float32": "FloatStorage", "torch.int64": "LongStorage"}
    storages = {}
    model = collections.OrderedDict()
    for index, (name, (shape, dtype)) in enumerate(keys.items()):
        storage = _Storage(str(index), storage_names[dtype], math.prod(shape))
        storages[storage.key] = (storage, shape, dtype)
        model[name] = _Tensor(storage, shape)

    def persistent_id(obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, obj.storage_name), obj.key, "cpu", obj.numel, None)
        return None

    generator = torch.Generator().manual_seed(seed)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as handle:
        pickle.dump(0x1950A86A20F9469CFC6C, handle, protocol=2)
        pickle.dump(1001, handle, protocol=2)
        pickle.dump(
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
            handle,
            protocol=2,
        )
        pickler = pickle.Pickler(handle, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump({"hps": hps, "model": model, "step": 0})
        pickle.dump(sorted(storages), handle, protocol=2)
        for key in sorted(storages):
            storage, shape, dtype = storages[key]
            handle.write(storage.numel.to_bytes(8, "little", signed=True))
            target = getattr(torch, dtype.split(".")[-1])
            if target.is_floating_point:
                tensor = torch.empty(shape, dtype=torch.float32).normal_(0, 0.02, generator=generator).to(target)
            else:
                tensor = torch.zeros(shape, dtype=target)
            handle.write(tensor.numpy().tobytes())
            del tensor
    os.replace(tmp, path)
    return path.stat().st_size


# --------------------------------------------------------------------------------------------- measuring


def run_step(argv: list[str], rss_limit_gb: float, env: dict | None = None) -> dict:
    """Run `argv` in a child process; peak RSS from its rusage; killed above `rss_limit_gb`."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak_seen = [0.0]
    killed = [False]

    def watch():
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 2**20
                        peak_seen[0] = max(peak_seen[0], rss)
                        if rss > rss_limit_gb:
                            killed[0] = True
                            proc.kill()
            except OSError:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_gb": usage.ru_maxrss / 2**20,
        "rc": proc.returncode,
        "killed_by_watchdog": killed[0],
        "tail": output[-2000:],
    }


def plain_copy(sources: list[Path], write_bytes: int, target: Path, chunk: int = 16 << 20) -> None:
    """Read every source sequentially and write `write_bytes` bytes, flushed to the disk (conversions sync their
    output before publishing it): the I/O floor of a conversion."""
    left = write_bytes
    with open(target, "wb") as out:
        for source in sources:
            with open(source, "rb") as handle:
                while block := handle.read(chunk):
                    if left > 0:
                        out.write(block[:left])
                        left -= min(left, len(block))
        while left > 0:
            out.write(b"\0" * min(chunk, left))
            left -= min(chunk, left)
        out.flush()
        os.fsync(out.fileno())


def copy_step(sources: list[Path], written: int, target: Path, rss_limit_gb: float) -> dict:
    code = (
        "import sys; sys.path.insert(0, %r); from bench_real_size import plain_copy; from pathlib import Path; "
        "plain_copy([Path(p) for p in %r], %d, Path(%r))"
        % (str(BENCH_DIR), [str(p) for p in sources], written, str(target))
    )
    result = run_step([sys.executable, "-c", code], rss_limit_gb)
    result["bytes_read"] = sum(p.stat().st_size for p in sources)
    result["bytes_written"] = written
    target.unlink(missing_ok=True)
    return result


def prepare_cache(sources: list[Path], cache: str) -> None:
    """Flush pending writes, then evict the sources from the page cache (cold) or read them into it (warm)."""
    os.sync()
    for path in sources:
        fd = os.open(path, os.O_RDONLY)
        try:
            if cache == "cold":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while os.read(fd, 16 << 20):
                    pass
        finally:
            os.close(fd)


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the upper median of an even count), with every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        chosen["runs_seconds"] = [round(r["seconds"], 2) for r in runs]
    return chosen


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix == ".safetensors")


_EXTRACT = """
import json, sys, time, resource, torch
torch.set_num_threads({threads})
import hf_jukebox_mir
hf_jukebox_mir.register()
from transformers import AutoModel
t0 = time.perf_counter()
kwargs = {kwargs}
model = AutoModel.from_pretrained(sys.argv[1], num_hidden_layers=36, **kwargs).eval()
load_s = time.perf_counter() - t0
rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
out = {{"load_s": load_s, "rss_after_load_gb": rss_after_load, "compute_dtype": str(model.prior.dtype)}}
weights = sum(p.numel() * p.element_size() for p in model.parameters())
out["weights_gb"] = weights / 2**30
for name, seconds in {clips}:
    audio = 0.1 * torch.randn(1, int(seconds * 44100), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.inference_mode():
        pooled = model(audio.to(model.vqvae.dtype)).pooler_output
    out[name + "_s"] = time.perf_counter() - t0
    out[name + "_finite"] = bool(torch.isfinite(pooled.float()).all())
print(json.dumps(out))
"""


def extract_step(folder: Path, threads: int, dtype: str | None, clips: list[tuple[str, float]], limit: float) -> dict:
    kwargs = "{}" if dtype is None else f"{{'dtype': torch.{dtype}}}"
    code = _EXTRACT.format(threads=threads, kwargs=kwargs, clips=repr(clips))
    result = run_step([sys.executable, "-c", code, str(folder)], limit)
    for line in reversed(result["tail"].splitlines()):
        if line.startswith("{"):
            result.update(json.loads(line))
            break
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="scratch folder (~45 GB free)")
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    parser.add_argument("--rss-limit-gb", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep checkpoints and converted folders")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--cache",
        choices=["cold", "warm"],
        default="cold",
        help="page cache before each copy/convert run: cold (the sources evicted, as after a download: the default) "
        "or warm (the sources read once first)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="copy/convert pairs per conversion (medians reported)")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    inventory = json.loads(INVENTORY.read_text())
    src = {name: work / name / file for name, file in FILES.items()}
    out = {
        "mir36-bf16": work / "out-mir36-bf16",
        "prior72-fp32": work / "out-prior72-fp32",
        "upsampler0-fp32": work / "out-upsampler0-fp32",
        "vqvae": work / "out-vqvae",
    }
    cli = [sys.executable, "-m", "hf_jukebox_mir.cli", "convert", "--overwrite", "--no-card"]
    commands = {
        "mir36-bf16": cli
        + [
            "--vqvae",
            str(src["vqvae"]),
            "--prior",
            str(src["prior_5b_level_2"]),
            "--num-layers",
            "36",
            "--dtype",
            "bfloat16",
            "--output",
            str(out["mir36-bf16"]),
        ],
        "prior72-fp32": cli + ["--prior", str(src["prior_5b_level_2"]), "--output", str(out["prior72-fp32"])],
        "upsampler0-fp32": cli + ["--prior", str(src["upsampler_level_0"]), "--output", str(out["upsampler0-fp32"])],
        "vqvae": cli + ["--vqvae", str(src["vqvae"]), "--output", str(out["vqvae"])],
    }
    sources = {
        "mir36-bf16": [src["vqvae"], src["prior_5b_level_2"]],
        "prior72-fp32": [src["prior_5b_level_2"]],
        "upsampler0-fp32": [src["upsampler_level_0"]],
        "vqvae": [src["vqvae"]],
    }
    env = {"OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    results: dict[str, dict] = {}
    expected_out = {}  # conversion -> bytes it writes (known after it ran once, else estimated from a dry plan)
    for step in args.steps:
        kind, _, name = step.partition(":")
        print(f"[real-size] {step} ...", flush=True)
        if kind == "write":
            t0 = time.perf_counter()
            sizes = {}
            for model, path in src.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.is_file():
                    write_legacy_checkpoint(path, inventory[model]["hps"], inventory[model]["keys"])
                sizes[model] = path.stat().st_size
            results[step] = {"seconds": time.perf_counter() - t0, "bytes": sizes}
        elif kind == "copy" and f"convert:{name}" in args.steps:
            continue  # run in pairs with the conversion, below
        elif kind in ("copy", "convert"):
            runs: dict[str, list[dict]] = {}
            for _ in range(max(1, args.repeat)):
                if f"copy:{name}" in args.steps:
                    written = expected_out.get(name) or _planned_output_bytes(name, inventory)
                    prepare_cache(sources[name], args.cache)
                    runs.setdefault(f"copy:{name}", []).append(
                        copy_step(sources[name], written, work / "copy.bin", args.rss_limit_gb)
                    )
                if kind == "convert":
                    shutil.rmtree(out[name], ignore_errors=True)  # not timed: the conversion writes a new folder
                    prepare_cache(sources[name], args.cache)
                    run = run_step(commands[name], args.rss_limit_gb, env)
                    if run["rc"] == 0:
                        run["bytes_written"] = expected_out[name] = folder_bytes(out[name])
                    runs.setdefault(step, []).append(run)
            for key, measured in runs.items():
                results[key] = median_run(measured)
                results[key]["cache"] = args.cache
            copy = results.get(f"copy:{name}")
            if copy and step in results:
                results[step]["vs_plain_copy"] = results[step]["seconds"] / copy["seconds"]
                if "startup" in results:
                    net = results[step]["seconds"] - results["startup"]["seconds"]
                    results[step]["vs_plain_copy_after_startup"] = net / copy["seconds"]
            if name in ("prior72-fp32", "upsampler0-fp32") and not args.keep and results[step]["rc"] == 0:
                shutil.rmtree(out[name], ignore_errors=True)  # 20 GB / 4 GB: free the disk for the next steps
        elif kind == "startup":
            code = "import hf_jukebox_mir.cli.convert, hf_jukebox_mir.conversion.mir, hf_jukebox_mir.conversion.prior"
            results[step] = median_run([run_step([sys.executable, "-c", code], args.rss_limit_gb) for _ in range(3)])
        elif kind == "load":
            results[step] = extract_step(out["mir36-bf16"], args.threads, "bfloat16", [], args.rss_limit_gb)
        elif step == "extract:bf16":
            results[step] = extract_step(out["mir36-bf16"], args.threads, "bfloat16", [("clip_5s", 5.0)], 16.0)
        elif kind == "extract":
            results[step] = extract_step(
                out["mir36-bf16"], args.threads, None, [("clip_5s", 5.0), ("window_23_8s", 8192 * 128 / 44100)], 16.0
            )
        info = {k: v for k, v in results[step].items() if k != "tail"}
        print(f"[real-size] {step}: {json.dumps(info)}", flush=True)
        if results[step].get("rc", 0) != 0:
            print(results[step]["tail"], flush=True)
    _print_table(results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_record:
        append_jsonl(
            BENCH_DIR / "results.jsonl",
            {
                "benchmark": "bench_real_size",
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": git_commit(),
                "machine": machine_info(),
                "threads": args.threads,
                "cache": args.cache,
                "repeat": args.repeat,
                "rss_limit_gb": args.rss_limit_gb,
                "results": {k: {kk: vv for kk, vv in v.items() if kk != "tail"} for k, v in results.items()},
            },
        )


def _planned_output_bytes(name: str, inventory: dict) -> int:
    """Bytes a conversion will write, from the inventory (before it has run)."""

    def total(model: str, keep=lambda key: True, size=lambda dtype: 4) -> int:
        return sum(
            math.prod(shape) * size(dtype) for key, (shape, dtype) in inventory[model]["keys"].items() if keep(key)
        )

    if name == "mir36-bf16":
        deep = lambda key: not any(f"_attn_mods.{i}." in key for i in range(36, 72))  # noqa: E731
        return total("prior_5b_level_2", deep, lambda dtype: 2) + total("vqvae", lambda k: k.startswith("encoders.2"))
    if name == "prior72-fp32":
        return total("prior_5b_level_2")
    if name == "upsampler0-fp32":
        return total("upsampler_level_0")
    return total("vqvae")


def _print_table(results: dict[str, dict]) -> None:
    print()
    print("| step | wall s | peak RSS GB | vs plain read+write | notes |")
    print("|---|---|---|---|---|")
    for step, r in results.items():
        notes = []
        for key in ("load_s", "weights_gb", "compute_dtype", "clip_5s_s", "window_23_8s_s", "bytes_written"):
            if key in r:
                value = r[key]
                notes.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
        if r.get("killed_by_watchdog"):
            notes.append("KILLED by the RSS watchdog")
        if r.get("rc", 0) != 0:
            notes.append(f"exit {r.get('rc')}")
        ratio = f"{r['vs_plain_copy']:.2f}x" if "vs_plain_copy" in r else ""
        if "vs_plain_copy_after_startup" in r:
            ratio += f" ({r['vs_plain_copy_after_startup']:.2f}x after startup)"
        if "runs_seconds" in r:
            notes.append(f"runs={r['runs_seconds']}")
        if "cache" in r:
            notes.append(f"cache={r['cache']}")
        peak = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else ""
        print(f"| {step} | {r['seconds']:.1f} | {peak} | {ratio} | {'; '.join(notes)} |")


if __name__ == "__main__":
    main()
