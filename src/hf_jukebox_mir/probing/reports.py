"""Probe results: `results.json` as one dataclass ([`ProbeResults`]), written and read by the same code, and the
reports made from it (`results.md`, `plot.png`).

`run_probe_grid` writes it, `jukebox-mir probe` / `demo` print it, model cards are built from it
(`publishing.cards.load_probe_results`), the audio classifier of a probe run carries it. Version 1 of the file is
this dataclass as JSON; the fields added later (coverage, seeds, extraction, environment, layer weighting, the
classifier folder) have defaults, so files written before them still read.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..models.errors import JukeboxInputError

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1


def json_default(value: Any):
    """`json.dumps` default for numpy scalars and paths."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class ProbeResults:
    """What one probing run found (`results.json`).

    Attributes:
        task, description: the MIR task (`probing.tasks`).
        feature_source: what the embeddings came from (`"chroma"`, a model folder's name).
        primary_metric, greater_is_better, chance_level: the task's selection metric and its chance scores.
        grid, num_configs, layers, schedule, split_sizes: the search (grid name, configurations per layer, the
            layers probed, the training schedule, clips per split).
        best: the selected run: `run_key`, `layer`, `layer_name`, `hparams`, `best_step`, `aggregation` (song-level
            tasks), `validation` and `test` metrics (each with its `primary` value).
        jukemir_score: the task's number in JukeMIR's average (x100).
        per_layer: best validation score and hyperparameters per layer.
        runs: every configuration's record (without its evaluation history).
        model_dir: the selected probe (`from_pretrained`-loadable); plot: `plot.png` or `None`.
        layer_weighting: whether a learned softmax-weighted sum of all layers was probed too (its `per_layer` row
            is named `"weighted"` and holds the learned `layer_weights`; one-layer rows have `layer_weights` None).
        coverage: files found / expected per split (`mir_datasets.dataset_coverage`: `{"splits": {split:
            {"found", "expected"}}, "complete"}`); `None` when not recorded. An incomplete dataset is named in
            `results.md` and cards.
        seeds: the selected configuration's test score over seeds: `{"seeds", "test_primary", "mean", "std"}`
            (sample standard deviation; the selected probe itself is the first seed's).
        extraction: how the features were made (`source`, `model`, `layers`, `max_windows`, `window_hop`,
            `recipe`), as the caller gave it.
        environment: package and library `versions`, `python`, `torch_threads` and `seed` of the run.
        classifier_dir: the audio classifier written from the selected probe (`probe --model`), or `None`.

    `from_dict` refuses any other layout (another `schema_version`, unknown or missing fields) with a message
    naming what differs.
    """

    task: str
    description: str
    feature_source: str | None
    primary_metric: str
    greater_is_better: bool
    chance_level: dict[str, float]
    grid: str
    num_configs: int
    layers: list[str]
    schedule: dict[str, Any]
    split_sizes: dict[str, int]
    best: dict[str, Any]
    jukemir_score: float
    per_layer: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    model_dir: str | None = None
    plot: str | None = None
    layer_weighting: bool = False
    coverage: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None
    extraction: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    classifier_dir: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        """False when some split has fewer clips than the official benchmark (`coverage`)."""
        return bool(self.coverage is None or self.coverage.get("complete", True))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (what `results.json` holds)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=json_default) + "\n"

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / RESULTS_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = RESULTS_FILE) -> ProbeResults:
        """Parse version 1 of the file; any other layout is refused with a message naming what differs."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
            raise JukeboxInputError(
                f"{where} is not version-{SCHEMA_VERSION} probe results (schema_version: {found!r}); run "
                "`jukebox-mir probe` again to write current results."
            )
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if _is_required(f)}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise JukeboxInputError(f"{where}: unexpected field(s) {unknown} / missing field(s) {missing}.")
        return cls(**data)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ProbeResults:
        """The results in `path` (a `results.json`, or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.is_file():
            raise JukeboxInputError(f"Probe results not found: {path}. Pass the results.json of a probe run.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise JukeboxInputError(f"{path} is not valid JSON: {err}.") from None
        return cls.from_dict(data, where=str(path))


def _is_required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


#: the `layer_name` of the learned weighted layer sum in grids, reports and plots
WEIGHTED = "weighted"


def coverage_note(results: ProbeResults) -> str | None:
    """ "INCOMPLETE dataset (files found/expected: train 80/443, ...)" when some split of `results` is incomplete."""
    if results.complete:
        return None
    splits = (results.coverage or {}).get("splits", {})
    parts = [f"{name} {v['found']}/{v['expected']}" for name, v in splits.items()]
    return "INCOMPLETE dataset (files found/expected: " + ", ".join(parts) + ")"


def results_markdown(results: Sequence[ProbeResults]) -> str:
    """Markdown report of one or several `run_probe_grid` results (one row per task).

    The `JukeMIR score` column is each task's number in JukeMIR's "average" (x100: accuracy; mean of
    ROC-AUC and AP; weighted key score; mean of arousal and valence R^2); `Average` is their mean.
    """
    notes = [note for note in (coverage_note(r) for r in results) if note]
    lines = ["# Probe results" + (" (INCOMPLETE dataset)" if notes else ""), ""]
    for r in results:
        note = coverage_note(r)
        if note:
            lines += [f"**{r.task}: {note}.** These numbers are not comparable with published ones.", ""]
    lines.append("| task | features | layer | probe | val primary | test metrics | JukeMIR score |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        best = r.best
        hp = best["hparams"]
        probe = ("linear" if hp["hidden_size"] is None else f"MLP {hp['hidden_size']}") + (
            f", {'std' if hp['standardize'] else 'raw'}, bs {hp['batch_size']}, lr {hp['learning_rate']:g}, "
            f"dropout {hp['dropout']:g}, wd {hp['weight_decay']:g}"
        )
        test = best["test"]
        shown = [
            m
            for m in (r.primary_metric, "accuracy", "average_precision", "arousal_r2", "valence_r2")
            if m in test and isinstance(test[m], (int, float))
        ]
        metrics = ", ".join(f"{m} {test[m]:.4f}" for m in dict.fromkeys(shown))
        if best.get("aggregation"):
            metrics += f" (song-level, {best['aggregation']})"
        lines.append(
            f"| {r.task} | {r.feature_source or '-'} | {best['layer_name']} | {probe} | "
            f"{r.primary_metric} {best['validation']['primary']:.4f} | {metrics} | {r.jukemir_score:.1f} |"
        )
    if len(results) > 1:
        average = sum(r.jukemir_score for r in results) / len(results)
        lines += ["", f"**Average** (JukeMIR definition, over {len(results)} tasks): {average:.1f}"]
    for r in results:
        seeds = r.seeds or {}
        if len(seeds.get("seeds", [])) > 1:
            lines += [
                "",
                f"{r.task}: selected configuration over {len(seeds['seeds'])} seeds: test {r.primary_metric} "
                f"{seeds['mean']:.4f} +- {seeds['std']:.4f} (mean +- sample std).",
            ]
        env = r.environment or {}
        if env:
            versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
            lines += ["", f"Environment: {versions}; torch threads {env.get('torch_threads')}; seed {env.get('seed')}."]
        splits = (r.coverage or {}).get("splits")
        if splits:
            found = ", ".join(f"{k} {v['found']}/{v['expected']}" for k, v in splits.items())
            lines += ["", f"Dataset coverage (files found / expected): {found}."]
    for r in results:
        chance = ", ".join(f"{k} {v:.4f}" for k, v in r.chance_level.items())
        plural = "s" if r.num_configs != 1 else ""
        lines += [
            "",
            f"## {r.task}: {r.num_configs} configuration{plural} ({r.grid} grid) per layer",
            "",
            f"Chance level: {chance}. Split sizes: " + ", ".join(f"{k} {v}" for k, v in r.split_sizes.items()) + ".",
            "",
            f"| layer | best validation {r.primary_metric} | probe |",
            "|---|---|---|",
        ]
        for row in r.per_layer:
            hp = row["hparams"]
            probe = "linear" if hp["hidden_size"] is None else f"MLP {hp['hidden_size']}"
            lines.append(
                f"| {row['layer_name']} | {row['validation_primary']:.4f} | {probe}, lr {hp['learning_rate']:g}, "
                f"dropout {hp['dropout']:g} |"
            )
    return "\n".join(lines) + "\n"


def write_plot(results: ProbeResults, eval_history: Sequence[Sequence[float]], path: str | Path) -> Path | None:
    """PNG: validation score per layer (several layers) or the selected run's validation curve (one layer).

    Returns the path, or `None` (with a warning) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: skipping the plot (pip install 'hf-jukebox-mir[plot]').", stacklevel=2
        )
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    metric = results.primary_metric
    single = [row for row in results.per_layer if row["layer_name"] != WEIGHTED]
    weighted = next((row for row in results.per_layer if row["layer_name"] == WEIGHTED), None)
    if len(single) > 1 or weighted is not None:
        names = [row["layer_name"] for row in single]
        values = [row["validation_primary"] for row in single]
        ax.plot(range(len(names)), values, marker="o", label="one layer")
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 12 else 0)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"best validation {metric}")
        ax.set_title(f"{results.task}: validation {metric} per layer")
        if weighted is not None:
            ax.axhline(weighted["validation_primary"], color="green", linestyle="--", label="learned weighted sum")
            if weighted.get("layer_weights"):
                twin = ax.twinx()
                twin.bar(range(len(names)), weighted["layer_weights"], alpha=0.25, color="green")
                twin.set_ylabel("learned layer weight (softmax)")
            ax.legend(loc="lower right")
    else:
        steps = [int(s) for s, _ in eval_history]
        values = [float(v) for _, v in eval_history]
        ax.plot(steps, values, marker=".")
        if results.best.get("best_step") is not None:
            ax.axvline(results.best["best_step"], color="gray", linestyle="--", label="selected checkpoint")
            ax.legend()
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{results.task}: validation curve of the selected probe")
    for name, value in results.chance_level.items():
        if name == metric:
            ax.axhline(value, color="red", linestyle=":", linewidth=1)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = [
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "WEIGHTED",
    "ProbeResults",
    "coverage_note",
    "json_default",
    "results_markdown",
    "write_plot",
]
