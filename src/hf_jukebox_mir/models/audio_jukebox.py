"""Audio loading and preparation for Jukebox: decode, check, downmix, resample, peak-normalise, window.

This is a flat, Hub-facing helper module: `feature_extraction_jukebox.py` imports it and
`save_pretrained` copies it beside a model for `trust_remote_code`, so it imports only numpy,
soundfile, soxr, torch and `.errors`.

Conventions used throughout:

* A waveform is a float32 numpy array, either 1-D `(samples,)` (mono) or 2-D `(channels, samples)`.
* 2-D inputs may come as `(channels, samples)` or `(samples, channels)`. The orientation is decided
  by the smaller axis: it is the channel axis and must have at most `MAX_CHANNELS` (8) entries. If
  both axes have the same length it is read as `(channels, samples)`. If both axes are longer than 8
  the input is refused as ambiguous.
* Integer PCM arrays/tensors of dtype int16 or int32 are converted to float32 full scale (divided by
  32768 and 2147483648 respectively, as soundfile does for 16/32-bit files). Other integer dtypes
  (int8, uint8, int64, ...) and bool are refused: their scale is ambiguous (e.g. int64 usually means
  `torch.tensor([0, 1, ...])` built by accident).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

try:  # optional at import time: the folder still loads without them, and use names the missing package
    import soundfile
except ImportError:  # pragma: no cover - exercised by patching the module attribute
    soundfile = None
try:
    import soxr
except ImportError:  # pragma: no cover
    soxr = None

from .errors import JukeboxInputError

#: Largest channel count accepted for 2-D audio; also the rule that picks the channel axis.
MAX_CHANNELS = 8

#: soxr quality used by `resample` (the same as librosa's default `res_type="soxr_hq"`, used by JukeMIR).
RESAMPLE_QUALITY = "HQ"

# Full-scale divisors for integer PCM (same convention as soundfile/libsndfile for 16/32-bit files).
_PCM_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}

_ACCEPTED_INPUTS = (
    "a file path (str or os.PathLike; WAV, FLAC, OGG, AIFF, ... as read by soundfile), the encoded bytes of "
    "such a file, a binary file object, a 1-D or 2-D numpy array / torch tensor (needs sampling_rate=), "
    "a dict {'array' or 'raw': ..., 'sampling_rate': int} or {'path': ..., 'bytes': ...} as given by "
    "datasets.Audio, or a decoder object with get_all_samples() (torchcodec AudioDecoder, datasets 5.x)"
)


#: why each audio library is needed (for the install hint)
_AUDIO_LIBRARIES = {"soundfile": "reads audio files", "soxr": "resamples audio to the model's rate"}


def audio_library(name: str):
    """The `soundfile` or `soxr` module, or a one-line `ModuleNotFoundError` saying how to install it."""
    module = {"soundfile": soundfile, "soxr": soxr}[name]
    if module is None:
        raise ModuleNotFoundError(
            f"{name} is not installed; it {_AUDIO_LIBRARIES[name]} for Jukebox models: pip install soundfile soxr",
            name=name,
        )
    return module


def _formats_hint() -> str:
    """Which formats this soundfile/libsndfile build reads, and what to do about the others."""
    soundfile = audio_library("soundfile")
    available = soundfile.available_formats()
    main = [name for name in ("WAV", "FLAC", "OGG", "AIFF", "MP3") if name in available]
    return (
        f"supported formats (soundfile, libsndfile {soundfile.__libsndfile_version__}): {', '.join(main)} and the "
        "others in soundfile.available_formats(); MP3 needs libsndfile >= 1.1.0 (a recent `soundfile` wheel) and "
        "M4A/AAC is not supported, so convert such files first, e.g. `ffmpeg -i song.m4a song.wav`"
    )


def _describe(source: Any) -> str:
    """A short human-readable name for an audio source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray) or torch.is_tensor(source):
        return f"<{type(source).__name__} of shape {tuple(source.shape)}>"
    return f"<{type(source).__name__}>"


# --------------------------------------------------------------------------------------------------
# checks and conversions
# --------------------------------------------------------------------------------------------------


def _to_numpy(data: Any) -> np.ndarray:
    """Convert a tensor / list / array to a numpy array without changing its scale."""
    if torch.is_tensor(data):
        tensor = data.detach()
        if tensor.is_complex():
            raise JukeboxInputError(
                f"Expected real-valued audio, got a complex tensor of dtype {tensor.dtype}; "
                "pass the real signal (e.g. x.real) instead."
            )
        if tensor.is_meta or getattr(tensor, "is_nested", False) or tensor.is_quantized:
            kind = "a meta" if tensor.is_meta else "a nested" if getattr(tensor, "is_nested", False) else "a quantized"
            raise JukeboxInputError(
                f"Expected audio data, got {kind} tensor ({tensor.dtype}); pass a plain dense tensor of floats "
                "(e.g. x.dequantize() for a quantized one, or one waveform per entry of a list for a nested one)."
            )
        if tensor.layout != torch.strided:  # sparse layouts: the samples are all there, densify them
            tensor = tensor.to_dense()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)  # float16, bfloat16, float8 variants
        try:
            return tensor.cpu().numpy()
        except (TypeError, RuntimeError) as err:
            raise JukeboxInputError(
                f"Could not read a tensor of dtype {tensor.dtype} as audio ({err}); pass a float32 tensor."
            ) from None
    if isinstance(data, np.ndarray):
        return data
    try:
        return np.asarray(data)
    except (TypeError, ValueError) as err:
        raise JukeboxInputError(
            f"Could not turn {type(data).__name__} into a numeric audio array ({err}); "
            "pass a 1-D or 2-D numpy array or torch tensor of floats."
        ) from err


def _check_rate(sampling_rate: Any, what: str = "sampling_rate") -> int:
    """Return a sampling rate as a positive int, or raise."""
    numeric = (int, float, np.integer, np.floating)
    if isinstance(sampling_rate, (bool, np.bool_)) or not isinstance(sampling_rate, numeric):
        raise JukeboxInputError(
            f"Expected {what} to be a positive number of Hz (e.g. 44100), got {sampling_rate!r} "
            f"of type {type(sampling_rate).__name__}."
        )
    value = float(sampling_rate)
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise JukeboxInputError(
            f"Expected {what} to be a positive whole number of Hz (e.g. 44100), got {sampling_rate!r}."
        )
    return int(value)


def validate_waveform(
    waveform: Any,
    *,
    sampling_rate: int | None = None,
    min_length: int = 1,
) -> np.ndarray:
    """Check a waveform and return it as float32, 1-D `(samples,)` or 2-D `(channels, samples)`.

    Args:
        waveform (`np.ndarray`, `torch.Tensor` or nested list):
            1-D `(samples,)` or 2-D `(channels, samples)` / `(samples, channels)`; the smaller axis of a
            2-D input is the channel axis and must be <= `MAX_CHANNELS` (8).
        sampling_rate (`int`, *optional*):
            Only used to state durations in seconds in error messages.
        min_length (`int`, defaults to 1):
            Minimum number of samples (per channel).

    Float16/bfloat16/float64 are converted to float32; int16/int32 PCM is scaled to [-1, 1) (see the
    module docstring); complex, bool, other integer and non-numeric dtypes are refused.

    Raises:
        `JukeboxInputError`: wrong dtype, 0-D or more than 2-D, ambiguous 2-D shape, empty, NaN/inf,
        or fewer than `min_length` samples.
    """
    array = _to_numpy(waveform)
    dtype = array.dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise JukeboxInputError(
            f"Expected real-valued audio, got a complex array of dtype {dtype}; "
            "pass the real signal (e.g. x.real) instead."
        )
    if dtype in _PCM_SCALE:
        array = array.astype(np.float32) / np.float32(_PCM_SCALE[dtype])
    elif np.issubdtype(dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        raise JukeboxInputError(
            f"Expected float audio in [-1, 1] (or int16/int32 PCM), got an array of dtype {dtype}; its scale is "
            "ambiguous. Convert it yourself, e.g. x.astype(np.float32) / 32768 for 16-bit PCM values."
        )
    else:
        raise JukeboxInputError(
            f"Expected a numeric audio array (float, or int16/int32 PCM), got dtype {dtype}; "
            "ragged lists or strings are not audio."
        )

    if array.ndim == 0 or array.ndim > 2:
        raise JukeboxInputError(
            f"Expected 1-D (samples,) or 2-D (channels, samples) / (samples, channels) audio, got a {array.ndim}-D "
            f"array of shape {tuple(array.shape)}. To pass several clips, pass a list of waveforms."
        )
    if array.size == 0:
        raise JukeboxInputError(f"Expected non-empty audio, got an empty array of shape {tuple(array.shape)}.")
    if array.ndim == 2:
        rows, cols = array.shape
        if min(rows, cols) > MAX_CHANNELS:
            raise JukeboxInputError(
                f"Ambiguous 2-D audio of shape {(rows, cols)}: expected (channels, samples) or (samples, channels) "
                f"with at most {MAX_CHANNELS} channels (the smaller axis is taken as channels). For a batch of "
                "clips pass a list of 1-D waveforms."
            )
        if cols < rows:  # (samples, channels) -> (channels, samples)
            array = array.T
        array = np.ascontiguousarray(array)

    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(-1) if array.ndim == 1 else ~finite.all(axis=0))
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        raise JukeboxInputError(
            f"Audio contains NaN or infinite values ({n_nan} NaN, {n_inf} inf; first at sample {int(bad[0])}); "
            "expected finite floats. Fix the source or clean it, e.g. np.nan_to_num(x)."
        )

    check_length(array.shape[-1], min_length, sampling_rate)
    return array


def check_length(num_samples: int, min_length: int, sampling_rate: int | None = None) -> None:
    """Raise `JukeboxInputError` if `num_samples < min_length`, stating both in samples (and seconds)."""
    if num_samples < min_length:
        raise JukeboxInputError(
            f"Audio is too short: got {num_samples} samples{_seconds(num_samples, sampling_rate)}, the minimum is "
            f"{min_length} samples{_seconds(min_length, sampling_rate)}."
        )


def _seconds(samples: int, sampling_rate: int | None) -> str:
    if not sampling_rate:
        return ""
    return f" ({samples / sampling_rate:.4g} s at {sampling_rate} Hz)"


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """Downmix `(channels, samples)` to `(samples,)` by the mean over channels (1-D input is returned as is)."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise JukeboxInputError(f"Expected 1-D or 2-D (channels, samples) audio, got shape {tuple(waveform.shape)}.")
    return waveform.mean(axis=0, dtype=np.float32)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr (quality `RESAMPLE_QUALITY`, "HQ", as librosa/JukeMIR); 1-D or `(channels, samples)`.

    The output has `round(samples * target_sr / orig_sr)` samples per channel and dtype float32.
    """
    orig_sr = _check_rate(orig_sr, "orig_sr")
    target_sr = _check_rate(target_sr, "target_sr")
    waveform = np.asarray(waveform, dtype=np.float32)
    if orig_sr == target_sr:
        return waveform
    soxr = audio_library("soxr")
    if waveform.ndim == 1:
        return soxr.resample(waveform, orig_sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
    # soxr wants (frames, channels)
    out = soxr.resample(np.ascontiguousarray(waveform.T), orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def peak_normalize(waveform: np.ndarray) -> np.ndarray:
    """Divide by the peak absolute value so that max |x| == 1; silent audio stays all zeros (no NaN)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if peak == 0.0:
        return np.zeros_like(waveform)
    return waveform / np.float32(peak)


def split_into_windows(
    waveform: np.ndarray,
    window_length: int,
    window_hop: int | None = None,
    *,
    max_windows: int | None = None,
    min_tail: int = 1,
    padding_value: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a mono waveform into fixed-length windows, padding the last one.

    Windows start at 0, `window_hop`, 2 * `window_hop`, ... until one reaches the end of the audio. A
    trailing window with fewer than `min_tail` real samples is dropped unless it is the only one.

    Args:
        waveform (`np.ndarray` of shape `(samples,)`): mono audio.
        window_length (`int`): samples per window.
        window_hop (`int`, *optional*): samples between window starts (default: `window_length`).
        max_windows (`int`, *optional*): keep only the first `max_windows` windows.
        min_tail (`int`): minimum real samples in a trailing window.
        padding_value (`float`): value of padded samples.

    Returns:
        `(windows, mask, offsets)`: float32 `(num_windows, window_length)`, int32 `(num_windows,
        window_length)` with 1 on real samples, int64 `(num_windows,)` start samples.
    """
    if waveform.ndim != 1:
        raise JukeboxInputError(f"Expected mono (samples,) audio to window, got shape {tuple(waveform.shape)}.")
    hop = window_length if window_hop is None else window_hop
    length = waveform.shape[0]
    num = 1 + (max(0, length - window_length) + hop - 1) // hop
    if num > 1 and length - (num - 1) * hop < min_tail:
        num -= 1
    if max_windows is not None:
        num = min(num, max_windows)
    offsets = np.arange(num, dtype=np.int64) * hop
    windows = np.full((num, window_length), padding_value, dtype=np.float32)
    mask = np.zeros((num, window_length), dtype=np.int32)
    for i, start in enumerate(offsets):
        chunk = waveform[start : start + window_length]
        windows[i, : chunk.shape[0]] = chunk
        mask[i, : chunk.shape[0]] = 1
    return windows, mask, offsets


# --------------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------------


def _read_soundfile(file: Any, name: str) -> tuple[np.ndarray, int]:
    """Decode with soundfile; returns float32 `(samples,)` or `(channels, samples)` and the rate."""
    soundfile = audio_library("soundfile")
    try:
        data, rate = soundfile.read(file, dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.SoundFileError, RuntimeError, TypeError, EOFError) as err:
        raise JukeboxInputError(
            f"Could not read audio file {name}: {str(err).rstrip('.')}. The file is corrupt or not in a format "
            f"soundfile can decode; {_formats_hint()}."
        ) from err
    data = data[:, 0] if data.shape[1] == 1 else np.ascontiguousarray(data.T)
    return data, int(rate)


def _load_path(path: str) -> tuple[np.ndarray, int]:
    if "://" in path:
        raise JukeboxInputError(
            f"Got the URL '{path}', but only local audio files are read; download it first and pass the local path."
        )
    if not os.path.exists(path):
        raise JukeboxInputError(f"Audio file '{path}' does not exist; pass the path of a local audio file.")
    if os.path.isdir(path):
        raise JukeboxInputError(f"Expected an audio file, got the folder '{path}'; pass the files inside it.")
    return _read_soundfile(path, f"'{path}'")


def _load_decoder(decoder: Any) -> tuple[np.ndarray, int]:
    """Decode a torchcodec-like `AudioDecoder` (duck typed: `get_all_samples()` -> `.data`, `.sample_rate`)."""
    try:
        samples = decoder.get_all_samples()
        data, rate = samples.data, samples.sample_rate  # data: (channels, samples)
    except Exception as err:  # decoding backends raise many kinds of errors
        raise JukeboxInputError(
            f"Could not decode audio from {type(decoder).__name__}.get_all_samples(): {err}. If `datasets` decoded "
            "this column with torchcodec and torchcodec cannot run here, read it undecoded instead: "
            "ds = ds.cast_column('audio', datasets.Audio(decode=False)) (the feature extractor and pipelines decode "
            "the resulting {'path', 'bytes'} values with soundfile)."
        ) from err
    return _to_numpy(data), _check_rate(rate, "the decoder's sample_rate")


def _load_mapping(source: Mapping, sampling_rate: int | None) -> tuple[Any, int]:
    if "array" in source or "raw" in source:
        data = source["array"] if "array" in source else source["raw"]
        rate = source.get("sampling_rate", sampling_rate)
        if rate is None:
            raise JukeboxInputError(
                "The audio dict has an 'array'/'raw' entry but no 'sampling_rate'; expected "
                "{'array': ..., 'sampling_rate': int} (or pass sampling_rate=)."
            )
        return data, _check_rate(rate)
    if source.get("bytes") is not None:
        name = f"'{source['path']}'" if source.get("path") else f"<{len(source['bytes'])} bytes>"
        return _read_soundfile(io.BytesIO(source["bytes"]), name)
    if source.get("path") is not None:
        return _load_path(os.fspath(source["path"]))
    raise JukeboxInputError(
        f"Unsupported audio dict with keys {sorted(map(str, source))}: expected {{'array' or 'raw': ..., "
        "'sampling_rate': int} or {'path': ..., 'bytes': ...} (datasets.Audio) with a non-empty 'path' or 'bytes'."
    )


def load_audio(source: Any, *, sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Load audio from any supported source, without resampling or downmixing.

    Args:
        source:
            - `str` / `os.PathLike`: a local audio file read with soundfile (WAV, FLAC, OGG, AIFF, and MP3
              where libsndfile >= 1.1.0);
            - `bytes` / `bytearray` / `memoryview` or a binary file object: the content of such a file;
            - `np.ndarray` / `torch.Tensor` / list of numbers: 1-D, or 2-D `(channels, samples)` or
              `(samples, channels)` (the smaller axis, <= 8, is the channel axis); needs `sampling_rate`;
            - a `dict`: `{"array" or "raw": ..., "sampling_rate": int}` (decoded `datasets.Audio`) or
              `{"path": ..., "bytes": ...}` (`datasets.Audio(decode=False)`; bytes win when present);
            - any object with `get_all_samples()` returning `.data` `(channels, samples)` and
              `.sample_rate`, like torchcodec's `AudioDecoder` that `datasets` 5.x returns.
        sampling_rate (`int`, *optional*):
            Rate of raw arrays/tensors/lists (and of a dict without `"sampling_rate"`). Sources that carry
            their own rate (files, bytes, dicts with `"sampling_rate"`, decoders) use their own rate and
            ignore this argument.

    Returns:
        `(waveform, rate)`: float32 `(samples,)` for mono or `(channels, samples)`, and its rate in Hz.

    Raises:
        `JukeboxInputError` for unreadable/corrupt/missing files (naming the file and the supported
        formats), a missing `sampling_rate` for raw arrays, and the checks of `validate_waveform`.
    """
    if isinstance(source, (str, os.PathLike)):
        data, rate = _load_path(os.fspath(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, rate = _read_soundfile(io.BytesIO(bytes(source)), f"<{len(source)} bytes>")
    elif isinstance(source, Mapping):
        data, rate = _load_mapping(source, sampling_rate)
    elif isinstance(source, (np.ndarray, list, tuple)) or torch.is_tensor(source):
        if sampling_rate is None:
            raise JukeboxInputError(
                f"Got raw audio {_describe(source)} without a sampling rate; pass sampling_rate= (in Hz, e.g. "
                "sampling_rate=44100) so it can be resampled correctly, or pass a file path or a "
                "{'array': ..., 'sampling_rate': ...} dict."
            )
        data, rate = source, _check_rate(sampling_rate)
    elif callable(getattr(source, "get_all_samples", None)):
        data, rate = _load_decoder(source)
    elif callable(getattr(source, "read", None)):
        data, rate = _read_soundfile(source, _describe(source))
    else:
        raise JukeboxInputError(
            f"Unsupported audio input of type {type(source).__name__}; expected {_ACCEPTED_INPUTS}."
        )
    return validate_waveform(data, sampling_rate=rate), rate


__all__ = [
    "MAX_CHANNELS",
    "RESAMPLE_QUALITY",
    "check_length",
    "load_audio",
    "peak_normalize",
    "resample",
    "split_into_windows",
    "to_mono",
    "validate_waveform",
]
