"""GPU benchmark: JukeMIR layer extraction with the real-width 5b top prior, truncated, in bf16.

The physical floor of layer-36 extraction is ``2 x params(36 blocks) x 8192`` FLOP per 23.8 s window
(36 x 69.1 M x 2 x 8192 = 40.8 TFLOP; attention adds well under 1 %). This script measures, with random
weights (none of the real checkpoint is needed):

1. the device's bf16 matmul rate (a GEMM shaped like the prior's MLP, and a square 8192^3 GEMM), the
   reference for "fraction of the achievable rate";
2. the time to load ``--layers`` blocks from a local safetensors folder holding a deeper checkpoint
   (``--save-layers``, default the full 72), straight to the device and dtype;
3. time per window at batch 1/2/4/8 (``last_hidden_state`` of the truncated prior = layer ``k``),
   achieved TFLOP/s, the fraction of the measured matmul rate, and peak device memory.

Usage::

    python benchmarks/bench_gpu.py                          # CUDA, real width, bf16, 36 of 72 layers
    python benchmarks/bench_gpu.py --device cpu --tiny      # seconds on CPU (what the smoke test runs)
    python benchmarks/bench_gpu.py --plan-memory            # any machine: planned peak GPU memory, no GPU needed

``--plan-memory`` runs the real-width model on the ``meta`` device (no memory, no compute) and counts the
live tensors op by op (``_memory_plan.py``): weights + peak activations per batch size, the number
``torch.cuda.max_memory_allocated`` reports up to allocator rounding. A CUDA run records the plan next to
the measured peak, which checks the planner on the GPU.

Prints a table, appends one JSON line to ``benchmarks/results.jsonl`` (``--no-record`` to skip), and
writes the same object to ``--json-out`` when given.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import (  # noqa: E402
    BENCH_DIR,
    append_jsonl,
    git_commit,
    machine_info,
    metadata_row,
    rss_peak_mb,
)
from _memory_plan import module_bytes, plan_forward_peak  # noqa: E402

REAL = dict(width=4800, heads=8, n_ctx=8192, blocks=128, depth=72, layers=36, batches=[1, 2, 4, 8], repeats=5, warmup=2)
TINY = dict(width=64, heads=2, n_ctx=256, blocks=4, depth=6, layers=3, batches=[1, 2], repeats=2, warmup=1)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ROOFLINE_NOTE = "40.8 TFLOP per 23.8 s window = 36 blocks x 69.1 M params x 2 x 8192 tokens"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_peak_mb()  # process high-water mark on CPU (weights + activations + interpreter)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def matmul_tflops(
    device: torch.device, dtype: torch.dtype, m: int, k: int, n: int, repeats: int, fastest: bool = False
) -> float:
    """Achieved TFLOP/s of ``(m, k) @ (k, n)`` on ``device`` in ``dtype``: of the median call, or of the fastest."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    times = _timeit(lambda a=a, b=b: a @ b, device, repeats, warmup=max(2, repeats // 4))
    return 2 * m * k * n / (min(times) if fastest else _median(times)) / 1e12


def prior_config(cfg: dict, num_layers: int):
    from hf_jukebox_mir.models.configuration_jukebox_prior import JukeboxPriorConfig

    return JukeboxPriorConfig.from_preset(
        "prior_5b",
        hidden_size=cfg["width"],
        num_hidden_layers=num_layers,
        num_attention_heads=cfg["heads"],
        n_ctx=cfg["n_ctx"],
        blocks=cfg["blocks"],
    )


def plan_memory(cfg: dict, dtype: torch.dtype) -> dict:
    """Planned peak memory of layer-``cfg['layers']`` extraction at each batch size, on the meta device."""
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    with torch.device("meta"):
        model = JukeboxPrior(prior_config(cfg, cfg["layers"])).to(dtype).eval()

    def forward(batch):
        codes = torch.zeros(batch, cfg["n_ctx"], dtype=torch.long, device="meta")
        metadata = torch.zeros(batch, model.config.metadata_length, dtype=torch.long, device="meta")
        with torch.inference_mode():  # what JukeboxMIRModel runs: the last block's output, the lean path
            return model.forward_features(codes, metadata=metadata)

    return {
        "weights_mb": module_bytes(model) / 2**20,
        "layers": cfg["layers"],
        "dtype": str(dtype).replace("torch.", ""),
        "batches": _plan_batches(model, forward, cfg["batches"]),
        "end_to_end": plan_mir_memory(cfg, dtype),
    }


def _plan_batches(model: torch.nn.Module, forward, batches: list[int]) -> list[dict]:
    """Planned peak of `forward(batch)` at each batch size: activations, and with `model`'s weights."""
    weights = module_bytes(model)
    rows = []
    for batch in batches:
        peak, out = plan_forward_peak(lambda batch=batch: forward(batch), model)
        rows.append(
            {
                "batch": batch,
                "activations_peak_mb": peak / 2**20,
                "total_mb": (weights + peak) / 2**20,
                "total_gb": (weights + peak) / 1e9,
                "output_shape": list(out.shape),
            }
        )
    return rows


def plan_mir_memory(cfg: dict, dtype: torch.dtype) -> list[dict]:
    """The same for the whole extraction: JukeboxMIRModel (float32 top encoder + prior in `dtype`) on audio
    windows, pooled (what the feature-extraction pipeline runs for the last layer)."""
    from hf_jukebox_mir.models.configuration_jukebox_mir import JukeboxMIRConfig
    from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
    from hf_jukebox_mir.models.modeling_jukebox_mir import JukeboxMIRModel

    config = JukeboxMIRConfig(
        vqvae_config=JukeboxVQVAEConfig.from_preset("5b"), prior_config=prior_config(cfg, cfg["layers"])
    )
    with torch.device("meta"):
        model = JukeboxMIRModel(config).eval()
    model.prior.to(dtype)  # as from_pretrained(dtype=...) loads it: the encoder stays float32

    def forward(batch):
        audio = torch.zeros(batch, config.window_length, device="meta")
        with torch.inference_mode():
            return model(audio).pooler_output

    return _plan_batches(model, forward, cfg["batches"])


def format_plan(cfg: dict, plan: dict, limit_gb: float = 6.0) -> str:
    lines = [
        f"planned peak memory (meta device, live tensors op by op): {plan['layers']} layers, width {cfg['width']}, "
        f"n_ctx {cfg['n_ctx']}, {plan['dtype']}; weights {plan['weights_mb']:.0f} MiB",
        "",
        f"| batch | prior: peak activations | prior: weights + activations | <= {limit_gb:g} GB "
        f"| whole extraction (float32 encoder + prior, pooled) | <= {limit_gb:g} GB |",
        "|---|---|---|---|---|---|",
    ]
    for row, whole in zip(plan["batches"], plan["end_to_end"]):
        lines.append(
            f"| {row['batch']} | {row['activations_peak_mb']:.0f} MiB | {row['total_mb']:.0f} MiB "
            f"({row['total_gb']:.2f} GB) | {'yes' if row['total_gb'] <= limit_gb else 'no'} "
            f"| {whole['total_mb']:.0f} MiB ({whole['total_gb']:.2f} GB) "
            f"| {'yes' if whole['total_gb'] <= limit_gb else 'no'} |"
        )
    return "\n".join(lines)


def save_random_checkpoint(cfg: dict, folder: Path, device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    """Build a ``cfg['save_layers']``-layer prior with random weights on ``device`` and save it."""
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    torch.manual_seed(seed)
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype.is_floating_point else previous)
    try:
        with torch.device(device):
            model = JukeboxPrior(prior_config(cfg, cfg["save_layers"]))
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype)
    _sync(device)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    model.save_pretrained(folder)
    save_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"build_s": build_s, "save_s": save_s, "checkpoint_mb": size / 2**20, "layers_saved": cfg["save_layers"]}


def load_truncated(folder: Path, layers: int, device: torch.device, dtype: torch.dtype):
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    _reset_peak(device)
    start = time.perf_counter()
    model = JukeboxPrior.from_pretrained(folder, num_hidden_layers=layers, dtype=dtype, device_map=str(device)).eval()
    _sync(device)
    return model, time.perf_counter() - start, _peak_memory_mb(device)


def run(
    cfg: dict,
    device: torch.device,
    dtype: torch.dtype,
    workdir: Path,
    compile_model: bool,
    seed: int = 0,
    drop_caches: bool = False,
) -> dict:
    result: dict = {"config": dict(cfg), "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True

    # 1. reference matmul rates on this device and dtype
    reps = 20 if device.type == "cuda" else 3
    width, tokens = cfg["width"], cfg["n_ctx"] * 2
    result["matmul_tflops_model_shape"] = matmul_tflops(device, dtype, tokens, width, width, reps)
    square = 8192 if device.type == "cuda" else 256
    result["matmul_tflops_square"] = matmul_tflops(device, dtype, square, square, square, reps)
    reference = max(result["matmul_tflops_model_shape"], result["matmul_tflops_square"])
    result["matmul_tflops_reference"] = reference

    # 2. save a deeper random checkpoint, then load only the first `layers` blocks
    folder = workdir / "prior_random"
    result["save"] = save_random_checkpoint(cfg, folder, device, dtype, seed)
    if drop_caches:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as handle:
                handle.write("3\n")
            result["page_cache"] = "dropped"
        except OSError as exc:
            result["page_cache"] = f"warm (could not drop: {exc.strerror})"
    else:
        result["page_cache"] = "warm (file just written)"
    model, load_s, load_peak = load_truncated(folder, cfg["layers"], device, dtype)
    result["load_s"] = load_s
    result["load_peak_memory_mb"] = load_peak
    result["layers_loaded"] = len(model.layers)
    block_params = sum(p.numel() for p in model.layers.parameters())
    result["block_params"] = block_params
    result["params_per_block"] = block_params / max(len(model.layers), 1)
    result["params_total"] = sum(p.numel() for p in model.parameters())
    result["weights_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    flops_window = 2 * block_params * cfg["n_ctx"]
    result["flops_per_window"] = flops_window
    result["roofline_ms_per_window"] = flops_window / (reference * 1e12) * 1e3
    result["roofline_note"] = ROOFLINE_NOTE

    forward_model = torch.compile(model) if compile_model else model
    result["compiled"] = compile_model

    # 3. time per window at each batch size (with the planned peak next to the measured one)
    planned = {row["batch"]: row["total_mb"] for row in plan_memory(cfg, dtype)["batches"]}
    rows = []
    for batch in cfg["batches"]:
        row: dict = {"batch": batch}
        try:
            generator = torch.Generator().manual_seed(seed + batch)
            codes = torch.randint(0, 2048, (batch, cfg["n_ctx"]), generator=generator).to(device)
            metadata = torch.tensor([metadata_row(cfg["n_ctx"])] * batch, dtype=torch.long, device=device)

            def forward(codes=codes, metadata=metadata):
                with torch.inference_mode():
                    return forward_model(input_ids=codes, metadata=metadata).last_hidden_state

            _reset_peak(device)
            times = _timeit(forward, device, cfg["repeats"], cfg["warmup"])
            out = forward()
            _sync(device)
            median = _median(times)
            row.update(
                median_s=median,
                min_s=min(times),
                ms_per_window=median / batch * 1e3,
                tflops=batch * flops_window / median / 1e12,
                peak_memory_mb=_peak_memory_mb(device),
                planned_peak_mb=planned[batch],
                output_shape=list(out.shape),
                finite=bool(torch.isfinite(out).all()),
            )
            row["fraction_of_matmul"] = row["tflops"] / reference
            row["roofline_ratio"] = result["roofline_ms_per_window"] / row["ms_per_window"]
            del out
        except torch.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = next((line for line in lines[1:] if "Error" in line), "")
            row["error"] = " ".join(filter(None, [lines[0] if lines else type(exc).__name__, detail]))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
    result["batches"] = rows
    return result


def _fmt_rate(tflops: float) -> str:
    return f"{tflops:.1f} TFLOP/s" if tflops >= 1 else f"{tflops * 1e3:.1f} GFLOP/s"


def _fmt_flop(flop: float) -> str:
    return f"{flop / 1e12:.2f} TFLOP" if flop >= 1e12 else f"{flop / 1e9:.2f} GFLOP"


def format_table(result: dict) -> str:
    unit = "GPU" if result["device"].startswith("cuda") else "RSS"
    lines = [
        f"device {result.get('device_name', result['device'])}, {result['dtype']}, "
        f"{result['layers_loaded']} of {result['save']['layers_saved']} layers, width {result['config']['width']}, "
        f"n_ctx {result['config']['n_ctx']}, compiled={result['compiled']}",
        f"matmul reference: {_fmt_rate(result['matmul_tflops_model_shape'])} (model-shaped GEMM), "
        f"{_fmt_rate(result['matmul_tflops_square'])} (square GEMM)",
        f"per window: {_fmt_flop(result['flops_per_window'])} ({result['params_per_block'] / 1e6:.3f} M params "
        f"per block); roofline {result['roofline_ms_per_window']:.1f} ms/window at the reference rate",
        f"load {result['layers_loaded']} layers from safetensors ({result['save']['checkpoint_mb']:.0f} MB folder, "
        f"{result['page_cache']}): {result['load_s']:.2f} s, peak {unit} {result['load_peak_memory_mb']:.0f} MB",
        "",
        f"| batch | ms / window | achieved | of matmul rate | peak {unit} memory | planned peak |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["batches"]:
        if "error" in row:
            lines.append(f"| {row['batch']} | {row['error']} | | | | |")
            continue
        lines.append(
            f"| {row['batch']} | {row['ms_per_window']:.1f} | {_fmt_rate(row['tflops'])} | "
            f"{row['fraction_of_matmul'] * 100:.0f} % | {row['peak_memory_mb']:.0f} MB | "
            f"{row['planned_peak_mb']:.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke test)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="default bfloat16 on CUDA, float32 on CPU (CPU half precision is very slow)",
    )
    parser.add_argument("--layers", type=int, default=None, help="blocks to load and run (default 36)")
    parser.add_argument("--save-layers", type=int, default=None, help="blocks in the saved checkpoint (default 72)")
    parser.add_argument("--batches", default=None, help="comma list, default 1,2,4,8")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--plan-memory", action="store_true", help="only plan the peak memory on the meta device (no GPU, no compute)"
    )
    parser.add_argument("--drop-caches", action="store_true", help="drop the OS page cache before loading (root)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to save the checkpoint (default: temp)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.jsonl")
    parser.add_argument("--no-record", action="store_true", help="do not append to the results file")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the result object here")
    args = parser.parse_args(argv)

    try:  # no progress bars in the table output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    device = torch.device(args.device)
    if args.plan_memory:
        return _plan_only(args, parser)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu.py: CUDA is not available here; use --device cpu --tiny for the CPU smoke run.", file=sys.stderr
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(TINY if args.tiny else REAL)
    if args.layers is not None:
        cfg["layers"] = args.layers
    cfg["save_layers"] = args.save_layers if args.save_layers is not None else cfg["depth"]
    if args.batches:
        cfg["batches"] = [int(b) for b in args.batches.split(",")]
    for key in ("repeats", "warmup"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if not 1 <= cfg["layers"] <= cfg["save_layers"]:
        parser.error(f"--layers must be in 1..{cfg['save_layers']} (the saved depth), got {cfg['layers']}")
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="jukebox_bench_gpu_")
        workdir = Path(tmp)
    try:
        result = run(cfg, device, dtype, workdir, args.compile, drop_caches=args.drop_caches)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result.update(
        benchmark="bench_gpu",
        tiny=args.tiny,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        git_commit=git_commit(),
        machine=machine_info(),
    )
    print(format_table(result))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2, sort_keys=True))
    if not args.no_record:
        append_jsonl(args.results, result)
        print(f"\n[bench_gpu] appended to {args.results}")
    return 1 if any("error" in row for row in result["batches"]) else 0


def _plan_only(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cfg = dict(TINY if args.tiny else REAL)
    if args.layers is not None:
        cfg["layers"] = args.layers
    if args.batches:
        cfg["batches"] = [int(b) for b in args.batches.split(",")]
    dtype = DTYPES[args.dtype or "bfloat16"]
    plan = plan_memory(cfg, dtype)
    result = {
        "benchmark": "bench_gpu_plan_memory",
        "config": cfg,
        "tiny": args.tiny,
        "plan": plan,
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(format_plan(cfg, plan))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2, sort_keys=True))
    if not args.no_record:
        append_jsonl(args.results, result)
        print(f"\n[bench_gpu] appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
