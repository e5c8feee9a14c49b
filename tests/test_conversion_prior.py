"""Prior conversion: original files and the transformers-4.x format, key tables, full-size inventories."""

from __future__ import annotations

import json

import pytest
import torch

from hf_jukebox_mir import JukeboxCheckpointError
from hf_jukebox_mir.conversion.key_mapping import convert_keys
from hf_jukebox_mir.conversion.prior import (
    convert_prior_checkpoint,
    load_hf4_prior,
    load_prior_checkpoint,
)
from hf_jukebox_mir.conversion.prior_keys import needs_transpose, original_prior_key_mapping
from hf_jukebox_mir.models.configuration_jukebox_prior import JukeboxPriorConfig
from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

INVENTORY_PRESETS = {
    "prior_5b_level_2": ("prior_5b", 5_060_452_800),
    "prior_5b_lyrics_level_2": ("prior_5b_lyrics", 5_640_506_800),
    "prior_1b_lyrics_level_2": ("prior_1b_lyrics", 942_643_200),
    "upsampler_level_1": ("upsampler_level_1", 981_298_176),
    "upsampler_level_0": ("upsampler_level_0", 981_298_176),
}


@pytest.fixture(scope="module")
def inventory(fixtures_dir):
    return json.loads((fixtures_dir / "full_size_inventory.json").read_text())


@pytest.mark.parametrize("name", list(INVENTORY_PRESETS))
def test_full_size_keys_map_one_to_one(inventory, name):
    preset, n_params = INVENTORY_PRESETS[name]
    keys = inventory[name]["keys"]  # original key -> [shape, dtype]
    config = JukeboxPriorConfig.from_preset(preset)
    # the preset is exactly what the real checkpoint's hps describe
    assert JukeboxPriorConfig.from_original_hparams(inventory[name]["hps"]).to_dict() == config.to_dict()
    with torch.device("meta"):
        model = JukeboxPrior(config)
    assert sum(p.numel() for p in model.parameters()) == n_params
    state = model.state_dict()
    mapping = convert_keys(keys, original_prior_key_mapping(config))
    assert None not in mapping.values()
    assert set(mapping.values()) == set(state)  # onto: every model key has its source
    for old, new in mapping.items():
        shape = list(state[new].shape)
        expected = keys[old][0][::-1] if needs_transpose(new) else keys[old][0]
        assert shape == expected, f"{old} -> {new}: {shape} vs {expected}"
    fp16 = {k for k, (_, dtype) in keys.items() if "float16" in dtype}
    if preset.startswith("prior_5b"):  # Conv1D weights stored in half precision, as the real files
        assert fp16 and all(k.endswith(".w") for k in fp16)


def test_truncated_table_drops_deeper_layers(inventory):
    config = JukeboxPriorConfig.from_preset("prior_5b", num_hidden_layers=36)
    mapping = convert_keys(inventory["prior_5b_level_2"]["keys"], original_prior_key_mapping(config))
    dropped = [k for k, v in mapping.items() if v is None]
    assert len(dropped) == 36 * 12 and all("_attn_mods." in k and int(k.split(".")[3]) >= 36 for k in dropped)


@pytest.mark.parametrize(
    "folder,file,hf4,index",
    [
        ("prior_5b_lyrics_top", "prior_level_2", "jukebox_tiny_5b_lyrics", 0),
        ("upsampler_level_1", "prior_level_1", "jukebox_tiny_5b_lyrics", 1),
        ("upsampler_level_0", "prior_level_0", "jukebox_tiny_1b_lyrics", 2),
        ("prior_1b_lyrics_top", "prior_level_2", "jukebox_tiny_1b_lyrics", 0),
    ],
)
def test_hf4_format_gives_the_same_model(fixtures_dir, folder, file, hf4, index):
    a = load_prior_checkpoint(fixtures_dir / folder / f"{file}.pth.tar")
    b = load_hf4_prior(fixtures_dir / "hf4_format" / hf4, index)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ignore = {"architectures", "dtype", "auto_map", "transformers_version"}
    da = {k: v for k, v in a.config.to_dict().items() if k not in ignore}
    db = {k: v for k, v in b.config.to_dict().items() if k not in ignore}
    assert da == db


def test_convert_writes_folder_with_audit(tmp_path, fixtures_dir):
    from hf_jukebox_mir.conversion.checkpoint_io import sha256_file

    src = fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar"
    model = load_prior_checkpoint(src)
    assert convert_prior_checkpoint(src, tmp_path / "out") == tmp_path / "out"
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "conversion_audit.json",
        "modeling_jukebox_prior.py",
        "configuration_jukebox_prior.py",
    } <= files
    audit = json.loads((tmp_path / "out" / "conversion_audit.json").read_text())
    assert audit["sources"] == [
        {
            "file": "prior_level_2.pth.tar",
            "sha256": sha256_file(src),
            "bytes": src.stat().st_size,
            "role": "prior_level_2",
        }
    ]
    assert audit["details"]["stored_dtypes"] == ["float16", "float32"]
    assert audit["key_map"]["prior.transformer._attn_mods.0.attn.c_attn.w"] == "layers.0.attn.qkv_proj.weight"
    assert audit["output_check"]["loaded_from"].startswith("the written folder")
    assert audit["output_check"]["outputs"]["logits"]["finite"] is True
    reloaded = JukeboxPrior.from_pretrained(tmp_path / "out")
    assert reloaded.layers[0].attn.qkv_proj.weight.dtype == torch.float32
    assert torch.equal(reloaded.layers[0].attn.qkv_proj.weight, model.layers[0].attn.qkv_proj.weight)
    with pytest.raises(JukeboxCheckpointError, match="is not empty"):
        convert_prior_checkpoint(src, tmp_path / "out")


def test_fp16_weights_are_upcast_exactly(fixtures_dir):
    raw = torch.load(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", weights_only=True)["model"]
    w = raw["prior.transformer._attn_mods.0.mlp.c_fc.w"]
    assert w.dtype == torch.float16
    model = load_prior_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar")
    assert torch.equal(model.layers[0].mlp.fc_in.weight, w.float().t())


def test_wrong_kind_and_bad_num_layers(fixtures_dir):
    with pytest.raises(JukeboxCheckpointError, match="Wrong kind of checkpoint: expected a Jukebox prior"):
        load_prior_checkpoint(fixtures_dir / "vqvae" / "vqvae.pth.tar")
    with pytest.raises(JukeboxCheckpointError, match=r"num_layers must be an integer in \[1, 6\]"):
        load_prior_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", num_layers=7)


def test_strict_load_names_every_bad_key(tmp_path, fixtures_dir):
    raw = torch.load(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", weights_only=True)
    del raw["model"]["prior.transformer._attn_mods.1.ln_0.bias"]
    raw["model"]["prior.transformer._attn_mods.2.mlp.c_fc.b"] = torch.zeros(3)
    torch.save(raw, tmp_path / "bad.pth.tar")
    with pytest.raises(JukeboxCheckpointError) as err:
        convert_prior_checkpoint(tmp_path / "bad.pth.tar", tmp_path / "never")
    text = str(err.value)
    assert "1 missing key(s)" in text and "layers.1.input_layernorm.bias" in text
    assert "1 shape mismatch(es)" in text and "layers.2.mlp.fc_in.bias: checkpoint (3,) vs model (64,)" in text
    raw["model"]["prior.some_new_module.weight"] = torch.zeros(1)
    torch.save(raw, tmp_path / "bad2.pth.tar")
    with pytest.raises(JukeboxCheckpointError, match="prior.some_new_module.weight"):
        convert_prior_checkpoint(tmp_path / "bad2.pth.tar", tmp_path / "never")
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))


def test_truncated_conversion_saves_only_kept_layers(tmp_path, fixtures_dir):
    from safetensors import safe_open

    convert_prior_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", tmp_path / "p3", num_layers=3)
    with safe_open(tmp_path / "p3" / "model.safetensors", framework="pt") as f:
        layers = {int(k.split(".")[1]) for k in f.keys() if k.startswith("layers.")}
    assert layers == {0, 1, 2}
    config = json.loads((tmp_path / "p3" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and len(config["attention_patterns"]) == 6
