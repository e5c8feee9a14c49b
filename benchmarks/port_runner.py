"""One measurement of the OLD transformers Jukebox port (transformers 4.57.6), printed as JSON.

Runs INSIDE ``benchmarks/.venv-port`` (create it with ``python benchmarks/port_env.py``)::

    benchmarks/.venv-port/bin/python benchmarks/port_runner.py --measure prior_forward \
        --width 512 --depth 12 --heads 8 --n-ctx 2048 --blocks 32

Measures (random weights, teacher-forced, ``torch.inference_mode``):

* ``prior_forward``: the full-depth top prior over a full window of ``n_ctx`` codes (the port cannot
  take fewer), with the 5b metadata conditioning, returning logits, and the output of every block
  captured with forward hooks on ``prior.prior.transformer._attn_mods[i]`` (the port has no
  ``output_hidden_states``; hooks are what JukeMIR/jukemirlib do).
* ``prior_layer``: the JukeMIR layer-``k`` extraction. The port cannot build or load fewer layers, so
  the full-depth prior is built and its ``_attn_mods`` sliced to ``k`` blocks before the forward
  (``--truncate slice``, the default, what a user of ``from_pretrained`` must do); ``--truncate build``
  builds only ``k`` layers instead (same time, lower memory; for reference). The activations come
  from ``get_acts=True`` (the port still computes the output projection and the loss).
* ``clip_layer``: as ``prior_layer`` for a clip shorter than the window (``--clip-tokens``): the port
  adds its positional embedding un-sliced, so the codes are zero-padded to ``n_ctx`` and the output cut.
* ``vqvae_encode``: ``JukeboxVQVAE.encode(audio, start_level=2)`` with the real VQ-VAE
  hyperparameters on ``--seconds`` of audio; the port runs all three encoders and keeps the top codes.

The last stdout line is a JSON object; see ``_common.py`` for the fields shared with ``ours_runner.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_common_args,
    audio_samples,
    base_record,
    clip_tokens,
    emit,
    metadata_row,
    rss_now_mb,
    rss_peak_mb,
    summarize,
    time_callable,
)

_t0 = time.perf_counter()
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

try:
    from transformers.models.deprecated.jukebox.configuration_jukebox import (
        JukeboxPriorConfig,
        JukeboxVQVAEConfig,
    )
    from transformers.models.deprecated.jukebox.modeling_jukebox import JukeboxPrior, JukeboxVQVAE
except ImportError:  # 4.25-4.41 kept it outside deprecated/
    from transformers.models.jukebox.configuration_jukebox import JukeboxPriorConfig, JukeboxVQVAEConfig
    from transformers.models.jukebox.modeling_jukebox import JukeboxPrior, JukeboxVQVAE

IMPORT_S = time.perf_counter() - _t0
hf_logging.set_verbosity_error()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def port_prior_config(args: argparse.Namespace, num_layers: int) -> JukeboxPriorConfig:
    """A 5b-style top prior (no lyrics, v2 labels with timing) at the requested size."""
    return JukeboxPriorConfig(
        level=0,
        hidden_size=args.width,
        num_layers=num_layers,
        n_heads=args.heads,
        n_ctx=args.n_ctx,
        blocks=args.blocks,
        attention_pattern="raw_column_previous_row_attention",
        attention_multiplier=0.25,
        mlp_multiplier=1.0,
        mask=True,
        is_encoder_decoder=False,
        nb_relevant_lyric_tokens=0,
        encoder_config=None,
        merged_decoder=True,
        metadata_conditioning=True,
        metadata_dims=[120, 4111],
        max_nb_genres=5,
        timing_dims=128,
        min_duration=60.0,
        max_duration=600.0,
        sampling_rate=44100,
        init_scale=0.1,
        music_vocab_size=2048,
    )


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter and buffer finite random values.

    The port never calls ``post_init`` itself (parameters stay ``torch.empty``) and leaves the VQ-VAE
    codebooks at zero (every frame would map to code 0), so fill everything explicitly.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith(("layer_norm_0.weight", "layer_norm_1.weight")):
                tensor.fill_(1.0)
            elif tensor.dim() <= 1:
                tensor.zero_()
            else:
                fan_in = tensor.shape[0] if tensor.dim() == 2 else tensor[0].numel()
                std = min(0.02, 1.0 / max(fan_in, 1) ** 0.5)
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def build_prior(args: argparse.Namespace, num_layers: int, dtype: torch.dtype) -> JukeboxPrior:
    prior = JukeboxPrior(port_prior_config(args, num_layers), level=0, nb_priors=3)
    randomize_(prior, args.seed)
    return prior.to(device=args.device, dtype=dtype).eval()


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(args.seed + 1)
    codes = torch.randint(0, 2048, (args.batch, args.n_ctx), generator=generator)
    metadata = torch.tensor([metadata_row(args.n_ctx)] * args.batch, dtype=torch.long)
    return codes.to(args.device), metadata.to(args.device)


def measure_prior(args: argparse.Namespace, record: dict) -> None:
    dtype = DTYPES[args.dtype]
    truncated = args.measure in ("prior_layer", "clip_layer")
    clip = clip_tokens(args) if args.measure == "clip_layer" else args.n_ctx
    if truncated and not 1 <= args.layer <= args.depth:
        raise SystemExit(f"--layer must be in 1..{args.depth}, got {args.layer}")
    build_layers = args.layer if truncated and args.truncate == "build" else args.depth
    t = time.perf_counter()
    prior = build_prior(args, build_layers, dtype)
    record["build_s"] = time.perf_counter() - t
    if truncated and args.truncate == "slice":
        stack = prior.prior.transformer
        stack._attn_mods = stack._attn_mods[: args.layer]
    record["params_total"] = sum(p.numel() for p in prior.parameters())
    record["layers_run"] = len(prior.prior.transformer._attn_mods)
    record["rss_model_mb"] = rss_now_mb()
    codes, metadata = inputs(args)
    if clip < args.n_ctx:  # the port needs exactly n_ctx tokens: pad the clip with code 0
        codes = torch.cat([codes[:, :clip], codes.new_zeros(args.batch, args.n_ctx - clip)], dim=1)

    captured: list[torch.Tensor] = []
    if not truncated:
        for block in prior.prior.transformer._attn_mods:
            block.register_forward_hook(lambda _m, _i, out: captured.append(out))

    def forward():
        captured.clear()
        with torch.inference_mode():
            audio_cond, metadata_cond, _ = prior.get_cond(None, metadata)
            if truncated:
                _, acts = prior.prior(codes, audio_cond, metadata_cond, None, get_acts=True)
                return {"layer_activations": acts[:, :clip]}
            _, logits = prior.prior(codes, audio_cond, metadata_cond, None, get_preds=True)
            return {"logits": logits, "hidden_states": list(captured)}

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times, out, cpu_times = time_callable(forward, args.repeats, args.warmup, sync, serve=args.serve)
    record.update(summarize(times, cpu_times))
    if truncated:
        acts = out["layer_activations"]
        record["output"] = {"layer_activations": list(acts.shape), "finite": bool(torch.isfinite(acts).all())}
    else:
        record["output"] = {
            "logits": list(out["logits"].shape),
            "hidden_states": [len(out["hidden_states"]), *out["hidden_states"][0].shape],
            "finite": bool(torch.isfinite(out["logits"]).all()),
        }
    record["tokens_per_s"] = args.batch * clip / record["median_s"]  # useful tokens


def measure_vqvae(args: argparse.Namespace, record: dict) -> None:
    t = time.perf_counter()
    vqvae = JukeboxVQVAE(JukeboxVQVAEConfig())  # defaults = the released (5b/1b shared) VQ-VAE
    randomize_(vqvae, args.seed)
    vqvae = vqvae.to(args.device).eval()  # encode hard-casts its input to fp32: no half precision
    record["build_s"] = time.perf_counter() - t
    record["params_total"] = sum(p.numel() for p in vqvae.parameters())
    record["rss_model_mb"] = rss_now_mb()
    samples = audio_samples(args.seconds)
    generator = torch.Generator().manual_seed(args.seed + 2)
    audio = (torch.rand((args.batch, samples, 1), generator=generator) * 2 - 1).to(args.device)

    def encode():
        with torch.inference_mode():
            return vqvae.encode(audio, start_level=2)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times, out, cpu_times = time_callable(encode, args.repeats, args.warmup, sync, serve=args.serve)
    record.update(summarize(times, cpu_times))
    record["audio_seconds"] = samples / 44100 * args.batch
    record["s_per_audio_second"] = record["median_s"] / record["audio_seconds"]
    record["output"] = {"top_codes": list(out[0].shape)}
    record["dtype"] = "float32"
    record["config"] = {
        "vqvae": "5b (levels 3, hops 8/32/128, width 32 x [2,1,1], depth 4)",
        "batch": args.batch,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--truncate",
        choices=("slice", "build"),
        default="slice",
        help="prior_layer: build full depth then slice (what the port forces) or build k",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    record = base_record(
        args,
        side="port",
        impl=f"transformers {transformers.__version__} deprecated Jukebox port",
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        threads=torch.get_num_threads(),
        import_s=IMPORT_S,
    )
    if args.measure in ("prior_layer", "clip_layer"):
        record["config"].update(layer=args.layer, truncate=args.truncate)
    if args.measure == "clip_layer":
        record["config"].update(clip_tokens=clip_tokens(args), tokens_run=args.n_ctx)
    if args.measure == "vqvae_encode":
        measure_vqvae(args, record)
    else:
        measure_prior(args, record)
    record["peak_rss_mb"] = rss_peak_mb()
    record["peak_rss_over_imports_mb"] = record["peak_rss_mb"] - record["rss_imports_mb"]
    if args.device.startswith("cuda"):
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
