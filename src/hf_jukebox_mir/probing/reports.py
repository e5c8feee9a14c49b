"""Probe results: `results.json` as one dataclass ([`ProbeResults`]), written and read by the same code, and the
reports made from it (`results.md`, `plot.png`).

`run_probe_grid` writes it, `jukebox-mir probe` / `demo` print it, model cards are built from it
(`publishing.cards.load_probe_results`). Version 1 of the file is this dataclass as JSON.
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
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=json_default) + "\n"

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


def results_markdown(results: Sequence[ProbeResults]) -> str:
    """Markdown report of one or several `run_probe_grid` results (one row per task).

    The `JukeMIR score` column is each task's number in JukeMIR's "average" (x100: accuracy; mean of
    ROC-AUC and AP; weighted key score; mean of arousal and valence R^2); `Average` is their mean.
    """
    lines = ["# Probe results", ""]
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
    if len(results.per_layer) > 1:
        names = [row["layer_name"] for row in results.per_layer]
        values = [row["validation_primary"] for row in results.per_layer]
        ax.plot(range(len(names)), values, marker="o")
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 12 else 0)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"best validation {metric}")
        ax.set_title(f"{results.task}: validation {metric} per layer")
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


__all__ = ["RESULTS_FILE", "SCHEMA_VERSION", "ProbeResults", "json_default", "results_markdown", "write_plot"]
