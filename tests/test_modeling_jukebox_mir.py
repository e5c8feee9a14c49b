"""The MIR model (VQ-VAE top-level encoder + top prior in one folder) against the JukeMIR golden path."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel

import hf_jukebox_mir
from conftest import run_without_package
from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.cli import main as cli_main
from hf_jukebox_mir.conversion.mir import convert_hf4_mir, convert_mir_model, load_hf4_mir
from hf_jukebox_mir.models.modeling_jukebox_mir import JukeboxMIRModel, pool_hidden_states

hf_jukebox_mir.register()  # the Auto classes (AutoModel/AutoFeatureExtractor on our folders)


def assert_close(ours, ref, name=""):
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= tol, f"{name}: {diff:.3e} > {tol:.3e}"


@pytest.fixture(scope="module")
def mir_folder(tmp_path_factory, fixtures_dir):
    out = tmp_path_factory.mktemp("mir") / "jukebox-mir"
    convert_mir_model(
        fixtures_dir / "vqvae" / "vqvae.pth.tar", fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", out
    )
    return out


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(fixtures_dir / "prior_5b_top" / "jukemir_golden.safetensors")


def test_folder_contents(mir_folder):
    names = {p.name for p in mir_folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "conversion_audit.json",
        "modeling_jukebox_mir.py",
        "configuration_jukebox_mir.py",
        "feature_extraction_jukebox.py",
    } <= names
    config = json.loads((mir_folder / "config.json").read_text())
    assert config["model_type"] == "jukebox_mir" and config["auto_map"]["AutoModel"].endswith("JukeboxMIRModel")
    assert config["vqvae_config"]["encoder_levels"] == [2]
    fe = json.loads((mir_folder / "preprocessor_config.json").read_text())
    assert fe["window_length"] == 256 * 128 and fe["hop_length"] == 128


def test_jukemir_golden_every_layer(mir_folder, golden):
    model = AutoModel.from_pretrained(mir_folder).eval()
    assert isinstance(model, JukeboxMIRModel)
    with torch.no_grad():
        out = model(golden["input_audio"][..., 0], output_hidden_states=True)
    assert torch.equal(out.audio_codes, golden["top_codes"])
    for i in range(1, 7):
        assert_close(out.hidden_states[i].mean(1), golden[f"meanpool_layer_{i}"], f"meanpool_layer_{i}")
    assert_close(out.last_hidden_state, golden["final_acts"], "final_acts")
    assert_close(out.pooler_output, golden["meanpool_layer_6"], "pooler_output")


def test_bfloat16_load_keeps_the_encoder_float32_and_the_codes_exact(mir_folder, golden):
    model = AutoModel.from_pretrained(mir_folder, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.vqvae.parameters()} == {torch.float32}
    assert {p.dtype for p in model.prior.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(golden["input_audio"][..., 0])
    assert torch.equal(out.audio_codes, golden["top_codes"])  # bf16 encoding would change some codes
    assert out.pooler_output.dtype == torch.bfloat16
    ref = golden["meanpool_layer_6"]
    rel = (out.pooler_output.float() - ref).norm() / ref.norm()
    assert rel < 3e-2, f"relative error {rel:.3e}"


@pytest.mark.parametrize("layers", [1, 4])
def test_truncated_at_load_time(mir_folder, golden, layers):
    model = AutoModel.from_pretrained(mir_folder, num_hidden_layers=layers).eval()
    assert len(model.prior.layers) == layers
    assert sum(p.numel() for p in model.prior.layers.parameters()) == layers * sum(
        p.numel() for p in model.prior.layers[0].parameters()
    )
    with torch.no_grad():
        out = model(golden["input_audio"][..., 0], output_hidden_states=False)
    assert_close(out.pooler_output, golden[f"meanpool_layer_{layers}"], f"truncated to {layers}")


def test_feature_extractor_then_model(mir_folder, golden, tmp_path):
    import soundfile as sf

    path = tmp_path / "clip.wav"
    sf.write(path, golden["input_audio"][0].numpy(), 44100, subtype="FLOAT")
    fe = AutoFeatureExtractor.from_pretrained(mir_folder)
    model = AutoModel.from_pretrained(mir_folder, num_hidden_layers=3).eval()
    inputs = fe(str(path), return_tensors="pt", return_window_info=False)
    with torch.no_grad():
        out = model(**inputs)
    assert_close(out.pooler_output[0], golden["meanpool_layer_3"][0], "fe -> model")


def test_padding_mask_pools_real_frames_only(mir_folder, golden):
    model = AutoModel.from_pretrained(mir_folder).eval()
    audio = golden["input_audio"][..., 0]
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[1, 12800:] = 0  # 100 real frames in example 1
    padded = audio.clone()
    padded[1, 12800:] = 0.0
    with torch.no_grad():
        full = model(audio, output_hidden_states=True)
        part = model(padded, attention_mask=mask, output_hidden_states=True)
        alone = model(audio[1:, :12800], output_hidden_states=True)  # the short example on its own, never padded
    assert part.frame_mask.sum(1).tolist() == [256, 100]
    assert torch.equal(part.audio_codes[1, :100], alone.audio_codes[0])
    assert_close(part.hidden_states[6][0], full.hidden_states[6][0], "full-length example unchanged")
    assert_close(part.hidden_states[6][1, :100], alone.hidden_states[6][0], "real frames")
    assert_close(part.pooler_output[1], alone.pooler_output[0], "masked mean")


def test_pooling_modes_and_errors():
    h = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    assert torch.equal(pool_hidden_states(h, mask, "mean"), h[:, :2].mean(1))
    assert torch.equal(pool_hidden_states(h, mask, "max"), h[:, 1])
    assert pool_hidden_states(h, None, "none") is h
    with pytest.raises(JukeboxInputError, match=r"Unknown pooling 'median': expected one of \('mean', 'max', 'none'\)"):
        pool_hidden_states(h, mask, "median")


def test_too_long_input_is_refused(mir_folder):
    model = AutoModel.from_pretrained(mir_folder, num_hidden_layers=1)
    with pytest.raises(JukeboxInputError, match=r"input_values has 32896 samples but one prior window holds 32768"):
        model(torch.zeros(1, 32768 + 128))


def test_hf4_mir_folder(tmp_path, fixtures_dir, golden):
    model = load_hf4_mir(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics", num_layers=2)
    convert_hf4_mir(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics", tmp_path / "m", num_layers=2)
    again = AutoModel.from_pretrained(tmp_path / "m")
    assert len(again.prior.layers) == 2 and again.config.prior_config.lyrics_mode == "separate_encoder"
    audio = golden["input_audio"][..., 0][:, : 128 * 128]  # one window of this prior (n_ctx 128)
    with torch.no_grad():
        a, b = model(audio), again(audio)
    assert torch.equal(a.pooler_output, b.pooler_output)
    # the encoder is not causal: only frames far from the cut equal those of the full clip
    assert torch.equal(a.audio_codes[:, :32], golden["top_codes"][:, :32])


def test_trust_remote_code_without_the_package(mir_folder, fixtures_dir, tmp_path):
    golden_file = fixtures_dir / "prior_5b_top" / "jukemir_golden.safetensors"
    script = """
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        g = load_file(sys.argv[1])
        model = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True, num_hidden_layers=2).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(g["input_audio"][..., 0]).pooler_output
        print(float((out - g["meanpool_layer_2"]).abs().max()))
        """
    result = run_without_package(script, golden_file, mir_folder, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-4


def test_convert_cli_combinations(tmp_path, fixtures_dir, capsys):
    vq = str(fixtures_dir / "vqvae" / "vqvae.pth.tar")
    prior = str(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar")
    assert cli_main(["convert", "--prior", prior, "--num-layers", "2", "--output", str(tmp_path / "p")]) == 0
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and (tmp_path / "p" / "README.md").is_file()
    assert (
        cli_main(["convert", "--vqvae", vq, "--prior", prior, "--dtype", "bfloat16", "--output", str(tmp_path / "m")])
        == 0
    )
    assert AutoModel.from_pretrained(tmp_path / "m").prior.embed_tokens.weight.dtype == torch.bfloat16
    hf4 = str(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics")
    assert cli_main(["convert", "--hf4", hf4, "--hf4-part", "prior-1", "--output", str(tmp_path / "u")]) == 0
    assert json.loads((tmp_path / "u" / "config.json").read_text())["level"] == 1
    capsys.readouterr()
    assert cli_main(["convert", "--prior", prior, "--hf4", hf4, "--output", str(tmp_path / "x")]) == 1
    assert "Unsupported combination of sources: --prior + --hf4" in capsys.readouterr().err
    assert cli_main(["convert", "--vqvae", vq, "--num-layers", "3", "--output", str(tmp_path / "y")]) == 1
    assert "--num-layers applies to priors" in capsys.readouterr().err
    assert cli_main(["convert", "--prior", str(tmp_path / "missing.pth.tar"), "--output", str(tmp_path / "z")]) == 1
    assert "does not exist (expected an original .pth.tar file)" in capsys.readouterr().err


def test_lean_path_under_inference_mode_only_and_hooks_run_under_no_grad(mir_folder):
    """Under torch.inference_mode the MIR model runs the prior's lean path (same numbers); under torch.no_grad
    block hooks still run (the streaming conversion's block-by-block output check loads weights in them)."""
    model = AutoModel.from_pretrained(mir_folder).eval()
    audio = torch.randn(1, 8 * 128, generator=torch.Generator().manual_seed(0)) * 0.3
    calls = []
    handle = model.prior.layers[0].register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with torch.no_grad():
            plain = model(audio).pooler_output
        assert len(calls) == 1
        with torch.inference_mode():
            lean = model(audio).pooler_output
        assert len(calls) == 1  # the lean path calls the blocks' computations directly
    finally:
        handle.remove()
    assert torch.equal(plain, lean)
