from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hf_jukebox_mir.cli import convert as convert_command
from hf_jukebox_mir.conversion.audit import AUDIT_FILE, ConversionAudit
from hf_jukebox_mir.conversion.checkpoint_io import sha256_file
from hf_jukebox_mir.conversion.export import run_output_check, strict_load_state_dict
from hf_jukebox_mir.conversion.key_mapping import (
    HF4_VQVAE_KEY_MAPPING,
    VQVAE_KEY_MAPPING,
    convert_keys,
    map_key,
    rename_state_dict,
)
from hf_jukebox_mir.conversion.streaming import save_model
from hf_jukebox_mir.conversion.vqvae import (
    convert_hf4_vqvae,
    convert_vqvae_checkpoint,
    load_hf4_vqvae,
    load_vqvae_checkpoint,
    vqvae_check_input,
    vqvae_config_from_hf4,
    vqvae_config_from_hps,
)
from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from hf_jukebox_mir.models.errors import JukeboxCheckpointError, JukeboxInputError
from hf_jukebox_mir.models.modeling_jukebox_vqvae import JukeboxVQVAE

HF4_5B = "hf4_format/jukebox_tiny_5b_lyrics"


def assert_close_to_reference(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(str(fixtures_dir / "vqvae" / "golden.safetensors"))


@pytest.fixture(scope="module")
def converted(fixtures_dir, tmp_path_factory):
    """The fixture checkpoint converted through the public function, saved with its audit."""
    output = tmp_path_factory.mktemp("converted") / "jukebox-vqvae"
    convert_vqvae_checkpoint(fixtures_dir / "vqvae" / "vqvae.pth.tar", output)
    return load_vqvae_checkpoint(fixtures_dir / "vqvae" / "vqvae.pth.tar"), output


@pytest.fixture(scope="module")
def converted_hf4(fixtures_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted_hf4") / "jukebox-vqvae"
    convert_hf4_vqvae(fixtures_dir / HF4_5B, output)
    return load_hf4_vqvae(fixtures_dir / HF4_5B), output


# ----------------------------------------------------------------------------------------- original format


def test_converted_model_matches_goldens(converted, golden):
    model, _ = converted
    codes = model.encode(golden["input_audio"][..., 0]).audio_codes
    for level in range(3):
        assert torch.equal(codes[level], golden[f"codes_level_{level}"])
    odd = model.encode(golden["input_audio_odd"][..., 0]).audio_codes
    for level in range(3):
        assert torch.equal(odd[level], golden[f"codes_odd_level_{level}"])
    with torch.no_grad():
        for level in range(3):
            audio = model.decode(codes[level:], start_level=level).audio_values
            assert_close_to_reference(audio, golden[f"decoded_from_level_{level}"][..., 0])


def test_saved_folder_and_audit(converted, fixtures_dir):
    model, output = converted
    names = {p.name for p in output.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        AUDIT_FILE,
        "configuration_jukebox_vqvae.py",
        "modeling_jukebox_vqvae.py",
        "errors.py",
    } <= names
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "jukebox_mir_vqvae"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_jukebox_vqvae.JukeboxVQVAEConfig",
        "AutoModel": "modeling_jukebox_vqvae.JukeboxVQVAE",
    }
    audit = json.loads((output / AUDIT_FILE).read_text())
    source = fixtures_dir / "vqvae" / "vqvae.pth.tar"
    assert audit["sources"] == [
        {"file": "vqvae.pth.tar", "sha256": sha256_file(source), "bytes": source.stat().st_size, "role": "vqvae"}
    ]
    assert ConversionAudit.read(output).sources[0].sha256 == sha256_file(source)
    assert len(audit["key_map"]) == 669
    assert audit["key_map"]["bottleneck.level_blocks.2.k"] == "quantizers.2.codebook"
    upsample_conv = "decoders.0.blocks.0.upsample.0.conv.weight"
    assert audit["key_map"]["decoders.0.level_blocks.0.model.1.1.weight"] == upsample_conv
    assert set(audit["key_map"].values()) == set(model.state_dict())
    assert audit["versions"]["hf-jukebox-mir"] and audit["versions"]["torch"] in torch.__version__
    check = audit["output_check"]
    assert check["loaded_from"].startswith("the written folder, with from_pretrained")
    assert check["outputs"]["codes_level_2"]["shape"] == [2, 64]
    for level in range(3):
        assert check["outputs"][f"decoded_from_level_{level}"]["finite"] is True
    for name in ("model.safetensors", "config.json"):
        assert audit["files"][name]["sha256"] == sha256_file(output / name)
    saved = load_file(str(output / "model.safetensors"))
    state = model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)


def test_check_input_is_deterministic():
    first, second = vqvae_check_input(), vqvae_check_input()
    assert first.shape == (2, 8192) and first.dtype == torch.float32
    assert torch.equal(first, second) and first.abs().max() <= 0.5


def test_refuses_non_empty_output_and_overwrites_on_request(converted, fixtures_dir, tmp_path):
    _, output = converted
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(JukeboxCheckpointError, match=r"Output folder .*out is not empty; .*overwrite=True"):
        save_model(JukeboxVQVAE.from_pretrained(output), target, audit=ConversionAudit("JukeboxVQVAE", "test"))
    assert (target / "keep.txt").read_text() == "user data"
    model = JukeboxVQVAE.from_pretrained(output)
    save_model(model, target, audit=ConversionAudit("JukeboxVQVAE", "test", details={"note": "x"}), overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()
    assert ConversionAudit.read(target).details["note"] == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sharded_save_round_trip(converted, tmp_path):
    model, _ = converted
    out = save_model(model, tmp_path / "sharded", audit=ConversionAudit("JukeboxVQVAE", "test"), max_shard_size="2MB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (out / "model.safetensors.index.json").is_file()
    reloaded = JukeboxVQVAE.from_pretrained(out).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in model.state_dict().items())


def test_failed_output_check_leaves_nothing(converted, tmp_path):
    model, _ = converted

    def nan_check(m):
        return {"audio": torch.tensor([1.0, float("nan")])}

    with pytest.raises(JukeboxCheckpointError, match=r"Output check failed: .*NaN or infinite values in \['audio'\]"):
        save_model(model, tmp_path / "bad", audit=ConversionAudit("JukeboxVQVAE", "test"), output_check=nan_check)
    assert list(tmp_path.iterdir()) == []


def test_output_check_detects_reload_differences(converted):
    model, _ = converted
    other = JukeboxVQVAE(model.config).eval()
    with pytest.raises(JukeboxCheckpointError, match=r"saved and reloaded model differs .* \['codes'\]"):
        run_output_check(model, lambda m: {"codes": m.quantizers[0].codebook[:2]}, other)


def test_wrong_kind_prior_given_as_vqvae(fixtures_dir, tmp_path):
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Wrong kind of checkpoint: expected a Jukebox VQ-VAE .* but "
        r"prior_level_0\.pth\.tar looks like a Jukebox prior .*--prior",
    ):
        convert_vqvae_checkpoint(fixtures_dir / "upsampler_level_0" / "prior_level_0.pth.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_strict_load_lists_every_problem():
    model = JukeboxVQVAE(JukeboxVQVAEConfig(width=4, depth=1, codebook_size=8, codebook_dim=4))
    state = dict(model.state_dict())
    del state["quantizers.0.codebook"], state["decoders.2.proj_out.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["encoders.0.blocks.0.proj_out.weight"] = torch.zeros(3, 3, 3)
    state["encoders.1.blocks.0.proj_out.weight"] = torch.zeros(3, 3, 3)
    with pytest.raises(JukeboxCheckpointError) as info:
        strict_load_state_dict(model, state)
    message = str(info.value)
    assert "2 missing key(s)" in message
    assert "decoders.2.proj_out.bias" in message and "quantizers.0.codebook" in message
    assert "1 unexpected key(s)" in message and "extra.weight" in message
    assert "2 shape mismatch(es)" in message
    assert "encoders.0.blocks.0.proj_out.weight: checkpoint (3, 3, 3) vs model (4, 8, 3)" in message
    assert "encoders.1.blocks.0.proj_out.weight" in message


def test_strict_load_upcasts_float16():
    model = JukeboxVQVAE(JukeboxVQVAEConfig(width=4, depth=1, codebook_size=8, codebook_dim=4))
    state = {k: v.half() for k, v in model.state_dict().items()}
    strict_load_state_dict(model, state)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert torch.equal(model.quantizers[1].codebook, state["quantizers.1.codebook"].float())


def test_hps_errors():
    hps = JukeboxVQVAEConfig().to_dict()
    with pytest.raises(JukeboxCheckpointError, match=r"lack the VQ-VAE hyperparameter\(s\) \['levels', 'downs_t'"):
        vqvae_config_from_hps({"width": 32})
    base = {
        "levels": 3,
        "downs_t": (3, 2, 2),
        "strides_t": (2, 2, 2),
        "emb_width": 64,
        "l_bins": 2048,
        "width": 32,
        "depth": 4,
        "dilation_growth_rate": 3,
        "vqvae_reverse_decoder_dilation": True,
    }
    assert vqvae_config_from_hps(base).multipliers == (1, 1, 1)  # the original's default
    with pytest.raises(JukeboxCheckpointError, match=r"use_bottleneck=False"):
        vqvae_config_from_hps({**base, "use_bottleneck": False})
    with pytest.raises(JukeboxCheckpointError, match=r"Unsupported VQ-VAE hps: .*downs_t must have one entry per "):
        vqvae_config_from_hps({**base, "downs_t": [3, 2]})
    assert hps["model_type"] == "jukebox_mir_vqvae"


# ----------------------------------------------------------------------------------------------- hf4 format


def test_hf4_conversion_gives_identical_weights(converted, converted_hf4, golden):
    model, _ = converted
    hf4_model, hf4_output = converted_hf4
    state, hf4_state = model.state_dict(), hf4_model.state_dict()
    assert state.keys() == hf4_state.keys()
    assert all(torch.equal(state[k], hf4_state[k]) for k in state)
    assert hf4_model.config.to_diff_dict() == model.config.to_diff_dict()
    codes = hf4_model.encode(golden["input_audio_odd"][..., 0], start_level=2).audio_codes[0]
    assert torch.equal(codes, golden["codes_odd_level_2"])
    audit = json.loads((hf4_output / AUDIT_FILE).read_text())
    names = [source["file"] for source in audit["sources"]]
    assert "config.json" in names and any(name.startswith("pytorch_model-") for name in names)
    assert audit["key_map"]["vqvae.bottleneck.level_blocks.0.codebook"] == "quantizers.0.codebook"
    # identical weights -> identical output-check numbers in both audits
    other = json.loads((converted[1] / AUDIT_FILE).read_text())
    assert audit["output_check"]["outputs"] == other["output_check"]["outputs"]


def test_both_tables_agree_on_the_hf4_key_map(fixtures_dir):
    key_map = json.loads((fixtures_dir / "hf4_format" / "key_map.json").read_text())["vqvae/vqvae.pth.tar"]
    assert len(key_map) == 669
    ours_from_original = convert_keys(key_map.keys(), VQVAE_KEY_MAPPING)
    ours_from_hf4 = convert_keys(key_map.values(), HF4_VQVAE_KEY_MAPPING)
    assert all(ours_from_original[orig] == ours_from_hf4[hf4] for orig, hf4 in key_map.items())


def test_hf4_config_reading(fixtures_dir):
    config = json.loads((fixtures_dir / HF4_5B / "config.json").read_text())
    assert vqvae_config_from_hf4(config["vqvae_config"]).to_diff_dict() == JukeboxVQVAEConfig().to_diff_dict()
    assert vqvae_config_from_hf4({}).to_diff_dict() == JukeboxVQVAEConfig().to_diff_dict()  # the port's defaults
    with pytest.raises(JukeboxCheckpointError, match=r"conv_input_shape=2; Jukebox is mono"):
        vqvae_config_from_hf4({"conv_input_shape": 2})
    with pytest.raises(JukeboxCheckpointError, match=r"conv_res_scale=true"):
        vqvae_config_from_hf4({"conv_res_scale": True})


def test_hf4_without_vqvae_weights(fixtures_dir, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_config_only", folder)
    with pytest.raises(JukeboxCheckpointError, match=r"No weights in .*no_weights: expected pytorch_model\.bin"):
        load_hf4_vqvae(folder)


# ------------------------------------------------------------------------------------------------ full size


def test_full_size_inventory_maps_one_to_one(fixtures_dir):
    inventory = json.loads((fixtures_dir / "full_size_inventory.json").read_text())["vqvae"]
    config = vqvae_config_from_hps(inventory["hps"])
    assert config.to_diff_dict() == JukeboxVQVAEConfig.from_preset("5b").to_diff_dict()
    with torch.device("meta"):
        model = JukeboxVQVAE(JukeboxVQVAEConfig.from_preset("5b"))
    expected = model.state_dict()
    mapping = convert_keys(inventory["keys"], VQVAE_KEY_MAPPING)
    assert len(mapping) == len(inventory["keys"]) == len(expected) == 669
    assert sorted(mapping.values()) == sorted(expected)  # one-to-one and onto
    for original, (shape, dtype) in inventory["keys"].items():
        assert list(expected[mapping[original]].shape) == shape, original
        assert dtype == "torch.float32"
    assert sum(p.numel() for p in model.parameters()) == 1_485_763
    assert sum(b.numel() for b in model.buffers()) == 3 * 2048 * 64


# ------------------------------------------------------------------------------------------------ key engine


def test_engine_reports_every_unmapped_key_and_collision():
    table = [
        (r"a\.(\d+)", r"x.\1"),
        (r"b\.(\d+)", r"x.\1"),
        (r"drop\..*", None),
        (r"c\.(\d+)", lambda m: f"y.{int(m[1]) * 2}"),
    ]
    assert convert_keys(["a.1", "c.3", "drop.me"], table) == {"a.1": "x.1", "c.3": "y.6", "drop.me": None}
    assert map_key("zzz", table) == (False, None)
    with pytest.raises(JukeboxCheckpointError) as info:
        convert_keys(["a.1", "b.1", "a.2", "b.2", "q.1", "r.2"], table, source="test.pth")
    message = str(info.value)
    assert message.startswith("Cannot convert the keys of test.pth: 2 key(s) match no conversion rule: q.1, r.2")
    assert "2 new name(s) would be produced by several keys: a.1 and b.1 -> x.1, a.2 and b.2 -> x.2" in message
    renamed, mapping = rename_state_dict({"a.1": 1, "drop.x": 2}, table)
    assert renamed == {"x.1": 1} and mapping == {"a.1": "x.1", "drop.x": None}


def test_engine_uses_full_matches_only():
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"match no conversion rule: encoders\.0\.level_blocks\.0\."
        r"model\.0\.0\.weight_extra",
    ):
        convert_keys(["encoders.0.level_blocks.0.model.0.0.weight_extra"], VQVAE_KEY_MAPPING)
    # the decoder's stage 0 is the input conv: a residual under model.0 is not a valid original key
    with pytest.raises(JukeboxCheckpointError, match=r"match no conversion rule"):
        convert_keys(["decoders.0.level_blocks.0.model.0.0.model.0.model.1.weight"], VQVAE_KEY_MAPPING)


# ------------------------------------------------------------------------------------------------------- CLI


def _cli(argv):
    parser = argparse.ArgumentParser(prog="jukebox-mir")
    convert_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_convert_vqvae(fixtures_dir, tmp_path, capsys, monkeypatch):
    import hf_jukebox_mir.conversion.vqvae as vqvae_conversion

    monkeypatch.setattr(vqvae_conversion, "CHECK_NUM_SAMPLES", 1024)  # the wiring is tested here, not the check
    output = tmp_path / "cli-out"
    assert _cli(["convert", "--vqvae", str(fixtures_dir / "vqvae" / "vqvae.pth.tar"), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"Converted into {output}" in printed and "669 tensors converted, 0 dropped" in printed
    assert (output / "model.safetensors").is_file()
    audit = json.loads((output / AUDIT_FILE).read_text())
    assert audit["output_check"]["outputs"]["codes_level_2"]["shape"] == [2, 8]
    with pytest.raises(JukeboxCheckpointError, match="is not empty"):
        _cli(["convert", "--vqvae", str(fixtures_dir / "vqvae" / "vqvae.pth.tar"), "--output", str(output)])


def test_cli_source_errors(fixtures_dir, tmp_path):
    with pytest.raises(
        JukeboxInputError,
        match=r"Unsupported combination of sources: none\. Give one of: --vqvae; "
        r"--prior; --vqvae \+ --prior; --hf4\.",
    ):
        _cli(["convert", "--output", str(tmp_path / "o")])
    with pytest.raises(JukeboxInputError, match=r"Unsupported combination of sources: --vqvae \+ --hf4"):
        _cli(["convert", "--vqvae", "a", "--hf4", "b", "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        _cli(["convert", "--vqvae", "a"])  # --output is required
