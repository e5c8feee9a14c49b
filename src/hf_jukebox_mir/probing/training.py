"""Probing on cached embeddings: extraction with `datasets.map`, probes trained with `Trainer`, the JukeMIR grid.

The flow, as in JukeMIR (Castellon et al., ISMIR 2021):

1. [`cache_embeddings`]: run an `embed_fn` (a list of mono float32 waveforms at 44.1 kHz ->
   `(num_clips, num_layers, dim)`) over every clip once with `Dataset.map`, store the result in a
   `features` column (`List(float32, length=dim)` for one layer, `Array2D((num_layers, dim))` for several)
   and optionally save it to disk (reloaded instead of recomputed next time).
2. [`train_probe`]: one probe ([`JukeboxProbeForSequenceClassification`]) on one layer with `Trainer`:
   feature standardisation fit on train (stored in the model), Adam with L2 weight decay, constant learning
   rate, evaluation on validation every `eval_steps`, early stopping on the task's primary metric, best
   weights restored (`load_best_model_at_end`), resumable from a checkpoint.
3. [`run_probe_grid`]: every configuration of a grid ([`JUKEMIR_GRID`]: 216 configurations, or
   [`SMALL_GRID`]) on every layer; selection on validation; one test evaluation of the selected probe;
   `results.json`, `results.md` and `plot.png` in the output folder. Interrupted grids resume.

Differences from the original JukeMIR loop (documented, deliberate): `Trainer` iterates shuffled epochs
instead of drawing each minibatch independently, and weight decay is not applied to biases.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.configuration_jukebox_probe import JukeboxProbeConfig
from ..models.errors import JukeboxInputError
from ..models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
from .metrics import compute_task_metrics, make_compute_metrics
from .mir_datasets import load_audio_clip
from .reports import WEIGHTED, ProbeResults, coverage_note, json_default, results_markdown, write_plot
from .tasks import MirTask, get_task, jukemir_task_score

EmbedFn = Callable[[list[np.ndarray]], np.ndarray]

#: JukeMIR's probe grid (`jukemir/probe/__init__.py`, `_PAPER_GRID`): 2 * 2 * 2 * 3 * 3 * 3 = 216 configurations.
JUKEMIR_GRID: dict[str, list] = {
    "standardize": [False, True],
    "hidden_size": [None, 512],
    "batch_size": [64, 256],
    "learning_rate": [1e-5, 1e-4, 1e-3],
    "dropout": [0.25, 0.5, 0.75],
    "weight_decay": [0.0, 1e-4, 1e-3],
}

#: A 4-configuration grid for quick runs: linear and MLP probes, two dropout rates.
SMALL_GRID: dict[str, list] = {
    "standardize": [True],
    "hidden_size": [None, 512],
    "batch_size": [64],
    "learning_rate": [1e-3],
    "dropout": [0.25, 0.5],
    "weight_decay": [0.0],
}

GRIDS = {"jukemir": JUKEMIR_GRID, "small": SMALL_GRID}


# ----------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ProbeHyperparameters:
    """One point of the probe grid (JukeMIR's defaults: standardised, linear, batch 64, lr 1e-3, dropout 0.5)."""

    standardize: bool = True
    hidden_size: int | None = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    dropout: float = 0.5
    weight_decay: float = 0.0

    @property
    def run_name(self) -> str:
        """Short unique name, e.g. `std-linear-bs64-lr0.001-do0.5-wd0`."""
        probe = "linear" if self.hidden_size is None else f"mlp{self.hidden_size}"
        std = "std" if self.standardize else "raw"
        return f"{std}-{probe}-bs{self.batch_size}-lr{self.learning_rate:g}-do{self.dropout:g}-wd{self.weight_decay:g}"


@dataclass(frozen=True)
class ProbeSchedule:
    """When to evaluate and stop.

    Attributes:
        max_epochs: upper bound on training epochs (ignored when `max_steps` is set).
        max_steps: upper bound on optimiser steps.
        eval_steps: evaluate (and checkpoint) every this many steps; `None` = once per epoch.
        patience: stop after this many evaluations without improvement of the primary metric.
        seed: seed of the probe initialisation, dropout and data order.
        save_total_limit: checkpoints kept besides the best one (`None` keeps all).
        eval_batch_size: batch size for evaluation.
    """

    max_epochs: float = 100.0
    max_steps: int | None = None
    eval_steps: int | None = None
    patience: int = 10
    seed: int = 0
    save_total_limit: int | None = 1
    eval_batch_size: int = 256


#: JukeMIR's loop: evaluate every 8 steps, stop after 256 evaluations (2,048 steps) without improvement.
JUKEMIR_SCHEDULE = ProbeSchedule(max_epochs=10_000.0, eval_steps=8, patience=256)


def grid_configs(grid: str | dict[str, Sequence] | Sequence[ProbeHyperparameters]) -> list[ProbeHyperparameters]:
    """Expand a grid name (`"jukemir"`, `"small"`), a dict of value lists, or a list of configurations."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise JukeboxInputError(f"Unknown grid {grid!r}; choose one of {', '.join(GRIDS)}.")
        grid = GRIDS[grid]
    if isinstance(grid, dict):
        unknown = set(grid) - set(ProbeHyperparameters.__dataclass_fields__)
        if unknown:
            raise JukeboxInputError(
                f"Unknown grid keys {sorted(unknown)}; allowed: {sorted(ProbeHyperparameters.__dataclass_fields__)}."
            )
        keys = list(grid)
        return [ProbeHyperparameters(**dict(zip(keys, values))) for values in itertools.product(*grid.values())]
    configs = list(grid)
    if not configs or not all(isinstance(c, ProbeHyperparameters) for c in configs):
        raise JukeboxInputError(
            "A grid must be a name, a dict of value lists, or a non-empty list of ProbeHyperparameters."
        )
    return configs


# ----------------------------------------------------------------------------------------------- embeddings


def _check_embeddings(output: Any, num_clips: int) -> np.ndarray:
    array = np.asarray(output, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, None, :]  # (N, D) -> (N, 1, D)
    if array.ndim != 3 or array.shape[0] != num_clips:
        raise JukeboxInputError(
            f"embed_fn must return an array of shape (num_clips, num_layers, dim) or (num_clips, dim) for "
            f"{num_clips} clips, got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise JukeboxInputError("embed_fn returned NaN or infinite values.")
    return array


def _clip_loader(sampling_rate: int, max_seconds: float | None):
    def load(path: str, offset: float | None, duration: float | None) -> np.ndarray:
        if max_seconds is not None:
            duration = max_seconds if duration is None else min(duration, max_seconds)
        return load_audio_clip(path, offset or 0.0, duration, sampling_rate=sampling_rate)

    return load


def cache_embeddings(
    dataset,
    embed_fn: EmbedFn,
    *,
    batch_size: int = 8,
    sampling_rate: int = 44100,
    max_seconds: float | None = None,
    feature_column: str = "features",
    cache_dir: str | Path | None = None,
):
    """Add a `feature_column` of clip embeddings to every split of `dataset` (`Dataset` or `DatasetDict`).

    Args:
        dataset: rows with `audio` (path), `offset` and `duration` columns (as built by `mir_datasets`).
        embed_fn: `list[np.ndarray]` (mono float32 at `sampling_rate`) -> `(num_clips, num_layers, dim)` or
            `(num_clips, dim)`. An `output_shape = (num_layers, dim)` attribute saves a probe call.
        batch_size: clips per `embed_fn` call.
        max_seconds: read at most this many seconds of each clip.
        cache_dir: if given and it holds a saved result, that is loaded instead (delete it to recompute);
            otherwise the result is saved there with `save_to_disk`.

    Returns:
        The same type as `dataset`, with `feature_column` stored as `List(Value("float32"), length=dim)` (one
        layer) or `Array2D((num_layers, dim), "float32")`.
    """
    import datasets

    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        if (cache_dir / "dataset_dict.json").is_file() or (cache_dir / "dataset_info.json").is_file():
            cached = datasets.load_from_disk(str(cache_dir))
            _check_cached(cached, dataset, feature_column, cache_dir)
            return cached
    is_dict = isinstance(dataset, datasets.DatasetDict)
    splits = dict(dataset) if is_dict else {"data": dataset}
    for name, split in splits.items():
        missing = {"audio", "offset", "duration"} - set(split.column_names)
        if missing:
            raise JukeboxInputError(
                f"cache_embeddings: split {name!r} lacks the columns {sorted(missing)}; build it with mir_datasets."
            )
        if feature_column in split.column_names:
            raise JukeboxInputError(f"cache_embeddings: split {name!r} already has a {feature_column!r} column.")
    load = _clip_loader(sampling_rate, max_seconds)
    shape = getattr(embed_fn, "output_shape", None)
    if shape is None:
        first = next(iter(splits.values()))
        row = first[0]
        shape = _check_embeddings(embed_fn([load(row["audio"], row["offset"], row["duration"])]), 1).shape[1:]
    num_layers, dim = int(shape[0]), int(shape[1])
    if num_layers == 1:
        feature_type = datasets.List(datasets.Value("float32"), length=dim)
    else:
        feature_type = datasets.Array2D(shape=(num_layers, dim), dtype="float32")

    def embed_batch(batch: dict[str, list]) -> dict[str, np.ndarray]:
        waves = [load(a, o, d) for a, o, d in zip(batch["audio"], batch["offset"], batch["duration"])]
        emb = _check_embeddings(embed_fn(waves), len(waves))
        if emb.shape[1:] != (num_layers, dim):
            raise JukeboxInputError(
                f"embed_fn returned embeddings of shape {emb.shape[1:]} per clip, but earlier ones were "
                f"{(num_layers, dim)}."
            )
        return {feature_column: emb[:, 0] if num_layers == 1 else emb}

    out = {}
    for name, split in splits.items():
        features = split.features.copy()
        features[feature_column] = feature_type
        out[name] = split.map(
            embed_batch,
            batched=True,
            batch_size=batch_size,
            features=features,
            desc=f"Embedding {name}",
            load_from_cache_file=False,
        )
    result = datasets.DatasetDict(out) if is_dict else out["data"]
    if cache_dir is not None:
        result.save_to_disk(str(cache_dir))
    return result


def _check_cached(cached, dataset, feature_column: str, cache_dir: Path) -> None:
    import datasets

    c_splits = dict(cached) if isinstance(cached, datasets.DatasetDict) else {"data": cached}
    d_splits = dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {"data": dataset}
    if set(c_splits) != set(d_splits) or any(
        feature_column not in c_splits[k].column_names or len(c_splits[k]) != len(d_splits[k]) for k in d_splits
    ):
        raise JukeboxInputError(
            f"The embedding cache {cache_dir} does not match the dataset (other splits, sizes or no "
            f"{feature_column!r} column); delete it or choose another cache folder."
        )


def num_feature_layers(split, feature_column: str = "features") -> int:
    """Number of layers stored in `feature_column` (1 for a plain vector column)."""
    import datasets

    feature = split.features[feature_column]
    return int(feature.shape[0]) if isinstance(feature, datasets.Array2D) else 1


def feature_matrix(
    split, *, layer: int | str | None = None, feature_column: str = "features", chunk_bytes: int = 1 << 28
) -> np.ndarray:
    """`(num_examples, dim)` float32 embeddings of one layer of `split` (`layer` indexes multi-layer columns;
    `layer="all"`: every layer, `(num_examples, num_layers, dim)`, for the learned weighted layer sum).

    Multi-layer columns are read `chunk_bytes` at a time, so only the selected layer is ever held in full
    (72 layers x 4800 dims of MagnaTagATune would not fit in memory at once).
    """
    if feature_column not in split.column_names:
        raise JukeboxInputError(
            f"The dataset has no {feature_column!r} column (columns: {split.column_names}); run cache_embeddings first."
        )
    n_layers = num_feature_layers(split, feature_column)
    if n_layers == 1:
        if layer not in (None, 0, -1):
            raise JukeboxInputError(f"The features hold a single layer; got layer={layer}.")
        array = np.asarray(split.with_format("numpy", columns=[feature_column])[feature_column], dtype=np.float32)
        return np.ascontiguousarray(array.reshape(len(split), -1))
    if layer == "all":  # every layer: (N, n_layers, dim), for the learned weighted layer sum
        return np.ascontiguousarray(
            np.asarray(split.with_format("numpy", columns=[feature_column])[feature_column], dtype=np.float32)
        )
    if layer is None:
        raise JukeboxInputError(f"The features hold {n_layers} layers; pass layer= (0..{n_layers - 1}).")
    if not -n_layers <= layer < n_layers:
        raise JukeboxInputError(f"layer={layer} is out of range for features with {n_layers} layers.")
    dim = int(split.features[feature_column].shape[1])
    rows = max(1, chunk_bytes // (n_layers * dim * 4))
    formatted = split.with_format("numpy", columns=[feature_column])
    out = np.empty((len(split), dim), dtype=np.float32)
    for start in range(0, len(split), rows):
        out[start : start + rows] = np.asarray(formatted[start : start + rows][feature_column])[:, layer]
    return out


def column_values(split, name: str) -> list:
    """A column of `split` as a Python list (one Arrow conversion, not a per-row iteration)."""
    if name not in split.column_names:
        raise JukeboxInputError(f"The dataset has no {name!r} column (columns: {split.column_names}).")
    return list(split.with_format(None).select_columns([name])[:][name])


def label_array(split, task: str | MirTask) -> np.ndarray:
    """Targets of `split` for `task`: int64 `(N,)` class ids, or float32 `(N, num_labels)`."""
    task = get_task(task)
    if task.label_column not in split.column_names:
        raise JukeboxInputError(
            f"Task {task.name!r} reads labels from column {task.label_column!r}, absent from {split.column_names}."
        )
    values = column_values(split, task.label_column)
    if task.problem_type == "single_label_classification":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float32)


class _ArrayDataset(torch.utils.data.Dataset):
    """In-memory `(features, labels)` pairs for `Trainer`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features = torch.from_numpy(features)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}


# ----------------------------------------------------------------------------------------------- one probe


@contextlib.contextmanager
def _quiet_progress_bars():
    """Silence transformers' per-checkpoint "Writing model shards" / "Loading weights" bars for a while."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@dataclass
class ProbeRun:
    """Outcome of [`train_probe`]: the best model (weights restored) and its validation metrics."""

    model: JukeboxProbeForSequenceClassification
    hparams: ProbeHyperparameters
    layer: int | str | None
    validation_metrics: dict[str, Any]
    best_checkpoint: str | None
    global_step: int
    eval_history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def primary(self) -> float:
        return float(self.validation_metrics["primary"])


def predict_logits(
    model: JukeboxProbeForSequenceClassification, features: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """Logits `(N, num_labels)` of `model` (eval mode, no gradients) for features `(N, input_dim)`."""
    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device)
            outs.append(model(features=batch).logits.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, model.config.num_labels), dtype=np.float32)


def evaluate_probe(
    model: JukeboxProbeForSequenceClassification,
    split,
    task: str | MirTask,
    *,
    layer: int | str | None = None,
    aggregation: str | None = None,
    feature_column: str = "features",
) -> dict[str, Any]:
    """All metrics of `task` for `model` on `split` (song-level key tasks read the `song_id` column)."""
    task = get_task(task)
    logits = predict_logits(model, feature_matrix(split, layer=layer, feature_column=feature_column))
    song_ids = column_values(split, "song_id") if task.song_level else None
    return compute_task_metrics(task, logits, label_array(split, task), song_ids=song_ids, aggregation=aggregation)


@dataclass
class ProbeData:
    """One layer's features and targets of the train / validation (/ test) splits, as numpy arrays.

    Built once per layer by [`ProbeData.from_dataset`], so a grid does not re-read the dataset for every run.
    """

    task: MirTask
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    song_ids: dict[str, list | None]

    @classmethod
    def from_dataset(
        cls,
        dataset,
        task: str | MirTask,
        *,
        layer: int | str | None = None,
        feature_column: str = "features",
        splits: Sequence[str] = ("train", "validation"),
    ) -> ProbeData:
        task = get_task(task)
        for split in splits:
            if split not in dataset:
                raise JukeboxInputError(f"Probing needs a {split!r} split; got {list(dataset)}.")
        return cls(
            task=task,
            features={s: feature_matrix(dataset[s], layer=layer, feature_column=feature_column) for s in splits},
            labels={s: label_array(dataset[s], task) for s in splits},
            song_ids={s: column_values(dataset[s], "song_id") if task.song_level else None for s in splits},
        )

    def evaluate(
        self, model: JukeboxProbeForSequenceClassification, split: str, *, aggregation: str | None = None
    ) -> dict[str, Any]:
        """All task metrics of `model` on `split` (song-level tasks: `aggregation`, or the best one if `None`)."""
        logits = predict_logits(model, self.features[split])
        return compute_task_metrics(
            self.task, logits, self.labels[split], song_ids=self.song_ids[split], aggregation=aggregation
        )


def train_probe(
    dataset,
    task: str | MirTask,
    output_dir: str | Path,
    *,
    hparams: ProbeHyperparameters | None = None,
    schedule: ProbeSchedule | None = None,
    layer: int | str | None = None,
    feature_column: str = "features",
    feature_source: str | None = None,
    resume_from_checkpoint: str | bool | None = None,
) -> ProbeRun:
    """Train one probe on the cached features of `dataset["train"]`, early-stopped on `dataset["validation"]`.

    Args:
        dataset: `DatasetDict` with `train` and `validation` splits holding `feature_column` and the task's
            label column (and `song_id` for song-level tasks), or a [`ProbeData`] built from one.
        task: task name or [`MirTask`] (problem type, labels, primary metric).
        output_dir: `Trainer` output folder (checkpoints).
        hparams: probe and optimiser settings (default: JukeMIR's single-run default).
        schedule: evaluation / stopping settings.
        layer: layer index for multi-layer features.
        resume_from_checkpoint: a checkpoint folder, or `True` for the latest one in `output_dir`.

    Returns:
        [`ProbeRun`] with the best model (by validation primary metric) loaded.
    """
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments, set_seed

    task = get_task(task)
    hparams = hparams or ProbeHyperparameters()
    schedule = schedule or ProbeSchedule()
    data = (
        dataset
        if isinstance(dataset, ProbeData)
        else ProbeData.from_dataset(dataset, task, layer=layer, feature_column=feature_column)
    )
    if data.task.name != task.name:
        raise JukeboxInputError(f"train_probe: the ProbeData was built for {data.task.name!r}, not {task.name!r}.")
    x_train, y_train = data.features["train"], data.labels["train"]

    set_seed(schedule.seed)
    config = JukeboxProbeConfig(
        input_dim=int(x_train.shape[-1]),
        num_layers=int(x_train.shape[1]) if x_train.ndim == 3 else 1,
        hidden_size=hparams.hidden_size,
        dropout=hparams.dropout,
        standardize=hparams.standardize,
        problem_type=task.problem_type,
        id2label=dict(enumerate(task.label_names)),
        feature_source=feature_source,
    )
    model = JukeboxProbeForSequenceClassification(config)
    model.fit_standardization(x_train, enable=hparams.standardize)

    steps_per_epoch = max(1, math.ceil(len(x_train) / hparams.batch_size))
    eval_steps = schedule.eval_steps or steps_per_epoch
    args = TrainingArguments(
        output_dir=str(output_dir),
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        logging_strategy="steps",
        logging_steps=eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model=task.primary_metric,
        greater_is_better=task.greater_is_better,
        save_total_limit=schedule.save_total_limit,
        num_train_epochs=schedule.max_epochs,
        max_steps=schedule.max_steps or -1,
        per_device_train_batch_size=hparams.batch_size,
        per_device_eval_batch_size=schedule.eval_batch_size,
        learning_rate=hparams.learning_rate,
        weight_decay=hparams.weight_decay,
        lr_scheduler_type="constant",
        seed=schedule.seed,
        data_seed=schedule.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_ArrayDataset(x_train, y_train),
        eval_dataset=_ArrayDataset(data.features["validation"], data.labels["validation"]),
        compute_metrics=make_compute_metrics(task, song_ids=data.song_ids["validation"]),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=schedule.patience)],
        # Adam with L2 weight decay (coupled, as JukeMIR's torch.optim.Adam(weight_decay=...)); Trainer puts
        # args.weight_decay on the weights and 0 on the biases.
        optimizer_cls_and_kwargs=(torch.optim.Adam, {"lr": hparams.learning_rate}),
    )
    trainer.remove_callback(PrinterCallback)  # one summary line per run instead (see run_probe_grid)
    with _quiet_progress_bars():
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    best = trainer.model
    key = f"eval_{task.primary_metric}"
    history = [(int(e["step"]), float(e[key])) for e in trainer.state.log_history if key in e]
    return ProbeRun(
        model=best,
        hparams=hparams,
        layer=layer,
        validation_metrics=data.evaluate(best, "validation"),
        best_checkpoint=trainer.state.best_model_checkpoint,
        global_step=int(trainer.state.global_step),
        eval_history=history,
    )


# ----------------------------------------------------------------------------------------------- grid


def _better(a: float, b: float | None, greater_is_better: bool) -> bool:
    if b is None:
        return True
    return a > b if greater_is_better else a < b


def run_probe_grid(
    dataset,
    task: str | MirTask,
    output_dir: str | Path,
    *,
    grid: str | dict | Sequence[ProbeHyperparameters] = "small",
    layers: Sequence[int] | None = None,
    layer_names: Sequence[str] | None = None,
    schedule: ProbeSchedule | None = None,
    feature_column: str = "features",
    feature_source: str | None = None,
    keep_checkpoints: bool = False,
    log: Callable[[str], None] | None = print,
    coverage: dict[str, Any] | None = None,
    seeds: int = 1,
    extraction: dict[str, Any] | None = None,
    layer_weighting: bool = False,
) -> ProbeResults:
    """Grid search of probes on every layer, selection on validation, one test evaluation, reports.

    `coverage` (from `mir_datasets.dataset_coverage`: files found / expected per split) is recorded, and an
    incomplete dataset is named in the reports' titles. `seeds > 1` retrains the selected configuration with
    seeds `schedule.seed + 1 ...` and reports the mean and standard deviation of its test metrics over all
    seeds (the selected probe itself stays the one of `schedule.seed`). `extraction` (free-form: model,
    layers, max_windows, ...) is recorded as given.

    Writes to `output_dir`: `grid_state.json` (finished runs; a re-run resumes from it), `best_probe/`
    (the selected probe, `from_pretrained`-loadable), `results.json`, `results.md` and `plot.png` (score
    per layer when several layers were probed, else the validation curve of the selected run; skipped with
    a warning without matplotlib).

    Returns:
        The [`ProbeResults`] written to `results.json` (`probing.reports`).
    """
    task = get_task(task)
    schedule = schedule or ProbeSchedule()
    grid_name = grid if isinstance(grid, str) else "custom"
    configs = grid_configs(grid)
    if "test" not in dataset:
        raise JukeboxInputError(f"run_probe_grid needs a 'test' split; got {list(dataset)}.")
    n_layers = num_feature_layers(dataset["train"], feature_column)
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    for index in layers:
        if not 0 <= index < n_layers:
            raise JukeboxInputError(f"layer {index} is out of range: the features hold {n_layers} layer(s).")
    if layer_names is None or len(layer_names) != n_layers:
        layer_names = [str(i) for i in range(n_layers)]
    # what is probed: each layer alone, and (layer_weighting) a learned softmax-weighted sum of all of them
    specs: list[tuple[Any, str]] = [(i, layer_names[i]) for i in layers]
    if layer_weighting and n_layers > 1:
        specs.append(("all", WEIGHTED))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "grid_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"runs": {}, "best": None}
    say = log or (lambda message: None)
    total = len(specs) * len(configs)
    done = 0
    for index, name in specs:
        data = None
        for hp in configs:
            done += 1
            run_key = f"layer-{name}/{hp.run_name}"
            if run_key in state["runs"]:
                continue
            if data is None:  # read this layer once for all its runs
                data = ProbeData.from_dataset(
                    dataset, task, layer=index if n_layers > 1 else None, feature_column=feature_column
                )
            run_dir = out / "runs" / f"layer-{name}" / hp.run_name
            run = train_probe(
                data,
                task,
                run_dir,
                hparams=hp,
                schedule=schedule,
                layer=index if n_layers > 1 else None,
                feature_source=feature_source,
            )
            record = {
                "layer": index,
                "layer_name": name,
                "hparams": asdict(hp),
                "layer_weights": run.model.layer_weight_probabilities,
                "validation": run.validation_metrics,
                "primary": run.primary,
                "global_step": run.global_step,
                "best_step": _checkpoint_step(run.best_checkpoint),
                "eval_history": run.eval_history,
            }
            state["runs"][run_key] = record
            best_primary = state["best"]["primary"] if state["best"] else None
            if _better(run.primary, best_primary, task.greater_is_better):
                with _quiet_progress_bars():
                    run.model.save_pretrained(out / "best_probe")
                state["best"] = {"run_key": run_key, "primary": run.primary}
            if not keep_checkpoints:
                shutil.rmtree(run_dir, ignore_errors=True)
            state_path.write_text(json.dumps(state, indent=1, default=json_default))
            say(
                f"[{done}/{total}] layer {name} {hp.run_name}: validation "
                f"{task.primary_metric}={run.primary:.4f} (step {record['best_step']}/{run.global_step})"
            )
    if not keep_checkpoints:
        for folder in sorted((out / "runs").glob("*"), reverse=True) + [out / "runs"]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    if state["best"] is None:
        raise JukeboxInputError("run_probe_grid: no run finished.")
    wanted = {f"layer-{name}/{hp.run_name}" for _, name in specs for hp in configs}
    runs = {k: v for k, v in state["runs"].items() if k in wanted}
    best_key = max(runs, key=lambda k: runs[k]["primary"] if task.greater_is_better else -runs[k]["primary"])
    best_record = runs[best_key]
    if state["best"]["run_key"] != best_key:
        raise JukeboxInputError(
            f"{out / 'best_probe'} holds {state['best']['run_key']}, not the best run of this grid ({best_key}); "
            "use a fresh output folder for a different grid or layer selection."
        )
    with _quiet_progress_bars():
        best_model = JukeboxProbeForSequenceClassification.from_pretrained(out / "best_probe")
    best_layer = best_record["layer"] if n_layers > 1 else None
    data = ProbeData.from_dataset(
        dataset, task, layer=best_layer, feature_column=feature_column, splits=("validation", "test")
    )
    validation = data.evaluate(best_model, "validation")
    aggregation = validation.get("aggregation")  # song-level tasks: the strategy chosen on validation
    test = data.evaluate(best_model, "test", aggregation=aggregation)
    per_layer = []
    for index, name in specs:
        layer_runs = [r for k, r in runs.items() if r["layer_name"] == name]
        top = max(layer_runs, key=lambda r: r["primary"] if task.greater_is_better else -r["primary"])
        per_layer.append(
            {
                "layer": index,
                "layer_name": name,
                "validation_primary": top["primary"],
                "hparams": top["hparams"],
                "layer_weights": top.get("layer_weights"),
            }
        )
    seed_runs = _repeat_seeds(
        dataset,
        task,
        out,
        best_record,
        best_layer,
        schedule,
        seeds,
        test,
        feature_column,
        feature_source,
        aggregation,
        say,
    )
    results = ProbeResults(
        task=task.name,
        description=task.description,
        feature_source=feature_source,
        primary_metric=task.primary_metric,
        greater_is_better=task.greater_is_better,
        chance_level=dict(task.chance_level),
        grid=grid_name,
        num_configs=len(configs),
        layers=[layer_names[i] for i in layers],
        layer_weighting=bool(layer_weighting and n_layers > 1),
        schedule=asdict(schedule),
        split_sizes={name: len(dataset[name]) for name in ("train", "validation", "test")},
        best={
            "run_key": best_key,
            "layer": best_record["layer"],
            "layer_name": best_record["layer_name"],
            "hparams": best_record["hparams"],
            "best_step": best_record["best_step"],
            "aggregation": aggregation,
            "validation": validation,
            "test": test,
        },
        jukemir_score=jukemir_task_score(task, test),
        per_layer=per_layer,
        runs=[dict(run_key=k, **{f: v for f, v in r.items() if f != "eval_history"}) for k, r in runs.items()],
        model_dir=str(out / "best_probe"),
        coverage=coverage,
        seeds=seed_runs,
        extraction=extraction,
        environment=run_environment(schedule.seed),
    )
    results.write(out)
    (out / "results.md").write_text(results_markdown([results]))
    plot = write_plot(results, runs[best_key].get("eval_history", []), out / "plot.png")
    results.plot = str(plot) if plot else None
    results.write(out)
    say(
        f"{task.name}: selected {best_key}; test {task.primary_metric}={test['primary']:.4f}; "
        f"JukeMIR score {results.jukemir_score:.1f}"
    )
    return results


def _repeat_seeds(
    dataset,
    task: MirTask,
    out: Path,
    best_record: dict,
    best_layer: int | None,
    schedule: ProbeSchedule,
    seeds: int,
    test: dict,
    feature_column: str,
    feature_source: str | None,
    aggregation: str | None,
    say,
) -> dict[str, Any]:
    """Test metrics of the selected configuration over `seeds` seeds (the first is the selected run)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise JukeboxInputError(f"seeds must be a positive integer, got {seeds!r}.")
    values = [float(test["primary"])]
    used = [schedule.seed]
    if seeds > 1:
        hp = ProbeHyperparameters(**best_record["hparams"])
        data = ProbeData.from_dataset(
            dataset, task, layer=best_layer, feature_column=feature_column, splits=("train", "validation", "test")
        )
        for k in range(1, seeds):
            seed = schedule.seed + k
            run_dir = out / "runs" / f"seed-{seed}"
            run = train_probe(
                data,
                task,
                run_dir,
                hparams=hp,
                schedule=replace(schedule, seed=seed),
                layer=best_layer,
                feature_source=feature_source,
            )
            metrics = data.evaluate(run.model, "test", aggregation=aggregation)
            values.append(float(metrics["primary"]))
            used.append(seed)
            shutil.rmtree(run_dir, ignore_errors=True)
            say(f"seed {seed}: test {task.primary_metric}={values[-1]:.4f}")
        if (out / "runs").is_dir() and not any((out / "runs").iterdir()):
            (out / "runs").rmdir()
    array = np.asarray(values, dtype=np.float64)
    return {
        "seeds": used,
        "test_primary": values,
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(values) > 1 else 0.0,
    }


def run_environment(seed: int | None = None) -> dict[str, Any]:
    """Package and library versions, torch threads and the seed, recorded in every results file."""
    import platform
    from importlib import metadata

    versions = {}
    for name in (
        "hf-jukebox-mir",
        "torch",
        "transformers",
        "datasets",
        "numpy",
        "scikit-learn",
        "mir_eval",
        "soundfile",
        "soxr",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
    }


def _checkpoint_step(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(Path(path).name.split("-")[-1])
    except ValueError:
        return None


__all__ = [
    "GRIDS",
    "JUKEMIR_GRID",
    "JUKEMIR_SCHEDULE",
    "ProbeData",
    "ProbeHyperparameters",
    "ProbeResults",
    "ProbeRun",
    "ProbeSchedule",
    "SMALL_GRID",
    "WEIGHTED",
    "cache_embeddings",
    "coverage_note",
    "column_values",
    "evaluate_probe",
    "feature_matrix",
    "grid_configs",
    "label_array",
    "num_feature_layers",
    "predict_logits",
    "run_environment",
    "run_probe_grid",
    "train_probe",
]
