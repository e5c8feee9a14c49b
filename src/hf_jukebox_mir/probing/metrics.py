"""MIR probing metrics: plain functions, `evaluate` modules, and `Trainer` adapters.

Every metric function takes `(references, predictions)` first, validates both, and returns a dict of
named floats, so the same numbers come out of scripts, `evaluate` and `Trainer`:

* [`accuracy`]: GTZAN genre.
* [`multilabel_scores`]: macro ROC-AUC and macro average precision (scikit-learn), MagnaTagATune tags.
* [`r2_scores`]: R^2 averaged over outputs plus one per output (scikit-learn), Emomusic arousal/valence.
* [`key_scores`]: the MIREX weighted key score (1.0 same key, 0.5 a fifth above, 0.3 relative,
  0.2 parallel; as `mir_eval.key.weighted_score`), GiantSteps key.
* [`song_key_scores`]: the same after ensembling clip logits into song predictions with the four JukeMIR
  strategies (`vote`, `max`, `mean_logits`, `mean_softmax`); the strategy is chosen on validation.

The `evaluate` modules live in `hf_jukebox_mir/probing/evaluate_modules/<name>/<name>.py` (package data) and
load offline with `evaluate.load(metric_path(name))` or [`load_metric`]; their `evaluate.Metric` classes are
defined here ([`AccuracyMetric`], [`MultilabelMetric`], [`R2Metric`], [`MirexKeyMetric`]) and can be
instantiated directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np

from ..models.errors import JukeboxInputError
from .keys import KEY_LABELS, KEY_SCORE_WEIGHTS, PITCH_CLASSES, key_relation, key_to_index, mirex_key_score

AGGREGATION_STRATEGIES = ("vote", "max", "mean_logits", "mean_softmax")


# ----------------------------------------------------------------------------------------------- validation


def _as_array(values: Any, name: str, metric: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except Exception as err:  # ragged lists
        raise JukeboxInputError(f"{metric}: {name} must be a rectangular array, got {type(values).__name__}.") from err
    if array.dtype == object:
        raise JukeboxInputError(f"{metric}: {name} must be a rectangular numeric array (ragged or mixed input).")
    if array.size == 0:
        raise JukeboxInputError(f"{metric}: {name} is empty; need at least one example.")
    return array


def _same_length(references: np.ndarray, predictions: np.ndarray, metric: str) -> None:
    if len(references) != len(predictions):
        raise JukeboxInputError(
            f"{metric}: references and predictions must have the same number of examples, got "
            f"{len(references)} and {len(predictions)}."
        )


def _class_ids(values: Any, name: str, metric: str) -> np.ndarray:
    array = _as_array(values, name, metric)
    if array.ndim != 1:
        raise JukeboxInputError(
            f"{metric}: {name} must be a 1-D array of class ids, got shape {array.shape} (take argmax of logits first)."
        )
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise JukeboxInputError(f"{metric}: {name} must be integer class ids, got dtype {array.dtype}.")
    return array


def _finite(array: np.ndarray, name: str, metric: str) -> None:
    if not np.all(np.isfinite(array)):
        raise JukeboxInputError(f"{metric}: {name} contains NaN or infinite values.")


# ----------------------------------------------------------------------------------------------- metrics


def accuracy(references: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Fraction of `predictions` (class ids) equal to `references` (class ids)."""
    refs = _class_ids(references, "references", "accuracy")
    preds = _class_ids(predictions, "predictions", "accuracy")
    _same_length(refs, preds, "accuracy")
    return {"accuracy": float(np.mean(refs == preds))}


def multilabel_scores(references: Any, predictions: Any, *, skip_constant_labels: bool = False) -> dict[str, float]:
    """Macro ROC-AUC and macro average precision of multi-label scores.

    Args:
        references: `(num_examples, num_labels)` multi-hot 0/1 targets.
        predictions: `(num_examples, num_labels)` scores (probabilities or logits: both metrics only use the
            order of the scores).
        skip_constant_labels: scikit-learn's ROC-AUC is undefined for a label that is all 0 or all 1 in
            `references` and raises; with `True` such labels are left out of both averages (small splits) and
            `num_labels_scored` says how many remained.

    Returns:
        `{"roc_auc", "average_precision", "num_labels_scored"}` (the first two as in JukeMIR:
        `sklearn.metrics.roc_auc_score(..., average="macro")`, `average_precision_score(..., average="macro")`).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    metric = "multilabel_scores"
    refs = _as_array(references, "references", metric)
    scores = _as_array(predictions, "predictions", metric).astype(np.float64)
    if refs.ndim != 2 or scores.ndim != 2 or refs.shape != scores.shape:
        raise JukeboxInputError(
            f"{metric}: references and predictions must both have shape (num_examples, num_labels), got "
            f"{refs.shape} and {scores.shape}."
        )
    if not np.isin(refs, (0, 1)).all():
        raise JukeboxInputError(f"{metric}: references must be multi-hot 0/1 values.")
    _finite(scores, "predictions", metric)
    refs = refs.astype(np.int64)
    positives = refs.sum(0)
    varying = (positives > 0) & (positives < len(refs))
    if not varying.all():
        if not skip_constant_labels:
            bad = np.flatnonzero(~varying).tolist()
            raise JukeboxInputError(
                f"{metric}: ROC-AUC is undefined for labels {bad[:10]} (all 0 or all 1 in references); pass "
                "skip_constant_labels=True to average over the other labels."
            )
        if not varying.any():
            raise JukeboxInputError(f"{metric}: every label is constant in references; nothing to score.")
        refs, scores = refs[:, varying], scores[:, varying]
    return {
        "roc_auc": float(roc_auc_score(refs, scores, average="macro")),
        "average_precision": float(average_precision_score(refs, scores, average="macro")),
        "num_labels_scored": float(refs.shape[1]),
    }


def r2_scores(references: Any, predictions: Any, *, output_names: Sequence[str] | None = None) -> dict[str, float]:
    """Coefficient of determination, averaged uniformly over outputs (`r2`) and per output (`<name>_r2`).

    `references` and `predictions` are `(num_examples,)` or `(num_examples, num_outputs)` floats;
    `output_names` (default `output_0`, ...) names the per-output entries, e.g. `arousal_r2`, `valence_r2`.
    """
    from sklearn.metrics import r2_score

    metric = "r2_scores"
    refs = _as_array(references, "references", metric).astype(np.float64)
    preds = _as_array(predictions, "predictions", metric).astype(np.float64)
    if refs.ndim == 1:
        refs = refs[:, None]
    if preds.ndim == 1:
        preds = preds[:, None]
    if refs.shape != preds.shape or refs.ndim != 2:
        raise JukeboxInputError(
            f"{metric}: references and predictions must have the same shape (num_examples, num_outputs), got "
            f"{np.shape(references)} and {np.shape(predictions)}."
        )
    if len(refs) < 2:
        raise JukeboxInputError(f"{metric}: R^2 needs at least 2 examples, got {len(refs)}.")
    _finite(refs, "references", metric)
    _finite(preds, "predictions", metric)
    names = list(output_names) if output_names is not None else [f"output_{i}" for i in range(refs.shape[1])]
    if len(names) != refs.shape[1]:
        raise JukeboxInputError(f"{metric}: got {len(names)} output_names for {refs.shape[1]} outputs.")
    result = {"r2": float(r2_score(refs, preds, multioutput="uniform_average"))}
    for i, name in enumerate(names):
        result[f"{name}_r2"] = float(r2_score(refs[:, i], preds[:, i]))
    return result


def key_scores(
    references: Sequence[str | int], predictions: Sequence[str | int], *, allow_descending_fifths: bool = False
) -> dict[str, float]:
    """MIREX key evaluation of paired key labels (indices 0..23 or strings like `"Eb minor"`).

    Returns the mean `weighted_score` (the primary number), `accuracy` (exact key) and the fraction of
    estimates in each relation (`correct`, `fifth`, `relative`, `parallel`, `other`).
    """
    metric = "key_scores"
    if isinstance(references, (str, bytes)) or isinstance(predictions, (str, bytes)):
        raise JukeboxInputError(f"{metric}: pass lists of keys, not a single string.")
    refs, preds = list(references), list(predictions)
    if not refs:
        raise JukeboxInputError(f"{metric}: references is empty; need at least one example.")
    if len(refs) != len(preds):
        raise JukeboxInputError(
            f"{metric}: references and predictions must have the same number of examples, got {len(refs)} and "
            f"{len(preds)}."
        )
    relations = [key_relation(r, p, allow_descending_fifths=allow_descending_fifths) for r, p in zip(refs, preds)]
    result = {
        "weighted_score": float(np.mean([KEY_SCORE_WEIGHTS[r] for r in relations])),
        "accuracy": float(np.mean([r == "correct" for r in relations])),
    }
    for name in KEY_SCORE_WEIGHTS:
        result[name] = float(np.mean([r == name for r in relations]))
    return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def aggregate_clip_logits(logits: Any, song_ids: Sequence[Any], strategy: str) -> tuple[list[Any], np.ndarray]:
    """Turn clip logits `(num_clips, num_classes)` into one class id per song.

    Strategies (JukeMIR's four): `vote` (most frequent clip argmax; ties go to the lowest class id),
    `max` (argmax of the element-wise max of the logits), `mean_logits` (argmax of the mean logits) and
    `mean_softmax` (argmax of the mean softmax probabilities).

    Returns:
        `(songs, predictions)`: song ids in sorted order and their predicted class ids.
    """
    if strategy not in AGGREGATION_STRATEGIES:
        raise JukeboxInputError(
            f"Unknown aggregation strategy {strategy!r}; choose one of {', '.join(AGGREGATION_STRATEGIES)}."
        )
    scores = _as_array(logits, "logits", "aggregate_clip_logits").astype(np.float64)
    if scores.ndim != 2:
        raise JukeboxInputError(f"aggregate_clip_logits: logits must be (num_clips, num_classes), got {scores.shape}.")
    song_ids = list(song_ids)
    if len(song_ids) != len(scores):
        raise JukeboxInputError(
            f"aggregate_clip_logits: got {len(song_ids)} song ids for {len(scores)} clips; pass one per clip."
        )
    groups: dict[Any, list[int]] = {}
    for i, song in enumerate(song_ids):
        groups.setdefault(song, []).append(i)
    songs = sorted(groups)
    probs = _softmax(scores) if strategy == "mean_softmax" else None
    preds = []
    for song in songs:
        idx = groups[song]
        if strategy == "vote":
            votes = np.bincount(scores[idx].argmax(1), minlength=scores.shape[1])
            preds.append(int(votes.argmax()))
        elif strategy == "max":
            preds.append(int(scores[idx].max(0).argmax()))
        elif strategy == "mean_logits":
            preds.append(int(scores[idx].mean(0).argmax()))
        else:
            preds.append(int(probs[idx].mean(0).argmax()))
    return songs, np.asarray(preds, dtype=np.int64)


def song_key_scores(
    references: Sequence[int],
    logits: Any,
    song_ids: Sequence[Any],
    *,
    strategies: Sequence[str] | None = None,
    allow_descending_fifths: bool = False,
) -> dict[str, float]:
    """Clip- and song-level MIREX key scores of clip `logits`, for each aggregation strategy.

    Args:
        references: key ids (0..23) of each clip; every clip of a song must carry the song's key.
        logits: `(num_clips, 24)` clip logits.
        song_ids: the song of each clip.
        strategies: aggregation strategies to score (default: all four).

    Returns:
        `clip_weighted_score`, `clip_accuracy` and, per strategy `s`, `s_weighted_score` and `s_accuracy`.
    """
    refs = _class_ids(references, "references", "song_key_scores")
    scores = _as_array(logits, "logits", "song_key_scores")
    _same_length(refs, scores, "song_key_scores")
    if scores.ndim != 2 or scores.shape[1] != 24:
        raise JukeboxInputError(f"song_key_scores: logits must be (num_clips, 24), got {scores.shape}.")
    song_ref: dict[Any, int] = {}
    for song, ref in zip(song_ids, refs.tolist()):
        if song_ref.setdefault(song, ref) != ref:
            raise JukeboxInputError(
                f"song_key_scores: song {song!r} has clips with different reference keys "
                f"({KEY_LABELS[song_ref[song]]} and {KEY_LABELS[ref]})."
            )
    clip = key_scores(refs, scores.argmax(1), allow_descending_fifths=allow_descending_fifths)
    result = {"clip_weighted_score": clip["weighted_score"], "clip_accuracy": clip["accuracy"]}
    for strategy in strategies or AGGREGATION_STRATEGIES:
        songs, preds = aggregate_clip_logits(scores, song_ids, strategy)
        song = key_scores([song_ref[s] for s in songs], preds, allow_descending_fifths=allow_descending_fifths)
        result[f"{strategy}_weighted_score"] = song["weighted_score"]
        result[f"{strategy}_accuracy"] = song["accuracy"]
    return result


def best_aggregation(validation_metrics: dict[str, float]) -> str:
    """The strategy with the highest song-level `<strategy>_weighted_score` (first one wins ties)."""
    present = [s for s in AGGREGATION_STRATEGIES if f"{s}_weighted_score" in validation_metrics]
    if not present:
        raise JukeboxInputError("best_aggregation: no '<strategy>_weighted_score' entries in the metrics given.")
    return max(present, key=lambda s: (validation_metrics[f"{s}_weighted_score"], -present.index(s)))


# ----------------------------------------------------------------------------------------------- task dispatch


def sigmoid(x: Any) -> np.ndarray:
    """Logistic function (numerically stable), turning multi-label logits into probabilities."""
    from scipy.special import expit

    return expit(np.asarray(x, dtype=np.float64))


def compute_task_metrics(
    task: Any,
    logits: Any,
    labels: Any,
    *,
    song_ids: Sequence[Any] | None = None,
    aggregation: str | None = None,
) -> dict[str, float]:
    """All metrics of `task` (a [`~hf_jukebox_mir.probing.tasks.MirTask`] or its name) for model outputs.

    Adds `primary`, the task's primary metric (the early-stopping / model-selection number). For song-level
    key tasks the primary metric is the song-level weighted score with `aggregation` (or, when `None`, the
    best strategy, as JukeMIR does on validation; the chosen one is reported as `aggregation`).
    """
    from .tasks import get_task

    task = get_task(task)
    logits = np.asarray(logits, dtype=np.float64)
    if task.problem_type == "single_label_classification":
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        preds = logits.argmax(-1)
        if task.metric_family == "key":
            result = dict(key_scores(labels, preds))
            if task.song_level:
                if song_ids is None:
                    raise JukeboxInputError(f"Task {task.name!r} is scored per song: pass song_ids (one per clip).")
                song = song_key_scores(labels, logits, song_ids)
                result = {**{f"clip_{k}": v for k, v in result.items()}, **song}
                chosen = aggregation or best_aggregation(song)
                if chosen not in AGGREGATION_STRATEGIES:
                    raise JukeboxInputError(
                        f"Unknown aggregation {chosen!r}; choose one of {', '.join(AGGREGATION_STRATEGIES)}."
                    )
                result["weighted_score"] = song[f"{chosen}_weighted_score"]
                result["accuracy"] = song[f"{chosen}_accuracy"]
                result["aggregation"] = chosen
        else:
            result = accuracy(labels, preds)
    elif task.problem_type == "multi_label_classification":
        result = multilabel_scores(np.asarray(labels), sigmoid(logits), skip_constant_labels=True)
    else:
        result = r2_scores(np.asarray(labels, dtype=np.float64), logits, output_names=task.label_names)
    result["primary"] = float(result[task.primary_metric])
    return result


def make_compute_metrics(
    task: Any, *, song_ids: Sequence[Any] | None = None, aggregation: str | None = None
) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` function for `transformers.Trainer` scoring `task` on one evaluation set.

    `song_ids` (one per example of the evaluation dataset, in order) is needed for song-level key tasks.
    The returned dict has the task's metrics plus `primary`; use `metric_for_best_model=task.primary_metric`.
    String entries (the chosen aggregation) are left out, since `Trainer` logs numbers only.
    """
    from .tasks import get_task

    task = get_task(task)

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        result = compute_task_metrics(
            task, logits, eval_prediction.label_ids, song_ids=song_ids, aggregation=aggregation
        )
        return {k: v for k, v in result.items() if isinstance(v, (int, float))}

    return compute_metrics


# ----------------------------------------------------------------------------------------------- evaluate modules

_DESCRIPTION = "Metrics of the JukeMIR probing protocol, computed by hf_jukebox_mir.probing.metrics."
_CITATION = """@inproceedings{castellon2021calm,
  title={Codified audio language modeling learns useful representations for music information retrieval},
  author={Castellon, Rodrigo and Donahue, Chris and Liang, Percy},
  booktitle={ISMIR},
  year={2021}
}"""


class AccuracyMetric(evaluate.Metric):
    """`evaluate` module: accuracy of class ids (`predictions`, `references`: int)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description="predictions, references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return accuracy(references, predictions)


class MultilabelMetric(evaluate.Metric):
    """`evaluate` module: macro ROC-AUC and AP (`predictions`: score lists, `references`: 0/1 lists)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description="predictions: per-label scores; references: multi-hot 0/1 lists",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, skip_constant_labels=False):
        return multilabel_scores(references, predictions, skip_constant_labels=skip_constant_labels)


class R2Metric(evaluate.Metric):
    """`evaluate` module: R^2 (uniform average and per output); floats or lists of floats."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description="predictions, references: floats, or equal-length lists of floats (one per output)",
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            ],
        )

    def _compute(self, predictions, references, output_names=None):
        return r2_scores(references, predictions, output_names=output_names)


class MirexKeyMetric(evaluate.Metric):
    """`evaluate` module: MIREX weighted key score of key ids (0..23, JukeMIR order) or key names."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description="predictions, references: key ids 0..23 (C major..B major, C minor..B minor) or names",
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, allow_descending_fifths=False):
        return key_scores(references, predictions, allow_descending_fifths=allow_descending_fifths)


EVALUATE_MODULES = ("accuracy", "multilabel", "r2", "mirex_key")


def metric_path(name: str) -> str:
    """Path of the packaged `evaluate` module `name` (give it to `evaluate.load`)."""
    if name not in EVALUATE_MODULES:
        raise JukeboxInputError(f"Unknown metric {name!r}; packaged metrics: {', '.join(EVALUATE_MODULES)}.")
    path = Path(__file__).resolve().parent / "evaluate_modules" / name / f"{name}.py"
    if not path.is_file():
        raise JukeboxInputError(f"The packaged metric script {path} is missing; reinstall hf-jukebox-mir.")
    return str(path)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of a packaged metric (offline; nothing is fetched)."""
    return evaluate.load(metric_path(name), **kwargs)


__all__ = [
    "AGGREGATION_STRATEGIES",
    "AccuracyMetric",
    "EVALUATE_MODULES",
    "KEY_LABELS",
    "KEY_SCORE_WEIGHTS",
    "MirexKeyMetric",
    "MultilabelMetric",
    "PITCH_CLASSES",
    "R2Metric",
    "accuracy",
    "aggregate_clip_logits",
    "best_aggregation",
    "compute_task_metrics",
    "key_relation",
    "key_scores",
    "key_to_index",
    "load_metric",
    "make_compute_metrics",
    "metric_path",
    "mirex_key_score",
    "multilabel_scores",
    "r2_scores",
    "sigmoid",
    "song_key_scores",
]
