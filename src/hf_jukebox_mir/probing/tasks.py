"""Registry of MIR probing tasks: labels, problem type, metrics, primary metric and local layout.

The four JukeMIR tasks (Castellon et al., ISMIR 2021) and two generated offline tasks:

| name | data | problem type | primary metric |
|---|---|---|---|
| `gtzan` | GTZAN genre, fault-filtered split (443 / 197 / 290) | single-label, 10 genres | accuracy |
| `magnatagatune` | MagnaTagATune top-50 tags (18,706 / 1,825 / 5,329 clips) | multi-label, 50 tags | macro ROC-AUC |
| `giantsteps` | GiantSteps MTG key (train / valid) + GiantSteps key (test), 30 s clips, scored per song | single-label, 24 keys | MIREX weighted score |
| `emomusic` | Emomusic (504 / 115 / 125), z-scored static arousal / valence | regression, 2 outputs | R^2 |
| `synthetic_key` | generated chord cadences (see `synthetic_mir`), scored per song | single-label, 24 keys | MIREX weighted score |
| `synthetic_instruments` | same audio: which generated timbres play | multi-label | macro ROC-AUC |

[`get_task`] accepts the names above and the JukeMIR dataset names (`gtzan_ff`, `giantsteps_clips`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.errors import JukeboxInputError
from .keys import KEY_LABELS

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")

#: MagnaTagATune top-50 tags in JukeMIR's output order.
MAGNATAGATUNE_TOP50 = (
    "guitar",
    "classical",
    "slow",
    "techno",
    "strings",
    "drums",
    "electronic",
    "rock",
    "fast",
    "piano",
    "ambient",
    "beat",
    "violin",
    "vocal",
    "synth",
    "female",
    "indian",
    "opera",
    "male",
    "singing",
    "vocals",
    "no vocals",
    "harpsichord",
    "loud",
    "quiet",
    "flute",
    "woman",
    "male vocal",
    "no vocal",
    "pop",
    "soft",
    "sitar",
    "solo",
    "man",
    "classic",
    "choir",
    "voice",
    "new age",
    "dance",
    "male voice",
    "female vocal",
    "beats",
    "harp",
    "cello",
    "no voice",
    "weird",
    "country",
    "metal",
    "female voice",
    "choral",
)

EMOMUSIC_OUTPUTS = ("arousal", "valence")

#: Timbres of the generated benchmark (`synthetic_mir`), in label order.
SYNTHETIC_INSTRUMENTS = ("organ", "flute", "brass", "pluck", "bell")

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class MirTask:
    """One probing task.

    Attributes:
        name: registry name.
        description: one line.
        problem_type: `single_label_classification`, `multi_label_classification` or `regression`
            (the probe's `config.problem_type`).
        label_names: class names, tag names or regression output names, in output order.
        metric_family: `accuracy`, `key`, `multilabel` or `regression` (which `metrics` functions score it).
        primary_metric: the metric used for early stopping and model selection.
        greater_is_better: direction of `primary_metric`.
        label_column: dataset column holding targets (`label`: class id; `labels`: float vector).
        song_level: clips are grouped by `song_id` and scored per song after aggregating clip predictions.
        loader: name of the `mir_datasets` function building the `DatasetDict` from a local copy.
        layout: the expected local layout (shown in error messages).
        expected_sizes: official split sizes (clips) of the full benchmark, `None` when generated.
        jukemir_components: metrics averaged (x100) into the task's score in JukeMIR's "average" column.
        evaluate_modules: packaged `evaluate` modules that compute the metrics.
    """

    name: str
    description: str
    problem_type: str
    label_names: tuple[str, ...]
    metric_family: str
    primary_metric: str
    greater_is_better: bool = True
    label_column: str = "label"
    song_level: bool = False
    loader: str = ""
    layout: str = ""
    expected_sizes: dict[str, int] | None = None
    jukemir_components: tuple[str, ...] = ()
    evaluate_modules: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_labels(self) -> int:
        """Number of classes, tags or regression outputs."""
        return len(self.label_names)

    @property
    def chance_level(self) -> dict[str, float]:
        """Expected primary-metric value of uninformed predictions (uniform random class / constant scores)."""
        if self.metric_family == "accuracy":
            return {"accuracy": 1.0 / self.num_labels}
        if self.metric_family == "key":
            # Uniform random key: 1 correct, 1 fifth, 1 relative, 1 parallel out of 24.
            return {"weighted_score": (1.0 + 0.5 + 0.3 + 0.2) / 24, "accuracy": 1.0 / 24}
        if self.metric_family == "multilabel":
            return {"roc_auc": 0.5}
        return {"r2": 0.0}


def jukemir_task_score(task: str | MirTask, metrics: dict[str, float]) -> float:
    """The task's number in JukeMIR's "average" column: the mean of its components, times 100.

    GTZAN: accuracy; MagnaTagATune: mean(ROC-AUC, AP); GiantSteps: weighted score; Emomusic:
    mean(arousal R^2, valence R^2).
    """
    task = get_task(task)
    missing = [m for m in task.jukemir_components if m not in metrics]
    if missing:
        raise JukeboxInputError(f"jukemir_task_score({task.name}): metrics lack {missing}; got {sorted(metrics)}.")
    return 100.0 * sum(float(metrics[m]) for m in task.jukemir_components) / len(task.jukemir_components)


_TASKS: dict[str, MirTask] = {}


def register_task(task: MirTask) -> MirTask:
    """Add `task` (and its aliases) to the registry; re-registering a name replaces it."""
    _TASKS[task.name] = task
    return task


register_task(
    MirTask(
        name="gtzan",
        description="GTZAN music genre, fault-filtered split of Kereliuk et al. 2015 (JukeMIR 'gtzan_ff')",
        problem_type="single_label_classification",
        label_names=GTZAN_GENRES,
        metric_family="accuracy",
        primary_metric="accuracy",
        loader="load_gtzan",
        layout="ROOT/genres/<genre>/<genre>.000NN.wav (the genres.tar.gz archive unpacked; ROOT may also be the "
        "'genres' folder itself)",
        expected_sizes={"train": 443, "validation": 197, "test": 290},
        jukemir_components=("accuracy",),
        evaluate_modules=("accuracy",),
        aliases=("gtzan_ff", "gtzan_genre"),
    )
)

register_task(
    MirTask(
        name="magnatagatune",
        description="MagnaTagATune top-50 tags, split by mp3 folder (0-b train, c valid, d-f test)",
        problem_type="multi_label_classification",
        label_names=MAGNATAGATUNE_TOP50,
        metric_family="multilabel",
        primary_metric="roc_auc",
        label_column="labels",
        loader="load_magnatagatune",
        layout="ROOT/annotations_final.csv and ROOT/mp3/<0-f>/<name>.mp3 (or ROOT/<0-f>/<name>.mp3), as in the "
        "official mp3.zip + annotations_final.csv",
        expected_sizes={"train": 18706, "validation": 1825, "test": 5329},
        jukemir_components=("roc_auc", "average_precision"),
        evaluate_modules=("multilabel",),
        aliases=("mtt", "magnatagatune_top50"),
    )
)

register_task(
    MirTask(
        name="giantsteps",
        description=(
            "Global key: GiantSteps MTG key (train/valid) and GiantSteps key (test), 30 s clips, per-song score"
        ),
        problem_type="single_label_classification",
        label_names=KEY_LABELS,
        metric_family="key",
        primary_metric="weighted_score",
        song_level=True,
        loader="load_giantsteps",
        layout="ROOT/giantsteps-mtg-key-dataset/{annotations/annotations.txt, audio/<id>.LOFI.mp3} and "
        "ROOT/giantsteps-key-dataset/{annotations/key/<id>.LOFI.key, audio/<id>.LOFI.mp3} (the two GitHub "
        "repositories with their audio_dl.sh downloads)",
        expected_sizes={"train": 3687, "validation": 942, "test": 2406},
        jukemir_components=("weighted_score",),
        evaluate_modules=("mirex_key",),
        aliases=("giantsteps_clips", "giantsteps_key", "key"),
    )
)

register_task(
    MirTask(
        name="emomusic",
        description="Emomusic (MediaEval 2013) static arousal and valence, z-scored with the development-set stats",
        problem_type="regression",
        label_names=EMOMUSIC_OUTPUTS,
        metric_family="regression",
        primary_metric="r2",
        label_column="labels",
        loader="load_emomusic",
        layout="ROOT/clips_45seconds/<song_id>.mp3 and ROOT/static_annotations.csv (or "
        "ROOT/annotations/static_annotations.csv), from clips_45sec.tar.gz and annotations.tar.gz",
        expected_sizes={"train": 504, "validation": 115, "test": 125},
        jukemir_components=("arousal_r2", "valence_r2"),
        evaluate_modules=("r2",),
        aliases=("emo", "emomusic_static"),
    )
)

register_task(
    MirTask(
        name="synthetic_key",
        description="Generated offline benchmark: key/mode of chord cadences with a scale melody, per-song score",
        problem_type="single_label_classification",
        label_names=KEY_LABELS,
        metric_family="key",
        primary_metric="weighted_score",
        song_level=True,
        loader="load_synthetic",
        layout="ROOT/metadata.csv, ROOT/synthetic_mir.json and ROOT/audio/<split>/<song_id>.wav, as written by "
        "hf_jukebox_mir.probing.synthetic_mir.generate_synthetic_mir",
        jukemir_components=("weighted_score",),
        evaluate_modules=("mirex_key",),
    )
)

register_task(
    MirTask(
        name="synthetic_instruments",
        description="Generated offline benchmark: which synthetic timbres play (multi-label)",
        problem_type="multi_label_classification",
        label_names=SYNTHETIC_INSTRUMENTS,
        metric_family="multilabel",
        primary_metric="roc_auc",
        label_column="labels",
        loader="load_synthetic",
        layout="ROOT/metadata.csv, ROOT/synthetic_mir.json and ROOT/audio/<split>/<song_id>.wav, as written by "
        "hf_jukebox_mir.probing.synthetic_mir.generate_synthetic_mir",
        jukemir_components=("roc_auc", "average_precision"),
        evaluate_modules=("multilabel",),
    )
)


def list_tasks() -> list[str]:
    """Registered task names."""
    return sorted(_TASKS)


def get_task(task: str | MirTask) -> MirTask:
    """The task called `task` (a registry name or alias), or `task` itself when already a [`MirTask`]."""
    if isinstance(task, MirTask):
        return task
    if isinstance(task, str):
        key = task.strip().lower()
        if key in _TASKS:
            return _TASKS[key]
        for candidate in _TASKS.values():
            if key in candidate.aliases:
                return candidate
    raise JukeboxInputError(f"Unknown task {task!r}; choose one of {', '.join(list_tasks())}.")


def jukemir_average(scores: dict[str, float]) -> float:
    """JukeMIR's "average" column: mean of per-task scores from [`jukemir_task_score`] (task name -> score)."""
    if not scores:
        raise JukeboxInputError("jukemir_average needs at least one task score.")
    return sum(scores.values()) / len(scores)


__all__ = [
    "EMOMUSIC_OUTPUTS",
    "GTZAN_GENRES",
    "MAGNATAGATUNE_TOP50",
    "MirTask",
    "SPLITS",
    "SYNTHETIC_INSTRUMENTS",
    "get_task",
    "jukemir_average",
    "jukemir_task_score",
    "list_tasks",
    "register_task",
]
