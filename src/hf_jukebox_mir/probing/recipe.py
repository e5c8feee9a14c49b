"""The JukeMIR probing protocol on one task, end to end: [`run_probe_task`].

The one implementation of the recipe: `jukebox-mir probe` and `jukebox-mir demo` both call it, and so can a
script or a notebook.

Steps: build the benchmark from the local copy (`mir_datasets`; the synthetic tasks generate their data into
`data` when it is empty), extract clip embeddings once (chroma, or Jukebox from a converted `model` folder) and
cache them under `output/embeddings/`, train a probe per grid configuration and layer, select on validation,
evaluate once on test, and write `results.json`, `results.md`, `plot.png` and `best_probe/` to `output`. A
re-run with the same `output` resumes an interrupted grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models.errors import JukeboxInputError
from .reports import ProbeResults
from .tasks import MirTask, get_task

GRIDS = ("small", "jukemir")
SCHEDULES = ("epochs", "jukemir")
RESULT_FILES = ("results.json", "results.md", "plot.png", "grid_state.json")


def run_probe_task(
    task: str | MirTask,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    layers: list[int] | None = None,
    grid: str = "small",
    schedule: str = "epochs",
    max_epochs: float | None = None,
    patience: int | None = None,
    seed: int = 0,
    allow_missing: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    force: bool = False,
    max_windows: int | None = None,
    window_hop: int | None = None,
    layer_weighting: bool = False,
    seeds: int = 1,
    recipe: str | None = None,
) -> ProbeResults:
    """Probe one MIR task with chroma features (`model=None`) or a converted Jukebox `model` folder.

    Args:
        task: a task name (`gtzan`, `magnatagatune`, `giantsteps`, `emomusic`, `synthetic_key`,
            `synthetic_instruments`) or a [`MirTask`]; resolved once here and passed inward.
        data: the local copy of the benchmark in its official layout (synthetic tasks: a folder to generate into
            or reuse).
        output: folder for results, the selected probe and the embedding cache.
        model, layers: a converted Jukebox MIR folder and the prior layers to probe (1-indexed; default: its last).
        grid: "small" (4 configurations) or "jukemir" (216, as in the paper).
        schedule: "epochs" (evaluate every epoch, patience 10) or "jukemir" (every 8 steps, patience 256);
            `max_epochs` and `patience` override it.
        seed, allow_missing, batch_size, device, force: seed of the synthetic data and the probes; load only the
            clips present locally; clips per embedding call; device of the Jukebox extraction; overwrite results.
        max_windows, window_hop: windowing of each clip for `model` (`max_windows=1`: JukeMIR's first window only;
            default: every window, averaged with weights proportional to their real frames).
        layer_weighting: with several layers, also probe a learned softmax-weighted sum of all of them.
        seeds: retrain the selected configuration with this many seeds (mean and spread in the results).
        recipe: the name of the protocol the caller applied (`"jukemir"`), recorded in `extraction`.

    With `model`, the selected probe is also written as an audio classifier (`output/model/`: the MIR model and
    the head in one folder; [`ProbeResults.classifier_dir`]). The dataset coverage (files found / expected per
    split), the seeds, the extraction settings and the environment are recorded in the results.

    Returns:
        The [`ProbeResults`] written to `output/results.json`.
    """
    task = get_task(task) if isinstance(task, str) else task
    data, output = Path(data).expanduser(), Path(output).expanduser()
    synthetic = task.loader == "load_synthetic"
    if not synthetic and not data.is_dir():
        raise JukeboxInputError(f"--data {data} does not exist. Expected layout for {task.name}: {task.layout}.")
    if (output / "results.json").is_file() and not force:
        raise JukeboxInputError(f"--output {output} already holds results.json; pass --force or another folder.")
    if model is not None and not Path(model).expanduser().is_dir():
        raise JukeboxInputError(f"--model {model} is not a folder (expected a converted Jukebox model).")
    if layers is not None and model is None:
        raise JukeboxInputError("--layers selects Jukebox prior layers; it needs --model.")
    if patience is not None and patience < 1:
        raise JukeboxInputError(f"--patience must be >= 1, got {patience}.")
    if (max_windows is not None or window_hop is not None) and model is None:
        raise JukeboxInputError("--max-windows / --window-hop window the audio for --model; they need --model.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise JukeboxInputError(f"--seeds must be >= 1, got {seeds}.")
    if grid not in GRIDS or schedule not in SCHEDULES:
        raise JukeboxInputError(
            f"grid must be one of {GRIDS} and schedule one of {SCHEDULES}, got {grid!r}, {schedule!r}."
        )

    from .mir_datasets import dataset_coverage, load_benchmark
    from .training import JUKEMIR_SCHEDULE, ProbeSchedule, cache_embeddings, run_probe_grid

    if force:
        for name in RESULT_FILES:
            (output / name).unlink(missing_ok=True)
    if synthetic and not (data / "synthetic_mir.json").is_file():
        from .synthetic_mir import generate_synthetic_mir

        print(f"Generating the synthetic benchmark into {data} (seed {seed})")
        dataset = generate_synthetic_mir(data, task=task.name, seed=seed)
    else:
        dataset = load_benchmark(task, data, allow_missing=allow_missing)
    print(", ".join(f"{name}: {len(split)} clips" for name, split in dataset.items()))
    coverage = dataset_coverage(task, dataset)
    if not coverage["complete"]:
        found = ", ".join(f"{k} {v['found']}/{v['expected']}" for k, v in coverage["splits"].items())
        print(f"WARNING: incomplete dataset (found/expected: {found}); results say so.")

    embed_fn: Any
    if model is not None:
        from ..extraction import make_embed_fn

        embed_fn = make_embed_fn(model, layers=layers, device=device, max_windows=max_windows, window_hop=window_hop)
        source = Path(model).name
    else:
        from .chroma import ChromaEmbedder

        embed_fn = ChromaEmbedder()
        source = "chroma"
    layer_tag = "" if layers is None else "-layers" + "_".join(str(i) for i in layers)
    layer_tag += "" if max_windows is None else f"-maxwin{max_windows}"
    layer_tag += "" if window_hop is None else f"-hop{window_hop}"
    cache = output / "embeddings" / f"{task.name}-{source}{layer_tag}"
    dataset = cache_embeddings(dataset, embed_fn, batch_size=batch_size, cache_dir=cache)

    base = JUKEMIR_SCHEDULE if schedule == "jukemir" else ProbeSchedule()
    probe_schedule = ProbeSchedule(
        max_epochs=max_epochs if max_epochs is not None else base.max_epochs,
        max_steps=base.max_steps,
        eval_steps=base.eval_steps,
        patience=patience if patience is not None else base.patience,
        seed=seed,
        save_total_limit=base.save_total_limit,
        eval_batch_size=base.eval_batch_size,
    )
    layer_names = getattr(embed_fn, "layer_names", None)
    extraction = {
        "source": source,
        "model": str(model) if model is not None else None,
        "layers": list(layer_names) if layer_names is not None else None,
        "max_windows": max_windows,
        "window_hop": window_hop,
        "recipe": recipe,
    }
    results = run_probe_grid(
        dataset,
        task,
        output,
        grid=grid,
        schedule=probe_schedule,
        layer_names=list(layer_names) if layer_names is not None else None,
        feature_source=source,
        coverage=coverage,
        seeds=seeds,
        extraction=extraction,
        layer_weighting=layer_weighting,
    )
    if model is not None:
        from .classifier import save_audio_classifier

        classifier = save_audio_classifier(output, model, results, max_windows=max_windows, window_hop=window_hop)
        results.classifier_dir = str(classifier)
        results.write(output)
    return results


__all__ = ["run_probe_task"]
