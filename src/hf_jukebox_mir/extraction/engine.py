"""Dataset-scale Jukebox extraction: audio files, folders or a `datasets` dataset in; a dataset of embeddings out.

`extract_dataset` (and `jukebox-mir extract`) runs the feature-extraction pipeline's steps over many inputs
and writes a `datasets` dataset (`load_from_disk(output_dir)`) with one row per input:

    id, path, duration (s), n_windows, layer_<i> (float32; (dim,) pooled, (frames, dim) frame-level), and for
    frame-level output frame_times (s, the centre of each frame: (k + 0.5) / frame_rate)

Work is saved in chunks as it goes (`output_dir/chunks/chunk-*`, each written to a temporary folder and
renamed into place, so a chunk is either complete or absent). A run that is killed and started again with
the same command skips every input already in a chunk: nothing is computed twice, duplicated or lost. The
final dataset is rebuilt from the chunks (in input order) when every shard is done. Inputs that cannot be
read or fail in the model are listed at the end (`ExtractionResult.failures`, `output_dir/failures.json`)
and retried by the next run; they never stop the others.

Several processes (`accelerate launch -m hf_jukebox_mir.cli extract ...`, one per GPU) each take every n-th
pending input (`accelerate.PartialState().process_index`); the main process merges once all are done.
`num_shards`/`shard_index` do the same for independent jobs (e.g. a SLURM array); the last shard to
finish merges.

`make_embed_fn` gives the probing code a `list[waveform] -> (N, n_layers, dim)` function with the same
numerics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.errors import JukeboxInputError
from ..models.pipeline_jukebox import (
    JukeboxFeatureExtractionPipeline,
    check_options,
    resolve_layers,
    windowed_feature_extractor,
)

logger = logging.getLogger(__name__)

#: File extensions picked up when a folder is given (lower case).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".w64",
                    ".caf", ".rf64")

SETTINGS_FILE = "extraction.json"
FAILURES_FILE = "failures.json"
CHUNKS_DIR = "chunks"
FORMAT_VERSION = 1

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass
class ExtractionInput:
    """One input: a unique `id`, the audio `path` ("" when unknown) and how to load it (`load()`)."""

    id: str
    path: str
    index: int = 0
    file: str | None = None
    dataset: Any = field(default=None, repr=False)
    row: int | None = None
    audio_column: str = "audio"
    #: the input row's other columns (labels, split, ...), kept in the output; None for files
    extra: dict[str, Any] | None = None
    extra_features: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """The audio source for the feature extractor: a file path or a `datasets` audio value."""
        if self.file is not None:
            return self.file
        value = self.dataset[self.row][self.audio_column]
        if isinstance(value, dict):  # numpy format: 0-d arrays for scalars (sampling_rate)
            value = {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in value.items()}
            if value.get("array") is None and value.get("bytes") is None and value.get("path"):
                value = {"path": value["path"]}
        return value


@dataclass
class ExtractionResult:
    """What `extract_dataset` did.

    Attributes:
        output_dir: the output folder (`datasets.load_from_disk(output_dir)` once `merged`).
        num_inputs: inputs listed (all shards).
        num_done: inputs with a row in the output (all shards, this and earlier runs).
        num_computed: inputs computed by this process in this run.
        failures: `{"id", "path", "error"}` for each input that failed (this process, or all when merged).
        merged: whether this call wrote the final dataset.
    """

    output_dir: Path
    num_inputs: int
    num_done: int
    num_computed: int
    failures: list[dict[str, str]]
    merged: bool

    def load(self):
        """The output as a `datasets.Dataset`."""
        import datasets

        return datasets.load_from_disk(str(self.output_dir))


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def _audio_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _open_dataset(source: Any, name: str, split: str | None, audio_column: str):
    import datasets

    ds = datasets.load_from_disk(str(source)) if isinstance(source, (str, os.PathLike)) else source
    if isinstance(ds, datasets.DatasetDict):
        if split is None:  # every split in one run; a `split` column says which
            return [(name_, _open_dataset(ds[name_], f"{name}[{name_!r}]", None, audio_column)[0][1]) for name_ in ds]
        if split not in ds:
            raise JukeboxInputError(f"{name} has no split {split!r}; its splits are {sorted(ds)}.")
        ds = ds[split]
    if audio_column not in ds.column_names:
        raise JukeboxInputError(
            f"{name} has no {audio_column!r} column (columns: {ds.column_names}); name the audio column with "
            "audio_column= (CLI: --audio-column)."
        )
    feature = ds.features[audio_column]
    if type(feature).__name__ == "Audio" and getattr(feature, "decode", False):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))  # our decoder, no torchcodec needed
    return [(None, ds.with_format("numpy"))]


def list_inputs(
    inputs: str | os.PathLike | Any | Sequence[str | os.PathLike | Any],
    *,
    audio_column: str = "audio",
    id_column: str = "id",
    split: str | None = None,
) -> list[ExtractionInput]:
    """List every input of an extraction run, in a deterministic order, with unique ids.

    Args:
        inputs: audio files, folders (searched recursively for `AUDIO_EXTENSIONS`, hidden entries skipped),
            folders written by `datasets.save_to_disk`, or `datasets.Dataset` objects; one or a list.
        audio_column: the dataset column holding audio (`{"path", "bytes"}`, `{"array", "sampling_rate"}`
            or a path string).
        id_column: dataset column used as `id` when present (else the row number).
        split: split to read from a saved `DatasetDict` (default: every split, in one run, with a `split` column).

    Ids: a file in a folder -> its path relative to the folder; a file given directly -> the path as given;
    a dataset row -> `id_column` or the row number. With several inputs, folder and dataset ids are
    prefixed with the input as given (`"music/a.wav"`). Resuming needs the same inputs spelled the same way.

    Raises:
        `JukeboxInputError`: a missing path, an empty input, a missing column/split, duplicate ids.
    """
    import datasets

    sources = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not sources:
        raise JukeboxInputError("No inputs given: pass audio files, folders or a saved `datasets` dataset.")
    several = len(sources) > 1
    items: list[ExtractionInput] = []
    for source in sources:
        if isinstance(source, datasets.Dataset):
            name = "the dataset" if not several else f"dataset[{len(items)}]"
            for split_name, ds in _open_dataset(source, name, split, audio_column):
                items.extend(_dataset_items(ds, name, split_name or "", several or split_name is not None,
                                            audio_column, id_column, split_name))
            continue
        if not isinstance(source, (str, os.PathLike)):
            raise JukeboxInputError(
                f"Unsupported input {type(source).__name__}: expected a file or folder path or a datasets.Dataset."
            )
        given = Path(source).as_posix()
        path = Path(source)
        if not path.exists():
            raise JukeboxInputError(f"Input '{given}' does not exist; pass audio files, folders or a saved dataset.")
        if _is_saved_dataset(path):
            for split_name, ds in _open_dataset(path, f"'{given}'", split, audio_column):
                prefix = "/".join(p for p in ((given if several else ""), split_name or "") if p)
                items.extend(_dataset_items(ds, f"'{given}'", prefix, several or split_name is not None,
                                            audio_column, id_column, split_name))
        elif path.is_dir():
            files = _audio_files(path)
            if not files:
                raise JukeboxInputError(
                    f"Folder '{given}' holds no audio files (searched recursively for {', '.join(AUDIO_EXTENSIONS)})."
                )
            for file in files:
                rel = file.relative_to(path).as_posix()
                items.append(ExtractionInput(id=f"{given}/{rel}" if several else rel, path=str(file.resolve()),
                                             file=str(file)))
        else:
            items.append(ExtractionInput(id=given, path=str(path.resolve()), file=str(path)))
    unique: dict[str, ExtractionInput] = {}
    for item in items:
        other = unique.get(item.id)
        if other is None:
            unique[item.id] = item
        elif not (item.file and other.file and item.path == other.path):  # the same file twice: keep one
            raise JukeboxInputError(
                f"Two inputs have the id {item.id!r} ({other.path or 'dataset row'} and {item.path or 'dataset row'}); "
                "ids must be unique (rename one, or give a dataset a unique id column)."
            )
    out = list(unique.values())
    for index, item in enumerate(out):
        item.index = index
    return out


#: output columns; input columns with these names are not copied
_OUTPUT_COLUMNS = ("id", "path", "duration", "n_windows", "frame_times", "split")


def _dataset_items(ds, name: str, prefix: str, several: bool, audio_column: str, id_column: str,
                   split_name: str | None = None):
    import datasets

    if len(ds) == 0:
        raise JukeboxInputError(f"{name} has no rows.")
    plain = ds.with_format(None)
    # the other columns (labels, ...) travel to the output rows
    keep = [c for c in ds.column_names if c != audio_column and c not in _OUTPUT_COLUMNS
            and not c.startswith("layer_")]
    extra_features = datasets.Features({c: ds.features[c] for c in keep})
    if split_name is not None:
        extra_features["split"] = datasets.Value("string")
    extra_columns = {c: plain[c] for c in keep}
    ids = [str(v) for v in plain[id_column]] if id_column in ds.column_names else [str(i) for i in range(len(ds))]
    feature = ds.features[audio_column]
    is_path_column = getattr(feature, "dtype", None) in ("string", "large_string")
    if is_path_column:
        paths = list(plain[audio_column])
    elif type(feature).__name__ == "Audio" or (isinstance(feature, dict) and "path" in feature):
        paths = [p or "" for p in plain.select_columns([audio_column]).flatten()[f"{audio_column}.path"]]
    else:  # e.g. {"array", "sampling_rate"}: no file behind the audio
        paths = [""] * len(ds)
    audio_only = ds.select_columns([audio_column])  # rows are read one at a time, without other columns
    for row, (key, path) in enumerate(zip(ids, paths)):
        full = f"{prefix}/{key}" if several and prefix else key
        extra = {c: values[row] for c, values in extra_columns.items()}
        if split_name is not None:
            extra["split"] = split_name
        if is_path_column:  # a column of file paths
            yield ExtractionInput(id=full, path=str(Path(path).resolve()), file=path, extra=extra,
                                  extra_features=extra_features)
        else:
            yield ExtractionInput(id=full, path=path, dataset=audio_only, row=row, audio_column=audio_column,
                                  extra=extra, extra_features=extra_features)


# --------------------------------------------------------------------------------------------- model + engine


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise JukeboxInputError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1'): {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JukeboxInputError(f"device={str(device)!r} was asked but CUDA is not available here; use device='cpu'.")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`dtype` (a `torch.dtype` or a name: float32/fp32, bfloat16/bf16, float16/fp16, auto), else bf16 on CUDA
    (fp16 where bf16 is unsupported) and fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise JukeboxInputError(f"dtype={dtype!r} is not supported: expected one of {sorted(_DTYPES)} or 'auto'.")
    return _DTYPES[dtype]


def _check_model_dir(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise JukeboxInputError(
            f"Model folder '{model_dir}' does not exist; pass a folder made by `jukebox-mir convert --prior ...`."
        )
    missing = [name for name in ("config.json", "preprocessor_config.json") if not (path / name).is_file()]
    if missing:
        raise JukeboxInputError(
            f"Model folder '{model_dir}' lacks {', '.join(missing)}; expected a Jukebox MIR folder made by "
            "`jukebox-mir convert --vqvae ... --prior ...` (model + feature extractor)."
        )
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "jukebox_mir":
        raise JukeboxInputError(
            f"Model folder '{model_dir}' holds a {config.get('model_type')!r} model; extraction needs a Jukebox MIR "
            "model (model_type 'jukebox_mir', made by `jukebox-mir convert --vqvae ... --prior ...`)."
        )
    return path


def _built_layers(model_dir: Path) -> tuple[int, float]:
    """Blocks stored in the folder and the native frame rate, read from config.json without loading weights."""
    from ..models.configuration_jukebox_mir import JukeboxMIRConfig

    config = JukeboxMIRConfig.from_pretrained(str(model_dir))
    return config.num_hidden_layers, config.frame_rate


class JukeboxExtractor:
    """The model and the pipeline steps, run on lists of inputs with per-input error capture.

    Loads only the blocks up to the deepest requested layer (`num_hidden_layers` at load time).
    """

    def __init__(self, model_dir: str | os.PathLike, *, layers: Any = None, pooling: str | None = None,
                 frame_rate: float | None = None, batch_size: int = 1, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, compile: bool = False, max_windows: int | None = None,
                 window_hop: int | None = None):
        from ..models.feature_extraction_jukebox import JukeboxFeatureExtractor
        from ..models.modeling_jukebox_mir import JukeboxMIRModel

        model_dir = _check_model_dir(model_dir)
        depth, native_rate = _built_layers(model_dir)
        self.layer_ids, _ = resolve_layers(layers, depth)
        pooling = _default_pooling(pooling, frame_rate)
        self.pooling, self.window_aggregation = check_options(pooling, frame_rate, None, native_rate)
        self.frame_rate = frame_rate
        self.batch_size = _positive_int("batch_size", batch_size)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # only the blocks up to the deepest requested layer are read, straight to the device in the dtype
        # concrete classes (the folder's model_type is checked above): no Auto registration needed, so a fresh
        # `jukebox-mir` process loads the folder without trust_remote_code
        model = JukeboxMIRModel.from_pretrained(str(model_dir), dtype=self.dtype, device_map=str(self.device),
                                                num_hidden_layers=max(1, max(self.layer_ids)))
        if compile:  # torch.compile of the prior's forward (in place: the model keeps its structure)
            model.prior.compile()
        self.compiled = bool(compile)
        feature_extractor = JukeboxFeatureExtractor.from_pretrained(str(model_dir))
        self.pipeline = JukeboxFeatureExtractionPipeline(model=model.eval(), feature_extractor=feature_extractor,
                                                         device=self.device)
        self.options = {"layers": list(self.layer_ids), "pooling": self.pooling, "frame_rate": frame_rate,
                        "window_aggregation": self.window_aggregation}
        # windowing (JukeMIR: max_windows=1); checked here, before any input is read
        windowed_feature_extractor(feature_extractor, max_windows, window_hop)
        self.window_options = {k: v for k, v in (("max_windows", max_windows), ("window_hop", window_hop))
                               if v is not None}
        self.hidden_size = model.config.hidden_size
        self.sampling_rate = feature_extractor.sampling_rate
        self.native_rate = float(model.config.frame_rate)

    @property
    def model(self):
        return self.pipeline.model

    @property
    def feature_extractor(self):
        return self.pipeline.feature_extractor

    def prepare(self, source: Any) -> list[dict]:
        """Decode and window one input (the pipeline's `preprocess`)."""
        params = {k: v for k, v in self.options.items() if v is not None}
        return list(self.pipeline.preprocess(source, **params, **self.window_options))

    def run(self, prepared: Sequence[tuple[Any, list[dict] | None, BaseException | None]]):
        """Run windows of several prepared inputs through the model in batches of `batch_size` windows.

        Args:
            prepared: `(key, windows, error)` per input, from `prepare` (`windows=None` when it failed).

        Returns:
            `[(key, result, error)]`: the pipeline's result `(n_layers, dim)` / `(n_layers, frames, dim)`, or the
            error of an input that failed (a failing batch is retried window by window).
        """
        flat = [(k, w) for k, (_, windows, _) in enumerate(prepared) if windows for w in windows]
        outputs: list[list[dict]] = [[] for _ in prepared]
        errors: dict[int, BaseException] = {k: err for k, (_, windows, err) in enumerate(prepared) if windows is None}
        forward_params = {"layers": self.options["layers"], "pooling": self.pooling}
        for start in range(0, len(flat), self.batch_size):
            batch = [(k, w) for k, w in flat[start : start + self.batch_size] if k not in errors]
            if not batch:
                continue
            try:
                out = self.pipeline.forward(_collate([w for _, w in batch]), **forward_params)
                parts = _uncollate(out, len(batch))
            except Exception as err:  # noqa: BLE001 - retry alone, so one bad window fails only its input
                if len(batch) == 1:
                    errors[batch[0][0]] = err
                    continue
                parts = []
                for k, w in batch:
                    try:
                        parts.append(self.pipeline.forward(_collate([w]), **forward_params))
                    except Exception as single_err:  # noqa: BLE001
                        errors[k] = single_err
                        parts.append(None)
            for (k, _), part in zip(batch, parts):
                if part is not None:
                    outputs[k].append(part)
        post = {k: v for k, v in self.options.items() if v is not None}
        results = []
        for k, (key, windows, _) in enumerate(prepared):
            if k in errors:
                results.append((key, None, errors[k]))
                continue
            try:
                results.append((key, self.pipeline.postprocess(outputs[k], **post), None))
            except Exception as err:  # noqa: BLE001
                results.append((key, None, err))
        return results

    def embed(self, sources: Sequence[Any]) -> list[np.ndarray]:
        """Results for several inputs; raises the first error."""
        prepared = [(i, self.prepare(source), None) for i, source in enumerate(sources)]
        out = []
        for _, result, err in self.run(prepared):
            if err is not None:
                raise err
            out.append(result)
        return out


def _collate(windows: list[dict]) -> dict:
    """Stack per-window items `(1, samples)` into a batch; other values become lists."""
    batch = {}
    for key in windows[0]:
        values = [w[key] for w in windows]
        batch[key] = torch.cat(values) if torch.is_tensor(values[0]) else values
    return batch


def _uncollate(out: dict, size: int) -> list[dict]:
    return [{k: (v[i : i + 1] if torch.is_tensor(v) else v[i]) for k, v in out.items()} for i in range(size)]


def _default_pooling(pooling: str | None, frame_rate: float | None) -> str:
    """`pooling` as given, else "none" when a frame rate is asked and "mean" otherwise."""
    if pooling is not None:
        return pooling
    return "none" if frame_rate is not None else "mean"


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise JukeboxInputError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class JukeboxEmbedder:
    """`embedder(waveforms) -> (N, n_layers, dim)` float32: the clip-embedding function of [`make_embed_fn`].

    Attributes: `layer_names` (e.g. `("36",)`), `output_shape` (`(n_layers, dim)`), `sampling_rate` and
    `extractor` (the [`JukeboxExtractor`]).
    """

    def __init__(self, extractor: JukeboxExtractor):
        self.extractor = extractor
        self.layer_names = tuple(str(i) for i in extractor.layer_ids)
        self.output_shape = (len(extractor.layer_ids), extractor.hidden_size)
        self.sampling_rate = extractor.sampling_rate

    def __call__(self, waveforms: Iterable[Any]) -> np.ndarray:
        extractor = self.extractor
        sources = [w if isinstance(w, dict) else {"array": np.asarray(w, dtype=np.float32),
                                                  "sampling_rate": extractor.sampling_rate} for w in waveforms]
        if not sources:
            return np.zeros((0, len(extractor.layer_ids), extractor.hidden_size), dtype=np.float32)
        return np.stack(extractor.embed(sources)).astype(np.float32, copy=False)  # (N, L, D)


def make_embed_fn(
    model_dir: str | os.PathLike,
    *,
    layers: Any = None,
    pooling: str = "mean",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int | None = None,
    compile: bool = False,
    max_windows: int | None = None,
    window_hop: int | None = None,
) -> JukeboxEmbedder:
    """A clip-embedding function for probing: `embed_fn(waveforms) -> (N, n_layers, dim)` float32.

    Args:
        model_dir: a Jukebox MIR folder (`jukebox-mir convert --vqvae ... --prior ...`).
        layers: an int, list of ints or "all" (1-indexed blocks; default the last stored block). Only blocks up
            to the deepest one are loaded.
        pooling: "mean" (JukeMIR) or "max" over time; long clips are windowed and joined (frame-weighted).
        device, dtype: as `extract_dataset` (bf16 on GPU, fp32 on CPU by default).
        batch_size: windows per forward pass (default 1).
        compile: `torch.compile` the prior.
        max_windows, window_hop: windowing of long clips (`max_windows=1`: JukeMIR's first 23.78 s only;
            default: every window, averaged with weights proportional to their real frames).

    The function takes a list of mono float32 waveforms at the model's rate (44.1 kHz; other shapes and
    rates are accepted as by the feature extractor if passed as `{"array", "sampling_rate"}` dicts) and has
    attributes `layer_names` (e.g. `("36",)`), `output_shape` (`(n_layers, dim)`), `sampling_rate` and
    `extractor` (the [`JukeboxExtractor`]).
    """
    if pooling not in ("mean", "max"):
        raise JukeboxInputError(f"make_embed_fn needs pooled features: pooling must be 'mean' or 'max', got {pooling!r}.")
    if layers is not None and not isinstance(layers, str):
        layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    extractor = JukeboxExtractor(model_dir, layers=layers if layers is not None else None, pooling=pooling,
                                 batch_size=batch_size or 1, device=device, dtype=dtype, compile=compile,
                                 max_windows=max_windows, window_hop=window_hop)

    return JukeboxEmbedder(extractor)


# ------------------------------------------------------------------------------------------- dataset output


def _extra_features(items: list[ExtractionInput]):
    """The input columns kept in the output: those every input has (none when a plain file is among them)."""
    if not items or any(item.extra_features is None for item in items):
        return None
    common = dict(items[0].extra_features)
    for item in items[1:]:
        if item.extra_features is not items[0].extra_features:
            common = {k: v for k, v in common.items() if k in item.extra_features and item.extra_features[k] == v}
    return common or None


def _features(layer_ids: list[int], dim: int, frame_level: bool, extra: dict | None = None):
    import datasets

    columns = {
        "id": datasets.Value("string"),
        "path": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "n_windows": datasets.Value("int32"),
    }
    for i in layer_ids:
        columns[f"layer_{i}"] = (datasets.Array2D(shape=(None, dim), dtype="float32") if frame_level
                                 else datasets.List(datasets.Value("float32"), length=dim))
    if frame_level:  # the time (s) of each frame: the centre of its 1/frame_rate bin (or of its 128-sample hop)
        columns["frame_times"] = datasets.List(datasets.Value("float32"))
    columns.update(extra or {})
    return datasets.Features(columns)


def frame_times(num_frames: int, frame_rate: float) -> np.ndarray:
    """Times (s) of `num_frames` frames at `frame_rate` Hz: the centre of each frame's bin, `(k + 0.5) / rate`."""
    return ((np.arange(num_frames) + 0.5) / float(frame_rate)).astype(np.float32)


@contextmanager
def _quiet_datasets():
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _write_chunk(chunks: Path, shard: int, rows: list[dict], features) -> Path:
    """Save rows as one dataset folder, atomically: written under `.tmp-*`, then renamed."""
    import datasets

    columns = {name: [row[name] for row in rows] for name in features}
    tag = uuid.uuid4().hex[:8]
    tmp = chunks / f".tmp-{shard:03d}-{tag}"
    final = chunks / f"chunk-{rows[0]['_index']:08d}-{shard:03d}-{tag}"
    with _quiet_datasets():
        datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp))
    (tmp / "ids.json").write_text(json.dumps([row["id"] for row in rows]), encoding="utf-8")
    os.replace(tmp, final)
    return final


def _chunk_dirs(chunks: Path) -> list[Path]:
    if not chunks.is_dir():
        return []
    return sorted(p for p in chunks.iterdir() if p.is_dir() and p.name.startswith("chunk-"))


def _done_ids(chunks: Path) -> set[str]:
    done: set[str] = set()
    for chunk in _chunk_dirs(chunks):
        done.update(json.loads((chunk / "ids.json").read_text(encoding="utf-8")))
    return done


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _prepare_output(output_dir: Path, settings: dict, *, resume: bool, overwrite: bool, write: bool = True) -> None:
    """Check the output folder, and (`write=True`, the main process) create it or clear it for `overwrite`.

    Every process runs the checks, so that a refused folder stops all of them instead of leaving the others
    waiting for the main one.
    """
    settings_path = output_dir / SETTINGS_FILE
    if output_dir.exists() and not output_dir.is_dir():
        raise JukeboxInputError(f"Output '{output_dir}' is a file; pass a folder path.")
    ours = settings_path.is_file()
    if output_dir.is_dir() and any(output_dir.iterdir()) and not ours:
        raise JukeboxInputError(
            f"Output folder '{output_dir}' is not empty and was not written by `jukebox-mir extract`; pass an empty "
            "or new folder."
        )
    if ours and overwrite:
        if not write:
            return
        for entry in output_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        ours = False
    if ours:
        if not resume:
            raise JukeboxInputError(
                f"Output folder '{output_dir}' already holds extraction results; resume them (the default), or pass "
                "overwrite=True (CLI: --overwrite) to start again."
            )
        previous = json.loads(settings_path.read_text(encoding="utf-8"))
        keys = ("model", "layers", "pooling", "frame_rate", "max_windows", "window_hop", "dtype", "format_version")
        changed = [f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in keys if previous.get(k) != settings.get(k)]
        if changed:
            raise JukeboxInputError(
                f"Output folder '{output_dir}' was made with other settings ({'; '.join(changed)}); resume with the "
                "same settings (pass the same --dtype on another device), use another output folder, or pass "
                "overwrite=True (CLI: --overwrite) to start again."
            )
        return
    if write:
        (output_dir / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        _write_json(settings_path, settings)


def _merge(output_dir: Path, items: list[ExtractionInput], features, failures: list[dict]) -> int:
    """Rebuild the dataset in `output_dir` from all chunks, in input order; returns the number of rows."""
    import datasets

    chunks = output_dir / CHUNKS_DIR
    with _quiet_datasets():
        parts = [datasets.load_from_disk(str(d)) for d in _chunk_dirs(chunks)]
        table = datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_dict(
            {name: [] for name in features}, features=features)
        first_row: dict[str, int] = {}
        for row, key in enumerate(table["id"]):
            first_row.setdefault(key, row)
        order = [first_row[item.id] for item in items if item.id in first_row]
        stale = len(first_row) - len(order)
        if stale:
            logger.warning("%d rows in %s belong to inputs not given in this run; they are left out.", stale, chunks)
        final = table.select(order)
        tmp = output_dir / f".merge-{uuid.uuid4().hex[:8]}"
        final.save_to_disk(str(tmp))
    state_names = ("dataset_info.json", "state.json")
    old_data = {p.name for p in output_dir.glob("data-*.arrow")}
    new_files = sorted(p.name for p in tmp.iterdir())
    for name in new_files:
        if name not in state_names:
            os.replace(tmp / name, output_dir / name)
    for name in state_names:  # state.json last: it names the data files
        os.replace(tmp / name, output_dir / name)
    for name in old_data - set(new_files):
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    done = set(first_row)
    _write_json(output_dir / FAILURES_FILE, [f for f in failures if f["id"] not in done])
    return len(order)


def _shard_setup(num_shards: int | None, shard_index: int | None, cpu: bool):
    """(shard_index, num_shards, accelerate state or None); `cpu` lets accelerate use gloo for CPU processes."""
    if (num_shards is None) != (shard_index is None):
        raise JukeboxInputError("Give num_shards and shard_index together (e.g. num_shards=4, shard_index=0).")
    if num_shards is not None:
        num_shards = _positive_int("num_shards", num_shards)
        if isinstance(shard_index, bool) or not isinstance(shard_index, (int, np.integer)) or not 0 <= shard_index < num_shards:
            raise JukeboxInputError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index!r}.")
        return int(shard_index), num_shards, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by accelerate / torchrun
        from accelerate import PartialState

        state = PartialState(cpu=cpu)
        return state.process_index, state.num_processes, state
    return 0, 1, None


def extract_dataset(
    inputs: Any,
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    layers: Any = None,
    pooling: str | None = None,
    frame_rate: float | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    num_shards: int | None = None,
    shard_index: int | None = None,
    chunk_size: int = 32,
    audio_column: str = "audio",
    id_column: str = "id",
    split: str | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    max_windows: int | None = None,
    window_hop: int | None = None,
) -> ExtractionResult:
    """Extract Jukebox representations of many inputs into a `datasets` dataset in `output_dir`.

    Args:
        inputs: audio files, folders, saved `datasets` folders or `datasets.Dataset` objects (see `list_inputs`).
        model_dir: a Jukebox MIR folder (`jukebox-mir convert --vqvae ... --prior ...`).
        output_dir: a new or empty folder, or the folder of an earlier run to resume.
        layers: int, list of ints or "all" (1-indexed blocks; default the last stored block). Stored as
            `layer_<i>` columns; only blocks up to the deepest requested one are loaded.
        pooling: "mean" (JukeMIR; the default), "max", or "none" (frames at 344.53 Hz, joined across windows;
            the default when `frame_rate` is given).
        frame_rate: average frames into bins of 1/frame_rate s (implies pooling="none").
        batch_size: windows per forward pass (windows of different inputs are batched together).
        device: default CUDA if available (the process's GPU under `accelerate launch`), else CPU.
        dtype: default bf16 on CUDA (fp16 without bf16 support), fp32 on CPU. The VQ-VAE encoder always
            runs in float32 (exact codes).
        compile: `torch.compile` the prior (the first batches of each shape compile, later ones are faster).
        resume: continue an earlier run in `output_dir` (skipping its inputs); False refuses such a folder.
        overwrite: delete an earlier run's results in `output_dir` and start again.
        num_shards, shard_index: process only inputs `i % num_shards == shard_index` (independent jobs); under
            `accelerate launch` they come from `PartialState()`.
        chunk_size: inputs per saved chunk (the unit of resumption).
        audio_column, id_column, split: for dataset inputs.
        progress: show a tqdm progress bar.
        callback: called with `{"chunk": path, "done": n, "total": n}` after each saved chunk.
        max_windows, window_hop: windowing of long inputs (`max_windows=1`: JukeMIR's first window only;
            `window_hop` in samples, a multiple of 128; default: non-overlapping windows over the whole input).

    Returns:
        [`ExtractionResult`]. Every path and option is checked before the model is loaded.
    """
    # ---- checks before anything heavy
    batch_size = _positive_int("batch_size", batch_size)
    chunk_size = _positive_int("chunk_size", chunk_size)
    if max_windows is not None:
        max_windows = _positive_int("max_windows", max_windows)
    if window_hop is not None:
        window_hop = _positive_int("window_hop", window_hop)
    model_path = _check_model_dir(model_dir)
    depth, native_rate = _built_layers(model_path)
    layer_ids, _ = resolve_layers(layers, depth)
    pooling = _default_pooling(pooling, frame_rate)
    pooling, _ = check_options(pooling, frame_rate, None, native_rate)
    items = list_inputs(inputs, audio_column=audio_column, id_column=id_column, split=split)
    wants_cpu = not torch.cuda.is_available() or (device is not None and resolve_device(device).type == "cpu")
    shard, num_shards, state = _shard_setup(num_shards, shard_index, cpu=wants_cpu)
    if overwrite and state is None and num_shards > 1:
        raise JukeboxInputError(
            "overwrite=True with num_shards > 1 would let every job delete the others' results; clear the output "
            "folder once (or run one job with overwrite=True) before starting the shards."
        )
    torch_device = resolve_device(device if device is not None or state is None else state.device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    output_dir = Path(output_dir)
    settings = {
        "format_version": FORMAT_VERSION,
        "model": str(model_path.resolve()),
        "layers": layer_ids,
        "pooling": pooling,
        "frame_rate": frame_rate,
        "max_windows": max_windows,
        "window_hop": window_hop,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "columns": ["id", "path", "duration", "n_windows", *[f"layer_{i}" for i in layer_ids],
                    *(["frame_times"] if pooling == "none" else [])],
    }
    is_main = state is None or state.is_main_process
    chunks = output_dir / CHUNKS_DIR
    _prepare_output(output_dir, settings, resume=resume, overwrite=overwrite, write=is_main)
    if is_main and (num_shards == 1 or state is not None):  # no other writer yet: a killed run's partial chunks
        _remove_tmp(chunks)
    if state is not None:
        state.wait_for_everyone()
    elif num_shards > 1:  # independent jobs: only this shard's partial chunks are known to be dead
        _remove_tmp(chunks, shard)
    marker = chunks / f"done-{shard:03d}-of-{num_shards:03d}.json"
    marker.unlink(missing_ok=True)

    # ---- work
    done = _done_ids(chunks)
    pending = [item for item in items if item.index % num_shards == shard and item.id not in done]
    failures: list[dict] = []
    computed = 0
    if pending:
        extractor = JukeboxExtractor(model_path, layers=layer_ids, pooling=pooling, frame_rate=frame_rate,
                                     batch_size=batch_size, device=torch_device, dtype=torch_dtype,
                                     compile=compile, max_windows=max_windows, window_hop=window_hop)
        features = _features(layer_ids, extractor.hidden_size, pooling == "none", _extra_features(items))
        computed, failures = _run_pending(extractor, pending, chunks, shard, num_shards, features, chunk_size,
                                          progress, callback, len(done))
    _write_json(marker, {"failures": failures, "computed": computed})

    # ---- merge
    merged = False
    if state is not None:
        state.wait_for_everyone()
    markers = [chunks / f"done-{k:03d}-of-{num_shards:03d}.json" for k in range(num_shards)]
    if is_main and all(m.is_file() for m in markers):
        all_failures = [f for m in markers for f in json.loads(m.read_text(encoding="utf-8"))["failures"]]
        features = _features(layer_ids, _config_hidden_size(model_path), pooling == "none", _extra_features(items))
        with _merge_lock(output_dir) as acquired:
            if acquired:
                _merge(output_dir, items, features, all_failures)
                merged = True
                failures = all_failures
    if state is not None:
        state.wait_for_everyone()
    num_done = len(_done_ids(chunks) & {item.id for item in items})
    if failures:
        logger.warning("%d input(s) failed; see %s", len(failures), output_dir / FAILURES_FILE if merged else "the result")
    return ExtractionResult(output_dir=output_dir, num_inputs=len(items), num_done=num_done, num_computed=computed,
                            failures=failures, merged=merged)


def _config_hidden_size(model_dir: Path) -> int:
    from ..models.configuration_jukebox_mir import JukeboxMIRConfig

    return JukeboxMIRConfig.from_pretrained(str(model_dir)).hidden_size


@contextmanager
def _merge_lock(output_dir: Path):
    """An exclusive lock file, so two shards finishing together do not merge at the same time."""
    lock = output_dir / ".merge.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        logger.warning("Another process is merging %s (or left %s behind); not merging here.", output_dir, lock)
        yield False
        return
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield True
    finally:
        lock.unlink(missing_ok=True)


def _remove_tmp(chunks: Path, shard: int | None = None) -> None:
    """Delete partial chunks left by a killed run (of `shard`, or of every shard)."""
    if not chunks.is_dir():
        return
    prefix = ".tmp-" if shard is None else f".tmp-{shard:03d}-"
    for entry in chunks.iterdir():
        if entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)


def _run_pending(extractor: JukeboxExtractor, pending: list[ExtractionInput], chunks: Path, shard: int,
                 num_shards: int, features, chunk_size: int, progress: bool, callback, done_before: int):
    from tqdm.auto import tqdm

    failures: list[dict] = []
    computed = 0
    groups = [pending[i : i + chunk_size] for i in range(0, len(pending), chunk_size)]
    desc = "Extracting" if num_shards == 1 else f"Extracting (shard {shard + 1}/{num_shards})"
    bar = tqdm(total=len(pending), desc=desc, unit="file", disable=not progress, position=shard if num_shards > 1 else None)

    def prepare(group: list[ExtractionInput]):
        out = []
        for item in group:
            try:
                out.append((item, extractor.prepare(item.load()), None))
            except Exception as err:  # noqa: BLE001 - reported per input
                out.append((item, None, err))
        return out

    fe = extractor.feature_extractor
    with bar, ThreadPoolExecutor(max_workers=1) as pool:  # decode the next chunk while the model runs
        future = pool.submit(prepare, groups[0])
        for g in range(len(groups)):
            prepared = future.result()
            if g + 1 < len(groups):
                future = pool.submit(prepare, groups[g + 1])
            rows = []
            for item, result, err in extractor.run(prepared):
                if err is not None:
                    failures.append({"id": item.id, "path": item.path, "error": f"{type(err).__name__}: {err}"})
                    logger.warning("Failed on %s: %s", item.id, err)
                    continue
                windows = next(w for it, w, _ in prepared if it is item)
                last = windows[-1]
                samples = last["window_offset"] + int(last["attention_mask"].sum())
                row = {"_index": item.index, "id": item.id, "path": item.path,
                       "duration": samples / fe.sampling_rate, "n_windows": len(windows)}
                for j, layer in enumerate(extractor.layer_ids):
                    row[f"layer_{layer}"] = result[j]
                for column in features:
                    if column not in row and item.extra is not None and column in item.extra:
                        row[column] = item.extra[column]
                if extractor.pooling == "none":
                    row["frame_times"] = frame_times(result[0].shape[0], extractor.frame_rate or extractor.native_rate)
                rows.append(row)
            if rows:
                path = _write_chunk(chunks, shard, rows, features)
                computed += len(rows)
                if callback is not None:
                    callback({"chunk": path, "done": done_before + computed, "total": len(pending) + done_before})
            bar.update(len(prepared))
    return computed, failures


__all__ = [
    "JukeboxEmbedder",
    "AUDIO_EXTENSIONS",
    "ExtractionInput",
    "ExtractionResult",
    "JukeboxExtractor",
    "extract_dataset",
    "frame_times",
    "list_inputs",
    "make_embed_fn",
    "resolve_device",
    "resolve_dtype",
]
