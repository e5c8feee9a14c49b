"""One sampling measurement of the ORIGINAL Jukebox code (PyPI ``jukebox-infer``), printed as JSON.

Runs INSIDE ``benchmarks/.venv-orig`` (create it with ``python benchmarks/orig_env.py``)::

    benchmarks/.venv-orig/bin/python benchmarks/orig_runner.py --prior top --batch 1

What it does, with the original code only:

* the prior is built from the checkpoint's own hyperparameters (``hps`` inside the original-format
  ``*.pth.tar``) by the original ``make_models.make_prior`` (which also loads the checkpoint with its own
  ``restore_model``, fp16 Conv1D weights included when ``fp16_params``); ``make_prior`` reads shapes from a
  VQ-VAE object, so one is built by ``make_vqvae`` from the same hps, with random weights (sampling never
  runs it);
* each timed call is ONE ``SimplePrior.sample(...)``: the labels' and upper-level conditioning, then the
  original token loop with its per-layer key/value cache (``ConditionalAutoregressive2D.sample``, or
  ``primed_sample`` with ``--prime``), temperature and top-k / top-p filtering as the original.

One run-time patch, for CPU: the original asserts ``isinstance(x, torch.cuda.LongTensor)`` on its token
and label tensors (it only ever ran on GPUs), which is False for every CPU tensor. ``torch.cuda.LongTensor``
is aliased to ``torch.LongTensor`` in this process before the model runs, so those asserts check the same
thing on CPU (an int64 tensor) and stay in the loop, as on a GPU. Nothing else is changed.

The last stdout line is a JSON object with the same fields as ``ours_sampling_runner.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    SAMPLING_CHECKPOINTS,
    add_sampling_args,
    emit,
    finish_sampling_record,
    rss_now_mb,
    sampling_inputs,
    sampling_record,
    time_callable,
)

_t0 = time.perf_counter()
import importlib.metadata  # noqa: E402

import torch  # noqa: E402

try:
    from jukebox_infer.hparams import Hyperparams  # noqa: E402
    from jukebox_infer.make_models import make_prior, make_vqvae  # noqa: E402
except ImportError as exc:  # pragma: no cover - only outside the environment
    raise SystemExit(
        f"orig_runner.py needs the original code (jukebox-infer) in this interpreter ({sys.executable}): {exc}. "
        "Create its environment with `python benchmarks/orig_env.py` and run benchmarks/.venv-orig/bin/python."
    ) from exc

IMPORT_S = time.perf_counter() - _t0
ORIGINAL_VERSION = importlib.metadata.version("jukebox-infer")


def patch_cuda_long_tensor_for_cpu() -> None:
    """The run-time patch described in the module docstring (CPU only)."""
    torch.cuda.LongTensor = torch.LongTensor


def build_original_prior(checkpoint: Path):
    """The original SimplePrior from a checkpoint's own hps, loaded by the original code."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hps = Hyperparams(**saved["hps"])
    hps.restore_vqvae = ""  # no download: the VQ-VAE only lends its shapes to make_prior
    hps.restore_prior = str(checkpoint)
    quiet = io.StringIO()  # the original prints its progress; keep stdout for the JSON lines
    with contextlib.redirect_stdout(quiet):
        vqvae = make_vqvae(hps, device="cpu", auto_download=False)
        prior = make_prior(hps, vqvae, device="cpu", auto_download=False)
    return prior, hps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    patch_cuda_long_tensor_for_cpu()
    checkpoint = args.checkpoint or SAMPLING_CHECKPOINTS[args.prior]

    t = time.perf_counter()
    prior, hps = build_original_prior(checkpoint)
    build_s = time.perf_counter() - t
    level, n_ctx = int(hps.level), int(hps.n_ctx)
    inputs = sampling_inputs(args, level, n_ctx, int(hps.max_bow_genre_size))
    tokens = inputs["tokens"]
    record = sampling_record(
        args,
        side="orig",
        impl=f"original Jukebox code (jukebox-infer {ORIGINAL_VERSION})",
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        import_s=IMPORT_S,
        level=level,
        n_ctx=n_ctx,
        tokens=tokens,
    )
    record["build_s"] = build_s
    record["params_total"] = sum(p.numel() for p in prior.parameters())
    record["rss_model_mb"] = rss_now_mb()
    record["run_time_patch"] = "torch.cuda.LongTensor = torch.LongTensor (its isinstance asserts, on CPU)"
    z_conds = None if inputs["upper"] is None else [inputs["upper"]]
    prime = inputs["prime"] if args.prime else None
    generator_seed = args.seed + 2

    def call():
        torch.manual_seed(generator_seed)  # the original draws from the global RNG
        with contextlib.redirect_stdout(sys.stderr):  # its "Ancestral sampling ..." line and tqdm bar
            codes = prior.sample(
                args.batch,
                z=prime,
                z_conds=z_conds,
                y=inputs["labels"],
                temp=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                chunk_size=args.chunk_size,
                sample_tokens=args.prime + tokens,
            )
        return codes.view(args.batch, -1)

    times, codes, cpu_times = time_callable(call, args.repeats, args.warmup, None, serve=args.serve)
    finish_sampling_record(record, times, cpu_times, codes[:, args.prime :], args.return_codes)
    emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
