"""Create (idempotently) the separate virtual environment that holds the old transformers port.

The Jukebox port of transformers 4.x was deleted in 5.0; its last release is 4.57.6. It cannot live
beside transformers 5 in the main environment, so the port-side benchmarks run in
``benchmarks/.venv-port`` (git-ignored), created here with::

    python benchmarks/port_env.py            # create or reuse, then print the interpreter path
    python benchmarks/port_env.py --check    # only report whether it is ready (exit 1 if not)

The environment gets ``torch==2.13.0`` (the same CPU build as the main environment, so both sides
run the same kernels), ``transformers==4.57.6`` and ``numpy``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".venv-port"
REQUIREMENTS = ["torch==2.13.0", "transformers==4.57.6", "numpy"]
# Import used to decide that an existing environment is complete.
_PROBE = (
    "import torch, transformers, numpy;"
    "from transformers.models.deprecated.jukebox.modeling_jukebox import JukeboxPrior, JukeboxVQVAE;"
    "print(torch.__version__, transformers.__version__)"
)


def venv_python(venv_dir: Path = VENV_DIR) -> Path:
    """Path of the interpreter inside ``venv_dir`` (POSIX or Windows layout)."""
    posix = venv_dir / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv_dir / "Scripts" / "python.exe"


def probe(venv_dir: Path = VENV_DIR, probe_code: str = _PROBE) -> str | None:
    """Return the last line ``probe_code`` prints (versions) when the environment works, else ``None``."""
    python = venv_python(venv_dir)
    if not python.exists():
        return None
    result = subprocess.run([str(python), "-c", probe_code], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip().splitlines()[-1]


def ensure_venv(venv_dir: Path, requirements: list[str], probe_code: str, tag: str, verbose: bool = True) -> Path:
    """Create ``venv_dir`` with ``requirements`` unless ``probe_code`` already runs there; return its python.

    Shared by this file and ``orig_env.py`` (``tag`` prefixes the messages).
    """

    def say(msg: str) -> None:
        if verbose:
            print(f"[{tag}] {msg}", flush=True)

    versions = probe(venv_dir, probe_code)
    if versions is not None:
        say(f"reusing {venv_dir} ({versions})")
        return venv_python(venv_dir)
    if not venv_python(venv_dir).exists():
        say(f"creating virtual environment {venv_dir}")
        venv.EnvBuilder(with_pip=True, clear=False).create(venv_dir)
    else:
        say(f"{venv_dir} exists but is incomplete; installing into it")
    python = str(venv_python(venv_dir))
    cmd = [python, "-m", "pip", "install", *requirements]
    say("running: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    versions = probe(venv_dir, probe_code)
    if versions is None:
        raise RuntimeError(
            f"{venv_dir} was set up but the probe still fails; run\n  {python} -c "
            f"'{probe_code}'\nto see the error, or delete the folder and rerun this script."
        )
    say(f"ready: {versions}")
    return venv_python(venv_dir)


def ensure_port_env(venv_dir: Path = VENV_DIR, verbose: bool = True) -> Path:
    """Create ``venv_dir`` with the port's requirements unless it already works; return its python."""
    return ensure_venv(venv_dir, REQUIREMENTS, _PROBE, "port_env", verbose)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether the env is ready")
    parser.add_argument("--venv", type=Path, default=VENV_DIR, help="where the environment lives")
    args = parser.parse_args(argv)
    if args.check:
        versions = probe(args.venv)
        print(f"[port_env] {'ready: ' + versions if versions else 'missing or incomplete'}: {args.venv}")
        return 0 if versions else 1
    print(ensure_port_env(args.venv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
