"""Probes as models (issue 18): `jukebox-mir probe --model` writes a Jukebox audio classifier folder (MIR model +
probe head) that loads with the Auto classes and with `trust_remote_code=True` in a fresh process without the
package, runs in `pipeline("audio-classification")` on audio files with the training-time predictions, passes
the Hub check, and whose card snippet runs as written. `--recipe jukemir` computes first-window features."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hf_jukebox_mir
from conftest import run_without_package
from hf_jukebox_mir.cli import main as cli_main
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from test_pipeline_jukebox import build_mir_folder

hf_jukebox_mir.register()
SR = 44100
WINDOW = 8192


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fixtures_dir) -> Path:
    source = build_mir_folder(tmp_path_factory, fixtures_dir)
    folder = tmp_path_factory.mktemp("classifier") / "mir-small"
    shutil.copytree(source, folder)
    JukeboxFeatureExtractor(window_length=WINDOW).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    from hf_jukebox_mir.probing.synthetic_mir import generate_synthetic_mir

    root = tmp_path_factory.mktemp("bench") / "synthetic"
    generate_synthetic_mir(root, task="synthetic_key", songs_per_split=(6, 3, 3), clips_per_song=1, clip_seconds=0.5)
    return root


def _clips(dataset_split):
    from hf_jukebox_mir.probing.mir_datasets import load_audio_clip

    rows = dataset_split.with_format(None)
    return [load_audio_clip(r["audio"], r["offset"] or 0.0, r["duration"], sampling_rate=SR) for r in rows]


def test_recipe_jukemir_uses_first_window_grid_and_schedule(model_dir, bench, tmp_path, monkeypatch):
    from transformers import AutoModel

    import hf_jukebox_mir.probing.classifier as classifier_module
    import hf_jukebox_mir.probing.training as training
    from hf_jukebox_mir.probing.reports import ProbeResults

    seen = {}

    def fake_grid(dataset, task, output, **kwargs):
        seen.update(kwargs, dataset=dataset)
        Path(output, "results.md").write_text("fake\n")
        # run_probe_grid returns the one ProbeResults dataclass (probing.reports) since the issue-16/18 merge
        return ProbeResults(
            task="synthetic_key",
            description="fake",
            feature_source=None,
            primary_metric="weighted_score",
            greater_is_better=True,
            chance_level={},
            grid="jukemir",
            num_configs=0,
            layers=[],
            schedule={},
            split_sizes={},
            best={"test": {"primary": 0.0}},
            jukemir_score=0.0,
        )

    monkeypatch.setattr(training, "run_probe_grid", fake_grid)
    monkeypatch.setattr(classifier_module, "save_audio_classifier", lambda *a, **k: tmp_path / "none")
    assert (
        cli_main(
            [
                "probe",
                "--task",
                "synthetic_key",
                "--data",
                str(bench),
                "--model",
                str(model_dir),
                "--recipe",
                "jukemir",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert seen["grid"] == "jukemir"
    assert (seen["schedule"].eval_steps, seen["schedule"].patience) == (
        training.JUKEMIR_SCHEDULE.eval_steps,
        training.JUKEMIR_SCHEDULE.patience,
    )
    assert seen["extraction"]["max_windows"] == 1 and seen["extraction"]["layers"] == ["6"]
    # the cached features are the first window's mean over frames of block 6, computed here directly
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    fe = JukeboxFeatureExtractor(window_length=WINDOW, normalize=None)
    split = seen["dataset"]["test"]
    for audio, cached in zip(_clips(split), np.asarray(split.with_format("numpy")["features"])):
        assert len(audio) > 2 * WINDOW  # the clip has several windows: the recipe keeps the first only
        audio = audio / np.abs(audio).max()  # JukeMIR: the whole clip peak-normalised, then its first window
        first = fe(audio[:WINDOW], sampling_rate=SR, return_tensors="pt", return_window_info=False)
        with torch.no_grad():
            direct = model(**first).pooler_output[0].numpy()
        np.testing.assert_allclose(cached.reshape(-1), direct, rtol=1e-5, atol=1e-5)


def test_recipe_refuses_contradicting_options(model_dir, bench, tmp_path, capsys):
    assert (
        cli_main(
            [
                "probe",
                "--task",
                "synthetic_key",
                "--data",
                str(bench),
                "--model",
                str(model_dir),
                "--recipe",
                "jukemir",
                "--grid",
                "small",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        != 0
    )
    assert "--recipe jukemir sets --grid jukemir (the paper's protocol); drop --grid small" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(model_dir, bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "run"
    assert (
        cli_main(
            [
                "probe",
                "--task",
                "synthetic_key",
                "--data",
                str(bench),
                "--model",
                str(model_dir),
                "--max-epochs",
                "3",
                "--output",
                str(out),
                "--seeds",
                "2",
            ]
        )
        == 0
    )
    return out


def _training_time(out: Path):
    """Probe logits on the cached test features (the fast path used during the grid)."""
    import datasets

    from hf_jukebox_mir.models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
    from hf_jukebox_mir.probing.training import feature_matrix, predict_logits

    cache = next((out / "embeddings").iterdir())
    test = datasets.load_from_disk(str(cache))["test"]
    probe = JukeboxProbeForSequenceClassification.from_pretrained(str(out / "best_probe"))
    return test, predict_logits(probe, feature_matrix(test))


def test_probe_writes_a_classifier_that_reproduces_training_time_predictions(trained, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    folder = trained / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "jukebox_mir_classifier" and config["probe_layers"] == [6]
    assert config["custom_pipelines"]["audio-classification"]["impl"].endswith("JukeboxAudioClassificationPipeline")
    results = json.loads((trained / "results.json").read_text())
    assert len(results["seeds"]["test_primary"]) == 2 and results["seeds"]["std"] >= 0
    assert results["environment"]["torch_threads"] >= 1 and results["environment"]["versions"]["torch"]
    assert results["coverage"]["complete"] is True
    test, logits = _training_time(trained)
    audio = _clips(test)
    # Auto classes (package imported): same logits from audio
    model = AutoModelForAudioClassification.from_pretrained(str(folder)).eval()
    fe = AutoFeatureExtractor.from_pretrained(str(folder))
    with torch.no_grad():
        direct = model(**fe(audio, sampling_rate=SR, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(direct, logits, rtol=1e-4, atol=1e-4)
    # pipeline on audio files (float WAV: the samples the training saw)
    paths = []
    for i, a in enumerate(audio):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], a, SR, subtype="FLOAT")
    classify = pipeline("audio-classification", model=str(folder), trust_remote_code=True, device="cpu")
    labels = [classify(str(p), top_k=1)[0]["label"] for p in paths]
    assert labels == [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    # the package's route: no remote code, pipeline_class=
    packaged = hf_jukebox_mir.jukebox_audio_classification_pipeline(str(folder), device="cpu")
    assert [packaged(str(p), top_k=1)[0]["label"] for p in paths] == labels
    # fresh process, no package: remote code route gives the same predictions
    body = """
        import json, sys
        from transformers import AutoModelForAudioClassification, pipeline
        model = AutoModelForAudioClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
        classify = pipeline("audio-classification", model=sys.argv[1], trust_remote_code=True, device="cpu")
        print(json.dumps([classify(p, top_k=1)[0]["label"] for p in sys.argv[2:]]))
    """
    proc = run_without_package(body, folder, *paths, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == labels


def test_classifier_folder_passes_the_hub_check_and_its_card_snippet_runs(trained, tmp_path, capsys):
    from hf_jukebox_mir.publishing.hub import validate_hub_folder

    folder = trained / "model"
    assert validate_hub_folder(folder) == []
    assert cli_main(["push", str(folder), "--repo-id", "me/jukebox-key", "--check"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "model.safetensors",
        "pipeline_jukebox_classification.py",
        "modeling_jukebox_mir_classifier.py",
        "preprocessor_config.json",
        "audio_jukebox.py",
        "README.md",
    ):
        assert f"  {name}\n" in listed
    card = (folder / "README.md").read_text()
    assert "soundfile" in card and "soxr" in card
    # the real window (this folder's feature extractor) and frame rate (its config), not the 5b defaults
    assert "| window | 8,192 samples (0.19 s), every window, frame-weighted average |" in card
    assert "| frame rate | 344.53 Hz |" in card
    # the features-only probe's card feeds the layer the probe was trained on (not the last layer)
    from hf_jukebox_mir.publishing.cards import render_model_card

    probe_card = str(render_model_card(trained / "best_probe", results_json=trained / "results.json"))
    assert 'trust_remote_code=True)("song.wav", layers=6)' in probe_card
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert blocks
    song = tmp_path / "song.wav"
    sf.write(song, (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32), SR)
    repo = re.search(r'model="([^"]+)"', blocks[0]).group(1)
    for block in blocks:
        script = block.replace(repo, str(folder)).replace('"song.wav"', repr(str(song)))
        proc = run_without_package(script, tmp_path=tmp_path)
        assert proc.returncode == 0, (script, proc.stderr[-3000:])


def test_learned_weighted_layer_sum_probe_and_its_classifier(model_dir, bench, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    out = tmp_path / "weighted"
    assert (
        cli_main(
            [
                "probe",
                "--task",
                "synthetic_key",
                "--data",
                str(bench),
                "--model",
                str(model_dir),
                "--layers",
                "3",
                "6",
                "--layer-weighting",
                "--max-epochs",
                "3",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    weighted = next(r for r in results["per_layer"] if r["layer_name"] == "weighted")
    assert len(weighted["layer_weights"]) == 2 and abs(sum(weighted["layer_weights"]) - 1) < 1e-5
    assert [r["layer_name"] for r in results["per_layer"]] == ["3", "6", "weighted"]
    if (out / "plot.png").exists():
        assert (out / "plot.png").stat().st_size > 0
    # force the weighted probe into a classifier (whatever was selected) and check it reproduces the probe
    import datasets

    from hf_jukebox_mir.models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
    from hf_jukebox_mir.probing.classifier import save_audio_classifier
    from hf_jukebox_mir.probing.training import ProbeData, predict_logits, train_probe

    cache = datasets.load_from_disk(str(next((out / "embeddings").iterdir())))
    data = ProbeData.from_dataset(cache, "synthetic_key", layer="all", splits=("train", "validation", "test"))
    run = train_probe(data, "synthetic_key", tmp_path / "w-run", layer="all")
    assert run.model.config.num_layers == 2 and run.model.layer_weights is not None
    run.model.save_pretrained(tmp_path / "w" / "best_probe")
    fake = dict(results, best=dict(results["best"], layer_name="weighted"))
    folder = save_audio_classifier(tmp_path / "w", model_dir, fake)
    config = json.loads((folder / "config.json").read_text())
    assert config["probe_layers"] == [3, 6] and len(config["probe_layer_weights"]) == 2
    model = AutoModelForAudioClassification.from_pretrained(str(folder)).eval()
    fe = AutoFeatureExtractor.from_pretrained(str(folder))
    audio = _clips(cache["test"])
    with torch.no_grad():
        direct = model(**fe(audio, sampling_rate=SR, return_tensors="pt")).logits.numpy()
    probe = JukeboxProbeForSequenceClassification.from_pretrained(str(tmp_path / "w" / "best_probe"))
    np.testing.assert_allclose(direct, predict_logits(probe, data.features["test"]), rtol=1e-4, atol=1e-4)


def test_probe_cli_in_a_fresh_process_writes_the_classifier(model_dir, bench, tmp_path):
    """`jukebox-mir probe --model` in a new process (nothing registered with the Auto classes beforehand)."""
    import os
    import subprocess
    import sys

    src = str(Path(hf_jukebox_mir.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_jukebox_mir.cli",
            "probe",
            "--task",
            "synthetic_key",
            "--data",
            str(bench),
            "--model",
            str(model_dir),
            "--max-epochs",
            "1",
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOAD REPORT" not in proc.stdout + proc.stderr
    assert (tmp_path / "o" / "model" / "model.safetensors").is_file()


def test_classifier_built_on_a_mir_folder_may_lack_only_the_named_new_weights(model_dir, trained):
    """The strict load check (issue 17) still holds for the classifier class: a MIR folder lacks the head, which
    is refused unless the caller names it as new (`new_modules=`, what `build_audio_classifier` does)."""
    from hf_jukebox_mir.models.configuration_jukebox_mir_classifier import JukeboxMIRClassifierConfig
    from hf_jukebox_mir.models.errors import JukeboxCheckpointError
    from hf_jukebox_mir.models.modeling_jukebox_mir_classifier import JukeboxMIRForAudioClassification

    config = JukeboxMIRClassifierConfig.from_pretrained(str(trained / "model"))
    with pytest.raises(JukeboxCheckpointError, match=r"weight\(s\) missing \(head\."):
        JukeboxMIRForAudioClassification.from_pretrained(str(model_dir), config=config, dtype="float32")
    model = JukeboxMIRForAudioClassification.from_pretrained(
        str(model_dir), config=config, dtype="float32", new_modules=("head",)
    )
    assert model.head is not None
    # a saved classifier folder holds its head: loads without new_modules
    JukeboxMIRForAudioClassification.from_pretrained(str(trained / "model"), dtype="float32")
