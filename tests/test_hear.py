"""HEAR API contract (hearbenchmark.com/hear-api.html) of `hf_jukebox_mir.hear` on the fixture model.

The `hearvalidator` package needs Python < 3.9 (not installable here), so its checks are written out:
attributes, shapes, float32 torch outputs, timestamps in milliseconds, and batches of different lengths."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from hf_jukebox_mir import hear
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from test_pipeline_jukebox import build_mir_folder

WINDOW = 4096


@pytest.fixture(scope="module")
def model(tmp_path_factory, fixtures_dir):
    source = build_mir_folder(tmp_path_factory, fixtures_dir)
    folder = tmp_path_factory.mktemp("hear") / "mir-small"
    shutil.copytree(source, folder)
    JukeboxFeatureExtractor(window_length=WINDOW).save_pretrained(folder)
    return hear.load_model(str(folder), frame_rate=50.0, device="cpu")


def _audio(n_sounds: int, n_samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(n_sounds, n_samples, generator=g)


def test_attributes(model):
    assert model.sample_rate == 44100
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize("n_samples", [3000, 2 * WINDOW + 500])
def test_shapes_and_timestamps_for_batches_of_different_lengths(model, n_samples):
    audio = _audio(3, n_samples)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    n_native = n_samples // 128
    expected_times = int(np.ceil(n_native * 50.0 / model.model.config.frame_rate))
    assert emb.shape == (3, expected_times, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert ts.shape == (3, expected_times) and ts.dtype == torch.float32
    diffs = torch.diff(ts, dim=1)
    assert torch.all(diffs > 0) and torch.allclose(diffs[:, :-1], torch.tensor(20.0))  # 50 Hz = 20 ms hop, in ms
    assert float(ts[0, 0]) == pytest.approx(10.0) and float(ts.max()) <= 1000 * n_samples / 44100 + 1e-3
    # the scene embedding is the mean over all real frames: the frame-count-weighted mean of the timestamp bins
    frames = model.pipeline(audio[0].numpy(), sampling_rate=44100, layers=model.layer, pooling="none")
    np.testing.assert_allclose(scene[0].numpy(), frames.mean(0), rtol=1e-4, atol=1e-5)
    # sounds are independent of their batch neighbours
    np.testing.assert_allclose(hear.get_scene_embeddings(audio[1:2], model)[0], scene[1], rtol=1e-5, atol=1e-6)


def test_bad_inputs(model):
    with pytest.raises(JukeboxInputError, match=r"HEAR audio must be a 2-D torch tensor \(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(100), model)
    with pytest.raises(JukeboxInputError, match=r"hear.load_model needs the path of a Jukebox MIR folder"):
        hear.load_model("")
