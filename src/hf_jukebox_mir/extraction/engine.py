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

import errno
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

import filelock
import numpy as np
import torch

from ..models.errors import JukeboxCheckpointError, JukeboxInputError, JukeboxRunError
from ..models.pipeline_jukebox import (
    JukeboxFeatureExtractionPipeline,
    check_options,
    resolve_layers,
    windowed_feature_extractor,
)
from .guard import Limits, check_regular_file, printable, read_audio
from .locks import RunLock, is_lock_file
from .threads import positive_int, set_threads

logger = logging.getLogger(__name__)

#: File extensions picked up when a folder is given (lower case).
AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".aiff",
    ".aif",
    ".aifc",
    ".au",
    ".w64",
    ".caf",
    ".rf64",
)

SETTINGS_FILE = "extraction.json"
FAILURES_FILE = "failures.json"
CHUNKS_DIR = "chunks"
FORMAT_VERSION = 1
#: seconds a shard waits for another shard's merge of the same folder
MERGE_LOCK_TIMEOUT = 3600.0
#: tests: use the fallback lock files instead of OS locks
_SOFT_LOCKS = False

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
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
    problem: str | None = None  # known before loading (a broken link, a pipe): reported as its failure
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
        merged: whether this call wrote the final dataset (False when no input succeeded: no dataset is written).
        warnings: `{"id", "path", "warning"}` for inputs that were used with a warning (truncated files).
    """

    output_dir: Path
    num_inputs: int
    num_done: int
    num_computed: int
    failures: list[dict[str, str]]
    merged: bool
    warnings: list[dict[str, str]] = field(default_factory=list)

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
    """Audio files under `folder`, hidden entries skipped. Broken links and non-regular entries (named pipes,
    sockets) with an audio extension are listed too: they become reported failures, never silent skips."""
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS
        and not p.is_dir()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an audio file (a broken link, a pipe, ...), checked without opening it."""
    try:
        check_regular_file(os.fspath(path))
    except JukeboxInputError as err:
        return str(err)
    return None


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
                items.extend(
                    _dataset_items(
                        ds,
                        name,
                        split_name or "",
                        several or split_name is not None,
                        audio_column,
                        id_column,
                        split_name,
                    )
                )
            continue
        if not isinstance(source, (str, os.PathLike)):
            raise JukeboxInputError(
                f"Unsupported input {type(source).__name__}: expected a file or folder path or a datasets.Dataset."
            )
        given = Path(source).as_posix()
        path = Path(source)
        if not path.exists() and not path.is_symlink():
            raise JukeboxInputError(
                f"Input '{_printable(given)}' does not exist; pass audio files, folders or a saved dataset."
            )
        if _is_saved_dataset(path):
            for split_name, ds in _open_dataset(path, f"'{given}'", split, audio_column):
                prefix = "/".join(p for p in ((given if several else ""), split_name or "") if p)
                items.extend(
                    _dataset_items(
                        ds, f"'{given}'", prefix, several or split_name is not None, audio_column, id_column, split_name
                    )
                )
        elif path.is_dir():
            files = _audio_files(path)
            if not files:
                raise JukeboxInputError(
                    f"Folder '{given}' holds no audio files (searched recursively for {', '.join(AUDIO_EXTENSIONS)})."
                )
            for file in files:
                rel = _printable(file.relative_to(path).as_posix())
                items.append(
                    ExtractionInput(
                        id=f"{_printable(given)}/{rel}" if several else rel,
                        path=_printable(str(file.resolve())),
                        file=str(file),
                        problem=_file_problem(file),
                    )
                )
        else:
            items.append(
                ExtractionInput(
                    id=_printable(given),
                    path=_printable(str(path.resolve())),
                    file=str(path),
                    problem=_file_problem(path),
                )
            )
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


def _dataset_items(
    ds, name: str, prefix: str, several: bool, audio_column: str, id_column: str, split_name: str | None = None
):
    import datasets

    if len(ds) == 0:
        raise JukeboxInputError(f"{name} has no rows.")
    plain = ds.with_format(None)
    # the other columns (labels, ...) travel to the output rows
    keep = [c for c in ds.column_names if c != audio_column and c not in _OUTPUT_COLUMNS and not c.startswith("layer_")]
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
            yield ExtractionInput(
                id=full, path=str(Path(path).resolve()), file=path, extra=extra, extra_features=extra_features
            )
        else:
            yield ExtractionInput(
                id=full,
                path=path,
                dataset=audio_only,
                row=row,
                audio_column=audio_column,
                extra=extra,
                extra_features=extra_features,
            )


# --------------------------------------------------------------------------------------------- model + engine


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise JukeboxInputError(
            f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1'): {err}"
        ) from None
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

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        layers: Any = None,
        pooling: str | None = None,
        frame_rate: float | None = None,
        batch_size: int = 1,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        compile: bool = False,
        limits: Limits | None = None,
        max_windows: int | None = None,
        window_hop: int | None = None,
    ):
        # the explicit classes (a MIR folder is checked above): no Auto registration or remote code needed
        from ..models.feature_extraction_jukebox import JukeboxFeatureExtractor
        from ..models.modeling_jukebox_mir import JukeboxMIRModel

        model_dir = _check_model_dir(model_dir)
        depth, native_rate = _built_layers(model_dir)
        self.layer_ids, _ = resolve_layers(layers, depth)
        pooling = _default_pooling(pooling, frame_rate)
        self.pooling, self.window_aggregation = check_options(pooling, frame_rate, None, native_rate)
        self.frame_rate = frame_rate
        self.batch_size = positive_int("batch_size", batch_size)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # only the blocks up to the deepest requested layer are read, straight to the device in the dtype
        try:
            model = JukeboxMIRModel.from_pretrained(
                str(model_dir),
                dtype=self.dtype,
                device_map=str(self.device),
                num_hidden_layers=max(1, max(self.layer_ids)),
            )
        except ValueError:  # already one of ours (a config or weights check), with its fix
            raise
        except Exception as err:  # noqa: BLE001 - a damaged folder surfaces as many library errors
            raise JukeboxCheckpointError(
                f"Could not load the model in '{model_dir}' ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                "The folder is damaged, incomplete or not a converted Jukebox MIR folder: check it with "
                f"`jukebox-mir verify {model_dir}`, then copy or convert it again (`jukebox-mir convert --vqvae ... "
                "--prior ...`)."
            ) from err
        if compile:  # torch.compile of the prior's forward (in place: the model keeps its structure)
            model.prior.compile()
        self.compiled = bool(compile)
        try:
            feature_extractor = JukeboxFeatureExtractor.from_pretrained(str(model_dir))
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001
            raise JukeboxCheckpointError(
                f"Could not load the feature extractor in '{model_dir}' ({type(err).__name__}: {err}); its "
                "preprocessor_config.json is damaged. Copy or convert the folder again."
            ) from err
        # windowing (JukeMIR: max_windows=1): a copy of the folder's feature extractor with these settings, which
        # `prepare` / `stream` cut windows with; checked here, before any input is read
        feature_extractor = windowed_feature_extractor(feature_extractor, max_windows, window_hop)
        self.window_options = {
            k: v for k, v in (("max_windows", max_windows), ("window_hop", window_hop)) if v is not None
        }
        self.pipeline = JukeboxFeatureExtractionPipeline(
            model=model.eval(), feature_extractor=feature_extractor, device=self.device
        )
        self.options = {
            "layers": list(self.layer_ids),
            "pooling": self.pooling,
            "frame_rate": frame_rate,
            "window_aggregation": self.window_aggregation,
        }
        self.hidden_size = model.config.hidden_size
        self.sampling_rate = feature_extractor.sampling_rate
        self.window_length = feature_extractor.window_length
        self.native_rate = float(model.config.frame_rate)
        self.limits = limits if limits is not None else Limits()

    @property
    def model(self):
        return self.pipeline.model

    @property
    def feature_extractor(self):
        return self.pipeline.feature_extractor

    def prepare(self, source: Any) -> Prepared:
        """Decode one input within `self.limits` (mono, at the model's rate, normalised) and plan its windows.

        Only the waveform is kept; windows are cut from it as the model takes them (`stream`), so memory does not
        grow with the number of windows.
        """
        fe = self.feature_extractor
        warning = None
        if isinstance(source, (str, os.PathLike)):
            name = f"'{_printable(os.fspath(source))}'"
            data, rate, warning = read_audio(os.fspath(source), name, self.limits)
            source = {"array": data, "sampling_rate": rate}
        elif isinstance(source, dict) and source.get("array") is None and source.get("raw") is None:
            name = f"'{_printable(source['path'])}'" if source.get("path") else "<bytes>"
            if source.get("bytes") is not None:
                data, rate, warning = read_audio(bytes(source["bytes"]), name, self.limits)
            elif source.get("path"):
                data, rate, warning = read_audio(os.fspath(source["path"]), name, self.limits)
            else:
                raise JukeboxInputError("A dataset row has neither audio bytes nor a path.")
            source = {"array": data, "sampling_rate": rate}
        elif isinstance(source, dict):
            array = source.get("array", source.get("raw"))
            rate = source.get("sampling_rate")
            length = np.shape(array)[-1] if np.ndim(array) else 0
            if rate and length / float(rate) > self.limits.max_duration:
                raise JukeboxInputError(
                    f"The audio is {length / float(rate):.1f} s long; inputs are limited to "
                    f"{self.limits.max_duration:g} s (max_duration=, CLI: --max-duration)."
                )
        waveform = fe.prepare_waveform(source)
        if len(waveform) > self.limits.max_duration * fe.sampling_rate + fe.sampling_rate:
            raise JukeboxInputError(
                f"The audio is {len(waveform) / fe.sampling_rate:.1f} s long once resampled; inputs are limited to "
                f"{self.limits.max_duration:g} s (max_duration=, CLI: --max-duration)."
            )
        offsets = _window_offsets(len(waveform), fe)
        if self.limits.max_input_windows is not None and len(offsets) > self.limits.max_input_windows:
            raise JukeboxInputError(
                f"The audio needs {len(offsets)} windows of {fe.window_length / fe.sampling_rate:.2f} s; inputs are "
                f"limited to {self.limits.max_input_windows} windows (max_input_windows=, CLI: --max-input-windows)."
            )
        return Prepared(waveform=waveform, offsets=offsets, warning=warning)

    def _window(self, prepared: Prepared, k: int) -> dict:
        """Window `k` of an input as the pipeline's `preprocess` yields it (padded, with its mask)."""
        fe = self.feature_extractor
        start = int(prepared.offsets[k])
        chunk = prepared.waveform[start : start + fe.window_length]
        values = torch.full((1, fe.window_length), float(fe.padding_value), dtype=torch.float32)
        values[0, : len(chunk)] = torch.from_numpy(chunk)
        mask = torch.zeros((1, fe.window_length), dtype=torch.int32)
        mask[0, : len(chunk)] = 1
        return {
            "input_values": values,
            "attention_mask": mask,
            "window_offset": start,
            "is_last": k == len(prepared.offsets) - 1,
        }

    def stream(self, prepared: Iterable[tuple[Any, Prepared | None, BaseException | None]]):
        """Run the windows of prepared inputs through the model, `batch_size` windows at a time (windows of
        consecutive inputs share batches), and yield `(key, result, error)` per input, in order, as each one
        finishes. Only the current batch of windows exists at any time.

        A failing batch is retried window by window, so one bad window fails only its input; a result with NaN or
        infinite values is an error of its input (never a row).
        """
        forward_params = {"layers": self.options["layers"], "pooling": self.pooling}
        post = {k: v for k, v in self.options.items() if v is not None}
        open_inputs: list[list] = []  # [key, prepared, outputs, error, windows, windows done], in input order
        batch: list[tuple[list, int]] = []

        def flush():
            live = [(entry, k) for entry, k in batch if entry[3] is None]
            for entry, _ in batch:
                entry[5] += 1
            batch.clear()
            if not live:
                return
            windows = [self._window(entry[1], k) for entry, k in live]
            try:
                parts = _uncollate(self.pipeline.forward(_collate(windows), **forward_params), len(live))
            except Exception as err:  # noqa: BLE001 - retry alone
                parts = []
                for (entry, _), window in zip(live, windows):
                    try:
                        parts.append(self.pipeline.forward(_collate([window]), **forward_params))
                    except Exception as single_err:  # noqa: BLE001
                        entry[3] = single_err if len(live) > 1 else err
                        parts.append(None)
            for (entry, _), part in zip(live, parts):
                if part is not None and entry[3] is None:
                    entry[2].append(part)

        def finished():
            while open_inputs and (open_inputs[0][3] is not None or open_inputs[0][5] == open_inputs[0][4]):
                key, _, outputs, error, _, _ = open_inputs.pop(0)
                if error is not None:
                    yield key, None, error
                    continue
                try:
                    result = self.pipeline.postprocess(outputs, **post)
                    _check_finite(result)
                except Exception as err:  # noqa: BLE001
                    yield key, None, err
                    continue
                yield key, result, None

        for key, prep, err in prepared:
            entry = [key, prep, [], err, 0 if prep is None else len(prep.offsets), 0]
            open_inputs.append(entry)
            for k in range(entry[4]):
                batch.append((entry, k))
                if len(batch) == self.batch_size:
                    flush()
                    yield from finished()
            yield from finished()
        flush()
        yield from finished()

    def run(self, prepared: Sequence[tuple[Any, Prepared | None, BaseException | None]]):
        """`list(stream(prepared))`: `[(key, result, error)]` in order."""
        return list(self.stream(prepared))

    def embed(self, sources: Sequence[Any]) -> list[np.ndarray]:
        """Results for several inputs; raises the first error."""
        prepared = [(i, self.prepare(source), None) for i, source in enumerate(sources)]
        out = []
        for _, result, err in self.run(prepared):
            if err is not None:
                raise err
            out.append(result)
        return out


@dataclass(eq=False)
class Prepared:
    """One decoded input: the normalised mono waveform at the model's rate, its window starts, a decode warning."""

    waveform: np.ndarray
    offsets: np.ndarray
    warning: str | None = None

    @property
    def num_samples(self) -> int:
        return int(len(self.waveform))


def _window_offsets(length: int, fe) -> np.ndarray:
    """Window starts, as `audio_jukebox.split_into_windows` places them (same tail rule and `max_windows`)."""
    hop, window = fe.effective_window_hop, fe.window_length
    num = 1 + (max(0, length - window) + hop - 1) // hop
    if num > 1 and length - (num - 1) * hop < fe.effective_min_length:
        num -= 1
    if fe.max_windows is not None:
        num = min(num, fe.max_windows)
    return np.arange(num, dtype=np.int64) * hop


def _check_finite(result: Any) -> None:
    arrays = result if isinstance(result, list) else [result]
    for array in arrays:
        if not np.isfinite(np.asarray(array)).all():
            raise JukeboxInputError(
                "The model gave NaN or infinite values for this input, so no row was written. Finite audio gives "
                "finite features with sound weights: check the model folder (`jukebox-mir verify MODEL`) and, on "
                "GPU, try --dtype float32."
            )


_printable = printable


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
        sources = [
            w
            if isinstance(w, dict)
            else {"array": np.asarray(w, dtype=np.float32), "sampling_rate": extractor.sampling_rate}
            for w in waveforms
        ]
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
        raise JukeboxInputError(
            f"make_embed_fn needs pooled features: pooling must be 'mean' or 'max', got {pooling!r}."
        )
    if layers is not None and not isinstance(layers, str):
        layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    extractor = JukeboxExtractor(
        model_dir,
        layers=layers if layers is not None else None,
        pooling=pooling,
        batch_size=batch_size or 1,
        device=device,
        dtype=dtype,
        compile=compile,
        max_windows=max_windows,
        window_hop=window_hop,
    )

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
        columns[f"layer_{i}"] = (
            datasets.Array2D(shape=(None, dim), dtype="float32")
            if frame_level
            else datasets.List(datasets.Value("float32"), length=dim)
        )
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
    try:
        with _quiet_datasets():
            datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp))
        (tmp / "ids.json").write_text(json.dumps([row["id"] for row in rows]), encoding="utf-8")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise JukeboxRunError(
                f"The disk filled up while saving results in '{chunks}' ({err.strerror}); the partial chunk was "
                "removed and earlier chunks are kept. Free some space and run the same command again to resume."
            ) from err
        raise
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


def _prepare_output(
    output_dir: Path, settings: dict, *, resume: bool, overwrite: bool, write: bool = True, own: Path | None = None
) -> None:
    """Check the output folder, and (`write=True`, the main process) create it or clear it for `overwrite`.

    Every process runs the checks, so that a refused folder stops all of them instead of leaving the others
    waiting for the main one.
    """
    settings_path = output_dir / SETTINGS_FILE
    if output_dir.exists() and not output_dir.is_dir():
        raise JukeboxInputError(f"Output '{output_dir}' is a file; pass a folder path.")
    ours = settings_path.is_file()
    if output_dir.is_dir() and any(not _unstarted_entry(e) for e in output_dir.iterdir()) and not ours:
        raise JukeboxInputError(
            f"Output folder '{output_dir}' is not empty and was not written by `jukebox-mir extract`; pass an empty "
            "or new folder."
        )
    if ours and overwrite:
        if not write:
            return
        others = [
            RunLock(p, what=f"Output folder '{output_dir}'")
            for p in output_dir.glob(".lock-[0-9]*")
            if p.name[len(".lock-") :].isdigit() and p != own
        ]
        held = []
        try:
            for other in others:  # another shard still running: clearing would destroy its work
                held.append(other.acquire())
            for entry in output_dir.iterdir():
                if not is_lock_file(entry.name):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        finally:
            for other in held:
                other.release()
        ours = False
    if ours:
        if not resume:
            raise JukeboxInputError(
                f"Output folder '{output_dir}' already holds extraction results; resume them (the default), or pass "
                "overwrite=True (CLI: --overwrite) to start again."
            )
        previous = json.loads(settings_path.read_text(encoding="utf-8"))
        keys = ("model", "layers", "pooling", "frame_rate", "max_windows", "window_hop", "dtype", "format_version")
        changed = [
            f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in keys if previous.get(k) != settings.get(k)
        ]
        if changed:
            raise JukeboxInputError(
                f"Output folder '{output_dir}' was made with other settings ({'; '.join(changed)}); resume with the "
                "same settings (pass the same --dtype on another device), use another output folder, or pass "
                "overwrite=True (CLI: --overwrite) to start again."
            )
        if write:
            (output_dir / CHUNKS_DIR).mkdir(exist_ok=True)
        return
    if write:
        output_dir.mkdir(parents=True, exist_ok=True)
        if settings_path.is_file():  # another shard started at the same moment: same checks as a resume
            _prepare_output(output_dir, settings, resume=True, overwrite=False, write=True, own=own)
            return
        _write_json(settings_path, settings)  # a temporary settings file of a killed run is left to the merge
        (output_dir / CHUNKS_DIR).mkdir(exist_ok=True)


def _unstarted_entry(entry: Path) -> bool:
    """What a run leaves before its settings file exists: locks, a temporary settings file, an empty chunks folder."""
    if is_lock_file(entry.name) or entry.name.startswith(f".{SETTINGS_FILE}."):
        return True
    return entry.name == CHUNKS_DIR and entry.is_dir() and not any(entry.iterdir())


def _merge(output_dir: Path, items: list[ExtractionInput], features, failures: list[dict]) -> int:
    """Rebuild the dataset in `output_dir` from all chunks, in input order; returns the number of rows.

    Atomic and idempotent: the new data files get names of their own (`data-<tag>-*.arrow`) and `state.json`,
    which names them, is replaced last, so a kill at any point leaves either the previous dataset or the new
    one. Leftovers of a killed or failed merge are deleted first; the free space is checked before writing; a
    disk that fills up anyway gives a `JukeboxRunError` and leaves nothing partial. With no row at all, no
    dataset is written (an empty one could not describe its frame-level columns).
    """
    import datasets

    chunks = output_dir / CHUNKS_DIR
    _clean_merge_leftovers(output_dir)
    chunk_dirs = _chunk_dirs(chunks)
    with _quiet_datasets():
        parts = [datasets.load_from_disk(str(d)) for d in chunk_dirs]
        done: set[str] = set()
        order: list[int] = []
        if parts:
            table = datasets.concatenate_datasets(parts)
            first_row: dict[str, int] = {}
            for row, key in enumerate(table["id"]):
                first_row.setdefault(key, row)
            order = [first_row[item.id] for item in items if item.id in first_row]
            done = set(first_row)
            stale = len(first_row) - len(order)
            if stale:
                logger.warning(
                    "%d rows in %s belong to inputs not given in this run; they are left out.", stale, chunks
                )
        if order:
            needed = sum(f.stat().st_size for d in chunk_dirs for f in d.glob("*.arrow")) + (16 << 20)
            free = shutil.disk_usage(output_dir).free
            if free < needed:
                raise JukeboxRunError(
                    f"Not enough free disk space to write the dataset in '{output_dir}': it needs about "
                    f"{needed / 2**20:.0f} MB and {free / 2**20:.0f} MB are free. Free some space (the extracted "
                    "chunks are kept) and run the same command again: it only merges."
                )
            tag = uuid.uuid4().hex[:8]
            tmp = output_dir / f".merge-{tag}"
            moved: list[Path] = []
            try:
                table.select(order).save_to_disk(str(tmp))
                state = json.loads((tmp / "state.json").read_text(encoding="utf-8"))
                for entry in state["_data_files"]:
                    name = f"data-{tag}-{entry['filename'].removeprefix('data-')}"
                    os.replace(tmp / entry["filename"], output_dir / name)
                    moved.append(output_dir / name)
                    entry["filename"] = name
                (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
                os.replace(tmp / "dataset_info.json", output_dir / "dataset_info.json")
                os.replace(tmp / "state.json", output_dir / "state.json")  # the commit point
            except OSError as err:
                for path in moved:
                    path.unlink(missing_ok=True)
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise JukeboxRunError(
                        f"The disk filled up while writing the dataset in '{output_dir}' ({err.strerror}); nothing "
                        "partial was kept. Free some space (the extracted chunks are kept) and run the same command "
                        "again: it only merges."
                    ) from err
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            _clean_merge_leftovers(output_dir)  # the previous dataset's data files
    _write_json(output_dir / FAILURES_FILE, [f for f in failures if f["id"] not in done])
    return len(order)


def _clean_merge_leftovers(output_dir: Path) -> None:
    """Delete what a killed or failed merge (or an earlier merge) left: `.merge-*` folders, temporary JSON
    files, and data files that `state.json` does not name."""
    for entry in output_dir.iterdir():
        if entry.name.startswith(".merge-") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".") and ".json." in entry.name and not is_lock_file(entry.name):
            entry.unlink(missing_ok=True)
    try:
        state = json.loads((output_dir / "state.json").read_text(encoding="utf-8"))
        named = {entry["filename"] for entry in state["_data_files"]}
    except (OSError, ValueError, KeyError, TypeError):
        named = set()
    for path in output_dir.glob("data-*.arrow"):
        if path.name not in named:
            path.unlink(missing_ok=True)


def _launcher_processes() -> int | None:
    """`--num_processes N` of the `accelerate launch` that started this process (its parent), if readable."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    if not any("accelerate" in a for a in args[:3]):
        return None
    for k, arg in enumerate(args):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and k + 1 < len(args) and args[k + 1].isdigit():
                return int(args[k + 1])
            if arg.startswith(flag + "=") and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
    return None


def _refuse_single_process_launch() -> None:
    """`accelerate launch --num_processes N` without a distributed mode (on CPUs, or without --multi_gpu) starts ONE
    process that would silently do all the work: refuse it with the command that really shards."""
    if "ACCELERATE_MIXED_PRECISION" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    asked = _launcher_processes()
    if asked is not None and asked > 1:
        raise JukeboxInputError(
            f"`accelerate launch --num_processes {asked}` started only ONE process here (accelerate starts several "
            "only in a distributed mode: --multi_gpu on GPUs; on CPUs it runs one). Nothing was extracted. To shard "
            f"over {asked} processes run `torchrun --nproc_per_node {asked} -m hf_jukebox_mir.cli extract ...` (same "
            f"arguments), `accelerate launch --multi_gpu --num_processes {asked} ...` on GPUs, or {asked} independent "
            f"jobs with --num-shards {asked} --shard-index K."
        )


def _shard_setup(num_shards: int | None, shard_index: int | None, cpu: bool):
    """(shard_index, num_shards, accelerate state or None); `cpu` lets accelerate use gloo for CPU processes."""
    if (num_shards is None) != (shard_index is None):
        raise JukeboxInputError("Give num_shards and shard_index together (e.g. num_shards=4, shard_index=0).")
    if num_shards is not None:
        num_shards = positive_int("num_shards", num_shards)
        if (
            isinstance(shard_index, bool)
            or not isinstance(shard_index, (int, np.integer))
            or not 0 <= shard_index < num_shards
        ):
            raise JukeboxInputError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index!r}.")
        return int(shard_index), num_shards, None
    _refuse_single_process_launch()
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
    max_duration: float = Limits.max_duration,
    max_input_windows: int | None = None,
    threads: int | None = None,
    verify: bool = False,
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
        max_duration: seconds of audio per input (default 7200); a longer input fails with a clear error, checked
            from the file header before decoding, and no more than this is ever decoded.
        max_input_windows: model windows per input (default None: as many as `max_duration` needs); an input
            needing more fails with a clear error (counted after `max_windows`).
        verify: check the model folder's files against its `conversion_audit.json` SHA-256 sums before loading.
        threads: torch CPU threads of this process (default: as torch is set; the CLI's default is
            `default_threads()`, 1 per process when several processes share the machine); recorded in
            `extraction.json` as `threads`.
        max_windows, window_hop: windowing of long inputs (`max_windows=1`: JukeMIR's first window only;
            `window_hop` in samples, a multiple of 128; default: non-overlapping windows over the whole input).

    A second run on the same output folder (and shard) is refused with a message naming the first; a killed run
    leaves no lock behind. When every input fails, no dataset is written (`merged` is False).

    Returns:
        [`ExtractionResult`]. Every path and option is checked before the model is loaded.
    """
    # ---- checks before anything heavy
    batch_size = positive_int("batch_size", batch_size)
    limits = Limits(max_duration=max_duration, max_input_windows=max_input_windows)
    threads = set_threads(threads)
    chunk_size = positive_int("chunk_size", chunk_size)
    if max_windows is not None:
        max_windows = positive_int("max_windows", max_windows)
    if window_hop is not None:
        window_hop = positive_int("window_hop", window_hop)
    model_path = _check_model_dir(model_dir)
    depth, native_rate = _built_layers(model_path)
    layer_ids, _ = resolve_layers(layers, depth)
    pooling = _default_pooling(pooling, frame_rate)
    pooling, _ = check_options(pooling, frame_rate, None, native_rate)
    if verify:
        from ..conversion.audit import check_folder

        check_folder(model_path)
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
        "columns": [
            "id",
            "path",
            "duration",
            "n_windows",
            *[f"layer_{i}" for i in layer_ids],
            *(["frame_times"] if pooling == "none" else []),
        ],
        "threads": threads,
        "max_duration": limits.max_duration,
        "max_input_windows": limits.max_input_windows,
    }
    is_main = state is None or state.is_main_process
    _prepare_output(output_dir, settings, resume=resume, overwrite=overwrite, write=False)  # checks only
    lock = RunLock(
        output_dir / f".lock-{shard:03d}",
        what=f"Output folder '{output_dir}' (shard {shard})" if num_shards > 1 else f"Output folder '{output_dir}'",
        soft=_SOFT_LOCKS,
    )
    if is_main:
        lock.acquire()  # before anything is written or cleared: a second run stops here
        try:
            _prepare_output(output_dir, settings, resume=resume, overwrite=overwrite, write=True, own=lock.path)
        except BaseException:
            lock.release()
            raise
    if state is not None:
        state.wait_for_everyone()
    if not is_main:
        lock.acquire()
    try:
        return _locked_run(
            lock,
            items,
            model_path,
            output_dir,
            settings,
            layer_ids,
            pooling,
            frame_rate,
            batch_size,
            torch_device,
            torch_dtype,
            compile,
            shard,
            num_shards,
            state,
            chunk_size,
            progress,
            callback,
            limits,
        )
    finally:
        lock.release()


def _locked_run(
    lock,
    items,
    model_path,
    output_dir,
    settings,
    layer_ids,
    pooling,
    frame_rate,
    batch_size,
    torch_device,
    torch_dtype,
    compile,
    shard,
    num_shards,
    state,
    chunk_size,
    progress,
    callback,
    limits,
):
    is_main = state is None or state.is_main_process
    chunks = output_dir / CHUNKS_DIR
    _remove_tmp(chunks, shard)  # partial chunks of a killed run of this shard (its lock is ours now)
    marker = chunks / f"done-{shard:03d}-of-{num_shards:03d}.json"
    marker.unlink(missing_ok=True)

    # ---- work
    done = _done_ids(chunks)
    pending = [item for item in items if item.index % num_shards == shard and item.id not in done]
    failures: list[dict] = []
    warnings: list[dict] = []
    computed = 0
    if pending:
        extractor = JukeboxExtractor(
            model_path,
            layers=layer_ids,
            pooling=pooling,
            frame_rate=frame_rate,
            batch_size=batch_size,
            device=torch_device,
            dtype=torch_dtype,
            compile=compile,
            limits=limits,
            max_windows=settings.get("max_windows"),
            window_hop=settings.get("window_hop"),
        )
        features = _features(layer_ids, extractor.hidden_size, pooling == "none", _extra_features(items))
        computed, failures = _run_pending(
            extractor,
            pending,
            chunks,
            shard,
            num_shards,
            features,
            chunk_size,
            progress,
            callback,
            len(done),
            lock=lock,
            warnings_out=warnings,
        )
    _write_json(marker, {"failures": failures, "computed": computed, "warnings": warnings})

    # ---- merge
    merged = False
    if state is not None:
        state.wait_for_everyone()
    markers = [chunks / f"done-{k:03d}-of-{num_shards:03d}.json" for k in range(num_shards)]
    if is_main and all(m.is_file() for m in markers):
        reports = [json.loads(m.read_text(encoding="utf-8")) for m in markers]
        all_failures = [f for r in reports for f in r["failures"]]
        warnings = [w for r in reports for w in r.get("warnings", [])]
        features = _features(layer_ids, _config_hidden_size(model_path), pooling == "none", _extra_features(items))
        # shards that finish together merge one after the other (the merge is idempotent)
        with filelock.FileLock(str(output_dir / ".merge.lock"), timeout=MERGE_LOCK_TIMEOUT):
            rows = _merge(output_dir, items, features, all_failures)
        merged = rows > 0
        failures = all_failures
    if state is not None:
        state.wait_for_everyone()
    num_done = len(_done_ids(chunks) & {item.id for item in items})
    if failures:
        logger.warning(
            "%d input(s) failed; see %s", len(failures), output_dir / FAILURES_FILE if merged else "the result"
        )
    return ExtractionResult(
        output_dir=output_dir,
        num_inputs=len(items),
        num_done=num_done,
        num_computed=computed,
        failures=failures,
        merged=merged,
        warnings=warnings,
    )


def _config_hidden_size(model_dir: Path) -> int:
    from ..models.configuration_jukebox_mir import JukeboxMIRConfig

    return JukeboxMIRConfig.from_pretrained(str(model_dir)).hidden_size


def _remove_tmp(chunks: Path, shard: int | None = None) -> None:
    """Delete partial chunks left by a killed run (of `shard`, or of every shard)."""
    if not chunks.is_dir():
        return
    prefixes = (".tmp-", ".done-") if shard is None else (f".tmp-{shard:03d}-", f".done-{shard:03d}-")
    for entry in chunks.iterdir():
        if entry.name.startswith(prefixes):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def _run_pending(
    extractor: JukeboxExtractor,
    pending: list[ExtractionInput],
    chunks: Path,
    shard: int,
    num_shards: int,
    features,
    chunk_size: int,
    progress: bool,
    callback,
    done_before: int,
    lock: RunLock | None = None,
    warnings_out: list[dict] | None = None,
):
    """Decode inputs one at a time (the next one in a background thread while the model runs), stream their
    windows through the model, and save a chunk every `chunk_size` finished inputs. At most two decoded inputs
    and one batch of windows are in memory, whatever the chunk size and the file lengths."""
    from tqdm.auto import tqdm

    failures: list[dict] = []
    computed = 0
    desc = "Extracting" if num_shards == 1 else f"Extracting (shard {shard + 1}/{num_shards})"
    bar = tqdm(
        total=len(pending), desc=desc, unit="file", disable=not progress, position=shard if num_shards > 1 else None
    )
    sampling_rate = extractor.feature_extractor.sampling_rate

    def prepare(item: ExtractionInput):
        if item.problem is not None:
            return item, None, JukeboxInputError(item.problem)
        try:
            return item, extractor.prepare(item.load()), None
        except Exception as err:  # noqa: BLE001 - reported per input
            return item, None, err

    def prepared_inputs():
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(prepare, pending[0])
            for k in range(len(pending)):
                item, prep, err = future.result()
                future = pool.submit(prepare, pending[k + 1]) if k + 1 < len(pending) else None
                if prep is not None and prep.warning:
                    logger.warning("%s", prep.warning)
                    if warnings_out is not None:
                        warnings_out.append({"id": item.id, "path": item.path, "warning": prep.warning})
                covered = (
                    0
                    if prep is None
                    else (
                        int(prep.offsets[-1]) + min(len(prep.waveform) - int(prep.offsets[-1]), extractor.window_length)
                    )
                )
                yield (item, 0 if prep is None else len(prep.offsets), covered), prep, err
                del item, prep, err

    rows: list[dict] = []

    def save():
        nonlocal computed
        if not rows:
            return
        path = _write_chunk(chunks, shard, rows, features)
        computed += len(rows)
        rows.clear()
        if lock is not None:
            lock.touch()
        if callback is not None:
            callback({"chunk": path, "done": done_before + computed, "total": len(pending) + done_before})

    seen = 0
    with bar:
        for (item, n_windows, samples), result, err in extractor.stream(prepared_inputs()):
            seen += 1
            bar.update(1)
            if err is not None:
                failures.append({"id": item.id, "path": item.path, "error": f"{type(err).__name__}: {err}"})
                logger.warning("Failed on %s: %s", item.id, err)
            else:
                row = {
                    "_index": item.index,
                    "id": item.id,
                    "path": item.path,
                    "duration": samples / sampling_rate,
                    "n_windows": n_windows,
                }
                for j, layer in enumerate(extractor.layer_ids):
                    row[f"layer_{layer}"] = result[j]
                for column in features:
                    if column not in row and item.extra is not None and column in item.extra:
                        row[column] = item.extra[column]
                if extractor.pooling == "none":
                    row["frame_times"] = frame_times(result[0].shape[0], extractor.frame_rate or extractor.native_rate)
                rows.append(row)
            if seen % chunk_size == 0:
                save()
        save()
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
