"""Feature extractor for Jukebox MIR models: any audio in, fixed-length 44.1 kHz top-prior windows out."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor

from .audio_jukebox import check_length, load_audio, peak_normalize, resample, split_into_windows, to_mono
from .errors import JukeboxConfigError, JukeboxInputError

_NORMALIZE_CHOICES = ("peak", None)


class JukeboxFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Prepares audio for Jukebox the way JukeMIR does: 44.1 kHz, mono by channel mean, peak-normalised
    to 1 over the whole input, then cut into windows of one top-prior context each.

    Every `__init__` argument is saved in `preprocessor_config.json` and restored by `from_pretrained`.

    Args:
        sampling_rate (`int`, defaults to 44100):
            Rate the model expects; inputs at another rate are resampled with soxr ("HQ").
        feature_size (`int`, defaults to 1):
            Feature dimension of `input_values` (raw audio: 1).
        padding_value (`float`, defaults to 0.0):
            Value of padded samples in the last window.
        normalize (`str` or `None`, defaults to `"peak"`):
            `"peak"` divides each input by its peak absolute value (silence stays zero); `None` keeps the
            level. `True`/`False` are accepted as aliases of `"peak"`/`None`.
        window_length (`int`, defaults to 1048576):
            Samples per window, a multiple of `hop_length` (1,048,576 = 8192 top-level tokens x 128, the
            5b top prior's context, 23.78 s; tiny test models use e.g. 32768).
        window_hop (`int`, *optional*):
            Samples between window starts, a multiple of `hop_length`; defaults to `window_length`
            (non-overlapping windows).
        hop_length (`int`, defaults to 128):
            Hop of the top-level VQ-VAE codes; window lengths, hops and offsets are multiples of it.
        max_windows (`int`, *optional*):
            Keep only the first `max_windows` windows of each input (`max_windows=1` reproduces JukeMIR,
            which uses only the first 1,048,576 samples).
        min_length (`int`, *optional*):
            Minimum input length in samples at `sampling_rate` (defaults to `hop_length`, one top-level
            token); shorter inputs raise. A trailing window with fewer real samples than this is dropped
            (unless it is the input's only window).

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
    >>> fe = JukeboxFeatureExtractor(window_length=32768)
    >>> out = fe([np.random.randn(50000), "song.wav"], sampling_rate=22050)  # doctest: +SKIP
    >>> out["input_values"].shape  # (num_windows_total, window_length)  # doctest: +SKIP
    ```
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        sampling_rate: int = 44100,
        feature_size: int = 1,
        padding_value: float = 0.0,
        normalize: str | bool | None = "peak",
        window_length: int = 1048576,
        window_hop: int | None = None,
        hop_length: int = 128,
        max_windows: int | None = None,
        min_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if normalize is True:
            normalize = "peak"
        elif normalize is False:
            normalize = None
        if normalize not in _NORMALIZE_CHOICES:
            raise JukeboxConfigError(f"normalize must be 'peak' or None, got {normalize!r}.")
        _check_positive_int("sampling_rate", sampling_rate)
        _check_positive_int("hop_length", hop_length)
        _check_positive_int("window_length", window_length)
        if window_length % hop_length:
            raise JukeboxConfigError(
                f"window_length must be a multiple of hop_length={hop_length} so that each window maps to whole "
                f"top-level tokens, got {window_length}; use {window_length // hop_length * hop_length or hop_length} "
                f"or {(window_length // hop_length + 1) * hop_length}."
            )
        if window_hop is not None:
            _check_positive_int("window_hop", window_hop)
            if window_hop % hop_length:
                raise JukeboxConfigError(f"window_hop must be a multiple of hop_length={hop_length}, got {window_hop}.")
            if window_hop > window_length:
                raise JukeboxConfigError(
                    f"window_hop={window_hop} is larger than window_length={window_length}; audio between windows "
                    "would be skipped. Use window_hop <= window_length."
                )
        if max_windows is not None:
            _check_positive_int("max_windows", max_windows)
        if min_length is not None:
            _check_positive_int("min_length", min_length)
            if min_length > window_length:
                raise JukeboxConfigError(f"min_length={min_length} must not exceed window_length={window_length}.")
        self.normalize = normalize
        self.window_length = window_length
        self.window_hop = window_hop
        self.hop_length = hop_length
        self.max_windows = max_windows
        self.min_length = min_length

    @property
    def effective_window_hop(self) -> int:
        """Samples between window starts (`window_hop`, or `window_length` when it is None)."""
        return self.window_length if self.window_hop is None else self.window_hop

    @property
    def effective_min_length(self) -> int:
        """Minimum input length in samples at `sampling_rate` (`min_length`, or `hop_length`)."""
        return self.hop_length if self.min_length is None else self.min_length

    def prepare_waveform(self, source: Any, sampling_rate: int | None = None) -> np.ndarray:
        """Load one input and return it mono, at `self.sampling_rate`, normalised: float32 `(samples,)`.

        Raises `JukeboxInputError` when the input is shorter than `effective_min_length` samples at the
        model rate (checked at the input's own rate, so the message states the input's numbers).
        """
        waveform, rate = load_audio(source, sampling_rate=sampling_rate)
        # minimum at the input's own rate, rounded up so the resampled audio is long enough
        min_in = -(-self.effective_min_length * rate // self.sampling_rate)
        check_length(waveform.shape[-1], min_in, rate)
        peak = float(np.abs(waveform).max())
        if self.normalize == "peak" and peak > _SAFE_PEAK:
            # far beyond full scale: downmixing or resampling could overflow float32 (inf, then NaN); a positive
            # scale changes nothing once peak-normalised
            waveform = waveform / np.float32(peak)
        waveform = to_mono(waveform)  # (samples,)
        waveform = resample(waveform, rate, self.sampling_rate)
        if self.normalize == "peak":
            waveform = peak_normalize(waveform)
        return waveform

    def __call__(
        self,
        raw_audio: Any,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        return_window_info: bool = True,
    ) -> BatchFeature:
        """Turn one input or a list of inputs into windows of `window_length` samples.

        Args:
            raw_audio:
                One input or a list/tuple of inputs, each a file path, encoded bytes, a 1-D/2-D numpy array or
                torch tensor, a `datasets` audio dict or a decoder with `get_all_samples()` (see
                `audio_jukebox.load_audio`). A list of numbers is one 1-D waveform.
            sampling_rate (`int`, *optional*):
                Rate of raw arrays/tensors (required for them). Files, dicts with `"sampling_rate"` and
                decoders carry their own rate, which wins.
            return_tensors (`str`, *optional*):
                `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.
            return_attention_mask (`bool`, *optional*):
                Defaults to `self.return_attention_mask` (True).
            return_window_info (`bool`, defaults to True):
                Also return `window_index` and `window_offset` (not model inputs; pop them before `model(**x)`).

        Returns:
            `BatchFeature` with
            - `input_values`: float32 `(num_windows_total, window_length)`;
            - `attention_mask`: int32 `(num_windows_total, window_length)`, 1 on real audio, 0 on padding;
            - `window_index`: int64 `(num_windows_total,)`, index of each window's input in `raw_audio`;
            - `window_offset`: int64 `(num_windows_total,)`, start sample of each window in its input
              (after resampling to `sampling_rate`).
        """
        if _is_single_input(raw_audio):
            inputs, batched = [raw_audio], False
        else:
            inputs, batched = list(raw_audio), True
            if not inputs:
                raise JukeboxInputError("raw_audio is an empty list; pass at least one audio input.")

        all_windows, all_masks, all_index, all_offsets = [], [], [], []
        for i, source in enumerate(inputs):
            try:
                waveform = self.prepare_waveform(source, sampling_rate)
            except JukeboxInputError as err:
                if not batched:
                    raise
                raise JukeboxInputError(f"raw_audio[{i}]: {err}") from err
            windows, mask, offsets = split_into_windows(
                waveform,
                self.window_length,
                self.effective_window_hop,
                max_windows=self.max_windows,
                min_tail=self.effective_min_length,
                padding_value=self.padding_value,
            )
            all_windows.append(windows)
            all_masks.append(mask)
            all_offsets.append(offsets)
            all_index.append(np.full(offsets.shape, i, dtype=np.int64))

        data = {"input_values": np.concatenate(all_windows)}  # (num_windows_total, window_length)
        if self.return_attention_mask if return_attention_mask is None else return_attention_mask:
            data["attention_mask"] = np.concatenate(all_masks)
        if return_window_info:
            data["window_index"] = np.concatenate(all_index)
            data["window_offset"] = np.concatenate(all_offsets)
        return BatchFeature(data=data, tensor_type=return_tensors)


#: peak above which audio is scaled down before downmixing and resampling (full scale is 1; float32 overflows near
#: 3.4e38, and a resampler's overshoot or a sum of channels reaches it first)
_SAFE_PEAK = 1e30


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise JukeboxConfigError(f"{name} must be a positive integer, got {value!r}.")


def _is_single_input(raw_audio: Any) -> bool:
    """A list/tuple is a batch of inputs, unless its first item is a number (then it is one 1-D waveform)."""
    if not isinstance(raw_audio, (list, tuple)):
        return True
    return len(raw_audio) > 0 and isinstance(raw_audio[0], (numbers.Number, np.number))


JukeboxFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["JukeboxFeatureExtractor"]
