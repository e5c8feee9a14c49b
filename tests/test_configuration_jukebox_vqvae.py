from __future__ import annotations

import json

import pytest

from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from hf_jukebox_mir.models.errors import JukeboxConfigError


def test_defaults_are_the_released_5b_vqvae(fixtures_dir):
    hps = json.loads((fixtures_dir / "vqvae" / "hps.json").read_text())
    config = JukeboxVQVAEConfig.from_preset("5b")
    assert config.model_type == "jukebox_mir_vqvae"
    assert config.levels == hps["levels"] == 3
    assert config.downs_t == tuple(hps["downs_t"]) == (3, 2, 2)
    assert config.strides_t == tuple(hps["strides_t"])
    assert config.codebook_size == hps["l_bins"] == 2048
    assert config.codebook_dim == hps["emb_width"] == 64
    assert (config.width, config.depth) == (hps["width"], hps["depth"])
    assert config.multipliers == tuple(hps["hvqvae_multipliers"])
    assert config.m_conv == hps["m_conv"]
    assert config.dilation_growth_rate == hps["dilation_growth_rate"]
    assert config.dilation_cycle is hps["dilation_cycle"] is None
    assert config.reverse_decoder_dilation is hps["vqvae_reverse_decoder_dilation"] is True
    assert config.sampling_rate == hps["sr"]
    assert JukeboxVQVAEConfig().to_dict() == config.to_dict()
    for alias in ("5b_lyrics", "1b_lyrics"):
        assert JukeboxVQVAEConfig.from_preset(alias).to_dict() == config.to_dict()


def test_derived_properties():
    config = JukeboxVQVAEConfig()
    assert config.hop_lengths == (8, 32, 128)
    assert config.top_level_hop == 128
    assert config.level_downsampling == (8, 4, 4)
    assert config.level_widths == (64, 32, 32)
    assert config.level_depths == (8, 4, 4)
    assert config.frame_rates() == (5512.5, 1378.125, 344.53125)
    # nested floors, never padded (architecture.md pitfall 22)
    assert [config.num_codes(20000, level) for level in range(3)] == [2500, 625, 156]
    assert [config.num_codes(32768, level) for level in range(3)] == [4096, 1024, 256]
    assert [config.min_num_samples(level) for level in range(3)] == [8, 32, 128]
    assert config.num_codes(127, 2) == 0 and config.num_codes(128, 2) == 1


def test_encoder_levels_are_normalised():
    assert JukeboxVQVAEConfig(encoder_levels=[2, 0, 2]).encoder_levels == (0, 2)
    assert JukeboxVQVAEConfig().encoder_levels is None


def test_aliases_and_overrides():
    config = JukeboxVQVAEConfig(l_bins=16, emb_width=8)
    assert (config.codebook_size, config.codebook_dim) == (16, 8)
    assert (config.l_bins, config.emb_width) == (16, 8)
    small = JukeboxVQVAEConfig.from_preset("5b", width=8, depth=2)
    assert small.level_widths == (16, 8, 8) and small.level_depths == (4, 2, 2)


def test_save_load_round_trip(tmp_path):
    config = JukeboxVQVAEConfig(levels=2, downs_t=[2, 1], strides_t=[2, 3], multipliers=[1, 2], dilation_cycle=2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "jukebox_mir_vqvae"
    assert saved["downs_t"] == [2, 1]
    assert saved["auto_map"]["AutoConfig"] == "configuration_jukebox_vqvae.JukeboxVQVAEConfig"
    loaded = JukeboxVQVAEConfig.from_pretrained(tmp_path)
    assert loaded.downs_t == (2, 1) and loaded.strides_t == (2, 3) and loaded.dilation_cycle == 2
    assert loaded.hop_lengths == (4, 12)
    # stride 3: kernel 6, padding 1 -> length (T + 2 - 6) // 3 + 1 per conv (checked against a model in
    # test_modeling_jukebox_vqvae.py::test_odd_strides_lengths)
    shortest = loaded.min_num_samples(1)
    assert loaded.num_codes(shortest, 1) == 1 and loaded.num_codes(shortest - 1, 1) == 0
    assert loaded.num_codes(4 * 12 * 5, 1) == (4 * 12 * 5 // 4 + 2 - 6) // 3 + 1


def test_auto_config_after_import(tmp_path):
    from transformers import AutoConfig

    import hf_jukebox_mir

    hf_jukebox_mir.register()  # the Auto classes

    JukeboxVQVAEConfig(width=8).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, JukeboxVQVAEConfig) and config.width == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 0}, r"JukeboxVQVAEConfig\.levels must be a positive integer, got 0\."),
        ({"codebook_size": -1}, r"JukeboxVQVAEConfig\.codebook_size must be a positive integer, got -1\."),
        ({"width": 2.5}, r"JukeboxVQVAEConfig\.width must be a positive integer, got 2\.5\."),
        ({"downs_t": [3, 2]}, r"downs_t must have one entry per level \(levels=3\), got \[3, 2\] \(2 entries\)"),
        ({"strides_t": [2, 0, 2]}, r"strides_t must be a list of integers >= 1, got \[2, 0, 2\]"),
        ({"multipliers": "211"}, r"multipliers must be a list of integers >= 1, got '211'"),
        ({"m_conv": 0}, r"m_conv must be a number > 0, got 0\."),
        ({"m_conv": 0.01}, r"m_conv=0\.01 gives residual units of width int\(m_conv \* 64\) = 0 at level 0"),
        ({"dilation_cycle": 0}, r"dilation_cycle must be a positive integer, got 0\."),
        ({"encoder_levels": [3]}, r"encoder_levels must be None or a non-empty list of levels in 0\.\.2, got \[3\]"),
        ({"encoder_levels": []}, r"encoder_levels must be None or a non-empty list of levels in 0\.\.2, got \[\]"),
        ({"encoder_levels": [-1]}, r"encoder_levels must be a list of integers >= 0, got \[-1\]"),
        ({"reverse_decoder_dilation": "yes"}, r"reverse_decoder_dilation must be True or False, got 'yes'\."),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(JukeboxConfigError, match=message):
        JukeboxVQVAEConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(JukeboxConfigError, match=r"Unknown JukeboxVQVAEConfig preset '7b'; allowed: '5b', "):
        JukeboxVQVAEConfig.from_preset("7b")


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        JukeboxVQVAEConfig(levels=-3)
