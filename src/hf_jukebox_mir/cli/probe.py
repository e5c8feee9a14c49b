"""`jukebox-mir probe`: the JukeMIR probing protocol on one task, end to end.

    jukebox-mir probe --task gtzan --data ~/data/gtzan --model ./jukebox-5b-mir --grid jukemir --output runs/gtzan
    jukebox-mir probe --task synthetic_key --data ./synthetic --features chroma --output runs/synthetic

Steps: build the benchmark from the local copy (`mir_datasets`; the synthetic tasks generate their data
into `--data` when it is empty), extract clip embeddings once (chroma, or Jukebox via `--model`) and cache
them under `OUTPUT/embeddings/`, train a probe per grid configuration and layer, select on validation,
evaluate once on test, and write `results.json`, `results.md`, `plot.png` and `best_probe/` to `--output`.
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
                   batch_size: int | None = None):
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
    return make_embed_fn(model_dir, **kwargs)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `probe` on the `jukebox-mir` sub-command parser."""
    parser = subparsers.add_parser(
        "probe",
        help="train and evaluate probes on an MIR benchmark (JukeMIR protocol)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True,
                        help="gtzan, magnatagatune, giantsteps, emomusic, synthetic_key or synthetic_instruments")
    parser.add_argument("--data", required=True, help="local copy of the benchmark in its official layout "
                        "(synthetic tasks: folder to generate into or reuse)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--features", choices=["chroma"], help="built-in feature instead of a model (default "
                        "when --model is not given)")
    source.add_argument("--model", help="converted Jukebox model folder to extract embeddings with")
    parser.add_argument("--layers", type=int, nargs="+", help="prior layers to extract with --model (1-indexed, "
                        "e.g. 36); each one is probed")
    parser.add_argument("--grid", default="small", choices=["small", "jukemir"],
                        help="probe grid: 'small' (4 configurations) or 'jukemir' (216, as in the paper)")
    parser.add_argument("--schedule", default="epochs", choices=["epochs", "jukemir"],
                        help="'epochs': evaluate every epoch, patience 10; 'jukemir': every 8 steps, patience 256")
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


def run(args: argparse.Namespace) -> int:
    """Run the `probe` sub-command; returns the exit status."""
    from ..probing.tasks import get_task

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
    if args.model is not None:
        _import_make_embed_fn()  # fail before any data work when extraction is unavailable
    if args.patience is not None and args.patience < 1:
        raise JukeboxInputError(f"--patience must be >= 1, got {args.patience}.")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))

    from ..probing.mir_datasets import load_benchmark
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

    if args.model is not None:
        embed_fn = _load_embed_fn(args.model, layers=args.layers, device=args.device)
        source = f"{Path(args.model).name}"
    else:
        from ..probing.chroma import ChromaEmbedder

        embed_fn = ChromaEmbedder()
        source = "chroma"
    layer_tag = "" if args.layers is None else "-layers" + "_".join(str(i) for i in args.layers)
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
    results = run_probe_grid(dataset, task, output, grid=args.grid, schedule=schedule,
                             layer_names=list(layer_names) if layer_names is not None else None,
                             feature_source=source)
    print((output / "results.md").read_text())
    print(json.dumps({"task": task.name, "test": results["best"]["test"]["primary"],
                      "jukemir_score": results["jukemir_score"], "output": str(output)}))
    return 0


__all__ = ["add_parser", "run"]
