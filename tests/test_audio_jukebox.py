"""Tests of audio loading and preparation (`hf_jukebox_mir.models.audio_jukebox`)."""

from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hf_jukebox_mir.models.audio_jukebox import (
    MAX_CHANNELS,
    check_length,
    load_audio,
    peak_normalize,
    resample,
    split_into_windows,
    to_mono,
    validate_waveform,
)
from hf_jukebox_mir.models.errors import JukeboxInputError

SR = 44100


def _sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stereo(n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.uniform(-0.9, 0.9, size=(2, n))).astype(np.float32)  # (channels, samples)


class FakeDecoder:
    """Duck-typed stand-in for torchcodec's AudioDecoder (what datasets 5.x returns)."""

    def __init__(self, data: torch.Tensor, sample_rate: int):
        self._samples = types.SimpleNamespace(data=data, sample_rate=sample_rate)

    def get_all_samples(self):
        return self._samples


class BrokenDecoder:
    def get_all_samples(self):
        raise RuntimeError("ffmpeg exploded")


# ------------------------------------------------------------------------------------------ files


def test_load_float_wav_mono_exact(tmp_path: Path):
    x = _sine(440, 0.2, SR)
    path = tmp_path / "mono.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    for source in (path, str(path)):
        y, sr = load_audio(source)
        assert sr == SR
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_array_equal(y, x)


def test_load_pcm16_wav_scaled_to_float(tmp_path: Path):
    x = _sine(440, 0.2, 22050)
    path = tmp_path / "pcm16.wav"
    sf.write(path, x, 22050, subtype="PCM_16")
    y, sr = load_audio(path)
    assert sr == 22050 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1.5 / 32768)


def test_load_stereo_flac_channels_first(tmp_path: Path):
    x = _stereo()
    path = tmp_path / "stereo.flac"
    sf.write(path, x.T, 48000, subtype="PCM_24")  # soundfile wants (frames, channels)
    y, sr = load_audio(path)
    assert sr == 48000 and y.shape == (2, x.shape[1])
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_load_ogg(tmp_path: Path):
    x = _sine(440, 0.5, SR)
    path = tmp_path / "lossy.ogg"
    sf.write(path, x, SR, format="OGG", subtype="VORBIS")
    y, sr = load_audio(path)
    assert sr == SR and y.ndim == 1 and abs(y.shape[0] - x.shape[0]) < 2048
    assert 0.3 < np.abs(y).max() < 0.7


def test_load_bytes_bytearray_and_file_object(tmp_path: Path):
    x = _stereo(3000)
    buf = io.BytesIO()
    sf.write(buf, x.T, 32000, format="WAV", subtype="FLOAT")
    raw = buf.getvalue()
    for source in (raw, bytearray(raw), memoryview(raw), io.BytesIO(raw)):
        y, sr = load_audio(source)
        assert sr == 32000
        np.testing.assert_array_equal(y, x)


def test_file_rate_wins_over_sampling_rate_argument(tmp_path: Path):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(440, 0.1, 16000), 16000)
    assert load_audio(path, sampling_rate=44100)[1] == 16000


def test_corrupt_file_error_names_file_and_formats(tmp_path: Path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x01garbage, not audio at all" * 10)
    match = r"Could not read audio file '.*broken\.wav'.*supported formats.*WAV, FLAC.*MP3 needs libsndfile >= 1\.1\.0"
    with pytest.raises(JukeboxInputError, match=match):
        load_audio(path)
    with pytest.raises(JukeboxInputError, match=r"Could not read audio file <\d+ bytes>.*corrupt"):
        load_audio(b"not audio" * 20)


def test_truncated_file_error(tmp_path: Path):
    path = tmp_path / "full.flac"
    sf.write(path, _sine(440, 1.0, SR), SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(path.read_bytes()[:60])
    with pytest.raises(JukeboxInputError, match=r"cut\.flac"):
        load_audio(cut)


def test_missing_file_folder_and_url(tmp_path: Path):
    with pytest.raises(JukeboxInputError, match=r"Audio file '.*nope\.wav' does not exist"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(JukeboxInputError, match=r"Expected an audio file, got the folder"):
        load_audio(tmp_path)
    with pytest.raises(JukeboxInputError, match=r"URL .* download it first"):
        load_audio("https://example.com/song.wav")


# ------------------------------------------------------------------------------------------ arrays


def test_arrays_need_sampling_rate():
    for source in (np.zeros(1000, np.float32), torch.zeros(1000), [0.0] * 1000):
        with pytest.raises(JukeboxInputError, match=r"without a sampling rate; pass sampling_rate="):
            load_audio(source)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,
        lambda x: x.T.copy(),  # (samples, channels)
        lambda x: torch.from_numpy(x),
        lambda x: torch.from_numpy(x.T.copy()),
        lambda x: x.astype(np.float64),
        lambda x: x.tolist(),
    ],
    ids=["np_cs", "np_sc", "pt_cs", "pt_sc", "float64", "list"],
)
def test_2d_orientation_by_smaller_axis(make):
    x = _stereo(500)
    y, sr = load_audio(make(x), sampling_rate=22050)
    assert sr == 22050 and y.shape == (2, 500) and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-7)


def test_1d_inputs_and_half_precision_tensors():
    x = _sine(100, 0.05, SR)
    np.testing.assert_array_equal(load_audio(x, sampling_rate=SR)[0], x)
    np.testing.assert_array_equal(load_audio(list(map(float, x)), sampling_rate=SR)[0], x)
    y, _ = load_audio(torch.from_numpy(x).to(torch.bfloat16), sampling_rate=SR)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=4e-3)
    assert load_audio(torch.from_numpy(x).half(), sampling_rate=SR)[0].dtype == np.float32


def test_int_pcm_arrays_are_scaled():
    pcm16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    y = validate_waveform(pcm16)
    np.testing.assert_allclose(y, [0.0, 0.5, -1.0, 32767 / 32768])
    pcm32 = np.array([0, -(2**31), 2**30], dtype=np.int32)
    np.testing.assert_allclose(validate_waveform(torch.from_numpy(pcm32)), [0.0, -1.0, 0.5])


def test_other_dtypes_refused():
    with pytest.raises(JukeboxInputError, match=r"got an array of dtype int64; its scale is ambiguous"):
        validate_waveform(np.arange(1000))
    with pytest.raises(JukeboxInputError, match=r"dtype bool"):
        validate_waveform(np.ones(1000, dtype=bool))
    with pytest.raises(JukeboxInputError, match=r"Expected real-valued audio, got a complex array"):
        validate_waveform(np.ones(1000, dtype=np.complex64))
    with pytest.raises(JukeboxInputError, match=r"Expected real-valued audio, got a complex tensor"):
        validate_waveform(torch.ones(1000, dtype=torch.complex64))
    with pytest.raises(JukeboxInputError, match=r"Expected a numeric audio array .* got dtype <U"):
        validate_waveform(np.array(["a", "b"]))


def test_shape_errors():
    with pytest.raises(JukeboxInputError, match=r"got a 3-D array of shape \(2, 2, 1000\).*pass a list"):
        validate_waveform(np.zeros((2, 2, 1000), np.float32))
    with pytest.raises(JukeboxInputError, match=r"got a 0-D array"):
        validate_waveform(np.float32(1.0))
    with pytest.raises(JukeboxInputError, match=r"Expected non-empty audio, got an empty array of shape \(0,\)"):
        validate_waveform(np.zeros(0, np.float32))
    with pytest.raises(JukeboxInputError, match=r"Expected non-empty audio.*\(2, 0\)"):
        validate_waveform(np.zeros((2, 0), np.float32))
    match = rf"Ambiguous 2-D audio of shape \(16, 1000\).*at most {MAX_CHANNELS} channels"
    with pytest.raises(JukeboxInputError, match=match):
        validate_waveform(np.zeros((16, 1000), np.float32))
    # 8 channels are fine, in either orientation
    assert validate_waveform(np.zeros((1000, 8), np.float32)).shape == (8, 1000)


def test_nan_and_inf_refused():
    x = np.zeros(1000, np.float32)
    x[17] = np.nan
    x[20] = np.inf
    with pytest.raises(JukeboxInputError, match=r"NaN or infinite values \(1 NaN, 1 inf; first at sample 17\)"):
        validate_waveform(x)
    s = np.zeros((2, 100), np.float32)
    s[1, 5] = -np.inf
    with pytest.raises(JukeboxInputError, match=r"0 NaN, 1 inf; first at sample 5"):
        load_audio(s, sampling_rate=SR)


def test_too_short_states_samples_and_seconds():
    with pytest.raises(
        JukeboxInputError,
        match=r"Audio is too short: got 100 samples \(0\.002268 s at 44100 Hz\), "
        r"the minimum is 128 samples \(0\.002902 s at 44100 Hz\)",
    ):
        validate_waveform(np.ones(100, np.float32), sampling_rate=SR, min_length=128)
    with pytest.raises(JukeboxInputError, match=r"got 3 samples, the minimum is 4 samples\.$"):
        check_length(3, 4)
    check_length(4, 4)


# ------------------------------------------------------------------------------------------ dicts, decoders


def test_datasets_dicts(tmp_path: Path):
    x = _stereo(1000)
    y, sr = load_audio({"array": x, "sampling_rate": 16000})
    assert sr == 16000 and y.shape == (2, 1000)
    y, sr = load_audio({"raw": x[0], "sampling_rate": 8000})
    assert sr == 8000 and y.shape == (1000,)
    assert load_audio({"array": x[0]}, sampling_rate=8000)[1] == 8000
    assert load_audio({"array": x[0], "sampling_rate": 16000}, sampling_rate=8000)[1] == 16000
    with pytest.raises(JukeboxInputError, match=r"has an 'array'/'raw' entry but no 'sampling_rate'"):
        load_audio({"array": x[0]})

    path = tmp_path / "d.wav"
    sf.write(path, x.T, 22050, subtype="FLOAT")
    y, sr = load_audio({"path": str(path), "bytes": None})  # Audio(decode=False) on a path
    assert sr == 22050
    np.testing.assert_array_equal(y, x)
    y, sr = load_audio({"path": "d.wav", "bytes": path.read_bytes()})  # bytes win
    np.testing.assert_array_equal(y, x)
    with pytest.raises(JukeboxInputError, match=r"Could not read audio file 'x\.wav'"):
        load_audio({"path": "x.wav", "bytes": b"junk" * 10})
    match = r"Unsupported audio dict with keys \['audio', 'label'\]: expected \{'array' or 'raw': \.\.\., "
    match += r"'sampling_rate': int\} or"
    with pytest.raises(JukeboxInputError, match=match):
        load_audio({"audio": 1, "label": 2})
    with pytest.raises(JukeboxInputError, match=r"Unsupported audio dict with keys \['bytes', 'path'\]"):
        load_audio({"path": None, "bytes": None})


def test_decoder_duck_typing():
    x = _stereo(2000)
    y, sr = load_audio(FakeDecoder(torch.from_numpy(x), 24000))
    assert sr == 24000 and y.shape == (2, 2000)
    np.testing.assert_array_equal(y, x)
    match = r"Could not decode audio from BrokenDecoder.get_all_samples\(\): ffmpeg exploded"
    with pytest.raises(JukeboxInputError, match=match):
        load_audio(BrokenDecoder())


def test_unsupported_type_and_bad_rate():
    with pytest.raises(JukeboxInputError, match=r"Unsupported audio input of type object; expected a file path"):
        load_audio(object())
    with pytest.raises(JukeboxInputError, match=r"Expected sampling_rate to be a positive whole number of Hz"):
        load_audio(np.zeros(10, np.float32), sampling_rate=-5)
    with pytest.raises(JukeboxInputError, match=r"Expected sampling_rate to be a positive number of Hz.*got '44100'"):
        load_audio(np.zeros(10, np.float32), sampling_rate="44100")


# ------------------------------------------------------------------------------------------ processing


def test_to_mono_is_channel_mean():
    x = _stereo(100)
    np.testing.assert_allclose(to_mono(x), (x[0] + x[1]) / 2, atol=1e-7)
    left = x[0]
    assert to_mono(left) is left


def test_peak_normalize():
    x = np.array([0.1, -0.4, 0.2], np.float32)
    np.testing.assert_allclose(peak_normalize(x), [0.25, -1.0, 0.5])
    silent = peak_normalize(np.zeros(50, np.float32))
    assert not np.isnan(silent).any() and (silent == 0).all()
    assert np.abs(peak_normalize(_stereo())).max() == 1.0


def test_resample_sine_22050_to_44100_keeps_frequency():
    freq = 1000.0
    x = _sine(freq, 1.0, 22050)
    y = resample(x, 22050, 44100)
    assert y.dtype == np.float32 and y.shape == (44100,)
    spectrum = np.abs(np.fft.rfft(y))
    peak_hz = np.argmax(spectrum) * 44100 / len(y)
    assert abs(peak_hz - freq) <= 1.0
    # amplitude kept, no energy above the old Nyquist
    assert abs(np.abs(y[1000:-1000]).max() - 0.5) < 0.01
    assert spectrum[int(11100 * len(y) / 44100) :].max() < 1e-3 * spectrum.max()


def test_resample_2d_and_identity():
    x = _stereo(4800)
    y = resample(x, 48000, 44100)
    assert y.shape == (2, 4410)
    np.testing.assert_allclose(y[0], resample(x[0], 48000, 44100), atol=1e-6)
    assert resample(x, SR, SR) is x


def test_split_into_windows_counts_offsets_masks():
    x = np.arange(1, 1001, dtype=np.float32)
    w, m, o = split_into_windows(x, 256)
    assert w.shape == (4, 256) and m.dtype == np.int32 and o.tolist() == [0, 256, 512, 768]
    assert m.sum(axis=1).tolist() == [256, 256, 256, 232]
    np.testing.assert_array_equal(w[m.astype(bool)], x)
    assert (w[3, 232:] == 0).all()

    w, m, o = split_into_windows(x, 512, 256)  # overlap: windows until one reaches the end
    assert o.tolist() == [0, 256, 512] and m.sum(axis=1).tolist() == [512, 512, 488]
    np.testing.assert_array_equal(w[0, 256:], w[1, :256])

    short = split_into_windows(x[:10], 256, padding_value=-1.0)
    assert short[0].shape == (1, 256) and short[1].sum() == 10 and (short[0][0, 10:] == -1).all()

    # a trailing window with fewer than min_tail real samples is dropped, unless it is the only one
    assert split_into_windows(x[:260], 256, min_tail=128)[2].tolist() == [0]
    assert split_into_windows(x[:400], 256, min_tail=128)[2].tolist() == [0, 256]
    assert split_into_windows(x[:100], 256, min_tail=128)[1].sum() == 100
    assert split_into_windows(x, 256, max_windows=2)[0].shape == (2, 256)
    assert split_into_windows(x[:512], 256)[0].shape == (2, 256)  # exact fit: no empty window
