"""Embedding cache, Trainer-based probes on chroma features of the generated benchmark, grid, resume, CLI."""

from __future__ import annotations

import argparse
import json

import datasets
import numpy as np
import pytest
import torch

from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
from hf_jukebox_mir.probing.chroma import ChromaEmbedder
from hf_jukebox_mir.probing.reports import ProbeResults
from hf_jukebox_mir.probing.synthetic_mir import generate_synthetic_mir
from hf_jukebox_mir.probing.tasks import get_task
from hf_jukebox_mir.probing.training import (
    JUKEMIR_GRID,
    ProbeHyperparameters,
    ProbeSchedule,
    cache_embeddings,
    evaluate_probe,
    feature_matrix,
    grid_configs,
    run_probe_grid,
    train_probe,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_key")
    return root, generate_synthetic_mir(root, seed=0)


@pytest.fixture(scope="module")
def chroma_key(synthetic, tmp_path_factory):
    _, ds = synthetic
    return cache_embeddings(ds, ChromaEmbedder(), batch_size=16, cache_dir=tmp_path_factory.mktemp("cache") / "c")


class TwoLayerEmbedder:
    """Fake multi-layer embed_fn: layer 0 = chroma statistics, layer 1 = noise (uninformative)."""

    layer_names = ("chroma", "noise")

    def __init__(self):
        self.chroma = ChromaEmbedder()
        self.rng = np.random.default_rng(0)

    def __call__(self, waves):
        chroma = self.chroma(waves)[:, 0]
        return np.stack([chroma, self.rng.normal(size=chroma.shape).astype(np.float32)], axis=1)


# ------------------------------------------------------------------------------------------------ embeddings


def test_grids():
    assert len(grid_configs("jukemir")) == 216 == len(grid_configs(JUKEMIR_GRID))
    assert len(grid_configs("small")) == 4
    configs = grid_configs("jukemir")
    assert len({c.run_name for c in configs}) == 216
    assert {c.hidden_size for c in configs} == {None, 512} and {c.batch_size for c in configs} == {64, 256}
    with pytest.raises(JukeboxInputError, match="Unknown grid 'huge'"):
        grid_configs("huge")
    with pytest.raises(JukeboxInputError, match="Unknown grid keys"):
        grid_configs({"momentum": [0.9]})


def test_cache_embeddings_single_layer(chroma_key, synthetic):
    _, ds = synthetic
    feature = chroma_key["train"].features["features"]
    assert isinstance(feature, datasets.List) and feature.length == 72
    x = feature_matrix(chroma_key["train"])
    assert x.shape == (96, 72) and x.dtype == np.float32
    assert chroma_key["train"]["clip_id"] == ds["train"]["clip_id"]
    with pytest.raises(JukeboxInputError, match="single layer; got layer=1"):
        feature_matrix(chroma_key["train"], layer=1)


def test_cache_embeddings_multi_layer_and_disk_cache(synthetic, tmp_path):
    _, ds = synthetic
    small = datasets.DatasetDict({k: v.select(range(6)) for k, v in ds.items()})
    calls = []

    def counting(waves):
        calls.append(len(waves))
        return TwoLayerEmbedder()(waves)

    out = cache_embeddings(small, counting, batch_size=4, cache_dir=tmp_path / "emb")
    assert isinstance(out["train"].features["features"], datasets.Array2D)
    assert out["train"].features["features"].shape == (2, 72)
    assert feature_matrix(out["test"], layer=1).shape == (6, 72)
    whole = np.asarray(out["test"].with_format("numpy")["features"])  # (6, 2, 72)
    for layer in (0, 1, -1):  # read in chunks of one row: same values
        assert np.array_equal(feature_matrix(out["test"], layer=layer, chunk_bytes=1), whole[:, layer])
    with pytest.raises(JukeboxInputError, match="hold 2 layers; pass layer="):
        feature_matrix(out["test"])
    n_calls = len(calls)
    again = cache_embeddings(small, counting, cache_dir=tmp_path / "emb")  # reloaded, not recomputed
    assert len(calls) == n_calls
    assert np.array_equal(feature_matrix(again["train"], layer=0), feature_matrix(out["train"], layer=0))
    with pytest.raises(JukeboxInputError, match="does not match the dataset"):
        cache_embeddings(
            datasets.DatasetDict({k: v.select(range(3)) for k, v in ds.items()}), counting, cache_dir=tmp_path / "emb"
        )


def test_cache_embeddings_validates_embed_fn(synthetic):
    _, ds = synthetic
    tiny = ds["train"].select(range(2))
    with pytest.raises(JukeboxInputError, match=r"shape \(num_clips, num_layers, dim\)"):
        cache_embeddings(tiny, lambda waves: np.zeros((len(waves) + 1, 4)))
    with pytest.raises(JukeboxInputError, match="NaN or infinite"):
        cache_embeddings(tiny, lambda waves: np.full((len(waves), 4), np.nan))
    with pytest.raises(JukeboxInputError, match="lacks the columns"):
        cache_embeddings(tiny.remove_columns(["offset"]), ChromaEmbedder())


# ------------------------------------------------------------------------------------------------ one probe


def test_chroma_probe_far_above_chance_on_synthetic_key(chroma_key, tmp_path):
    task = get_task("synthetic_key")
    run = train_probe(
        chroma_key,
        task,
        tmp_path / "run",
        hparams=ProbeHyperparameters(hidden_size=512, dropout=0.25),
        schedule=ProbeSchedule(max_epochs=60, patience=8),
    )
    test = evaluate_probe(run.model, chroma_key["test"], task, aggregation=run.validation_metrics["aggregation"])
    chance = task.chance_level["weighted_score"]  # 0.083
    assert run.validation_metrics["primary"] > 0.6
    assert test["weighted_score"] > 0.6 > 5 * chance
    assert test["clip_accuracy"] > 0.5 > 10 / 24
    # best weights were restored: the validation score is the best one seen during training
    assert run.validation_metrics["weighted_score"] == pytest.approx(max(v for _, v in run.eval_history))
    assert run.best_checkpoint is not None


def test_trainer_resumes_from_checkpoint(chroma_key, tmp_path):
    hp = ProbeHyperparameters(batch_size=32, dropout=0.5)
    first = ProbeSchedule(max_steps=9, eval_steps=3, patience=100, save_total_limit=None)
    train_probe(chroma_key, "synthetic_key", tmp_path / "resumed", hparams=hp, schedule=first)
    assert (tmp_path / "resumed" / "checkpoint-9").is_dir()
    full = ProbeSchedule(max_steps=18, eval_steps=3, patience=100, save_total_limit=None)
    resumed = train_probe(
        chroma_key, "synthetic_key", tmp_path / "resumed", hparams=hp, schedule=full, resume_from_checkpoint=True
    )
    straight = train_probe(chroma_key, "synthetic_key", tmp_path / "straight", hparams=hp, schedule=full)
    assert resumed.global_step == straight.global_step == 18
    assert [s for s, _ in resumed.eval_history] == [3, 6, 9, 12, 15, 18]  # history restored from checkpoint-9
    assert [s for s, _ in resumed.eval_history] == [s for s, _ in straight.eval_history]
    assert [v for _, v in resumed.eval_history] == pytest.approx([v for _, v in straight.eval_history])
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


# ------------------------------------------------------------------------------------------------ grid + CLI


def test_run_probe_grid_layers_reports_and_resume(synthetic, tmp_path):
    _, ds = synthetic
    emb = cache_embeddings(ds, TwoLayerEmbedder(), batch_size=32)
    grid = [ProbeHyperparameters(dropout=0.25), ProbeHyperparameters(hidden_size=32, dropout=0.25)]
    schedule = ProbeSchedule(max_epochs=30, patience=4)
    messages = []
    results = run_probe_grid(
        emb,
        "synthetic_key",
        tmp_path,
        grid=grid,
        layer_names=["chroma", "noise"],
        schedule=schedule,
        feature_source="fake",
        log=messages.append,
    )
    assert len(messages) == 5  # 4 runs + summary
    assert results.best["layer_name"] == "chroma"
    per_layer = {row["layer_name"]: row["validation_primary"] for row in results.per_layer}
    assert per_layer["chroma"] > per_layer["noise"] + 0.3
    assert results.best["test"]["weighted_score"] > 0.5
    assert results.jukemir_score == pytest.approx(100 * results.best["test"]["weighted_score"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best"]["run_key"] == results.best["run_key"] and saved["num_configs"] == 2
    assert "| synthetic_key | fake | chroma |" in (tmp_path / "results.md").read_text()
    try:
        import matplotlib  # noqa: F401  (optional: the `plot` extra)
    except ImportError:
        assert results.plot is None
    else:
        assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "runs").exists()  # checkpoints removed after each run
    best = JukeboxProbeForSequenceClassification.from_pretrained(tmp_path / "best_probe")
    assert best.config.feature_source == "fake" and best.config.input_dim == 72
    # a second call finds every run in grid_state.json and retrains nothing
    messages.clear()
    again = run_probe_grid(
        emb,
        "synthetic_key",
        tmp_path,
        grid=grid,
        layer_names=["chroma", "noise"],
        schedule=schedule,
        feature_source="fake",
        log=messages.append,
    )
    assert len(messages) == 1 and again.best["test"] == results.best["test"]


def test_probe_command_end_to_end(synthetic, tmp_path):
    from hf_jukebox_mir.cli import probe

    parser = argparse.ArgumentParser()
    probe.add_parser(parser.add_subparsers(dest="command"))
    data, out = synthetic[0], tmp_path / "out"  # generated with the command's defaults (seed 0): reused
    args = parser.parse_args(
        [
            "probe",
            "--task",
            "synthetic_key",
            "--data",
            str(data),
            "--output",
            str(out),
            "--max-epochs",
            "30",
            "--patience",
            "5",
        ]
    )
    assert args.func(args) == 0
    results = ProbeResults.read(out)  # results.json, read by the code that writes it
    assert results.feature_source == "chroma" and results.num_configs == 4
    assert results.best["test"]["weighted_score"] > 0.5
    assert (out / "embeddings").is_dir() and (out / "best_probe" / "config.json").is_file()
    with pytest.raises(JukeboxInputError, match="already holds results.json; pass --force"):
        args.func(args)


def test_probe_command_argument_errors(tmp_path):
    from hf_jukebox_mir.cli import probe

    parser = argparse.ArgumentParser()
    probe.add_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["probe", *argv, "--output", str(tmp_path / "o")])
        return args.func(args)

    with pytest.raises(JukeboxInputError, match="--data .* does not exist. Expected layout for gtzan"):
        run("--task", "gtzan", "--data", str(tmp_path / "missing"))
    with pytest.raises(JukeboxInputError, match="Unknown task 'nsynth'"):
        run("--task", "nsynth", "--data", str(tmp_path))
    with pytest.raises(JukeboxInputError, match="--layers selects Jukebox prior layers; it needs --model"):
        run("--task", "gtzan", "--data", str(tmp_path), "--layers", "36")
    with pytest.raises(JukeboxInputError, match="--model .* is not a folder"):
        run("--task", "gtzan", "--data", str(tmp_path), "--model", str(tmp_path / "no-model"))
    with pytest.raises(JukeboxInputError, match="--patience must be >= 1, got 0"):
        run("--task", "gtzan", "--data", str(tmp_path), "--patience", "0")
