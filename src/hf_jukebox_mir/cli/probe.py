"""`jukebox-mir probe`: the JukeMIR probing protocol on one task, end to end.

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

from ..models.errors import JukeboxInputError


def _import_make_embed_fn():
    """`hf_jukebox_mir.extraction.engine.make_embed_fn`, or a `JukeboxInputError` saying it is unavailable."""
    try:
        from ..extraction.engine import make_embed_fn
    except ImportError as err:
        raise JukeboxInputError(
            "--model needs hf_jukebox_mir.extraction.engine.make_embed_fn, which is not available in this installation "
            f"({err}). Use --features chroma, or install a version of hf-jukebox-mir with Jukebox extraction."
        ) from err
    return make_embed_fn


def _load_embed_fn(model_dir: str, *, layers: list[int] | None = None, device: str | None = None,
                   batch_size: int | None = None, max_windows: int | None = None, window_hop: int | None = None):
    """The Jukebox `embed_fn` of a converted model folder, from `hf_jukebox_mir.extraction.engine.make_embed_fn`.

    Imported lazily so that `probe` works (with `--features chroma`) when the extraction code is absent.
    `make_embed_fn(model_dir, *, layers=None, device=None, batch_size=None)` must return a callable
    `list[np.ndarray] -> np.ndarray (num_clips, num_layers, dim)`; optional attributes `layer_names`
    (one name per layer, e.g. `("36",)`) and `output_shape` (`(num_layers, dim)`) are used when present.
    """
    make_embed_fn = _import_make_embed_fn()
    kwargs = {}
    if layers is not None:
        kwargs["layers"] = layers
    if device is not None:
        kwargs["device"] = device
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if max_windows is not None:
        kwargs["max_windows"] = max_windows
    if window_hop is not None:
        kwargs["window_hop"] = window_hop
    return make_embed_fn(model_dir, **kwargs)


#: `--recipe jukemir`: the paper's protocol (Castellon et al. 2021): layer 36, the first 23.78 s window only,
#: the 216-configuration grid, evaluation every 8 steps with patience 256, selection on validation.
JUKEMIR_RECIPE = {"grid": "jukemir", "schedule": "jukemir", "max_windows": 1, "layer": 36}


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
            notes.append(f"layer {args.layers[0]}" + ("" if depth >= recipe["layer"] else
                                                       f" (the folder keeps {depth} blocks; JukeMIR uses 36)"))
    return notes


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `probe` on the `jukebox-mir` sub-command parser."""
    parser = subparsers.add_parser(
        "probe",
        help="train and evaluate probes on an MIR benchmark (JukeMIR protocol)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True,
                        help="gtzan, magnatagatune, giantsteps, emomusic, synthetic_key or synthetic_instruments; "
                             "frame level: beats, chords (a corpus ROOT/<split>/<track>.wav + .beats/.lab), "
                             "ballroom_beats, synthetic_beats, synthetic_chords")
    parser.add_argument("--data", required=True, help="local copy of the benchmark in its official layout "
                        "(synthetic tasks: folder to generate into or reuse)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--features", choices=["chroma", "onset", "onset+chroma"],
                        help="built-in feature instead of a model (default when --model is not given: chroma; "
                             "onset and onset+chroma for frame-level tasks)")
    source.add_argument("--model", help="converted Jukebox model folder to extract embeddings with")
    parser.add_argument("--layers", type=int, nargs="+", help="prior layers to extract with --model (1-indexed, "
                        "e.g. 36); each one is probed")
    parser.add_argument("--recipe", choices=["jukemir"], default=None,
                        help="'jukemir': the paper's protocol exactly: layer 36, first 23.78 s window only, 216-config "
                             "grid, its schedule, selection on validation")
    parser.add_argument("--grid", default=None, choices=["small", "jukemir"],
                        help="probe grid: 'small' (4 configurations, the default) or 'jukemir' (216, as in the paper)")
    parser.add_argument("--schedule", default=None, choices=["epochs", "jukemir"],
                        help="'epochs' (default): evaluate every epoch, patience 10; 'jukemir': every 8 steps, "
                             "patience 256")
    parser.add_argument("--max-windows", type=int, default=None, metavar="N",
                        help="with --model: keep only the first N windows of each clip (1 = JukeMIR; default: every "
                             "window, averaged with weights proportional to their real frames)")
    parser.add_argument("--window-hop", type=int, default=None, metavar="SAMPLES",
                        help="with --model: samples between window starts (multiple of 128; default: no overlap)")
    parser.add_argument("--layer-weighting", action="store_true",
                        help="with several --layers: also probe a learned softmax-weighted sum of all of them "
                             "(MERT/MARBLE style); its weights are reported and plotted")
    parser.add_argument("--frame-rate", type=float, default=50.0, metavar="HZ",
                        help="frame-level tasks: feature frames per second (default 50)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="retrain the selected configuration with N seeds and report the mean and spread")
    parser.add_argument("--max-epochs", type=float, default=None, help="upper bound on training epochs per probe")
    parser.add_argument("--patience", type=int, default=None, help="evaluations without improvement before stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="folder for results, the selected probe and caches")
    parser.add_argument("--allow-missing", action="store_true",
                        help="load only the clips present locally instead of failing on missing files")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per embedding call")
    parser.add_argument("--device", default=None, help="device for --model extraction (e.g. cuda, cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (small probes: 1 is fastest)")
    parser.add_argument("--force", action="store_true", help="overwrite an --output that already holds results")
    parser.set_defaults(func=run)
    return parser


FRAME_LEVEL_TASKS = {"beats": "beats", "chords": "chords", "ballroom_beats": "beats", "synthetic_beats": "beats",
                     "synthetic_chords": "chords"}


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
        frame_fn = frame_level.jukebox_frame_fn(args.model, args.frame_rate,
                                                layer=args.layers[0] if args.layers else None, device=args.device)
    else:
        frame_fn = frame_level.baseline_frame_fn(args.features or ("onset" if task == "beats" else "chroma"),
                                                 args.frame_rate)
    results = frame_level.run_frame_task(corpus, task, frame_fn, frame_rate=args.frame_rate, seed=args.seed,
                                         output_dir=output)
    print((output / "results.md").read_text())
    print(json.dumps({"task": args.task, "test": results["test"], "output": str(output)}))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the `probe` sub-command; returns the exit status."""
    from ..probing.tasks import get_task

    if args.task in FRAME_LEVEL_TASKS:
        return run_frame_level(args)
    task = get_task(args.task)
    data = Path(args.data).expanduser()
    output = Path(args.output).expanduser()
    synthetic = task.loader == "load_synthetic"
    if not synthetic and not data.is_dir():
        raise JukeboxInputError(f"--data {data} does not exist. Expected layout for {task.name}: {task.layout}.")
    if (output / "results.json").is_file() and not args.force:
        raise JukeboxInputError(f"--output {output} already holds results.json; pass --force or another folder.")
    if args.model is not None and not Path(args.model).expanduser().is_dir():
        raise JukeboxInputError(f"--model {args.model} is not a folder (expected a converted Jukebox model).")
    if args.layers is not None and args.model is None:
        raise JukeboxInputError("--layers selects Jukebox prior layers; it needs --model.")
    if (args.max_windows is not None or args.window_hop is not None) and args.model is None:
        raise JukeboxInputError("--max-windows / --window-hop window the audio for --model; they need --model.")
    if args.seeds < 1:
        raise JukeboxInputError(f"--seeds must be >= 1, got {args.seeds}.")
    for note in apply_recipe(args):
        print(f"--recipe {args.recipe}: {note}")
    if args.model is not None:
        _import_make_embed_fn()  # fail before any data work when extraction is unavailable
    if args.patience is not None and args.patience < 1:
        raise JukeboxInputError(f"--patience must be >= 1, got {args.patience}.")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))

    from ..probing.mir_datasets import dataset_coverage, load_benchmark
    from ..probing.training import JUKEMIR_SCHEDULE, ProbeSchedule, cache_embeddings, run_probe_grid

    if args.force and (output / "results.json").is_file():
        for name in ("results.json", "results.md", "plot.png", "grid_state.json"):
            (output / name).unlink(missing_ok=True)
    if synthetic and not (data / "synthetic_mir.json").is_file():
        from ..probing.synthetic_mir import generate_synthetic_mir

        print(f"Generating the synthetic benchmark into {data} (seed {args.seed})")
        dataset = generate_synthetic_mir(data, task=task.name, seed=args.seed)
    else:
        dataset = load_benchmark(task, data, allow_missing=args.allow_missing)
    print(", ".join(f"{name}: {len(split)} clips" for name, split in dataset.items()))
    coverage = dataset_coverage(task, dataset)
    if not coverage["complete"]:
        print("WARNING: incomplete dataset (found/expected: " + ", ".join(
            f"{k} {v['found']}/{v['expected']}" for k, v in coverage["splits"].items()) + "); results say so.")

    if args.model is not None:
        embed_fn = _load_embed_fn(args.model, layers=args.layers, device=args.device, max_windows=args.max_windows,
                                  window_hop=args.window_hop)
        source = f"{Path(args.model).name}"
    else:
        from ..probing.chroma import ChromaEmbedder

        if args.features not in (None, "chroma"):
            raise JukeboxInputError(f"--features {args.features} is for frame-level tasks; clip tasks use chroma.")
        embed_fn = ChromaEmbedder()
        source = "chroma"
    layer_tag = "" if args.layers is None else "-layers" + "_".join(str(i) for i in args.layers)
    layer_tag += "" if args.max_windows is None else f"-maxwin{args.max_windows}"
    layer_tag += "" if args.window_hop is None else f"-hop{args.window_hop}"
    cache = output / "embeddings" / f"{task.name}-{source}{layer_tag}"
    dataset = cache_embeddings(dataset, embed_fn, batch_size=args.batch_size, cache_dir=cache)

    base = JUKEMIR_SCHEDULE if args.schedule == "jukemir" else ProbeSchedule()
    schedule = ProbeSchedule(
        max_epochs=args.max_epochs if args.max_epochs is not None else base.max_epochs,
        max_steps=base.max_steps, eval_steps=base.eval_steps,
        patience=args.patience if args.patience is not None else base.patience,
        seed=args.seed, save_total_limit=base.save_total_limit, eval_batch_size=base.eval_batch_size,
    )
    layer_names = getattr(embed_fn, "layer_names", None)
    extraction = {"source": source, "model": str(args.model) if args.model else None,
                  "layers": list(layer_names) if layer_names is not None else None,
                  "max_windows": args.max_windows, "window_hop": args.window_hop, "recipe": args.recipe}
    results = run_probe_grid(dataset, task, output, grid=args.grid, schedule=schedule,
                             layer_names=list(layer_names) if layer_names is not None else None,
                             feature_source=source, coverage=coverage, seeds=args.seeds, extraction=extraction,
                             layer_weighting=args.layer_weighting)
    if args.model is not None:
        from ..probing.classifier import save_audio_classifier

        classifier = save_audio_classifier(output, args.model, results, max_windows=args.max_windows,
                                           window_hop=args.window_hop)
        print(f"Audio classifier (model + probe, one folder): {classifier}")
    print((output / "results.md").read_text())
    print(json.dumps({"task": task.name, "test": results["best"]["test"]["primary"],
                      "jukemir_score": results["jukemir_score"], "output": str(output)}))
    return 0


__all__ = ["add_parser", "run"]
