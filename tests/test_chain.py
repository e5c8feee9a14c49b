"""The composite JukeboxChainModel: conversion from both formats, lengths, priming, the `sample` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from conftest import run_without_package
from hf_jukebox_mir import JukeboxConfigError, JukeboxInputError
from hf_jukebox_mir.conversion.chain import convert_hf4_chain, load_chain_checkpoints, load_hf4_chain
from hf_jukebox_mir.models.configuration_jukebox_chain import JukeboxChainConfig
from hf_jukebox_mir.models.modeling_jukebox_chain import JukeboxChainModel

SR = 44100


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _original_paths(fixtures_dir, top="prior_5b_lyrics_top"):
    return fixtures_dir / "vqvae" / "vqvae.pth.tar", [
        fixtures_dir / "upsampler_level_0" / "prior_level_0.pth.tar",
        fixtures_dir / "upsampler_level_1" / "prior_level_1.pth.tar",
        fixtures_dir / top / "prior_level_2.pth.tar",
    ]


@pytest.fixture(scope="module")
def chain(fixtures_dir):
    vqvae, priors = _original_paths(fixtures_dir)
    return load_chain_checkpoints(vqvae, priors)


@pytest.fixture(scope="module")
def chain_folder(tmp_path_factory, fixtures_dir):
    """A saved chain folder with the single-sequence lyrics top prior (converted from the transformers-4.x format)."""
    folder = tmp_path_factory.mktemp("chain") / "jukebox-tiny-1b-lyrics"
    convert_hf4_chain(fixtures_dir / "hf4_format" / "jukebox_tiny_1b_lyrics", folder)
    return folder


def test_original_and_hf4_conversions_agree(chain, fixtures_dir):
    hf4 = load_hf4_chain(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics")
    ours, theirs = chain.state_dict(), hf4.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert chain.config.prior_level_2_config.to_dict() == hf4.config.prior_level_2_config.to_dict()
    for level in (0, 1, 2):
        assert chain.prior(level).config.level == level
    assert chain.prior(2).config.lyrics_mode == "separate_encoder"


def test_prior_files_in_wrong_order_are_refused(fixtures_dir):
    vqvae, priors = _original_paths(fixtures_dir)
    with pytest.raises(ValueError, match="in the order prior_level_0, prior_level_1, prior_level_2"):
        load_chain_checkpoints(vqvae, [priors[1], priors[0], priors[2]])


def test_lengths_round_trip(chain):
    n_top = 20
    seconds = n_top * 128 / SR
    assert chain.num_tokens(seconds) == [16 * n_top, 4 * n_top, n_top]
    out = chain.generate_audio(seconds, generator=torch.Generator().manual_seed(0))
    z0, z1, z2 = out.audio_codes
    assert (z0.shape, z1.shape, z2.shape) == ((1, 16 * n_top), (1, 4 * n_top), (1, n_top))
    assert out.audio_values.shape == (1, 128 * n_top)
    assert torch.isfinite(out.audio_values).all()
    assert out.sampling_rate == SR
    # the audio is the bottom decoder applied to the bottom codes
    assert torch.equal(out.audio_values, chain.vqvae.decode(z0, start_level=0).audio_values)
    # a fraction of a top code is floored
    assert chain.num_tokens(seconds + 100 / SR)[2] == n_top


def test_seeded_generation_is_reproducible_and_batched(chain):
    def run(seed, n):
        return chain.generate_codes(
            10 * 128 / SR, n_samples=n, generator=torch.Generator().manual_seed(seed)
        ).audio_codes

    first, again = run(0, 2), run(0, 2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[2].shape == (2, 10) and first[0].shape == (2, 160)
    other = run(1, 2)
    assert not torch.equal(first[0], other[0])


def test_primed_generation_keeps_the_prime_at_every_level(chain):
    t = torch.arange(1400) / SR
    prime = (0.4 * torch.sin(2 * torch.pi * 330 * t)).unsqueeze(0)  # 1400 samples -> 10 top codes (1280 samples)
    out = chain.generate_audio(
        24 * 128 / SR, prime_audio=prime, n_samples=2, generator=torch.Generator().manual_seed(0)
    )
    encoded = chain.vqvae.encode(prime[:, :1280], start_level=0).audio_codes
    for level, factor in zip((0, 1, 2), (16, 4, 1)):
        codes = out.audio_codes[level]
        assert codes.shape == (2, 24 * factor)
        assert torch.equal(codes[:, : 10 * factor], encoded[level].expand(2, -1))
    assert out.audio_values.shape == (2, 24 * 128)
    with pytest.raises(JukeboxInputError, match="ask for more seconds than the prime"):
        chain.generate_codes(5 * 128 / SR, prime_audio=prime)


def test_upsample_given_top_codes(chain):
    top = torch.randint(0, 2048, (1, 12), generator=torch.Generator().manual_seed(0))
    out = chain.upsample(top, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.audio_codes[2], top)
    assert out.audio_codes[1].shape == (1, 48) and out.audio_codes[0].shape == (1, 192)
    assert out.audio_values.shape == (1, 12 * 128)
    with pytest.raises(JukeboxInputError, match="needs all 48 codes of level 1"):
        chain.generate_codes(12 * 128 / SR, prime_codes=[None, None, top], levels=(0,))


def test_generation_argument_errors(chain):
    with pytest.raises(JukeboxInputError, match="shorter than one top-level code"):
        chain.generate_codes(0.001)
    with pytest.raises(JukeboxInputError, match="seconds must be a positive number"):
        chain.generate_codes(-1.0)
    with pytest.raises(JukeboxInputError, match="temperature must be one number or 3"):
        chain.generate_codes(0.05, temperature=[1.0, 1.0])
    with pytest.raises(JukeboxInputError, match="levels must be a non-empty subset"):
        chain.generate_codes(0.05, levels=(3,))


def test_chain_config_round_trip_and_validation(tmp_path):
    config = JukeboxChainConfig.from_preset("1b_lyrics")
    assert config.prior_config(2).n_ctx == 6144 and config.hop_lengths == (8, 32, 128)
    config.save_pretrained(tmp_path)
    again = JukeboxChainConfig.from_pretrained(tmp_path)
    for level in (0, 1, 2):
        assert again.prior_config(level).to_dict() == config.prior_config(level).to_dict()
    assert again.vqvae_config.to_dict() == config.vqvae_config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "jukebox_mir_chain"
    with pytest.raises(JukeboxConfigError, match="hop_length is 32 but the VQ-VAE's level 0 has hop 8"):
        JukeboxChainConfig(prior_level_0_config=config.prior_level_1_config.to_dict() | {"level": 0})
    with pytest.raises(JukeboxConfigError, match="hop_fractions must hold 3 positive numbers"):
        JukeboxChainConfig(hop_fractions=[0.5, 0.5])


def test_saved_folder_reloads_and_generates_the_same(chain_folder):
    model = JukeboxChainModel.from_pretrained(chain_folder).eval()
    assert (chain_folder / "conversion_audit.json").is_file()
    assert model.prior(2).config.lyrics_mode == "single_sequence"
    # tied heads stay tied after reloading
    for level in (0, 1, 2):
        prior = model.prior(level)
        assert prior.lm_head.weight.data_ptr() == prior.embed_tokens.weight.data_ptr()
    kwargs = {"artist": "unknown", "genre": "unknown", "lyrics": "la la la"}
    a = model.generate_codes(8 * 128 / SR, generator=torch.Generator().manual_seed(4), **kwargs).audio_codes
    b = model.generate_codes(8 * 128 / SR, generator=torch.Generator().manual_seed(4), **kwargs).audio_codes
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_sample_command_writes_a_playable_wav(chain_folder, tmp_path):
    import argparse

    from hf_jukebox_mir.cli import sample

    parser = argparse.ArgumentParser()
    sample.add_parser(parser.add_subparsers())
    prime_path = tmp_path / "prime.wav"
    soundfile.write(prime_path, 0.3 * np.sin(2 * np.pi * 220 * np.arange(600) / 22050), 22050)  # -> 1200 samples
    out_path = tmp_path / "out" / "song.wav"
    args = parser.parse_args(
        [
            "sample",
            "--model",
            str(chain_folder),
            "--seconds",
            str(20 * 128 / SR),
            "--prime",
            str(prime_path),
            "--artist",
            "Alan Jackson",
            "--genre",
            "Country",
            "--lyrics",
            "Hello hello, where are you",
            "--temperature",
            "0.98",
            "--top-k",
            "50",
            "--seed",
            "0",
            "--output",
            str(out_path),
            "--no-progress",
            "--codes-output",
            str(tmp_path / "codes.pt"),
        ]
    )
    assert args.func(args) == 0
    audio, rate = soundfile.read(out_path)
    assert rate == SR and audio.shape == (20 * 128,)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert sorted(p.name for p in out_path.parent.iterdir()) == ["song.wav"]  # no temporary file left behind
    codes = torch.load(tmp_path / "codes.pt")
    assert codes["level_2"].shape == (1, 20) and codes["level_0"].shape == (1, 320)
    # the prime (1200 samples at 44.1 kHz -> 9 top codes) is kept
    prime = sample.load_prime(str(prime_path), SR)
    model = JukeboxChainModel.from_pretrained(chain_folder)
    assert torch.equal(codes["level_2"][:, :9], model.vqvae.encode(prime[:, : 9 * 128], start_level=2).audio_codes[0])


def test_sample_command_reads_hf4_folders_and_reports_errors(fixtures_dir, tmp_path, capsys):
    from hf_jukebox_mir.cli import sample

    model = sample.load_chain(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics")
    assert isinstance(model, JukeboxChainModel) and model.prior(2).config.lyrics_mode == "separate_encoder"
    with pytest.raises(JukeboxInputError, match="expected 'jukebox_mir_chain'"):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
        sample.load_chain(tmp_path)
    import argparse

    parser = argparse.ArgumentParser()
    sample.add_parser(parser.add_subparsers())
    args = parser.parse_args(["sample", "--model", str(tmp_path), "--seconds", "1", "--output", "x.mp3"])
    with pytest.raises(JukeboxInputError, match="must be a .wav file"):
        args.func(args)


@pytest.mark.slow
def test_chain_folder_loads_with_trust_remote_code_without_the_package(chain_folder, tmp_path):
    script = """
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        out = model.generate_audio(8 * 128 / 44100, generator=torch.Generator().manual_seed(0))
        print(type(model).__module__, tuple(out.audio_values.shape))
        """
    proc = run_without_package(script, chain_folder, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transformers_modules" in proc.stdout and "(1, 1024)" in proc.stdout


def test_saved_chain_carries_its_vocabularies_for_names_without_the_package(chain, tmp_path):
    from hf_jukebox_mir.models.tokenization_jukebox import JukeboxTokenizer

    folder = tmp_path / "chain"
    chain.save_pretrained(folder)
    assert all((folder / f"tokenizer_level_{level}" / "artists.json").is_file() for level in (0, 1, 2))
    top = chain.prior(2).config
    expected = JukeboxTokenizer.for_config(top).metadata(artist="Alan Jackson", genre="Country", total_length=10**6)
    script = """
        import importlib
        import json
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        remote = importlib.import_module(type(model).__module__.rsplit(".", 1)[0] + ".tokenization_jukebox")
        folder = remote.Path(sys.argv[1]) / remote.tokenizer_folder(2)
        tokenizer = remote.JukeboxTokenizer.for_config(model.prior(2).config, folder)
        rows = tokenizer.metadata(artist="Alan Jackson", genre="Country", total_length=10**6)
        out = model.generate_codes(8 * 128 / 44100, artist="Alan Jackson", genre="Country", levels=(2,),
                                   generator=torch.Generator().manual_seed(0))
        print(json.dumps({"rows": rows.tolist(), "top": list(out.audio_codes[2].shape)}))
        """
    proc = run_without_package(script, folder, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == expected.tolist() and result["rows"][0][3] > 0  # a known artist id
    assert result["top"] == [1, 8]


def test_converted_chain_folder_carries_its_vocabularies(chain_folder):
    from hf_jukebox_mir.conversion.audit import ConversionAudit

    audit = ConversionAudit.read(chain_folder)
    for level in (0, 1, 2):
        assert (chain_folder / f"tokenizer_level_{level}" / "artists.json").is_file()
        assert f"tokenizer_level_{level}/artists.json" in audit.files
