"""The generated offline benchmark: layout, labels, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.probing.chroma import ChromaEmbedder, chromagram
from hf_jukebox_mir.probing.metrics import KEY_LABELS
from hf_jukebox_mir.probing.mir_datasets import load_audio_clip, load_synthetic
from hf_jukebox_mir.probing.synthetic_mir import generate_synthetic_mir, render_clip
from hf_jukebox_mir.probing.tasks import SYNTHETIC_INSTRUMENTS

SMALL = dict(songs_per_split=(24, 4, 4), clips_per_song=2, clip_seconds=1.0)


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate_synthetic_mir(root, seed=3, **SMALL)


def test_layout_and_splits(small_benchmark):
    root, ds = small_benchmark
    assert (root / "metadata.csv").is_file() and (root / "synthetic_mir.json").is_file()
    assert {k: len(v) for k, v in ds.items()} == {"train": 48, "validation": 8, "test": 8}
    assert len(list((root / "audio" / "train").glob("*.wav"))) == 24
    info = json.loads((root / "synthetic_mir.json").read_text())
    assert info["config"]["seed"] == 3 and info["key_labels"] == list(KEY_LABELS)
    row = ds["train"][1]
    assert row["clip_id"].endswith("-1") and row["offset"] == 1.0 and row["duration"] == 1.0
    audio = load_audio_clip(row["audio"], row["offset"], row["duration"])
    assert audio.shape == (44100,) and 0.05 < np.abs(audio).max() <= 1.0


def test_key_labels_balanced_and_consistent_per_song(small_benchmark):
    _, ds = small_benchmark
    train = ds["train"]
    assert train.features["label"].names == list(KEY_LABELS)
    per_song = {}
    for song, label in zip(train["song_id"], train["label"]):
        assert per_song.setdefault(song, label) == label
    assert sorted(per_song.values()) == list(range(24))  # 24 train songs: every key exactly once


def test_instrument_labels(small_benchmark):
    root, _ = small_benchmark
    ds = load_synthetic(root, task="synthetic_instruments")
    labels = np.array(ds["train"]["labels"])
    assert labels.shape == (48, len(SYNTHETIC_INSTRUMENTS))
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert (labels.sum(1) >= 1).all() and (labels.sum(1) <= 3).all()
    assert (labels.sum(0) > 0).all()  # every timbre plays somewhere in train


def test_deterministic_by_seed(tmp_path):
    kwargs = dict(songs_per_split=(2, 1, 1), clips_per_song=1, clip_seconds=0.5)
    generate_synthetic_mir(tmp_path / "a", seed=7, **kwargs)
    generate_synthetic_mir(tmp_path / "b", seed=7, **kwargs)
    generate_synthetic_mir(tmp_path / "c", seed=8, **kwargs)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_reuse_and_refusals(small_benchmark, tmp_path):
    root, ds = small_benchmark
    again = generate_synthetic_mir(root, seed=3, **SMALL)  # same parameters: reused, not rewritten
    assert again["test"]["clip_id"] == ds["test"]["clip_id"]
    with pytest.raises(JukeboxInputError, match="already holds a synthetic benchmark generated with"):
        generate_synthetic_mir(root, seed=4, **SMALL)
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(JukeboxInputError, match="is not empty and holds no synthetic benchmark"):
        generate_synthetic_mir(tmp_path, **SMALL)
    with pytest.raises(JukeboxInputError, match="songs_per_split must be three positive integers"):
        generate_synthetic_mir(tmp_path / "x", songs_per_split=(1, 0, 1))
    with pytest.raises(JukeboxInputError, match="serves synthetic_key and synthetic_instruments"):
        load_synthetic(root, task="gtzan")


def test_clip_chroma_points_to_the_key():
    rng = np.random.default_rng(0)
    for key in (0, 9, 12 + 4):  # C major, A major, E minor
        audio = render_clip(key, {"organ": ["chords", "melody"]}, 2.0, 44100, rng)
        profile = chromagram(audio).mean(axis=1)
        tonic = key % 12
        third = (tonic + (3 if key >= 12 else 4)) % 12
        top3 = set(np.argsort(profile)[-3:].tolist())
        assert tonic in top3 or third in top3, (KEY_LABELS[key], profile.round(2))
        assert profile[tonic] > profile[(tonic + 1) % 12] and profile[tonic] > profile[(tonic + 6) % 12]


def test_chroma_embedder_interface():
    embed = ChromaEmbedder()
    t = np.arange(22050) / 44100
    out = embed([np.sin(2 * np.pi * 440 * t).astype(np.float32), np.zeros(100, np.float32)])
    assert out.shape == (2, 1, 72) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out[0, 0, :12].argmax() == 9  # A
    with pytest.raises(JukeboxInputError, match="list of waveforms"):
        embed(np.zeros(100, np.float32))
    assert Counter(embed.layer_names) == {"chroma": 1}
