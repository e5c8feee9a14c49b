from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"

# Prepended to every script run by `run_without_package`: hf_jukebox_mir (an editable install is on sys.path
# through site-packages) cannot be imported, and the script fails if it still could.
_HIDE_PACKAGE = """\
import importlib.abc, sys

class _HidePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_jukebox_mir" or name.startswith("hf_jukebox_mir."):
            raise ImportError("hf_jukebox_mir is hidden in this test: " + name)
        return None

sys.meta_path.insert(0, _HidePackage())
try:
    import hf_jukebox_mir  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("hf_jukebox_mir is importable; the test would prove nothing")
"""


def run_without_package(body: str, *args, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `body` (a Python script, dedented) in a fresh isolated interpreter where hf_jukebox_mir cannot be
    imported: what a `trust_remote_code=True` user without the package has. `args` become `sys.argv[1:]`;
    remote code is cached under `tmp_path / "modules"`; the Hub is offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    script = _HIDE_PACKAGE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-I", "-c", script, *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


PRIOR_FIXTURES = {  # fixture folder -> original checkpoint file name
    "prior_5b_top": "prior_level_2",
    "prior_5b_lyrics_top": "prior_level_2",
    "prior_1b_lyrics_top": "prior_level_2",
    "upsampler_level_1": "prior_level_1",
    "upsampler_level_0": "prior_level_0",
}


@pytest.fixture(scope="session")
def converted(fixtures_dir):
    """`converted(name)` -> (prior converted from tests/fixtures/<name>, its golden tensors); converted once per
    session.

    Tests must not modify the returned model in place (copy it first)."""
    from safetensors.torch import load_file

    from hf_jukebox_mir.conversion.prior import load_prior_checkpoint

    cache = {}

    def get(name):
        if name not in cache:
            path = fixtures_dir / name / f"{PRIOR_FIXTURES[name]}.pth.tar"
            cache[name] = (load_prior_checkpoint(path).eval(), load_file(fixtures_dir / name / "golden.safetensors"))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and probes run fastest on one thread (two threads on a busy 2-core machine stall)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
