"""A fixed, informative baseline feature: chroma statistics computed with numpy only.

JukeMIR's CHROMA baseline is librosa's `chroma_cqt` summarised by the mean and standard deviation of the
chroma frames and of their first and second differences (72 numbers). This module computes the same kind
of summary from an STFT chromagram (no librosa): peak-normalised mono audio -> Hann-windowed STFT ->
magnitudes of the bins between `fmin` and `fmax` folded onto 12 pitch classes (weighted by closeness to
the semitone centre) -> per-frame max normalisation -> statistics.

[`ChromaEmbedder`] has the `embed_fn` interface of `hf_jukebox_mir.probing.training`: a list of mono float32
waveforms at 44.1 kHz in, an array `(num_clips, 1, 72)` out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ..models.errors import JukeboxInputError

CHROMA_DIM = 72


@functools.lru_cache(maxsize=8)
def _chroma_bins(n_fft: int, sampling_rate: int, fmin: float, fmax: float) -> tuple[np.ndarray, ...]:
    """For the STFT bins between `fmin` and `fmax`: bin indices, pitch class (C=0 .. B=11) and weight."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sampling_rate)
    bins = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
    midi = 69.0 + 12.0 * np.log2(freqs[bins] / 440.0)
    nearest = np.round(midi)
    # Triangular weight: 1 on a semitone centre, 0 half a semitone away.
    weight = np.clip(1.0 - 2.0 * np.abs(midi - nearest), 0.0, None)
    return bins, nearest.astype(int) % 12, weight


def chromagram(
    waveform: np.ndarray,
    sampling_rate: int = 44100,
    *,
    n_fft: int = 8192,
    hop_length: int = 2048,
    fmin: float = 55.0,
    fmax: float = 5000.0,
) -> np.ndarray:
    """Chroma frames `(12, num_frames)` (each frame scaled to max 1) of a mono waveform."""
    audio = np.asarray(waveform, dtype=np.float64)
    if audio.ndim != 1:
        raise JukeboxInputError(f"chromagram expects mono 1-D audio, got shape {audio.shape}.")
    if audio.size == 0:
        raise JukeboxInputError("chromagram got empty audio.")
    if not np.all(np.isfinite(audio)):
        raise JukeboxInputError("chromagram got audio with NaN or infinite samples.")
    peak = np.abs(audio).max()
    if peak > 0:
        audio = audio / peak
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    num_frames = 1 + (audio.size - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop_length][:num_frames]  # (T, n_fft)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))  # (T, n_fft // 2 + 1)
    bins, pitch_class, weight = _chroma_bins(n_fft, int(sampling_rate), float(fmin), float(fmax))
    weighted = spectrum[:, bins] * weight  # (T, num_bins)
    # Sum bins per pitch class (elementwise: a tiny BLAS product is slow under thread contention).
    chroma = np.stack([weighted[:, pitch_class == pc].sum(axis=1) for pc in range(12)])  # (12, T)
    return chroma / np.maximum(chroma.max(axis=0, keepdims=True), 1e-10)


def chroma_statistics(waveform: np.ndarray, sampling_rate: int = 44100, **kwargs) -> np.ndarray:
    """72 numbers: mean and std over time of the chroma frames and of their 1st and 2nd differences."""
    chroma = chromagram(waveform, sampling_rate, **kwargs)
    stats = []
    for order in range(3):
        diff = np.diff(chroma, n=order, axis=1) if chroma.shape[1] > order else np.zeros((12, 1))
        stats.append(diff.mean(axis=1))
        stats.append(diff.std(axis=1))
    return np.concatenate(stats).astype(np.float32)


class ChromaEmbedder:
    """`embed_fn` computing [`chroma_statistics`] per clip: `list[np.ndarray] -> (num_clips, 1, 72)` float32.

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_jukebox_mir.probing.chroma import ChromaEmbedder
    >>> embed = ChromaEmbedder()
    >>> t = np.arange(44100) / 44100
    >>> embed([np.sin(2 * np.pi * 440 * t).astype(np.float32)]).shape
    (1, 1, 72)
    ```
    """

    name = "chroma"
    layer_names = ("chroma",)
    output_shape = (1, CHROMA_DIM)

    def __init__(self, sampling_rate: int = 44100, **chroma_kwargs):
        self.sampling_rate = int(sampling_rate)
        self.chroma_kwargs = chroma_kwargs

    def __call__(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise JukeboxInputError("ChromaEmbedder expects a list of waveforms; wrap a single clip in a list.")
        rows = [chroma_statistics(w, self.sampling_rate, **self.chroma_kwargs) for w in waveforms]
        return np.stack(rows)[:, None, :]  # (N, 1, 72)

    def __repr__(self) -> str:
        return f"ChromaEmbedder(sampling_rate={self.sampling_rate})"


__all__ = ["CHROMA_DIM", "ChromaEmbedder", "chroma_statistics", "chromagram"]
