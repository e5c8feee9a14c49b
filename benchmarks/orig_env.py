"""Create (idempotently) the separate virtual environment that holds the ORIGINAL Jukebox sampling code.

The original code (openai/jukebox) is not on PyPI for current torch; the PyPI package ``jukebox-infer``
is an inference-only copy of it (same modules: ``prior/prior.py`` ``SimplePrior.sample``,
``prior/autoregressive.py`` ``ConditionalAutoregressive2D.sample/primed_sample`` with the original
per-layer key/value cache of ``transformer/factored_attention.py``, the original ``hparams`` registry and
``make_models.make_prior``), made to run on torch >= 2.7. It lives in ``benchmarks/.venv-orig``
(git-ignored), created here with::

    python benchmarks/orig_env.py            # create or reuse, then print the interpreter path
    python benchmarks/orig_env.py --check    # only report whether it is ready (exit 1 if not)

The environment gets ``torch==2.13.0`` (the same CPU build as the main environment, so both sides run the
same kernels) and ``jukebox-infer==0.1.2`` with its declared dependencies (librosa, soundfile, tqdm,
unidecode, numpy: the package's ``__init__`` imports its audio helpers). Nothing is fetched outside the
package registry and no code is copied into this repository; ``orig_runner.py`` only imports the package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from port_env import ensure_venv, probe  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".venv-orig"
ORIGINAL_PACKAGE = "jukebox-infer==0.1.2"
REQUIREMENTS = ["torch==2.13.0", ORIGINAL_PACKAGE, "numpy"]
# Imports used to decide that an existing environment is complete (the modules orig_runner.py uses).
_PROBE = (
    "import importlib.metadata as m, torch;"
    "from jukebox_infer.hparams import setup_hparams;"
    "from jukebox_infer.make_models import make_vqvae, make_prior;"
    "from jukebox_infer.prior.prior import SimplePrior;"
    "print('torch', torch.__version__, 'jukebox-infer', m.version('jukebox-infer'))"
)


def ensure_orig_env(venv_dir: Path = VENV_DIR, verbose: bool = True) -> Path:
    """Create ``venv_dir`` with the original code unless it already works; return its python."""
    return ensure_venv(venv_dir, REQUIREMENTS, _PROBE, "orig_env", verbose)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the env is ready")
    parser.add_argument("--venv", type=Path, default=VENV_DIR, help="where the environment lives")
    args = parser.parse_args(argv)
    if args.check:
        versions = probe(args.venv, _PROBE)
        print(f"[orig_env] {'ready: ' + versions if versions else 'missing or incomplete'}: {args.venv}")
        return 0 if versions else 1
    print(ensure_orig_env(args.venv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
