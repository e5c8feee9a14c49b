"""`pipeline("feature-extraction")` for Jukebox MIR models: audio in, per-layer representations out.

Three ways to get it (all give the same class and the same numbers):

```python
>>> from transformers import pipeline
>>> # (a) without the package: the folder carries this module (config.json "custom_pipelines")
>>> pipe = pipeline("feature-extraction", model="jukebox-mir-5b-36", trust_remote_code=True)
>>> pipe("song.wav", layers=36).shape            # JukeMIR feature: mean over time of block 36
(4800,)

>>> # (b) with the package: name the class (transformers' `pipeline_class=`; no remote code runs)
>>> from hf_jukebox_mir import JukeboxFeatureExtractionPipeline, jukebox_feature_extraction_pipeline
>>> pipe = pipeline("feature-extraction", model="jukebox-mir-5b-36", pipeline_class=JukeboxFeatureExtractionPipeline)
>>> pipe = jukebox_feature_extraction_pipeline("jukebox-mir-5b-36")  # the same, in one call

>>> # (c) from objects
>>> pipe = jukebox_feature_extraction_pipeline(model, feature_extractor=feature_extractor)
```

Importing the package never changes transformers' own `"feature-extraction"` task: a text model's pipeline
behaves the same with and without `import hf_jukebox_mir`.

Data flow: each input is decoded, resampled to 44.1 kHz, downmixed, peak-normalised and cut into
prior windows by the folder's feature extractor (`preprocess`, one item per window); windows of
several inputs are batched together (`batch_size=`); `_forward` keeps the requested layers only and
pools each window over its real frames on the device; `postprocess` joins the windows of one input.

This is a flat, Hub-facing module: `save_pipeline_files` copies it beside a converted model, so it
imports only installed packages and sibling modules (`from .x import y`).
"""

from __future__ import annotations

import copy
import json
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.base import ChunkPipeline

from .errors import JukeboxInputError
from .modeling_jukebox_mir import pool_float32

#: `model_type` of the models this pipeline serves.
MODEL_TYPE = "jukebox_mir"

#: The `custom_pipelines` entry written into a model folder's `config.json`.
CUSTOM_PIPELINE_ENTRY = {
    "feature-extraction": {
        "impl": "pipeline_jukebox.JukeboxFeatureExtractionPipeline",
        "pt": ["AutoModel"],
        "type": "audio",
    }
}

POOLING_CHOICES = ("mean", "max", "none")
WINDOW_AGGREGATION_CHOICES = ("mean", "none", "concat")

# keyword arguments that `transformers.pipeline()` may forward to the pipeline class unasked
_PASSTHROUGH_KWARGS = frozenset({"local_files_only"})


# ------------------------------------------------------------------------------------------------ options


def resolve_layers(layers: Any, num_hidden_layers: int) -> tuple[list[int], bool]:
    """Turn the `layers` option into block indices and a "drop the layer axis" flag.

    Args:
        layers: `None` (the last built block), an `int` in `[0, num_hidden_layers]`, a list/tuple/range of
            such ints, or `"all"` (`1..num_hidden_layers`). Layers are 1-indexed block outputs as in JukeMIR
            (`36` = output of block 36); `0` is the input of block 1 (the embeddings).
        num_hidden_layers: blocks the model has built.

    Returns:
        `(indices, squeeze)`: indices into `hidden_states`, and True when a single layer was asked as an
        int (or by default), so results have no layer axis.
    """
    if layers is None:
        return [num_hidden_layers], True
    if isinstance(layers, str):
        if layers != "all":
            raise JukeboxInputError(
                f"layers={layers!r} is not supported: expected an int, a list of ints or 'all' "
                f"(1-indexed blocks, 1..{num_hidden_layers})."
            )
        return list(range(1, num_hidden_layers + 1)), False
    if isinstance(layers, (numbers.Integral, np.integer)) and not isinstance(layers, bool):
        values, squeeze = [int(layers)], True
    elif isinstance(layers, (list, tuple, range)) or (isinstance(layers, np.ndarray) and layers.ndim == 1):
        values, squeeze = list(layers), False
        if not values:
            raise JukeboxInputError("layers is empty: pass at least one layer (e.g. layers=[36]).")
    else:
        raise JukeboxInputError(
            f"layers={layers!r} is not supported: expected an int, a list of ints or 'all' "
            f"(1-indexed blocks, 1..{num_hidden_layers})."
        )
    out: list[Any] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
            raise JukeboxInputError(f"layers must be integers, got {value!r} in {layers!r}.")
        value = int(value)
        if not 0 <= value <= num_hidden_layers:
            raise JukeboxInputError(
                f"Layer {value} is not available: the model has {num_hidden_layers} blocks, so layers must be in "
                f"1..{num_hidden_layers} (0 = the embeddings). Load more blocks if the checkpoint has them, e.g. "
                f"AutoModel.from_pretrained(folder, num_hidden_layers={max(value, 1)})."
            )
        out.append(value)
    if len(set(out)) != len(out):
        raise JukeboxInputError(f"layers has duplicates: {out}.")
    return out, squeeze


def check_options(
    pooling: str, frame_rate: float | None, window_aggregation: str | None, native_frame_rate: float
) -> tuple[str, str]:
    """Validate pooling / frame_rate / window_aggregation together; returns (pooling, window_aggregation)."""
    if pooling not in POOLING_CHOICES:
        raise JukeboxInputError(f"pooling={pooling!r} is not supported: expected one of {POOLING_CHOICES}.")
    if frame_rate is not None:
        if pooling != "none":
            raise JukeboxInputError(
                f"frame_rate={frame_rate} gives frame-level features and needs pooling='none', got pooling={pooling!r}."
            )
        if (
            isinstance(frame_rate, bool)
            or not isinstance(frame_rate, numbers.Real)
            or not 0 < float(frame_rate) <= native_frame_rate
        ):
            raise JukeboxInputError(
                f"frame_rate={frame_rate!r} is not supported: expected a number of Hz in (0, {native_frame_rate:.2f}] "
                f"(the model's native frame rate); frames are averaged into bins of 1/frame_rate seconds."
            )
    if window_aggregation is None:
        window_aggregation = "concat" if pooling == "none" else "mean"
    if window_aggregation not in WINDOW_AGGREGATION_CHOICES:
        raise JukeboxInputError(
            f"window_aggregation={window_aggregation!r} is not supported: expected one of {WINDOW_AGGREGATION_CHOICES}."
        )
    if pooling == "none" and window_aggregation == "mean":
        raise JukeboxInputError(
            "window_aggregation='mean' needs pooled windows (pooling='mean' or 'max'); for frame-level features use "
            "window_aggregation='concat' (one time line per input) or 'none' (one array per window)."
        )
    if pooling != "none" and window_aggregation == "concat":
        raise JukeboxInputError(
            f"window_aggregation='concat' joins frames and needs pooling='none', got pooling={pooling!r}; use 'mean' "
            "(one vector per input) or 'none' (one vector per window)."
        )
    return pooling, window_aggregation


def windowed_feature_extractor(feature_extractor: Any, max_windows: int | None = None, window_hop: int | None = None):
    """`feature_extractor` itself, or a copy that keeps only the first `max_windows` windows and/or starts a
    window every `window_hop` samples (both checked as `JukeboxFeatureExtractor.__init__` checks them).

    `max_windows=1` is the JukeMIR recipe: only the first window (1,048,576 samples, 23.78 s for the 5b prior).
    """
    if max_windows is None and window_hop is None:
        return feature_extractor
    if max_windows is not None and (
        isinstance(max_windows, bool) or not isinstance(max_windows, numbers.Integral) or max_windows < 1
    ):
        raise JukeboxInputError(f"max_windows must be a positive integer, got {max_windows!r}.")
    if window_hop is not None:
        hop = getattr(feature_extractor, "hop_length", 1)
        length = getattr(feature_extractor, "window_length", None)
        if (
            isinstance(window_hop, bool)
            or not isinstance(window_hop, numbers.Integral)
            or window_hop < 1
            or window_hop % hop
            or (length is not None and window_hop > length)
        ):
            raise JukeboxInputError(
                f"window_hop must be a positive multiple of hop_length={hop} samples, at most the window length "
                f"{length}, got {window_hop!r}."
            )
    copied = copy.copy(feature_extractor)
    if max_windows is not None:
        copied.max_windows = int(max_windows)
    if window_hop is not None:
        copied.window_hop = int(window_hop)
    return copied


# --------------------------------------------------------------------------------------------- pooling math


def aggregate_pooled(pooled: np.ndarray, num_frames: np.ndarray, pooling: str) -> np.ndarray:
    """Join per-window pooled vectors `(windows, layers, dim)` into one `(layers, dim)`.

    Mean pooling: average weighted by each window's real frames (= the mean over all real frames when windows
    do not overlap). Max pooling: the maximum over windows (= the maximum over all real frames).
    """
    if pooling == "max":
        return pooled.max(axis=0)
    weights = num_frames.astype(np.float64)[:, None, None]  # (windows, 1, 1)
    return ((pooled.astype(np.float64) * weights).sum(0) / weights.sum()).astype(np.float32)


def concat_frames(frames: list[np.ndarray], offsets: list[int]) -> np.ndarray:
    """Join per-window frames `[(layers, n_k, dim)]` at frame offsets into one time line `(layers, n, dim)`.

    Where windows overlap (`window_hop < window_length`) each frame is taken from the earliest window that
    covers it: that copy has the most left context (the prior is causal).
    """
    pieces, covered = [], 0
    for part, start in zip(frames, offsets):
        skip = max(0, covered - start)
        if skip < part.shape[1]:
            pieces.append(part[:, skip:])
        covered = max(covered, start + part.shape[1])
    return np.concatenate(pieces, axis=1)


def bin_frames(frames: np.ndarray, native_rate: float, target_rate: float) -> np.ndarray:
    """Average frames `(layers, n, dim)` at `native_rate` into bins of `1 / target_rate` s -> `(layers, m, dim)`.

    Frame `t` (at `t / native_rate` s) goes to bin `floor(t * target_rate / native_rate)`; the last bin may
    hold fewer frames.
    """
    n = frames.shape[1]
    if n == 0:
        return frames
    bins = np.floor(np.arange(n) * (target_rate / native_rate) + 1e-9).astype(np.int64)
    starts = np.flatnonzero(np.diff(bins, prepend=-1))  # first frame of each bin
    counts = np.diff(np.append(starts, n)).astype(np.float64)  # frames per bin
    sums = np.add.reduceat(frames.astype(np.float64), starts, axis=1)  # (layers, m, dim)
    return (sums / counts[None, :, None]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ pipeline


class JukeboxFeatureExtractionPipeline(ChunkPipeline):
    r"""
    Jukebox representations of audio (JukeMIR features and more) as numpy arrays.

    Inputs: a file path, encoded bytes, a 1-D/2-D numpy array or torch tensor (with `sampling_rate=`), a
    `datasets` audio dict (`{"array", "sampling_rate"}` or `{"path", "bytes"}`), or a list of them. Audio
    longer than one prior window (23.78 s for the 5b prior) is cut into windows by the feature extractor;
    windows of several inputs are batched together with `batch_size=`.

    Call options (also accepted by `pipeline(...)` as defaults):
        layers (`int`, `list[int]` or `"all"`, defaults to the last built block):
            1-indexed block outputs (`36` = JukeMIR); `0` is the embeddings entering block 1. An int gives
            results without a layer axis.
        pooling (`str`, defaults to `"mean"`):
            `"mean"` or `"max"` over the real (unpadded) frames, or `"none"` for frame-level features at the
            model's frame rate (344.53 Hz at 44.1 kHz).
        frame_rate (`float`, *optional*):
            Frame-level features averaged into bins of `1 / frame_rate` seconds (e.g. 15 Hz as SynTheory,
            30 Hz as EDGE); implies `pooling="none"`.
        window_aggregation (`str`, *optional*):
            How the windows of one input are joined: `"mean"` (default for pooled features: frame-weighted
            mean, or max for `pooling="max"`), `"concat"` (default for frame-level: one time line), or
            `"none"` (one result per window).
        sampling_rate (`int`, *optional*): rate of raw arrays/tensors.
        max_windows (`int`, *optional*): keep only the first `max_windows` windows of each input
            (`max_windows=1` is the JukeMIR recipe: the first 23.78 s only).
        window_hop (`int`, *optional*): samples between window starts (default: the window length, no
            overlap); a multiple of the top-level hop (128).

    Returns (per input, float32 numpy):
        pooled: `(n_layers, dim)`, or `(dim,)` for an int layer; with `window_aggregation="none"`
        `(n_windows, n_layers, dim)` / `(n_windows, dim)`. Frame-level: `(n_layers, frames, dim)` /
        `(frames, dim)`; with `window_aggregation="none"` a list of those, one per window.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.feature_extractor is None:
            raise JukeboxInputError(
                "The Jukebox feature-extraction pipeline needs the model's feature extractor (its "
                "preprocessor_config.json) to window the audio; pass feature_extractor=JukeboxFeatureExtractor(...) "
                "or use a folder made by `jukebox-mir convert`."
            )
        config = self.model.config
        for name in ("window_length", "hop_length", "frame_rate", "num_hidden_layers"):
            if not hasattr(config, name):
                raise JukeboxInputError(
                    f"{type(self.model).__name__} is not a Jukebox MIR model (its config has no {name!r}); the "
                    "Jukebox feature-extraction pipeline needs a JukeboxMIRModel (`jukebox-mir convert --prior ...`)."
                )
        fe_window = getattr(self.feature_extractor, "window_length", None)
        if fe_window is not None and fe_window > config.window_length:
            raise JukeboxInputError(
                f"The feature extractor cuts windows of {fe_window} samples but the model's context holds "
                f"{config.window_length}; use the feature extractor saved with the model."
            )
        fe_rate = getattr(self.feature_extractor, "sampling_rate", None)
        model_rate = getattr(getattr(config, "vqvae_config", None), "sampling_rate", None)
        if fe_rate is not None and model_rate is not None and int(fe_rate) != int(model_rate):
            raise JukeboxInputError(
                f"The feature extractor resamples audio to {fe_rate} Hz but the model was trained at {model_rate} Hz "
                "(its config.json); every feature would be computed on audio at the wrong speed. Use the "
                f"preprocessor_config.json saved with the model (sampling_rate {model_rate})."
            )
        fe_hop = getattr(self.feature_extractor, "hop_length", None)
        if fe_hop is not None and int(fe_hop) != int(config.hop_length):
            raise JukeboxInputError(
                f"The feature extractor's hop_length {fe_hop} differs from the model's top-level hop "
                f"{config.hop_length}; use the preprocessor_config.json saved with the model."
            )

    def _sanitize_parameters(
        self,
        layers=None,
        pooling=None,
        frame_rate=None,
        window_aggregation=None,
        sampling_rate=None,
        max_windows=None,
        window_hop=None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - _PASSTHROUGH_KWARGS)
        if unknown:
            raise JukeboxInputError(
                f"Unknown option(s) {unknown} for the Jukebox feature-extraction pipeline; accepted: layers, pooling, "
                "frame_rate, window_aggregation, sampling_rate, max_windows, window_hop, batch_size."
            )
        if layers is not None:
            resolve_layers(layers, self.model.config.num_hidden_layers)  # fail before any audio is read
        if frame_rate is not None and pooling is None:
            pooling = "none"
        options = {
            "layers": layers,
            "pooling": pooling,
            "frame_rate": frame_rate,
            "window_aggregation": window_aggregation,
        }
        options = {k: v for k, v in options.items() if v is not None}
        if "pooling" in options:
            # values given together must agree; merged with the pipeline's defaults they are checked in preprocess
            check_options(
                options["pooling"],
                options.get("frame_rate"),
                options.get("window_aggregation"),
                self.model.config.frame_rate,
            )
        elif options.get("window_aggregation", "mean") not in WINDOW_AGGREGATION_CHOICES:
            raise JukeboxInputError(
                f"window_aggregation={options['window_aggregation']!r} is not supported: expected one of "
                f"{WINDOW_AGGREGATION_CHOICES}."
            )
        preprocess_params = dict(options)
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if max_windows is not None or window_hop is not None:
            windowed_feature_extractor(self.feature_extractor, max_windows, window_hop)  # fail before any audio
            preprocess_params.update(
                {k: v for k, v in (("max_windows", max_windows), ("window_hop", window_hop)) if v is not None}
            )
        forward_params = {k: v for k, v in options.items() if k in ("layers", "pooling")}
        return preprocess_params, forward_params, dict(options)

    def preprocess(
        self,
        inputs,
        sampling_rate=None,
        layers=None,
        pooling="mean",
        frame_rate=None,
        window_aggregation=None,
        max_windows=None,
        window_hop=None,
    ):
        check_options(pooling, frame_rate, window_aggregation, self.model.config.frame_rate)
        feature_extractor = windowed_feature_extractor(self.feature_extractor, max_windows, window_hop)
        features = feature_extractor(inputs, sampling_rate=sampling_rate, return_tensors="pt")
        values, mask = features["input_values"], features.get("attention_mask")  # (windows, window_length)
        if mask is None:
            mask = torch.ones_like(values, dtype=torch.long)
        offsets = features.get("window_offset")
        num = values.shape[0]
        step = getattr(feature_extractor, "effective_window_hop", values.shape[1])
        for k in range(num):
            yield {
                "input_values": values[k : k + 1],
                "attention_mask": mask[k : k + 1],
                "window_offset": int(offsets[k]) if offsets is not None else k * step,
                "is_last": k == num - 1,
            }

    def get_inference_context(self):
        # inference mode, not only no_grad: the MIR model then runs the prior's lean inference path
        # (`JukeboxPrior.forward_features`), with one block's activations alive at a time
        return torch.inference_mode

    def _forward(self, model_inputs, layers=None, pooling="mean"):
        config = self.model.config
        indices, _ = resolve_layers(layers, config.num_hidden_layers)
        values = model_inputs["input_values"]  # the encoder casts audio to its own dtype (float32)
        # only the last block asked (the JukeMIR default): no per-block outputs kept, far less memory
        last_only = indices == [config.num_hidden_layers]
        out = self.model(
            input_values=values, attention_mask=model_inputs["attention_mask"], output_hidden_states=not last_only
        )
        states = {config.num_hidden_layers: out.last_hidden_state} if last_only else dict(enumerate(out.hidden_states))
        frame_mask = out.frame_mask  # (B, T) True on real frames
        result = {"num_frames": frame_mask.sum(-1)}  # (B,)
        # one layer at a time, so that only one float32 copy of a layer exists on the device
        if pooling == "none":
            result["frames"] = torch.stack([states[i].float().cpu() for i in indices], dim=1)  # (B, L, T, D)
        else:
            result["pooled"] = torch.stack(
                [pool_float32(states[i], frame_mask, pooling) for i in indices], dim=1
            )  # (B, L, D)
        result["window_offset"] = model_inputs["window_offset"]
        result["is_last"] = model_inputs["is_last"]
        return result

    def postprocess(self, model_outputs, layers=None, pooling="mean", frame_rate=None, window_aggregation=None):
        config = self.model.config
        pooling, window_aggregation = check_options(pooling, frame_rate, window_aggregation, config.frame_rate)
        _, squeeze = resolve_layers(layers, config.num_hidden_layers)
        num_frames = np.array([int(o["num_frames"].reshape(-1)[0]) for o in model_outputs])
        if pooling != "none":
            pooled = np.stack([o["pooled"][0].numpy() for o in model_outputs])  # (windows, L, D)
            result = pooled if window_aggregation == "none" else aggregate_pooled(pooled, num_frames, pooling)
            return result[..., 0, :] if squeeze else result
        frames = [o["frames"][0, :, :n].numpy() for o, n in zip(model_outputs, num_frames)]  # [(L, n_k, D)]
        if window_aggregation == "concat":
            starts = [int(o["window_offset"]) // config.hop_length for o in model_outputs]
            frames = [concat_frames(frames, starts)]
        if frame_rate is not None:
            frames = [bin_frames(f, config.frame_rate, float(frame_rate)) for f in frames]
        if squeeze:
            frames = [f[0] for f in frames]
        return frames[0] if window_aggregation == "concat" else frames

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        """Save model, feature extractor and this pipeline's code (loadable with `trust_remote_code=True`)."""
        super().save_pretrained(save_directory, **kwargs)
        save_pipeline_files(save_directory)


# -------------------------------------------------------------------------------------- folder + registration


def save_pipeline_files(output_dir: str | os.PathLike) -> None:
    """Make a saved Jukebox MIR folder answer `pipeline("feature-extraction", model=DIR, trust_remote_code=True)`.

    Adds the `custom_pipelines` entry to `config.json` (written atomically) and copies this module and the
    modules it imports beside the weights.
    """
    output_dir = Path(output_dir)
    config_path = output_dir / "config.json"
    if not config_path.is_file():
        raise JukeboxInputError(f"{output_dir} has no config.json; save the model there first.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["custom_pipelines"] = json.loads(json.dumps(CUSTOM_PIPELINE_ENTRY))
    fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".config.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600: give the file the user's umask like any other
    os.replace(tmp, config_path)
    custom_object_save(JukeboxFeatureExtractionPipeline, output_dir)


def jukebox_feature_extraction_pipeline(model: Any, **kwargs: Any) -> JukeboxFeatureExtractionPipeline:
    """`pipeline("feature-extraction", model=model, pipeline_class=JukeboxFeatureExtractionPipeline, **kwargs)`.

    The explicit `pipeline_class` is how transformers lets a package choose its own class for a task without
    changing the task for other models (and without trust_remote_code: the folder's `custom_pipelines` entry is
    then not consulted). Without the package, use `pipeline("feature-extraction", model=folder,
    trust_remote_code=True)`: the folder carries this module.
    """
    from transformers import pipeline

    return pipeline("feature-extraction", model=model, pipeline_class=JukeboxFeatureExtractionPipeline, **kwargs)


__all__ = [
    "CUSTOM_PIPELINE_ENTRY",
    "JukeboxFeatureExtractionPipeline",
    "aggregate_pooled",
    "bin_frames",
    "check_options",
    "concat_frames",
    "jukebox_feature_extraction_pipeline",
    "resolve_layers",
    "save_pipeline_files",
    "windowed_feature_extractor",
]
