"""Tests of `JukeboxFeatureExtractor`: every input kind, resampling, downmix, windows, errors, saving."""

from __future__ import annotations

import io
import json
import os
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.numpy import load_file

from conftest import run_without_package
from hf_jukebox_mir.models.errors import JukeboxConfigError, JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor

SR = 44100
W = 4096  # small windows keep the tests fast


def _fe(**kwargs) -> JukeboxFeatureExtractor:
    kwargs.setdefault("window_length", W)
    return JukeboxFeatureExtractor(**kwargs)


def _noise(n: int, channels: int | None = None, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (channels, n)
    return rng.uniform(-amp, amp, size=shape).astype(np.float32)


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.abs(x).max()


class FakeDecoder:
    """Duck-typed torchcodec `AudioDecoder`."""

    def __init__(self, data: np.ndarray, sample_rate: int):
        self._samples = types.SimpleNamespace(data=torch.from_numpy(data), sample_rate=sample_rate)

    def get_all_samples(self):
        return self._samples


def test_defaults_match_jukemir():
    fe = JukeboxFeatureExtractor()
    assert fe.model_input_names == ["input_values", "attention_mask"]
    assert (fe.sampling_rate, fe.feature_size, fe.padding_value) == (44100, 1, 0.0)
    assert (fe.normalize, fe.window_length, fe.window_hop, fe.hop_length) == ("peak", 1048576, None, 128)
    assert fe.window_length == 8192 * 128
    assert fe.effective_window_hop == fe.window_length and fe.effective_min_length == 128
    assert fe.max_windows is None and fe.return_attention_mask is True


def test_short_clip_gives_one_padded_window_with_mask():
    x = _noise(1000)
    out = _fe()(x, sampling_rate=SR)
    assert set(out) == {"input_values", "attention_mask", "window_index", "window_offset"}
    values, mask = out["input_values"], out["attention_mask"]
    assert values.shape == (1, W) and values.dtype == np.float32
    assert mask.shape == (1, W) and mask.dtype == np.int32
    assert mask[0, :1000].all() and not mask[0, 1000:].any()
    np.testing.assert_allclose(values[0, :1000], _normalized(x), rtol=1e-6)
    assert (values[0, 1000:] == 0).all()
    assert np.abs(values).max() == 1.0
    assert out["window_index"].tolist() == [0] and out["window_offset"].tolist() == [0]


def test_long_clip_several_windows():
    n = 3 * W + 1000
    x = _noise(n)
    out = _fe()(x, sampling_rate=SR)
    values, mask = out["input_values"], out["attention_mask"]
    assert values.shape == (4, W)
    assert out["window_offset"].tolist() == [0, W, 2 * W, 3 * W]
    assert out["window_index"].tolist() == [0, 0, 0, 0]
    assert mask.sum(axis=1).tolist() == [W, W, W, 1000]
    np.testing.assert_allclose(values[mask.astype(bool)], _normalized(x), rtol=1e-6)


def test_overlapping_windows_with_hop():
    n = 3 * W
    x = _noise(n)
    out = _fe(window_hop=W // 2)(x, sampling_rate=SR)
    offsets = out["window_offset"].tolist()
    assert offsets == [0, W // 2, W, 3 * W // 2, 2 * W]  # the last one reaches the end
    values = out["input_values"]
    np.testing.assert_array_equal(values[0, W // 2 :], values[1, : W // 2])
    for row, start in zip(values, offsets):
        np.testing.assert_allclose(row, _normalized(x)[start : start + W], rtol=1e-6)


def test_max_windows_and_tiny_tail_dropped():
    x = _noise(5 * W)
    out = _fe(max_windows=2)([x, x[: W // 2]], sampling_rate=SR)
    assert out["window_index"].tolist() == [0, 0, 1]
    assert out["window_offset"].tolist() == [0, W, 0]
    # a tail shorter than min_length (one top-level token) is not worth a window
    out = _fe()(_noise(W + 100), sampling_rate=SR)
    assert out["input_values"].shape == (1, W)
    out = _fe(min_length=64)(_noise(W + 100), sampling_rate=SR)
    assert out["input_values"].shape == (2, W)


def test_peak_normalisation_over_whole_input_before_windowing():
    x = _noise(2 * W, amp=0.1)
    x[W + 10] = 0.8  # loudest sample in the second window
    out = _fe()(x, sampling_rate=SR)
    assert out["input_values"][1].max() == pytest.approx(1.0)
    assert np.abs(out["input_values"][0]).max() == pytest.approx(0.1 / 0.8, rel=1e-3)
    raw = _fe(normalize=None)(x, sampling_rate=SR)["input_values"]
    np.testing.assert_array_equal(raw.reshape(-1), x)
    silent = _fe()(np.zeros(500, np.float32), sampling_rate=SR)["input_values"]
    assert not np.isnan(silent).any() and (silent == 0).all()


def test_stereo_downmix_is_channel_mean():
    left = _noise(2000, seed=1)
    right = _noise(2000, seed=2)
    expected = (left + right) / 2
    channels_first = np.stack([left, right])
    for stereo in (channels_first, channels_first.T.copy(), torch.from_numpy(channels_first)):
        out = _fe(normalize=None)(stereo, sampling_rate=SR)
        np.testing.assert_allclose(out["input_values"][0, :2000], expected, atol=1e-7)
    out = _fe()(np.stack([left, right]), sampling_rate=SR)
    np.testing.assert_allclose(out["input_values"][0, :2000], _normalized(expected), rtol=1e-5, atol=1e-7)


def test_resampling_22050_file_to_44100(tmp_path: Path):
    freq = 1000.0
    t = np.arange(22050) / 22050
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    path = tmp_path / "sine_22k.wav"
    sf.write(path, x, 22050, subtype="PCM_16")
    fe = _fe(window_length=65536)
    out = fe(str(path))
    mask = out["attention_mask"][0].astype(bool)
    assert mask.sum() == 44100
    y = out["input_values"][0, mask]
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 44100 / len(y)
    assert abs(peak_hz - freq) <= 1.0
    # the same through an array with sampling_rate= gives the same result
    arr = fe(sf.read(path, dtype="float32")[0], sampling_rate=22050)
    np.testing.assert_array_equal(arr["input_values"], out["input_values"])


def test_every_input_kind_in_one_batch(tmp_path: Path):
    mono = _noise(3000, seed=3)
    stereo = _noise(1500, channels=2, seed=4)
    wav, flac = tmp_path / "a.wav", tmp_path / "b.flac"
    sf.write(wav, mono, SR, subtype="FLOAT")
    sf.write(flac, stereo.T, 22050, subtype="PCM_24")
    buf = io.BytesIO()
    sf.write(buf, mono, SR, format="WAV", subtype="FLOAT")
    inputs = [
        wav,  # Path
        str(flac),  # str, stereo, 22.05 kHz
        buf.getvalue(),  # bytes
        mono,  # numpy 1-D (rate from sampling_rate=)
        torch.from_numpy(stereo),  # tensor (channels, samples)
        {"array": mono, "sampling_rate": SR},  # decoded datasets.Audio
        {"path": str(wav), "bytes": None},  # datasets.Audio(decode=False)
        FakeDecoder(stereo, 22050),  # torchcodec AudioDecoder (datasets 5.x)
    ]
    out = _fe()(inputs, sampling_rate=SR, return_tensors="pt")
    assert out["input_values"].dtype == torch.float32 and out["attention_mask"].dtype == torch.int32
    assert out["input_values"].shape == (8, W)
    assert out["window_index"].tolist() == list(range(8))
    lengths = out["attention_mask"].sum(-1).tolist()
    assert lengths[0] == lengths[2] == lengths[3] == lengths[5] == lengths[6] == 3000
    assert lengths[4] == 1500 and lengths[1] == lengths[7] == 3000  # 22.05 kHz -> 44.1 kHz
    ref = torch.from_numpy(_normalized(mono))
    for i in (0, 2, 3, 5, 6):
        torch.testing.assert_close(out["input_values"][i, :3000], ref)
    torch.testing.assert_close(out["input_values"][1], out["input_values"][7], atol=1e-5, rtol=0)


def test_list_of_numbers_is_one_waveform_and_tuple_is_batch():
    x = _noise(300)
    assert _fe()(x.tolist(), sampling_rate=SR)["input_values"].shape == (1, W)
    assert _fe()((x, x), sampling_rate=SR)["window_index"].tolist() == [0, 1]


def test_optional_outputs():
    x = _noise(300)
    out = _fe()(x, sampling_rate=SR, return_attention_mask=False, return_window_info=False)
    assert list(out) == ["input_values"]
    out = _fe(return_attention_mask=False)(x, sampling_rate=SR, return_tensors="np")
    assert "attention_mask" not in out and isinstance(out["input_values"], np.ndarray)


def test_jukemir_golden_audio_round_trips_unchanged(tmp_path: Path, fixtures_dir: Path):
    """The JukeMIR parity audio, written to WAV, comes back as exactly the reference's model input."""
    audio = load_file(str(fixtures_dir / "prior_5b_top" / "jukemir_golden.safetensors"))["input_audio"][..., 0]
    paths = []
    for i, clip in enumerate(audio):  # (batch, samples)
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], clip, SR, subtype="FLOAT")
    out = JukeboxFeatureExtractor(window_length=audio.shape[1], max_windows=1)(paths)
    np.testing.assert_array_equal(out["input_values"], audio)
    assert out["attention_mask"].all()


# ------------------------------------------------------------------------------------------ errors


def test_array_without_sampling_rate_error():
    with pytest.raises(JukeboxInputError, match=r"without a sampling rate; pass sampling_rate="):
        _fe()(np.zeros(1000, np.float32))
    with pytest.raises(JukeboxInputError, match=r"^raw_audio\[1\]: Got raw audio .* pass sampling_rate="):
        _fe()([{"array": _noise(500), "sampling_rate": SR}, _noise(500)])


def test_too_short_error_in_input_rate():
    with pytest.raises(
        JukeboxInputError,
        match=r"Audio is too short: got 50 samples \(0\.002268 s at 22050 Hz\), the minimum is 64 samples "
        r"\(0\.002902 s at 22050 Hz\)",
    ):
        _fe()(np.ones(50, np.float32), sampling_rate=22050)
    assert _fe()(np.ones(64, np.float32), sampling_rate=22050)["attention_mask"].sum() == 128


def test_input_errors_are_pinned(tmp_path: Path):
    fe = _fe()
    with pytest.raises(JukeboxInputError, match=r"raw_audio is an empty list"):
        fe([])
    with pytest.raises(JukeboxInputError, match=r"NaN or infinite"):
        fe(np.full(1000, np.nan, np.float32), sampling_rate=SR)
    with pytest.raises(JukeboxInputError, match=r"got a 3-D array"):
        fe(np.zeros((2, 2, 1000), np.float32), sampling_rate=SR)
    with pytest.raises(JukeboxInputError, match=r"Expected non-empty audio"):
        fe(np.zeros(0, np.float32), sampling_rate=SR)
    with pytest.raises(JukeboxInputError, match=r"dtype int64; its scale is ambiguous"):
        fe(np.arange(1000), sampling_rate=SR)
    bad = tmp_path / "corrupt.flac"
    bad.write_bytes(b"fLaC" + os.urandom(200))
    good = tmp_path / "good.wav"
    sf.write(good, _noise(1000), SR)
    with pytest.raises(JukeboxInputError, match=r"^raw_audio\[1\]: Could not read audio file '.*corrupt\.flac'"):
        fe([good, bad])
    assert isinstance(JukeboxInputError("x"), ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_length": 1000}, r"window_length must be a multiple of hop_length=128 .* got 1000; use 896 or 1024"),
        ({"window_hop": 100}, r"window_hop must be a multiple of hop_length=128, got 100"),
        ({"window_hop": 2 * W}, r"window_hop=8192 is larger than window_length=4096"),
        ({"normalize": "rms"}, r"normalize must be 'peak' or None, got 'rms'"),
        ({"max_windows": 0}, r"max_windows must be a positive integer, got 0"),
        ({"hop_length": 2.5}, r"hop_length must be a positive integer, got 2.5"),
        ({"min_length": 2 * W}, r"min_length=8192 must not exceed window_length=4096"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(JukeboxConfigError, match=match):
        _fe(**kwargs)


def test_normalize_bool_aliases():
    assert _fe(normalize=True).normalize == "peak"
    assert _fe(normalize=False).normalize is None


# ------------------------------------------------------------------------------------------ saving


def test_save_pretrained_round_trip(tmp_path: Path):
    fe = JukeboxFeatureExtractor(
        window_length=32768,
        window_hop=16384,
        hop_length=64,
        max_windows=3,
        min_length=256,
        normalize=None,
        padding_value=-1.0,
        return_attention_mask=False,
    )
    fe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_jukebox.JukeboxFeatureExtractor"}
    assert saved["feature_extractor_type"] == "JukeboxFeatureExtractor"
    for name in ("feature_extraction_jukebox.py", "audio_jukebox.py", "errors.py"):
        assert (tmp_path / name).is_file()
    loaded = JukeboxFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    for key in (
        "window_length",
        "window_hop",
        "hop_length",
        "max_windows",
        "min_length",
        "normalize",
        "padding_value",
        "return_attention_mask",
        "sampling_rate",
        "feature_size",
    ):
        assert getattr(loaded, key) == getattr(fe, key), key
    x = _noise(50000)
    a, b = fe(x, sampling_rate=SR), loaded(x, sampling_rate=SR)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # from_pretrained kwargs override saved settings (how users pick max_windows=1 for JukeMIR)
    assert JukeboxFeatureExtractor.from_pretrained(tmp_path, max_windows=1).max_windows == 1


_REMOTE_SCRIPT = """
    import json

    import numpy as np
    from transformers import AutoFeatureExtractor

    fe = AutoFeatureExtractor.from_pretrained(sys.argv[1], trust_remote_code=True)
    out = fe([np.ones(3000, dtype=np.float32)], sampling_rate=22050, return_tensors="np")
    print(json.dumps({
        "cls": type(fe).__name__, "module": type(fe).__module__, "max_windows": fe.max_windows,
        "shape": list(out["input_values"].shape), "mask": int(out["attention_mask"].sum()),
        "loaded": sorted(m for m in sys.modules if m.startswith("hf_jukebox_mir")),
    }))
    """


def test_auto_feature_extractor_trust_remote_code_without_package(tmp_path: Path):
    model_dir = tmp_path / "model"
    JukeboxFeatureExtractor(window_length=8192, max_windows=2).save_pretrained(model_dir)
    run = run_without_package(_REMOTE_SCRIPT, model_dir, tmp_path=tmp_path, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["cls"] == "JukeboxFeatureExtractor"
    assert result["module"].startswith("transformers_modules.")
    assert result["max_windows"] == 2
    assert result["shape"] == [1, 8192] and result["mask"] == 6000
    assert result["loaded"] == []
