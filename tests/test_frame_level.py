"""Frame-level MIR (issue 18): timestamps per frame in `extract`, annotation readers and corpus loaders, the
synthetic frame-level benchmark, and beat / downbeat F-measure and chord accuracy computed by mir_eval for the
onset / chroma baselines and the fixture model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hf_jukebox_mir
from hf_jukebox_mir.cli import main
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from hf_jukebox_mir.probing import frame_level as fl
from test_pipeline_jukebox import build_mir_folder

hf_jukebox_mir.register()
SR = 44100


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames") / "synthetic"
    return fl.generate_synthetic_frames(root, tracks_per_split=(8, 3, 3), seconds=4.0, seed=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fixtures_dir) -> Path:
    source = build_mir_folder(tmp_path_factory, fixtures_dir)
    folder = tmp_path_factory.mktemp("frame_model") / "mir-small"
    shutil.copytree(source, folder)
    JukeboxFeatureExtractor(window_length=8192).save_pretrained(folder)
    return folder


def test_annotation_readers_and_majmin(tmp_path):
    (tmp_path / "a.beats").write_text("0.5 1\n1.0 2\n1.5\t3\n")
    times, positions = fl.read_beats(tmp_path / "a.beats")
    np.testing.assert_allclose(times, [0.5, 1.0, 1.5])
    assert positions.tolist() == [1, 2, 3]
    (tmp_path / "b.beats").write_text("0.25\n0.75\n")
    assert fl.read_beats(tmp_path / "b.beats")[1].tolist() == [0, 0]
    (tmp_path / "c.lab").write_text("0.0 1.0 C:maj\n1.0 2.0 A:min7\n2.0 3.0 N\n")
    intervals, labels = fl.read_chords(tmp_path / "c.lab")
    assert intervals.shape == (3, 2) and labels == ["C:maj", "A:min7", "N"]
    assert [fl.CHORD_LABELS[fl.majmin_index(x)] for x in labels] == ["C:maj", "A:min", "N"]


def test_synthetic_benchmark_layout_and_determinism(corpus, tmp_path):
    assert {s: len(corpus.split(s)) for s in fl.SPLITS} == {"train": 8, "validation": 3, "test": 3}
    assert corpus.coverage["complete"] is True
    track = corpus.split("train")[0]
    assert track.beats.size >= 4 and set(track.beat_positions.tolist()) <= {1, 2, 3, 4}
    assert len(track.chord_labels) == len(track.chord_intervals) >= 1
    again = fl.generate_synthetic_frames(tmp_path / "again", tracks_per_split=(8, 3, 3), seconds=4.0, seed=1)
    np.testing.assert_array_equal(again.split("test")[2].beats, corpus.split("test")[2].beats)


def test_baselines_scored_by_mir_eval(corpus, tmp_path):
    beats = fl.run_frame_task(
        corpus, "beats", fl.baseline_frame_fn("onset", 50.0), frame_rate=50.0, output_dir=tmp_path / "beats"
    )
    chords = fl.run_frame_task(corpus, "chords", fl.baseline_frame_fn("chroma", 50.0), frame_rate=50.0)
    assert beats["test"]["beat_f_measure"] > 0.9 and beats["test"]["downbeat_f_measure"] > 0.8
    # 25 classes (chance about 0.04) from 8 short training tracks
    assert chords["test"]["chord_majmin"] > 0.4 and chords["test"]["chord_root"] >= chords["test"]["chord_majmin"]
    assert beats["metric_source"].startswith("mir_eval")
    saved = json.loads((tmp_path / "beats" / "results.json").read_text())
    assert (
        saved["test"] == beats["test"]
        and "| synthetic_frames | beats | onset |" in (tmp_path / "beats" / "results.md").read_text()
    )


def test_fixture_model_frame_probes_through_the_cli(corpus, model_dir, tmp_path, capsys):
    data = Path(corpus.split("train")[0].audio).parent.parent
    for task in ("synthetic_beats", "synthetic_chords"):
        out = tmp_path / task
        assert (
            main(
                [
                    "probe",
                    "--task",
                    task,
                    "--data",
                    str(data),
                    "--model",
                    str(model_dir),
                    "--frame-rate",
                    "50",
                    "--output",
                    str(out),
                ]
            )
            == 0
        )
        results = json.loads((out / "results.json").read_text())
        assert results["features"] == "jukebox layer 6"
        assert all(0.0 <= v <= 1.0 for v in results["test"].values())


def test_extract_writes_a_timestamp_per_frame(model_dir, tmp_path):
    import datasets

    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(20000) / SR)).astype(np.float32)
    sf.write(tmp_path / "a.wav", audio, SR)
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
                "--frame-rate",
                "30",
                "--quiet",
            ]
        )
        == 0
    )
    row = datasets.load_from_disk(str(out)).with_format("numpy")[0]
    frames, times = row["layer_6"], row["frame_times"]
    assert frames.shape[0] == times.shape[0] == int(np.ceil((20000 // 128) * 30 / (SR / 128)))
    np.testing.assert_allclose(times, (np.arange(len(times)) + 0.5) / 30, rtol=1e-6)


def test_ballroom_loader(tmp_path):
    root = tmp_path / "ballroom"
    (root / "BallroomData" / "ChaChaCha").mkdir(parents=True)
    (root / "BallroomAnnotations").mkdir()
    for i in range(12):
        sf.write(root / "BallroomData" / "ChaChaCha" / f"t{i}.wav", np.zeros(4410, np.float32), SR)
        (root / "BallroomAnnotations" / f"t{i}.beats").write_text("0.1 1\n0.6 2\n")
    (root / "BallroomAnnotations" / "missing.beats").write_text("0.1 1\n")
    corpus = fl.load_ballroom(root)
    assert sum(len(corpus.split(s)) for s in fl.SPLITS) == 12
    assert corpus.coverage["complete"] is False and corpus.coverage["split_rule"].startswith("crc32")
