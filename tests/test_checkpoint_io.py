from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from hf_jukebox_mir.conversion.checkpoint_io import (
    checkpoint_kind,
    hf4_prior_configs,
    load_hf4_folder,
    load_original_checkpoint,
    sha256_file,
)
from hf_jukebox_mir.models.errors import JukeboxCheckpointError

HF4_5B = "hf4_format/jukebox_tiny_5b_lyrics"


@pytest.fixture(scope="module")
def vqvae_file(fixtures_dir):
    return fixtures_dir / "vqvae" / "vqvae.pth.tar"


@pytest.fixture(scope="module")
def small_state():
    return {
        "encoders.0.level_blocks.0.model.0.0.weight": torch.arange(6.0).view(2, 3, 1),
        "bottleneck.level_blocks.0.k": torch.ones(4, 2),
    }


class _RunsCode:
    """Pickles as a call to os.system: loading it with full pickle would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"jukebox" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"jukebox" * 1000).hexdigest()


def test_loads_the_fixture_checkpoint(vqvae_file):
    checkpoint = load_original_checkpoint(vqvae_file, expected_kind="vqvae")
    assert checkpoint.kind == "vqvae"
    assert len(checkpoint.state_dict) == 669
    assert checkpoint.hps["levels"] == 3 and checkpoint.hps["l_bins"] == 2048
    assert checkpoint.sha256 == sha256_file(vqvae_file)
    assert all(t.dtype == torch.float32 for t in checkpoint.state_dict.values())


def test_strips_module_prefix_and_ignores_extra_entries(tmp_path, small_state):
    path = tmp_path / "ddp.pth.tar"
    torch.save(
        {
            "hps": {"levels": 1},
            "model": {f"module.{k}": v for k, v in small_state.items()},
            "step": 7,
            "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]},
            "epoch": 3,
        },
        path,
    )
    checkpoint = load_original_checkpoint(path)
    assert sorted(checkpoint.state_dict) == sorted(small_state)
    assert checkpoint.kind == "vqvae"


@pytest.mark.parametrize("legacy", [False, True])
def test_hyperparams_dict_subclass_is_allowed(tmp_path, small_state, monkeypatch, legacy):
    # a stand-in for OpenAI's `jukebox.hparams.Hyperparams(dict)`, importable only while saving
    module = types.ModuleType("jukebox.hparams")

    class Hyperparams(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    Hyperparams.__module__, Hyperparams.__qualname__ = "jukebox.hparams", "Hyperparams"
    module.Hyperparams = Hyperparams
    package = types.ModuleType("jukebox")
    package.hparams = module
    monkeypatch.setitem(sys.modules, "jukebox", package)
    monkeypatch.setitem(sys.modules, "jukebox.hparams", module)
    path = tmp_path / "hps.pth.tar"
    torch.save(
        {"hps": Hyperparams(levels=3, downs_t=(3, 2, 2)), "model": small_state},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    assert b"Hyperparams" in path.read_bytes()
    monkeypatch.delitem(sys.modules, "jukebox.hparams")
    monkeypatch.delitem(sys.modules, "jukebox")
    checkpoint = load_original_checkpoint(path)
    assert type(checkpoint.hps) is dict
    assert checkpoint.hps == {"levels": 3, "downs_t": (3, 2, 2)}
    assert "jukebox" not in sys.modules


@pytest.mark.parametrize("legacy", [False, True])
def test_refuses_pickled_code(tmp_path, small_state, capfd, legacy):
    path = tmp_path / "evil.pth.tar"
    torch.save(
        {"hps": {}, "model": small_state, "payload": _RunsCode()}, path, _use_new_zipfile_serialization=not legacy
    )
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Refusing to load .*evil\.pth\.tar: it references the Python "
        r"global\(s\) posix\.system, .*never unpickles arbitrary code",
    ):
        load_original_checkpoint(path)
    assert "this-must-never-run" not in capfd.readouterr().out


def test_refuses_custom_classes(tmp_path, small_state):
    path = tmp_path / "custom.pth.tar"
    torch.save({"hps": {}, "model": small_state, "extra": _Custom()}, path)
    with pytest.raises(JukeboxCheckpointError, match=r"references the Python global\(s\) .*\._Custom, which are not"):
        load_original_checkpoint(path)


class _Custom:
    pass


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(tmp_path, vqvae_file, legacy):
    source = tmp_path / "full.pth.tar"
    if legacy:
        torch.save(torch.load(vqvae_file, weights_only=True), source, _use_new_zipfile_serialization=False)
    else:
        shutil.copy(vqvae_file, source)
    data = source.read_bytes()
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Could not read .*truncated\.pth\.tar: the file is truncated or "
        r"corrupt.*Download it again and compare its SHA-256",
    ):
        load_original_checkpoint(truncated)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.pth.tar"
    path.write_bytes(content)
    with pytest.raises(JukeboxCheckpointError, match=r"Could not read .*corrupt\.pth\.tar: the file is truncated or"):
        load_original_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(JukeboxCheckpointError, match=r"Checkpoint file not found: .*nope\.pth\.tar"):
        load_original_checkpoint(tmp_path / "nope.pth.tar")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], r"is not an original Jukebox checkpoint: expected a dict with 'hps' and 'model' entries, got list"),
        ({"model": {}}, r"the dict has no 'hps' entry \(found \['model'\]\)"),
        ({"state_dict": {}}, r"the dict has no 'model' or 'hps' entry .*--hf4"),
        ({"hps": [1], "model": {"a": torch.zeros(1)}}, r"'hps' must be a dict of hyperparameters, got list"),
        ({"hps": {}, "model": {}}, r"'model' must be a non-empty state_dict \(name -> tensor\), got dict \(empty\)"),
        ({"hps": {}, "model": {"a": 1.0}}, r"'model' must map names to tensors, but entry 'a' is a float"),
    ],
)
def test_not_a_jukebox_checkpoint(tmp_path, content, message):
    path = tmp_path / "other.pth.tar"
    torch.save(content, path)
    with pytest.raises(JukeboxCheckpointError, match=message):
        load_original_checkpoint(path)


def test_wrong_kind(fixtures_dir, vqvae_file):
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Wrong kind of checkpoint: expected a Jukebox VQ-VAE .*, but "
        r"prior_level_2\.pth\.tar looks like a Jukebox prior .*"
        r"\(hps level=2\)",
    ):
        load_original_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", expected_kind="vqvae")
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"expected a Jukebox prior .* but vqvae\.pth\.tar looks like a "
        r"Jukebox VQ-VAE",
    ):
        load_original_checkpoint(vqvae_file, expected_kind="prior")


def test_checkpoint_kind():
    assert checkpoint_kind({"encoders.0.x": 1, "bottleneck.level_blocks.0.k": 2}) == "vqvae"
    assert checkpoint_kind({"prior.x_emb.weight": 1, "y_emb.artist_emb.emb.weight": 2}) == "prior"
    assert checkpoint_kind({"conv.weight": 1}) == "unknown"


def test_lazy_reader_of_plain_tensors(tmp_path):
    from hf_jukebox_mir.conversion.lazy_checkpoint import LazyTorchFile

    path = tmp_path / "t.pt"
    torch.save({"a": torch.ones(2)}, path)
    with LazyTorchFile(path) as reader:
        assert torch.equal(reader.read(reader.root["a"]), torch.ones(2))


# ----------------------------------------------------------------------------------------------- hf4 folders


def test_load_hf4_folder_all_and_by_prefix(fixtures_dir):
    folder = fixtures_dir / HF4_5B
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())["weight_map"]
    full = load_hf4_folder(folder)
    assert set(full.state_dict) == set(index)
    assert set(full.shard_sha256) == set(index.values())
    vqvae = load_hf4_folder(folder, prefixes=("vqvae.",))
    assert len(vqvae.state_dict) == 669 and all(k.startswith("vqvae.") for k in vqvae.state_dict)
    assert set(vqvae.shard_sha256) == {index[k] for k in index if k.startswith("vqvae.")}
    for name, digest in vqvae.shard_sha256.items():
        assert digest == sha256_file(folder / name)
    assert vqvae.vqvae_config["nb_discrete_codes"] == 2048


def test_hf4_prior_config_layouts(fixtures_dir):
    config = json.loads((fixtures_dir / HF4_5B / "config.json").read_text())
    hub_layout = hf4_prior_configs(config)
    assert [p["level"] for p in hub_layout] == [0, 1, 2]
    list_layout = {k: v for k, v in config.items() if not k.startswith("prior_")}
    list_layout["prior_config_list"] = [config["prior_0"], config["prior_1"], config["prior_2"]]
    assert hf4_prior_configs(list_layout) == hub_layout
    with pytest.raises(JukeboxCheckpointError, match=r"has neither 'prior_config_list' nor all of \['prior_0', "):
        hf4_prior_configs({"prior_0": {}, "nb_priors": 3})


@pytest.mark.parametrize("layout", ["single_bin", "single_safetensors", "sharded_safetensors"])
def test_hf4_other_weight_layouts(fixtures_dir, tmp_path, layout):
    source = load_hf4_folder(fixtures_dir / HF4_5B, prefixes=("vqvae.",))
    folder = tmp_path / layout
    folder.mkdir()
    shutil.copy(fixtures_dir / HF4_5B / "config.json", folder / "config.json")
    tensors = {k: v.contiguous() for k, v in source.state_dict.items()}
    if layout == "single_bin":
        torch.save(tensors, folder / "pytorch_model.bin")
    elif layout == "single_safetensors":
        save_file(tensors, str(folder / "model.safetensors"))
    else:
        names = sorted(tensors)
        halves = {"model-00001-of-00002.safetensors": names[:300], "model-00002-of-00002.safetensors": names[300:]}
        for file, keys in halves.items():
            save_file({k: tensors[k] for k in keys}, str(folder / file))
        weight_map = {k: file for file, keys in halves.items() for k in keys}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_hf4_folder(folder, prefixes=("vqvae.",))
    assert loaded.state_dict.keys() == tensors.keys()
    assert all(torch.equal(loaded.state_dict[k], tensors[k]) for k in tensors)


def test_hf4_folder_errors(fixtures_dir, tmp_path):
    with pytest.raises(JukeboxCheckpointError, match=r"transformers-4\.x checkpoint folder not found"):
        load_hf4_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JukeboxCheckpointError, match=r"has no config\.json; expected a transformers-4\.x Jukebox"):
        load_hf4_folder(empty)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.json").write_text(json.dumps({"model_type": "jukebox_mir_vqvae"}))
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"model_type 'jukebox_mir_vqvae'; expected 'jukebox'.*already in "
        r"this package's format",
    ):
        load_hf4_folder(ours)
    broken = tmp_path / "broken"
    shutil.copytree(fixtures_dir / HF4_5B, broken)
    index = json.loads((broken / "pytorch_model.bin.index.json").read_text())
    shard = index["weight_map"]["vqvae.bottleneck.level_blocks.0.codebook"]
    (broken / shard).unlink()
    with pytest.raises(JukeboxCheckpointError, match=r"Weight file listed in the index is missing: .*" + shard):
        load_hf4_folder(broken, prefixes=("vqvae.",))
    with pytest.raises(JukeboxCheckpointError, match=r"the weight index has no key starting with \['nothing\.'\]"):
        load_hf4_folder(fixtures_dir / HF4_5B, prefixes=("nothing.",))
    truncated = tmp_path / "truncated"
    shutil.copytree(fixtures_dir / HF4_5B, truncated)
    data = (truncated / shard).read_bytes()
    (truncated / shard).write_bytes(data[:1000])
    with pytest.raises(JukeboxCheckpointError, match=r"the file is truncated or corrupt"):
        load_hf4_folder(truncated, prefixes=("vqvae.",))
