"""One measurement of OUR implementation (``hf_jukebox_mir``), printed as JSON.

Runs in the main environment, with the same arguments and JSON fields as ``port_runner.py``::

    python benchmarks/ours_runner.py --measure prior_forward --width 512 --depth 12 --heads 8 \
        --n-ctx 2048 --blocks 32

Measures (random weights, teacher-forced, ``torch.inference_mode``):

* ``prior_forward``: the full-depth 5b-style top prior over ``n_ctx`` codes with the JukeMIR metadata,
  ``output_hidden_states=True`` (every layer's output) and logits.
* ``prior_layer``: layer-``k`` extraction: the prior is BUILT with ``num_hidden_layers=k`` and its last
  hidden state is the layer-``k`` output.
* ``clip_layer``: as ``prior_layer`` for a clip shorter than the window (``--clip-tokens``): only the
  clip's codes are run (no padding to ``n_ctx``).
* ``vqvae_encode``: ``JukeboxVQVAE.encode(audio, start_level=2)`` (top-level codes only) with the
  released VQ-VAE configuration on ``--seconds`` of audio.
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

try:
    import hf_jukebox_mir  # noqa: E402

    hf_jukebox_mir.register()
except ImportError as exc:  # pragma: no cover - only without the package installed
    raise SystemExit(
        f"ours_runner.py needs the hf_jukebox_mir package in this interpreter ({sys.executable}): {exc}. "
        "Install it with `pip install -e .` from the repository root."
    ) from exc
import transformers  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _prior_classes():
    from hf_jukebox_mir.models.configuration_jukebox_prior import JukeboxPriorConfig
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    return JukeboxPriorConfig, JukeboxPrior


def _vqvae_classes():
    from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
    from hf_jukebox_mir.models.modeling_jukebox_vqvae import JukeboxVQVAE

    return JukeboxVQVAEConfig, JukeboxVQVAE


def _try_import(import_fn):
    try:
        return import_fn(), None
    except ImportError as exc:
        return None, exc


# Import the model modules up front (as port_runner.py does), so that `rss_imports_mb` covers the same
# ground on both sides; a module still missing only fails the measurements that need it.
_PRIOR, _PRIOR_ERR = _try_import(_prior_classes)
_VQVAE, _VQVAE_ERR = _try_import(_vqvae_classes)
IMPORT_S = time.perf_counter() - _t0


def _require(what: str, classes, error):
    """The imported classes, or exit with a clear message while that part is still being written."""
    if classes is None:
        raise SystemExit(
            f"ours_runner.py: {what} is not available yet in hf_jukebox_mir ({error}). "
            "This measurement can run once that module exists."
        )
    return classes


def fill_zero_tensors_(module: torch.nn.Module, seed: int) -> None:
    """Random values for 2-D+ float tensors left all-zero by the initialisation (e.g. codebook buffers),
    so a random-weight model does not collapse to one code; timing does not depend on the values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point() and tensor.dim() >= 2 and not bool(tensor.any()):
                tensor.copy_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * 0.02)


def build_prior(args: argparse.Namespace, num_layers: int, dtype: torch.dtype):
    JukeboxPriorConfig, JukeboxPrior = _require("the prior (modeling_jukebox_prior)", _PRIOR, _PRIOR_ERR)
    config = JukeboxPriorConfig.from_preset(
        "prior_5b",
        hidden_size=args.width,
        num_hidden_layers=num_layers,
        num_attention_heads=args.heads,
        n_ctx=args.n_ctx,
        blocks=args.blocks,
    )
    torch.manual_seed(args.seed)
    prior = JukeboxPrior(config)
    fill_zero_tensors_(prior, args.seed)
    return prior.to(device=args.device, dtype=dtype).eval()


def measure_prior(args: argparse.Namespace, record: dict) -> None:
    dtype = DTYPES[args.dtype]
    truncated = args.measure in ("prior_layer", "clip_layer")
    clip = clip_tokens(args) if args.measure == "clip_layer" else args.n_ctx
    if truncated and not 1 <= args.layer <= args.depth:
        raise SystemExit(f"--layer must be in 1..{args.depth}, got {args.layer}")
    t = time.perf_counter()
    prior = build_prior(args, args.layer if truncated else args.depth, dtype)
    record["build_s"] = time.perf_counter() - t
    record["params_total"] = sum(p.numel() for p in prior.parameters())
    record["layers_run"] = len(prior.layers)
    record["attn_implementation"] = getattr(prior.config, "_attn_implementation", None)
    record["rss_model_mb"] = rss_now_mb()
    generator = torch.Generator().manual_seed(args.seed + 1)
    codes = torch.randint(0, 2048, (args.batch, args.n_ctx), generator=generator)[:, :clip].to(args.device)
    metadata = torch.tensor([metadata_row(args.n_ctx)] * args.batch, dtype=torch.long).to(args.device)

    def forward():
        with torch.inference_mode():
            # layer extraction needs no logits: the MIR model passes logits_to_keep=1 the same way
            out = prior(
                input_ids=codes,
                metadata=metadata,
                output_hidden_states=not truncated,
                logits_to_keep=1 if truncated else 0,
            )
        if truncated:
            return {"layer_activations": out.last_hidden_state}
        return {"logits": out.logits, "hidden_states": out.hidden_states}

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times, out, cpu_times = time_callable(forward, args.repeats, args.warmup, sync, serve=args.serve)
    record.update(summarize(times, cpu_times))
    if truncated:
        acts = out["layer_activations"]
        record["output"] = {"layer_activations": list(acts.shape), "finite": bool(torch.isfinite(acts).all())}
    else:
        record["output"] = {
            "logits": list(out["logits"].shape),
            "hidden_states": [len(out["hidden_states"]), *out["hidden_states"][-1].shape],
            "finite": bool(torch.isfinite(out["logits"]).all()),
        }
    record["tokens_per_s"] = args.batch * clip / record["median_s"]  # useful tokens


def measure_vqvae(args: argparse.Namespace, record: dict) -> None:
    JukeboxVQVAEConfig, JukeboxVQVAE = _require("the VQ-VAE (modeling_jukebox_vqvae)", _VQVAE, _VQVAE_ERR)
    t = time.perf_counter()
    torch.manual_seed(args.seed)
    vqvae = JukeboxVQVAE(JukeboxVQVAEConfig.from_preset("5b"))
    fill_zero_tensors_(vqvae, args.seed)
    vqvae = vqvae.to(args.device).eval()  # fp32, as the port (which cannot encode in half precision)
    record["build_s"] = time.perf_counter() - t
    record["params_total"] = sum(p.numel() for p in vqvae.parameters())
    record["rss_model_mb"] = rss_now_mb()
    samples = audio_samples(args.seconds)
    generator = torch.Generator().manual_seed(args.seed + 2)
    audio = (torch.rand((args.batch, samples), generator=generator) * 2 - 1).to(args.device)

    def encode():
        with torch.inference_mode():
            return vqvae.encode(audio, start_level=2)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    times, out, cpu_times = time_callable(encode, args.repeats, args.warmup, sync, serve=args.serve)
    codes = out.audio_codes if hasattr(out, "audio_codes") else out
    if isinstance(codes, (list, tuple)):
        codes = codes[-1]
    record.update(summarize(times, cpu_times))
    record["audio_seconds"] = samples / 44100 * args.batch
    record["s_per_audio_second"] = record["median_s"] / record["audio_seconds"]
    record["output"] = {"top_codes": list(codes.shape)}
    record["dtype"] = "float32"
    record["config"] = {
        "vqvae": "5b (levels 3, hops 8/32/128, width 32 x [2,1,1], depth 4)",
        "batch": args.batch,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    record = base_record(
        args,
        side="ours",
        impl=f"hf_jukebox_mir {getattr(hf_jukebox_mir, '__version__', '?')}",
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        threads=torch.get_num_threads(),
        import_s=IMPORT_S,
    )
    if args.measure in ("prior_layer", "clip_layer"):
        record["config"].update(layer=args.layer, truncate="build")
    if args.measure == "clip_layer":
        record["config"].update(clip_tokens=clip_tokens(args), tokens_run=clip_tokens(args))
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
