"""JukeMIR-exact windowing (issue 18): `max_windows` / `window_hop` through the pipeline, `extract` and the
embedding function, and the window-average weighting the README states."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hf_jukebox_mir
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from test_pipeline_jukebox import build_mir_folder

hf_jukebox_mir.register()
SR = 44100
WINDOW = 4096
HOP = 128


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fixtures_dir) -> Path:
    source = build_mir_folder(tmp_path_factory, fixtures_dir)
    folder = tmp_path_factory.mktemp("jukemir_exact") / "mir-small"
    shutil.copytree(source, folder)
    JukeboxFeatureExtractor(window_length=WINDOW).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    from hf_jukebox_mir.models.pipeline_jukebox import jukebox_feature_extraction_pipeline

    return jukebox_feature_extraction_pipeline(str(model_dir), device="cpu")


def _audio(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * 330 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


def test_window_average_is_weighted_by_real_frames(pipe):
    audio = _audio(int(2.5 * WINDOW))  # windows of 32, 32 and 16 real frames
    per_window = pipe(audio, sampling_rate=SR, window_aggregation="none")  # (3, dim)
    weights = np.array([WINDOW // HOP, WINDOW // HOP, WINDOW // 2 // HOP], dtype=np.float64)
    expected = (per_window * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(pipe(audio, sampling_rate=SR), expected, rtol=1e-5, atol=1e-6)
    # ... which (windows do not overlap) is not the plain mean of the windows
    assert not np.allclose(per_window.mean(0), expected, rtol=1e-4, atol=1e-5)


def test_pipeline_honours_max_windows_and_window_hop(pipe):
    audio = _audio(3 * WINDOW)
    per_window = pipe(audio, sampling_rate=SR, window_aggregation="none")
    np.testing.assert_allclose(pipe(audio, sampling_rate=SR, max_windows=1), per_window[0], rtol=1e-6, atol=1e-6)
    assert pipe(audio, sampling_rate=SR, max_windows=2, window_aggregation="none").shape[0] == 2
    assert pipe(audio, sampling_rate=SR, window_hop=WINDOW // 2, window_aggregation="none").shape[0] == 5
    assert pipe.feature_extractor.max_windows is None  # call options never change the folder's extractor
    with pytest.raises(JukeboxInputError, match=r"max_windows must be a positive integer, got 0"):
        pipe(audio, sampling_rate=SR, max_windows=0)
    with pytest.raises(JukeboxInputError, match=r"window_hop must be a positive multiple of hop_length=128"):
        pipe(audio, sampling_rate=SR, window_hop=100)


def test_embed_fn_and_extract_cli_keep_the_first_window(model_dir, pipe, tmp_path):
    import datasets

    from hf_jukebox_mir.cli import main
    from hf_jukebox_mir.extraction.engine import make_embed_fn

    audio = _audio(3 * WINDOW)
    first = pipe(audio, sampling_rate=SR, max_windows=1)
    embed = make_embed_fn(str(model_dir), max_windows=1)
    np.testing.assert_allclose(embed([audio])[0, 0], first, rtol=1e-5, atol=1e-6)
    sf.write(tmp_path / "a.wav", audio, SR, subtype="FLOAT")
    out = tmp_path / "out"
    assert (
        main(
            [
                "extract",
                str(tmp_path / "a.wav"),
                "--model",
                str(model_dir),
                "--output",
                str(out),
                "--max-windows",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    row = datasets.load_from_disk(str(out))[0]
    assert row["n_windows"] == 1
    np.testing.assert_allclose(np.asarray(row["layer_6"]), first, rtol=1e-5, atol=1e-6)


def test_extract_keeps_input_columns_and_every_split(model_dir, tmp_path):
    import datasets

    from hf_jukebox_mir.extraction.engine import extract_dataset

    def split(seed, labels):
        rows = [{"array": _audio(3000 + 500 * i) * (1 + seed), "sampling_rate": SR} for i in range(len(labels))]
        return datasets.Dataset.from_dict(
            {"audio": rows, "label": labels, "song": [f"s{seed}-{i}" for i in range(len(labels))]},
            features=datasets.Features(
                {
                    "audio": {
                        "array": datasets.List(datasets.Value("float32")),
                        "sampling_rate": datasets.Value("int64"),
                    },
                    "label": datasets.ClassLabel(names=["no", "yes"]),
                    "song": datasets.Value("string"),
                }
            ),
        )

    dd = datasets.DatasetDict({"train": split(0, [0, 1, 1]), "test": split(1, [1, 0])})
    dd.save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "out"
    result = extract_dataset(tmp_path / "dd", model_dir, out, progress=False)
    assert result.num_done == 5 and not result.failures
    ds = datasets.load_from_disk(str(out))
    assert ds["id"] == ["train/0", "train/1", "train/2", "test/0", "test/1"]
    assert ds["split"] == ["train"] * 3 + ["test"] * 2
    assert ds["label"] == [0, 1, 1, 1, 0] and ds.features["label"].names == ["no", "yes"]
    assert ds["song"][3] == "s1-0"


def test_mir_card_states_the_folder_window_and_frame_rate(model_dir):
    from hf_jukebox_mir.publishing.cards import render_model_card

    card = str(render_model_card(model_dir))
    assert "One window is 4,096 samples (0.09 s at 44.1 kHz)" in card and "344.53 frames per second" in card
    assert "8192 top-level tokens" not in card
    assert "pip install transformers torch soundfile soxr" in card
