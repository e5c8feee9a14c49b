"""The README's main job: `jukebox-mir demo`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

import hf_jukebox_mir
from hf_jukebox_mir.cli import main as cli_main
from hf_jukebox_mir.cli.demo import build_tiny_mir_model

hf_jukebox_mir.register()  # the Auto classes (AutoModel/AutoFeatureExtractor on our folders)


def _tone(freq: float, seconds: float = 0.8) -> np.ndarray:
    t = np.arange(int(44100 * seconds)) / 44100
    return (0.8 * np.sin(2 * np.pi * freq * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)


def test_tiny_model_codebook_from_audio_gives_informative_codes(tmp_path):
    audio = [_tone(f) for f in (110.0, 220.0, 440.0, 880.0)]
    folder = build_tiny_mir_model(tmp_path / "m", seed=0, calibration_audio=audio)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.stack([audio[0][:32768], audio[3][:32768]])))
    assert out.audio_codes.unique().numel() > 8  # a data-initialised codebook uses many codes
    assert not torch.allclose(out.pooler_output[0], out.pooler_output[1])  # different audio, different features


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert cli_main(["demo", "--output", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "| chroma |" in printed and "| jukebox-tiny |" in printed
    assert "Frame level: beat / downbeat tracking" in printed and "| onset |" in printed  # next to the clip task
    assert (tmp_path / "demo" / "probe-jukebox-tiny" / "results.json").is_file()
