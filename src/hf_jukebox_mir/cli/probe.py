"""`jukebox-mir probe`: the JukeMIR probing protocol on one task, end to end (`probing.recipe.run_probe_task`).

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
        help="gtzan, magnatagatune, giantsteps, emomusic, synthetic_key or synthetic_instruments",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="local copy of the benchmark in its official layout (synthetic tasks: folder to generate into or reuse)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--features", choices=["chroma"], help="built-in feature instead of a model (default when --model is not given)"
    )
    source.add_argument("--model", help="converted Jukebox model folder to extract embeddings with")
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        help="prior layers to extract with --model (1-indexed, e.g. 36); each one is probed",
    )
    parser.add_argument(
        "--grid",
        default="small",
        choices=["small", "jukemir"],
        help="probe grid: 'small' (4 configurations) or 'jukemir' (216, as in the paper)",
    )
    parser.add_argument(
        "--schedule",
        default="epochs",
        choices=["epochs", "jukemir"],
        help="'epochs': evaluate every epoch, patience 10; 'jukemir': every 8 steps, patience 256",
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


def run(args: argparse.Namespace) -> int:
    """Run the `probe` sub-command (one call of `hf_jukebox_mir.probing.recipe.run_probe_task`)."""
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
    )
    print((output / "results.md").read_text())
    summary = {"task": results.task, "test": results.best["test"]["primary"]}
    summary.update(jukemir_score=results.jukemir_score, output=str(output))
    print(json.dumps(summary))
    return 0


__all__ = ["add_parser", "run"]
