"""`jukebox-mir probe`: the JukeMIR probing protocol on one task, end to end (`probing.recipe.run_probe_task`).

    jukebox-mir probe --task gtzan --data ~/data/gtzan --model ./jukebox-5b-mir --grid jukemir --output runs/gtzan
    jukebox-mir probe --task synthetic_key --data ./synthetic --features chroma --output runs/synthetic

Steps: build the benchmark from the local copy (`mir_datasets`; the synthetic tasks generate their data
into `--data` when it is empty), extract clip embeddings once (chroma, or Jukebox via `--model`) and cache
them under `OUTPUT/embeddings/`, train a probe per grid configuration and layer, select on validation,
evaluate once on test, and write `results.json`, `results.md`, `plot.png` and `best_probe/` to `--output`;
with `--model`, also `model/`: the MIR model and the selected head in one folder (an audio classifier for
`pipeline("audio-classification")` and `jukebox-mir push`). `--recipe jukemir` runs the paper's protocol exactly.
A re-run with the same `--output` resumes an interrupted grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..models.errors import JukeboxInputError

#: `--recipe jukemir`: the paper's protocol (Castellon et al. 2021): layer 36, the first 23.78 s window only,
#: the 216-configuration grid, evaluation every 8 steps with patience 256, selection on validation.
JUKEMIR_RECIPE: dict[str, Any] = {"grid": "jukemir", "schedule": "jukemir", "max_windows": 1, "layer": 36}


def apply_recipe(args: argparse.Namespace) -> list[str]:
    """Fill `args` from `--recipe` (refusing options that contradict it); returns what was set, for the log."""
    if args.recipe is None:
        args.grid = args.grid or "small"
        args.schedule = args.schedule or "epochs"
        return []
    recipe = JUKEMIR_RECIPE
    for name in ("grid", "schedule", "max_windows"):
        given = getattr(args, name)
        if given is not None and given != recipe[name]:
            option = "--" + name.replace("_", "-")
            raise JukeboxInputError(
                f"--recipe jukemir sets {option} {recipe[name]} (the paper's protocol); drop {option} {given} or drop "
                "--recipe."
            )
    if args.window_hop is not None:
        raise JukeboxInputError("--recipe jukemir uses the first window only; drop --window-hop.")
    args.grid, args.schedule = recipe["grid"], recipe["schedule"]
    notes = [f"grid {recipe['grid']} (216 configurations)", "schedule jukemir (eval every 8 steps, patience 256)"]
    if args.model is not None:
        args.max_windows = recipe["max_windows"]
        notes.append("the first window of each clip only (max_windows=1)")
        if args.layers is None:
            from ..models.configuration_jukebox_mir import JukeboxMIRConfig

            depth = JukeboxMIRConfig.from_pretrained(str(args.model)).num_hidden_layers
            args.layers = [min(recipe["layer"], depth)]
            notes.append(
                f"layer {args.layers[0]}"
                + ("" if depth >= recipe["layer"] else f" (the folder keeps {depth} blocks; JukeMIR uses 36)")
            )
    return notes


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `probe` on the `jukebox-mir` sub-command parser."""
    parser = subparsers.add_parser(
        "probe",
        help="train and evaluate probes on an MIR benchmark (JukeMIR protocol)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task",
        required=True,
        help="gtzan, magnatagatune, giantsteps, emomusic, synthetic_key or synthetic_instruments; "
        "frame level: beats, chords (a corpus ROOT/<split>/<track>.wav + .beats/.lab), "
        "ballroom_beats, synthetic_beats, synthetic_chords",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="local copy of the benchmark in its official layout (synthetic tasks: folder to generate into or reuse)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--features",
        choices=["chroma", "onset", "onset+chroma"],
        help="built-in feature instead of a model (default when --model is not given: chroma; "
        "onset and onset+chroma for frame-level tasks)",
    )
    source.add_argument("--model", help="converted Jukebox model folder to extract embeddings with")
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        help="prior layers to extract with --model (1-indexed, e.g. 36); each one is probed",
    )
    parser.add_argument(
        "--recipe",
        choices=["jukemir"],
        default=None,
        help="'jukemir': the paper's protocol exactly: layer 36, first 23.78 s window only, 216-config "
        "grid, its schedule, selection on validation",
    )
    parser.add_argument(
        "--grid",
        default=None,
        choices=["small", "jukemir"],
        help="probe grid: 'small' (4 configurations, the default) or 'jukemir' (216, as in the paper)",
    )
    parser.add_argument(
        "--schedule",
        default=None,
        choices=["epochs", "jukemir"],
        help="'epochs' (default): evaluate every epoch, patience 10; 'jukemir': every 8 steps, patience 256",
    )
    parser.add_argument(
        "--max-windows",
        type=int,
        default=None,
        metavar="N",
        help="with --model: keep only the first N windows of each clip (1 = JukeMIR; default: every "
        "window, averaged with weights proportional to their real frames)",
    )
    parser.add_argument(
        "--window-hop",
        type=int,
        default=None,
        metavar="SAMPLES",
        help="with --model: samples between window starts (multiple of 128; default: no overlap)",
    )
    parser.add_argument(
        "--layer-weighting",
        action="store_true",
        help="with several --layers: also probe a learned softmax-weighted sum of all of them "
        "(MERT/MARBLE style); its weights are reported and plotted",
    )
    parser.add_argument(
        "--frame-rate",
        type=float,
        default=50.0,
        metavar="HZ",
        help="frame-level tasks: feature frames per second (default 50)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="retrain the selected configuration with N seeds and report the mean and spread",
    )
    parser.add_argument("--max-epochs", type=float, default=None, help="upper bound on training epochs per probe")
    parser.add_argument("--patience", type=int, default=None, help="evaluations without improvement before stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="folder for results, the selected probe and caches")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="load only the clips present locally instead of failing on missing files",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per embedding call")
    parser.add_argument("--device", default=None, help="device for --model extraction (e.g. cuda, cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (small probes: 1 is fastest)")
    parser.add_argument("--force", action="store_true", help="overwrite an --output that already holds results")
    parser.set_defaults(func=run)
    return parser


FRAME_LEVEL_TASKS = {
    "beats": "beats",
    "chords": "chords",
    "ballroom_beats": "beats",
    "synthetic_beats": "beats",
    "synthetic_chords": "chords",
}


def run_frame_level(args: argparse.Namespace) -> int:
    """Frame-level tasks: frame features (baseline or Jukebox), a frame probe, mir_eval scores."""
    from ..probing import frame_level

    data = Path(args.data).expanduser()
    output = Path(args.output).expanduser()
    if (output / "results.json").is_file() and not args.force:
        raise JukeboxInputError(f"--output {output} already holds results.json; pass --force or another folder.")
    task = FRAME_LEVEL_TASKS[args.task]
    if args.task.startswith("synthetic_"):
        corpus = frame_level.generate_synthetic_frames(data, seed=args.seed)
    elif args.task == "ballroom_beats":
        corpus = frame_level.load_ballroom(data)
    else:
        corpus = frame_level.load_frame_corpus(data)
    if args.model is not None:
        frame_fn = frame_level.jukebox_frame_fn(
            args.model, args.frame_rate, layer=args.layers[0] if args.layers else None, device=args.device
        )
    else:
        frame_fn = frame_level.baseline_frame_fn(
            args.features or ("onset" if task == "beats" else "chroma"), args.frame_rate
        )
    results = frame_level.run_frame_task(
        corpus, task, frame_fn, frame_rate=args.frame_rate, seed=args.seed, output_dir=output
    )
    print((output / "results.md").read_text())
    print(json.dumps({"task": args.task, "test": results["test"], "output": str(output)}))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the `probe` sub-command (clip tasks: one call of `hf_jukebox_mir.probing.recipe.run_probe_task`)."""
    if args.task in FRAME_LEVEL_TASKS:
        return run_frame_level(args)
    if args.seeds < 1:
        raise JukeboxInputError(f"--seeds must be >= 1, got {args.seeds}.")
    if (args.max_windows is not None or args.window_hop is not None) and args.model is None:
        raise JukeboxInputError("--max-windows / --window-hop window the audio for --model; they need --model.")
    if args.features not in (None, "chroma"):
        raise JukeboxInputError(f"--features {args.features} is for frame-level tasks; clip tasks use chroma.")
    if args.model is not None and not Path(args.model).expanduser().is_dir():
        raise JukeboxInputError(f"--model {args.model} is not a folder (expected a converted Jukebox model).")
    for note in apply_recipe(args):
        print(f"--recipe {args.recipe}: {note}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    from ..probing.recipe import run_probe_task

    output = Path(args.output).expanduser()
    results = run_probe_task(
        args.task,
        args.data,
        output,
        model=args.model,
        layers=args.layers,
        grid=args.grid,
        schedule=args.schedule,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        allow_missing=args.allow_missing,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        max_windows=args.max_windows,
        window_hop=args.window_hop,
        layer_weighting=args.layer_weighting,
        seeds=args.seeds,
        recipe=args.recipe,
    )
    if results.classifier_dir is not None:
        print(f"Audio classifier (model + probe, one folder): {results.classifier_dir}")
    print((output / "results.md").read_text())
    summary = {"task": results.task, "test": results.best["test"]["primary"]}
    summary.update(jukemir_score=results.jukemir_score, output=str(output))
    print(json.dumps(summary))
    return 0


__all__ = ["add_parser", "run"]
