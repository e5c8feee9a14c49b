"""One sampling measurement of OUR implementation (``hf_jukebox_mir.sample_prior``), printed as JSON.

Runs in the main environment, with the same arguments and JSON fields as ``orig_runner.py``::

    python benchmarks/ours_sampling_runner.py --prior top --batch 1 [--compile]

The original-format checkpoint is converted in memory by our converter
(``hf_jukebox_mir.conversion.prior.load_prior_checkpoint``, float32 as the original computes); each timed
call is ONE public ``sample_prior(...)``: conditioning from the same labels (and upper-level codes for an
upsampler), the prompt prefilled in chunks, then the token loop (``JukeboxSamplingState``), with the same
temperature / top-k / top-p as the original side. ``--compile`` passes ``compile=True`` through when
``sample_prior`` accepts it; while it does not, the runner exits with "not available" (``compile_supported``).
"""

from __future__ import annotations

import argparse
import inspect
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
import torch  # noqa: E402

try:
    import hf_jukebox_mir  # noqa: E402
    from hf_jukebox_mir import sample_prior  # noqa: E402
    from hf_jukebox_mir.conversion.prior import load_prior_checkpoint  # noqa: E402
except ImportError as exc:  # pragma: no cover - only without the package installed
    raise SystemExit(
        f"ours_sampling_runner.py needs the hf_jukebox_mir package in this interpreter ({sys.executable}): {exc}. "
        "Install it with `pip install -e .` from the repository root."
    ) from exc

IMPORT_S = time.perf_counter() - _t0
COMPILE_NOT_AVAILABLE = (
    "not available: hf_jukebox_mir.sample_prior has no `compile` argument (no compiled decode step yet)"
)


def compile_supported() -> bool:
    """Whether our public sampling function offers a compiled decode step (``sample_prior(..., compile=True)``)."""
    return "compile" in inspect.signature(sample_prior).parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sampling_args(parser)
    parser.add_argument("--compile", action="store_true", help="sample_prior(..., compile=True) when available")
    args = parser.parse_args(argv)
    if args.compile and not compile_supported():
        raise SystemExit(COMPILE_NOT_AVAILABLE)
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or SAMPLING_CHECKPOINTS[args.prior]

    t = time.perf_counter()
    prior = load_prior_checkpoint(checkpoint).eval()
    build_s = time.perf_counter() - t
    config = prior.config
    level, n_ctx = int(config.level), int(config.n_ctx)
    inputs = sampling_inputs(args, level, n_ctx, int(config.max_genres))
    tokens = inputs["tokens"]
    side = "ours_compiled" if args.compile else "ours"
    record = sampling_record(
        args,
        side=side,
        impl=f"hf_jukebox_mir {getattr(hf_jukebox_mir, '__version__', '?')}"
        + (" (compile=True)" if args.compile else " (eager)"),
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
    extra = {"compile": True} if args.compile else {}
    prime = inputs["prime"] if args.prime else None

    def call():
        generator = torch.Generator().manual_seed(args.seed + 2)
        codes = sample_prior(
            prior,
            n_samples=args.batch,
            prime_codes=prime,
            metadata=inputs["labels"],
            upper_level_codes=inputs["upper"],
            num_tokens=tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=generator,
            chunk_size=args.chunk_size,
            **extra,
        )
        return codes

    times, codes, cpu_times = time_callable(call, args.repeats, args.warmup, None, serve=args.serve)
    finish_sampling_record(record, times, cpu_times, codes[:, args.prime :], args.return_codes)
    emit(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
