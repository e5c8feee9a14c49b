"""The HEAR API (Holistic Evaluation of Audio Representations, hearbenchmark.com/hear-api.html) for Jukebox.

Benchmark suites that consume HEAR modules (hear-eval-kit and others) import a module and call three
functions; this is that module (a tool of the package, beside `extraction/`: it wraps the Hub-facing model
and pipeline and adds no model code):

```python
import torch
from hf_jukebox_mir import hear

model = hear.load_model("jukebox-5b-mir")              # a MIR folder; layer=36, frame_rate=... optional
audio = torch.zeros(2, 3 * model.sample_rate)          # (n_sounds, n_samples) at model.sample_rate (44.1 kHz)
scene = hear.get_scene_embeddings(audio, model)        # (n_sounds, model.scene_embedding_size)
frames, timestamps = hear.get_timestamp_embeddings(audio, model)
# frames: (n_sounds, n_times, model.timestamp_embedding_size); timestamps: (n_sounds, n_times) in ms
```

Contract as implemented:
* `sample_rate` is the model's rate (44,100 Hz); audio is expected at that rate (no resampling, per HEAR).
* Each sound is peak-normalised and windowed like every other input of the package (see the README).
* Scene embeddings: the layer averaged over all real frames (window averages weighted by real frames).
* Timestamp embeddings: the layer's frames averaged into bins of `1 / frame_rate` s (default 20 Hz, i.e. a
  50 ms hop, the HEAR suggestion); the timestamp of a bin is its centre in milliseconds, capped at the
  sound's end. Every sound of a batch has the same length, so the same number of bins.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from .models.errors import JukeboxInputError

#: default timestamp-embedding rate (Hz): a 50 ms hop, as HEAR suggests
DEFAULT_FRAME_RATE = 20.0


class JukeboxHEARModel(nn.Module):
    """A loaded Jukebox MIR model with the HEAR attributes `sample_rate`, `scene_embedding_size` and
    `timestamp_embedding_size`, and the layer / frame rate its embeddings use."""

    def __init__(self, pipeline, layer: int, frame_rate: float):
        super().__init__()
        self.pipeline = pipeline
        self.model = pipeline.model  # registered as a submodule (HEAR expects a torch module)
        self.layer = int(layer)
        self.frame_rate = float(frame_rate)
        self.sample_rate = int(pipeline.feature_extractor.sampling_rate)
        self.scene_embedding_size = int(pipeline.model.config.hidden_size)
        self.timestamp_embedding_size = int(pipeline.model.config.hidden_size)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return get_scene_embeddings(audio, self)


def load_model(
    model_file_path: str | os.PathLike = "",
    *,
    layer: int | None = None,
    frame_rate: float = DEFAULT_FRAME_RATE,
    device: str | None = None,
    dtype: Any = None,
    max_windows: int | None = None,
) -> JukeboxHEARModel:
    """Load a Jukebox MIR folder (`jukebox-mir convert --vqvae ... --prior ...`) for the HEAR functions.

    Args:
        model_file_path: the MIR folder (HEAR passes a path; an empty string is refused with advice).
        layer: 1-indexed prior block (default: the last stored one; only blocks up to it are loaded).
        frame_rate: timestamp embeddings per second (default 20: a 50 ms hop), at most the native 344.53 Hz.
        device, dtype: as `extract_dataset` (CUDA and bfloat16 when available; CPU float32 otherwise).
        max_windows: keep only the first windows of each sound (JukeMIR: 1).
    """
    from .extraction.engine import JukeboxExtractor

    if not model_file_path:
        raise JukeboxInputError(
            "hear.load_model needs the path of a Jukebox MIR folder (made by `jukebox-mir convert --vqvae ... "
            "--prior ...`), e.g. hear.load_model('jukebox-5b-mir')."
        )
    extractor = JukeboxExtractor(
        model_file_path,
        layers=None if layer is None else [int(layer)],
        pooling="mean",
        device=device,
        dtype=dtype,
        max_windows=max_windows,
    )
    native = float(extractor.model.config.frame_rate)
    if not 0 < float(frame_rate) <= native:
        raise JukeboxInputError(f"frame_rate must be in (0, {native:.2f}] Hz, got {frame_rate!r}.")
    model = JukeboxHEARModel(extractor.pipeline, extractor.layer_ids[0], frame_rate)
    model._window_options = dict(extractor.window_options)
    return model.eval()


def _check_audio(audio: Any, model: JukeboxHEARModel) -> torch.Tensor:
    if not isinstance(model, JukeboxHEARModel):
        raise JukeboxInputError(f"model must come from hf_jukebox_mir.hear.load_model, got {type(model).__name__}.")
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2:
        shape = tuple(audio.shape) if hasattr(audio, "shape") else type(audio).__name__
        raise JukeboxInputError(
            f"HEAR audio must be a 2-D torch tensor (n_sounds, n_samples) at {model.sample_rate} Hz, got {shape}."
        )
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise JukeboxInputError(f"HEAR audio is empty: shape {tuple(audio.shape)}.")
    return audio.detach().float().cpu()


def _run(audio: torch.Tensor, model: JukeboxHEARModel, **options) -> list[np.ndarray]:
    pipe = model.pipeline
    sounds = [{"array": a.numpy(), "sampling_rate": model.sample_rate} for a in audio]
    out = pipe(sounds, layers=model.layer, **options, **getattr(model, "_window_options", {}))
    return [np.asarray(o) for o in out]


def get_scene_embeddings(audio: torch.Tensor, model: JukeboxHEARModel) -> torch.Tensor:
    """`(n_sounds, scene_embedding_size)` float32: the layer averaged over each sound's real frames."""
    audio = _check_audio(audio, model)
    with torch.no_grad():
        pooled = _run(audio, model, pooling="mean")
    return torch.from_numpy(np.stack(pooled).astype(np.float32))


def get_timestamp_embeddings(audio: torch.Tensor, model: JukeboxHEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """`(embeddings (n_sounds, n_times, timestamp_embedding_size), timestamps (n_sounds, n_times) in ms)`."""
    audio = _check_audio(audio, model)
    with torch.no_grad():
        frames = _run(audio, model, pooling="none", frame_rate=model.frame_rate)
    n_times = min(f.shape[0] for f in frames)  # equal lengths give equal counts; guard against a ragged tail
    embeddings = torch.from_numpy(np.stack([f[:n_times] for f in frames]).astype(np.float32))
    duration_ms = 1000.0 * audio.shape[1] / model.sample_rate
    centres = np.minimum((np.arange(n_times) + 0.5) * 1000.0 / model.frame_rate, duration_ms)
    timestamps = torch.from_numpy(np.tile(centres, (audio.shape[0], 1)).astype(np.float32))
    return embeddings, timestamps


__all__ = ["DEFAULT_FRAME_RATE", "JukeboxHEARModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
