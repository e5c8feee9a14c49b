from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hf_jukebox_mir.models.modeling_jukebox_vqvae as modeling
from conftest import run_without_package
from hf_jukebox_mir.conversion.checkpoint_io import load_original_checkpoint
from hf_jukebox_mir.conversion.export import strict_load_state_dict
from hf_jukebox_mir.conversion.key_mapping import VQVAE_KEY_MAPPING, rename_state_dict
from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.modeling_jukebox_vqvae import (
    JukeboxVQVAE,
    JukeboxVQVAEDecoderOutput,
    JukeboxVQVAEEncoderModel,
    JukeboxVQVAEEncoderOutput,
    JukeboxVQVAEOutput,
)


def assert_close_to_reference(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """The parity tolerance of tests/fixtures: max|ours - ref| <= 1e-4 * max(1, max|ref|)."""
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4 * max(1.0, ref.abs().max().item()), err


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(str(fixtures_dir / "vqvae" / "golden.safetensors"))


@pytest.fixture(scope="module")
def reference_model(fixtures_dir):
    """The fixture checkpoint, renamed and strictly loaded (the conversion itself is tested elsewhere)."""
    checkpoint = load_original_checkpoint(fixtures_dir / "vqvae" / "vqvae.pth.tar", expected_kind="vqvae")
    state_dict, _ = rename_state_dict(checkpoint.state_dict, VQVAE_KEY_MAPPING)
    model = JukeboxVQVAE(JukeboxVQVAEConfig.from_preset("5b")).eval()
    strict_load_state_dict(model, state_dict)
    return model


@pytest.fixture(scope="module")
def saved_dir(reference_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("vqvae_saved")
    reference_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model():
    config = JukeboxVQVAEConfig(width=4, depth=1, multipliers=[1, 1, 1], codebook_size=16, codebook_dim=4)
    return JukeboxVQVAE(config).eval()


# ------------------------------------------------------------------------------------------- parity with goldens


def test_codes_equal_goldens_at_all_levels(reference_model, golden):
    audio = golden["input_audio"][..., 0]  # (batch, samples, 1) -> (batch, samples)
    output = reference_model.encode(audio)
    assert isinstance(output, JukeboxVQVAEEncoderOutput)
    assert len(output.audio_codes) == 3
    for level, codes in enumerate(output.audio_codes):
        assert codes.dtype == torch.long
        assert torch.equal(codes, golden[f"codes_level_{level}"]), level


def test_odd_length_codes_equal_goldens(reference_model, golden):
    audio = golden["input_audio_odd"][..., 0]  # 20000 samples: floors to 2500 / 625 / 156 codes
    codes = reference_model.encode(audio).audio_codes
    for level in range(3):
        assert torch.equal(codes[level], golden[f"codes_odd_level_{level}"]), level
    # one level alone (1-D input = batch of one) gives the same codes
    single = reference_model.encode(audio[0], start_level=1, end_level=2).audio_codes
    assert len(single) == 1 and torch.equal(single[0], golden["codes_odd_level_1"])


@pytest.mark.parametrize("level", [0, 1, 2])
def test_decode_matches_goldens(reference_model, golden, level):
    codes = [golden[f"codes_level_{lvl}"] for lvl in range(3)]
    with torch.no_grad():
        from_list = reference_model.decode(codes[level:], start_level=level)
        from_tensor = reference_model.decode(codes[level], start_level=level).audio_values
    assert isinstance(from_list, JukeboxVQVAEDecoderOutput)
    assert_close_to_reference(from_list.audio_values, golden[f"decoded_from_level_{level}"][..., 0])
    assert torch.equal(from_list.audio_values, from_tensor)


def test_quantization_is_independent_of_chunking(reference_model, golden, monkeypatch):
    audio = golden["input_audio"][..., 0]
    monkeypatch.setattr(modeling, "_QUANTIZE_CHUNK_ROWS", 1000)  # not a divisor of 8192 rows
    codes = reference_model.encode(audio, end_level=1).audio_codes[0]
    assert torch.equal(codes, golden["codes_level_0"])


def test_forward_encodes_then_decodes(reference_model, golden):
    audio = golden["input_audio_odd"][..., 0]
    with torch.no_grad():
        output = reference_model(audio, start_level=2)
    assert isinstance(output, JukeboxVQVAEOutput)
    assert len(output.audio_codes) == 1 and torch.equal(output.audio_codes[0], golden["codes_odd_level_2"])
    assert output.audio_values.shape == (1, 156 * 128)
    as_tuple = reference_model(audio, start_level=2, return_dict=False)
    assert torch.equal(as_tuple[0], output.audio_values)


def test_numpy_and_1d_input(reference_model, golden):
    audio = golden["input_audio_odd"][0, :, 0]
    codes = reference_model.encode(audio.numpy(), start_level=2).audio_codes[0]
    assert torch.equal(codes, golden["codes_odd_level_2"])
    codes64 = reference_model.encode(audio.double(), start_level=2).audio_codes[0]  # other float dtypes are cast
    assert torch.equal(codes64, golden["codes_odd_level_2"])


# ------------------------------------------------------------------------------------------------ performance


def test_top_level_only_runs_only_encoder_2(reference_model, golden):
    called = []
    hooks = []
    for prefix in ("encoders", "decoders"):
        for index, sub in enumerate(getattr(reference_model, prefix)):
            hooks.append(sub.register_forward_hook(lambda mod, inp, out, name=f"{prefix}.{index}": called.append(name)))
    try:
        codes = reference_model.encode(golden["input_audio"][..., 0], start_level=2).audio_codes
    finally:
        for hook in hooks:
            hook.remove()
    assert called == ["encoders.2"]
    assert len(codes) == 1 and torch.equal(codes[0], golden["codes_level_2"])


def test_encode_does_not_build_a_graph(reference_model, golden):
    codes = reference_model.encode(golden["input_audio_odd"][..., 0], start_level=2).audio_codes[0]
    assert not codes.requires_grad


def test_odd_strides_lengths():
    config = JukeboxVQVAEConfig(
        levels=2,
        downs_t=[2, 1],
        strides_t=[2, 3],
        multipliers=[1, 1],
        width=4,
        depth=1,
        codebook_size=8,
        codebook_dim=4,
    )
    model = JukeboxVQVAE(config).eval()
    for samples in (config.min_num_samples(1), 50, 97):
        codes = model.encode(torch.rand(1, samples) - 0.5).audio_codes
        assert [c.shape[1] for c in codes] == [config.num_codes(samples, level) for level in range(2)]
    with pytest.raises(JukeboxInputError, match="Audio too short"):
        model.encode(torch.zeros(1, config.min_num_samples(1) - 1))


# --------------------------------------------------------------------------------- save / load / remote code


def test_save_and_from_pretrained_round_trip(reference_model, saved_dir, golden):
    loaded = JukeboxVQVAE.from_pretrained(saved_dir).eval()
    original_state, loaded_state = reference_model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    assert all(torch.equal(original_state[k], loaded_state[k]) for k in original_state)
    # codebooks are persistent buffers: saved and restored, not re-initialised
    assert torch.equal(loaded.quantizers[2].codebook, reference_model.quantizers[2].codebook)
    audio = golden["input_audio_odd"][..., 0]
    with torch.no_grad():
        expected = reference_model(audio, start_level=2)
        again = loaded(audio, start_level=2)
    assert torch.equal(expected.audio_values, again.audio_values)
    assert all(torch.equal(a, b) for a, b in zip(expected.audio_codes, again.audio_codes, strict=True))


def test_auto_model_after_import(saved_dir):
    from transformers import AutoModel

    import hf_jukebox_mir

    hf_jukebox_mir.register()  # the Auto classes

    model = AutoModel.from_pretrained(saved_dir)
    assert type(model) is JukeboxVQVAE


def test_encoder_only_load_is_silent_and_has_no_decoder(reference_model, saved_dir, golden, capfd):
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoder, info = JukeboxVQVAEEncoderModel.from_pretrained(saved_dir, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    captured = capfd.readouterr()
    assert [r.getMessage() for r in records] == []
    assert [str(w.message) for w in caught] == []
    for word in ("LOAD REPORT", "UNEXPECTED", "MISSING"):
        assert word not in captured.err + captured.out
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not hasattr(encoder, "decoders")
    assert not any(name.startswith("decoders") for name in encoder.state_dict())
    full_state = reference_model.state_dict()
    assert all(torch.equal(tensor, full_state[name]) for name, tensor in encoder.state_dict().items())
    assert sum(p.numel() for p in encoder.parameters()) < sum(p.numel() for p in reference_model.parameters()) / 2
    codes = encoder.eval().encode(golden["input_audio_odd"][..., 0], start_level=2).audio_codes
    assert torch.equal(codes[0], golden["codes_odd_level_2"])


def test_encoder_model_with_only_the_top_level(reference_model, saved_dir, golden, capfd):
    config = JukeboxVQVAEConfig.from_pretrained(saved_dir, encoder_levels=[2])
    encoder, info = JukeboxVQVAEEncoderModel.from_pretrained(saved_dir, config=config, output_loading_info=True)
    assert "UNEXPECTED" not in capfd.readouterr().err
    assert not info["missing_keys"] and not info["unexpected_keys"]
    names = set(encoder.state_dict())
    assert names and all(name.startswith(("encoders.2.", "quantizers.2.")) for name in names)
    full_state = reference_model.state_dict()
    assert all(torch.equal(tensor, full_state[name]) for name, tensor in encoder.state_dict().items())
    codes = encoder.eval().encode(golden["input_audio_odd"][..., 0], start_level=2).audio_codes
    assert torch.equal(codes[0], golden["codes_odd_level_2"])
    with pytest.raises(
        JukeboxInputError,
        match=r"only has the encoders of level\(s\) \[2\] \(config\.encoder_levels"
        r"=\[2\]\); cannot encode level\(s\) \[1\]",
    ):
        encoder.encode(golden["input_audio_odd"][..., 0], start_level=1)


_REMOTE_CODE_SCRIPT = """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    folder, golden_path = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    golden = load_file(golden_path)
    codes = model.encode(golden["input_audio_odd"][..., 0], start_level=1).audio_codes
    for level in (1, 2):
        assert torch.equal(codes[level - 1], golden[f"codes_odd_level_{level}"]), level
    assert "hf_jukebox_mir" not in sys.modules
    print("REMOTE-OK", type(model).__module__, type(model).__name__)
    """


def test_trust_remote_code_load_without_the_package(saved_dir, fixtures_dir, tmp_path):
    names = {p.name for p in saved_dir.iterdir()}
    assert {"configuration_jukebox_vqvae.py", "modeling_jukebox_vqvae.py", "errors.py", "config.json"} <= names
    result = run_without_package(
        _REMOTE_CODE_SCRIPT, saved_dir, fixtures_dir / "vqvae" / "golden.safetensors", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK transformers_modules" in result.stdout
    assert "JukeboxVQVAE" in result.stdout


# ------------------------------------------------------------------------------------------------ input errors


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (
            torch.zeros(2, 4096, 1),
            r"Expected mono audio of shape \(batch, samples\) or \(samples,\), got shape "
            r"\(2, 4096, 1\)\. Jukebox is mono: downmix .* x\.mean\(-1\)",
        ),
        (torch.zeros(2, 2, 4096, 1), r"got shape \(2, 2, 4096, 1\)"),
        (
            torch.zeros(1, 4096, dtype=torch.int16),
            r"Expected float audio in \[-1, 1\], got dtype torch\.int16\. "
            r"Convert it to float32 in \[-1, 1\]",
        ),
        (torch.zeros(1, 4096, dtype=torch.complex64), r"got dtype torch\.complex64\. Convert it to float32"),
        (torch.zeros(1, 4096, dtype=torch.bool), r"got dtype torch\.bool"),
        ([0.0] * 4096, r"Expected input_values as a torch\.Tensor or numpy array .* got list"),
        (np.array([np.zeros(200), np.zeros(300)], dtype=object), r"numpy array of Python objects"),
        (
            torch.zeros(1, 0),
            r"Expected non-empty audio, got shape \(1, 0\)\. Encoding level\(s\) \[0, 1, 2\] needs "
            r"at least 128 samples \(0\.002902 s at 44100 Hz\)",
        ),
        (torch.zeros(0, 4096), r"Expected non-empty audio, got shape \(0, 4096\)"),
        (
            torch.zeros(1, 100),
            r"Audio too short: 100 samples \(0\.002268 s\); encoding level\(s\) \[0, 1, 2\] needs "
            r"at least 128 samples \(0\.002902 s at 44100 Hz\)",
        ),
    ],
)
def test_encode_input_errors(tiny_model, audio, message):
    with pytest.raises(JukeboxInputError, match=message):
        tiny_model.encode(audio)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_audio(tiny_model, bad):
    audio = torch.zeros(2, 1024)
    audio[1, 17] = bad
    with pytest.raises(JukeboxInputError, match=r"Expected finite audio, but input_values contains NaN or infinite"):
        tiny_model.encode(audio)


def test_minimum_length_depends_on_requested_levels(tiny_model):
    assert [c.shape for c in tiny_model.encode(torch.zeros(1, 8), end_level=1).audio_codes] == [(1, 1)]
    with pytest.raises(JukeboxInputError, match=r"encoding level\(s\) \[1\] needs at least 32 samples"):
        tiny_model.encode(torch.zeros(1, 31), start_level=1, end_level=2)
    with pytest.raises(JukeboxInputError, match=r"Audio too short: 7 samples .* needs at least 8 samples"):
        tiny_model.encode(torch.zeros(7), end_level=1)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (3, None), (2, 2), (0, 4), (1, 0)])
def test_level_range_errors(tiny_model, start, end):
    with pytest.raises(JukeboxInputError, match=r"Expected 0 <= start_level < end_level <= 3"):
        tiny_model.encode(torch.zeros(1, 1024), start_level=start, end_level=end)
    with pytest.raises(JukeboxInputError, match=r"Expected 0 <= start_level < end_level <= 3"):
        tiny_model.decode(torch.zeros(1, 4, dtype=torch.long), start_level=start, end_level=end)


@pytest.mark.parametrize(
    ("codes", "kwargs", "message"),
    [
        (
            torch.full((1, 8), 16),
            {},
            r"Codes of level 0 out of range: expected values in \[0, 16\), got min 16, "
            r"max 16\.",
        ),
        (torch.full((1, 8), -1), {"start_level": 2}, r"Codes of level 2 out of range: .* got min -1"),
        (torch.zeros(1, 8), {}, r"Expected integer codes \(torch\.long\) for level 0, got dtype torch\.float32"),
        (
            torch.zeros(1, 2, 8, dtype=torch.long),
            {},
            r"Expected the codes of level 0 with shape \(batch, num_codes\)"
            r", both > 0, got shape \(1, 2, 8\)\.",
        ),
        (torch.zeros(1, 0, dtype=torch.long), {}, r"got shape \(1, 0\)\."),
        ("codes", {}, r"Expected the codes of level 0 as a LongTensor .* got str\."),
        ([], {}, r"Expected 1 to 3 code tensors for levels 0\.\.2 \(start_level=0\), got 0\."),
        (
            [torch.zeros(1, 4, dtype=torch.long)] * 2,
            {"start_level": 2},
            r"Expected 1 to 1 code tensors for levels 2\.\.2 \(start_level=2\), got 2\.",
        ),
        ([torch.zeros(1, 4, dtype=torch.long)], {"end_level": 3}, r"Expected exactly 3 code tensors"),
        ([torch.zeros(1, 4, dtype=torch.long), torch.full((1, 2), 99)], {}, r"Codes of level 1 out of range"),
    ],
)
def test_decode_input_errors(tiny_model, codes, kwargs, message):
    with pytest.raises(JukeboxInputError, match=message):
        tiny_model.decode(codes, **kwargs)


def test_decode_accepts_int32_and_1d_codes(tiny_model):
    codes = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = tiny_model.decode(codes, start_level=1).audio_values
        assert expected.shape == (1, 4 * 32)
        assert torch.equal(tiny_model.decode(codes.int(), start_level=1).audio_values, expected)
        assert torch.equal(tiny_model.decode(codes[0], start_level=1).audio_values, expected)


def test_input_errors_are_value_errors(tiny_model):
    with pytest.raises(ValueError):
        tiny_model.encode(torch.zeros(1, 4096, 2))


def test_random_init_is_finite_and_codebooks_random():
    model = JukeboxVQVAE(JukeboxVQVAEConfig(width=4, depth=1, codebook_size=8, codebook_dim=4))
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    assert model.quantizers[0].codebook.std() > 0.1
