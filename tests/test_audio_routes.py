"""Audio as users have it (issue 18): decoder objects (torchcodec `AudioDecoder`, as `datasets` 5.x returns), a
clear error naming the `Audio(decode=False)` route when decoding fails, and one-line install hints for the
audio libraries of the remote-code route."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hf_jukebox_mir.models import audio_jukebox
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor


class _Decoder:
    """Duck-typed torchcodec AudioDecoder: `get_all_samples()` -> `.data` (channels, samples), `.sample_rate`."""

    def __init__(self, data=None, rate=22050, error=None):
        self.data, self.rate, self.error = data, rate, error

    def get_all_samples(self):
        if self.error is not None:
            raise self.error
        return SimpleNamespace(data=self.data, sample_rate=self.rate)


def test_decoder_objects_are_accepted():
    data = torch.from_numpy(np.sin(np.arange(2 * 11025) / 10.0).astype(np.float32).reshape(2, -1))
    fe = JukeboxFeatureExtractor(window_length=4096)
    out = fe(_Decoder(data, 22050))
    assert out["input_values"].shape[1] == 4096 and out["attention_mask"].sum() == 11025 * 2


def test_failed_decoding_names_the_decode_false_route():
    fe = JukeboxFeatureExtractor(window_length=4096)
    with pytest.raises(JukeboxInputError, match=r"ds = ds.cast_column\('audio', datasets.Audio\(decode=False\)\)"):
        fe(_Decoder(error=RuntimeError("Could not load libtorchcodec")))


@pytest.mark.parametrize("name", ["soundfile", "soxr"])
def test_missing_audio_library_gives_a_one_line_install_hint(monkeypatch, tmp_path, name):
    monkeypatch.setattr(audio_jukebox, name, None)
    with pytest.raises(ModuleNotFoundError, match=rf"^{name} is not installed; it .* pip install soundfile soxr$"):
        if name == "soxr":
            audio_jukebox.resample(np.zeros(1000, np.float32), 22050, 44100)
        else:
            (tmp_path / "a.wav").write_bytes(b"RIFF")
            audio_jukebox.load_audio(str(tmp_path / "a.wav"))
