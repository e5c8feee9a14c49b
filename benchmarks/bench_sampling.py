"""Sampling speed of the Jukebox priors (tokens per second) against the KV-cache roofline.

Token-by-token sampling reads every weight of the transformer once per step, so its floor on any machine is

    time per step >= (weight bytes read per step) / (memory bandwidth)

("weight bytes" = the transformer blocks + the output head + one embedding row; the conditioning networks run
once per window and are left out). The KV cache adds the keys/values each layer attends to (reported separately:
it grows with the position in the window). Batch b shares the weight reads, so the roofline in tokens/s grows
~linearly with b until compute takes over.

What runs: for each prior (`top` = the 5b prior, `top_1b` = the 1b_lyrics prior, `upsampler` = a level-0/1
upsampler), random weights; the window is prefilled up to `--position` tokens (chunked, as primed sampling does),
then `--tokens` new tokens are drawn with `JukeboxSamplingState` (next_logits -> temperature -> multinomial ->
accept), i.e. exactly the inner loop of `sample_prior`. Memory bandwidth is measured with a large tensor copy on
the same device (bytes read + written / time).

Presets:
* `tiny` (CPU default): the parity-fixture sizes (width 64, 6 layers, n_ctx 256).
* `real`: the released widths/depths/contexts (5b: 4800 x 72, 1b: 2048 x 72, upsamplers: 1920 x 72), by
  default on a GPU in bf16. On a CPU use `--layers 4` to build only a few blocks at the real width; the table
  then also extrapolates to the full depth.

Usage::

    python benchmarks/bench_sampling.py                                 # tiny on CPU, 1 thread
    python benchmarks/bench_sampling.py --preset real --layers 4 --tokens 16     # real width on CPU, 4 blocks
    python benchmarks/bench_sampling.py --preset real --device cuda --dtype bfloat16   # full models on a GPU

Prints a table and appends one JSON line per prior to `benchmarks/results.jsonl` (`--no-record` to skip).
Against the original Jukebox sampling code on the same checkpoint: `bench_sampling_vs_original.py`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import BENCH_DIR, append_jsonl, git_commit, machine_info

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# preset -> prior name -> JukeboxPriorConfig.from_preset(name, **overrides)
PRESETS = {
    "tiny": {
        "top": (
            "prior_5b",
            {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 2, "n_ctx": 256, "blocks": 16},
        ),
        "top_1b": (
            "prior_1b_lyrics",
            {
                "hidden_size": 32,
                "num_hidden_layers": 48,
                "num_attention_heads": 2,
                "n_ctx": 224,
                "blocks": 16,
                "n_lyric_tokens": 32,
            },
        ),
        "upsampler": (
            "upsampler_level_0",
            {
                "hidden_size": 64,
                "num_hidden_layers": 6,
                "num_attention_heads": 2,
                "n_ctx": 256,
                "blocks": 16,
                "upsampler_width": 16,
                "upsampler_depth": 4,
            },
        ),
    },
    "real": {
        "top": ("prior_5b", {}),
        "top_1b": ("prior_1b_lyrics", {}),
        "upsampler": ("upsampler_level_0", {}),
    },
}


def measure_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Device memory bandwidth in bytes/s: best of `repeats` copies of a `megabytes` buffer (read + write)."""
    n = megabytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * n * 4 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_weight_bytes(prior) -> int:
    """Bytes of the parameters read by one sampling step: the blocks, the head, one embedding row."""
    total = sum(p.numel() * p.element_size() for p in prior.layers.parameters())
    total += prior.lm_head.weight.numel() * prior.lm_head.weight.element_size()
    emb = prior.embed_tokens.weight
    total += emb.shape[1] * emb.element_size() + prior.pos_emb.shape[1] * prior.pos_emb.element_size()
    return total


def step_kv_bytes(prior, position: int, batch: int) -> int:
    """Bytes of keys + values the layers read at `position` (JukeboxDecodeBuffers: only the visible keys)."""
    cfg = prior.config
    per_key = 2 * cfg.attention_width * prior.embed_tokens.weight.element_size() * batch
    blk = cfg.block_length
    total = 0
    for layer in prior.layers:
        kind = layer.layer_type
        if kind == "dense":
            keys = position
        elif kind == "column":  # a strided view: one key per block
            keys = position // blk + 1
        elif kind == "row":
            keys = position % blk + 1
        elif kind == "previous_row":
            keys = blk + position % blk + 1 if position >= blk else position % blk + 1
        elif kind == "prime":
            keys = min(position, cfg.prime_attention_length)
        else:  # cross: the projected lyrics-encoder states
            keys = cfg.n_lyric_tokens
        total += keys * per_key
    return total


def build_prior(name: str, overrides: dict, layers: int | None, device, dtype):
    from hf_jukebox_mir.models.configuration_jukebox_prior import JukeboxPriorConfig
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    config = JukeboxPriorConfig.from_preset(name, **overrides)
    full_depth = config.num_hidden_layers
    if layers is not None and layers < full_depth:
        config = JukeboxPriorConfig.from_preset(name, **dict(overrides, num_hidden_layers=layers))
    with torch.device(device):
        prior = JukeboxPrior(config)
    return prior.to(dtype).eval(), full_depth


def bench_prior(kind: str, name: str, overrides: dict, args, device, dtype) -> dict:
    from hf_jukebox_mir.models.generation_jukebox import JukeboxSamplingState, _draw

    prior, full_depth = build_prior(name, overrides, args.layers, device, dtype)
    cfg = prior.config
    batch = args.batch
    position = min(args.position if args.position is not None else cfg.n_ctx // 2, cfg.n_ctx - args.tokens)
    generator = torch.Generator(device=device).manual_seed(0)
    metadata = prior.build_metadata(batch_size=batch).to(device)
    if cfg.n_lyric_tokens:
        metadata[:, 4 + cfg.max_genres :] = torch.randint(
            1, cfg.lyric_vocab_size, (batch, cfg.n_lyric_tokens), generator=generator, device=device
        )
    upper = None
    if cfg.is_upsampler:
        upper = torch.randint(0, cfg.vocab_size, (batch, cfg.upper_level_length), generator=generator, device=device)
    prime = torch.randint(0, cfg.vocab_size, (batch, position), generator=generator, device=device)

    with torch.inference_mode():
        start = time.perf_counter()
        conditioning = prior.get_conditioning(metadata, upper, batch)
        _sync(device)
        cond_s = time.perf_counter() - start
        state = JukeboxSamplingState(prior, conditioning)
        prefix = prime + cfg.music_token_shift
        if cfg.prime_length:
            prefix = torch.cat([conditioning.lyric_tokens.long(), prefix], dim=1)
        start = time.perf_counter()
        state.prefill(prefix, args.chunk_size)
        _sync(device)
        prefill_s = time.perf_counter() - start
        for _ in range(args.warmup):  # warm-up steps (also advance the position a little)
            state.accept(_draw(state.next_logits(), 0.99, 0, 0.0, generator))
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.tokens):
            state.accept(_draw(state.next_logits(), 0.99, 0, 0.0, generator))
        _sync(device)
        decode_s = time.perf_counter() - start

    weight_bytes = step_weight_bytes(prior)
    kv_bytes = step_kv_bytes(prior, position + args.warmup + args.tokens // 2, batch)
    per_step = decode_s / args.tokens
    built = len(prior.layers)
    record = {
        "prior": kind,
        "preset_name": name,
        "width": cfg.hidden_size,
        "layers_built": built,
        "layers_full": full_depth,
        "n_ctx": cfg.n_ctx,
        "batch": batch,
        "position": position,
        "tokens": args.tokens,
        "conditioning_s": cond_s,
        "prefill_tokens_per_s": batch * prefix.shape[1] / prefill_s,
        "decode_ms_per_step": 1e3 * per_step,
        "decode_tokens_per_s": batch / per_step,
        "weight_bytes_per_step": weight_bytes,
        "kv_bytes_per_step": kv_bytes,
    }
    if built < full_depth:  # extrapolate the per-block cost to the full depth (head/embedding counted once)
        head = weight_bytes - sum(p.numel() * p.element_size() for p in prior.layers.parameters())
        per_block_bytes = (weight_bytes - head) / built
        record["full_weight_bytes_per_step"] = int(head + per_block_bytes * full_depth)
        record["full_decode_ms_per_step_est"] = 1e3 * per_step * full_depth / built
    del prior, state, conditioning
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="tiny (default on CPU) or real (default on CUDA)"
    )
    parser.add_argument(
        "--priors", nargs="+", default=["top", "top_1b", "upsampler"], choices=["top", "top_1b", "upsampler"]
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="default float32 on CPU, bfloat16 on CUDA"
    )
    parser.add_argument("--layers", type=int, default=None, help="build only this many blocks (CPU at real width)")
    parser.add_argument("--tokens", type=int, default=64, help="timed sampling steps")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps before timing")
    parser.add_argument("--position", type=int, default=None, help="prefilled tokens before timing (default n_ctx/2)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--bandwidth-mb", type=int, default=512, help="buffer size of the bandwidth measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU (1 is fastest for tiny)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.jsonl")
    parser.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("real" if device.type == "cuda" else "tiny")
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    bandwidth = measure_bandwidth(device, args.bandwidth_mb)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None

    rows = []
    for kind in args.priors:
        name, overrides = PRESETS[preset][kind]
        record = bench_prior(kind, name, overrides, args, device, dtype)
        record["roofline_tokens_per_s"] = args.batch * bandwidth / record["weight_bytes_per_step"]
        record["roofline_with_kv_tokens_per_s"] = (
            args.batch * bandwidth / (record["weight_bytes_per_step"] + record["kv_bytes_per_step"])
        )
        record["fraction_of_roofline"] = record["decode_tokens_per_s"] / record["roofline_tokens_per_s"]
        if "full_weight_bytes_per_step" in record:
            record["full_roofline_tokens_per_s"] = args.batch * bandwidth / record["full_weight_bytes_per_step"]
            record["full_decode_tokens_per_s_est"] = args.batch * 1e3 / record["full_decode_ms_per_step_est"]
        rows.append(record)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_info()["cpu"]
    print(
        f"\nsampling benchmark: preset {preset}, {device.type} ({dev_name}), {str(dtype).replace('torch.', '')}, "
        f"threads {torch.get_num_threads() if device.type == 'cpu' else '-'}, batch {args.batch}, "
        f"memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy), load {load}"
    )
    print(
        "| prior | width x layers | position | tokens/s | ms/step | weights/step | roofline tok/s | of roofline | "
        "KV/step | roofline incl. KV | prefill tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prior']} | {r['width']} x {r['layers_built']} | {r['position']} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['decode_ms_per_step']:.2f} | {r['weight_bytes_per_step'] / 2**20:.1f} MiB | "
            f"{r['roofline_tokens_per_s']:.1f} | {100 * r['fraction_of_roofline']:.1f} % | "
            f"{r['kv_bytes_per_step'] / 2**20:.1f} MiB | {r['roofline_with_kv_tokens_per_s']:.1f} | "
            f"{r['prefill_tokens_per_s']:.0f} |"
        )
    extrapolated = [r for r in rows if "full_decode_tokens_per_s_est" in r]
    if extrapolated:
        print("\nextrapolated to the full depth (per-block cost x layers):")
        print("| prior | layers | est. tokens/s | roofline tok/s (weights) | weights/step |")
        print("|---|---|---|---|---|")
        for r in extrapolated:
            print(
                f"| {r['prior']} | {r['layers_full']} | {r['full_decode_tokens_per_s_est']:.2f} | "
                f"{r['full_roofline_tokens_per_s']:.2f} | {r['full_weight_bytes_per_step'] / 2**30:.2f} GiB |"
            )

    if not args.no_record:
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for r in rows:
            append_jsonl(
                args.results,
                {
                    "benchmark": "sampling",
                    "date": stamp,
                    "git_commit": git_commit(),
                    "machine": machine_info(),
                    "device": device.type,
                    "device_name": dev_name,
                    "dtype": str(dtype).replace("torch.", ""),
                    "threads": torch.get_num_threads() if device.type == "cpu" else None,
                    "preset": preset,
                    "bandwidth_bytes_per_s": bandwidth,
                    "load_average": load,
                    "torch": torch.__version__,
                    **r,
                },
            )
        print(f"\nappended {len(rows)} line(s) to {args.results}")
    print(json.dumps({"rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
