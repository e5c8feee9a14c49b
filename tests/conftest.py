from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"


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
    """`converted(name)` -> (prior converted from tests/fixtures/<name>, its golden tensors); converted once per session.

    Tests must not modify the returned model in place (copy it first)."""
    from safetensors.torch import load_file

    from hf_jukebox_mir.conversion.prior import convert_prior_checkpoint

    cache = {}

    def get(name):
        if name not in cache:
            path = fixtures_dir / name / f"{PRIOR_FIXTURES[name]}.pth.tar"
            cache[name] = (convert_prior_checkpoint(path).eval(), load_file(fixtures_dir / name / "golden.safetensors"))
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
