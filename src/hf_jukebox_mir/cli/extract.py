"""`jukebox-mir extract`: Jukebox representations of many audio files into a `datasets` dataset.

Examples:

    jukebox-mir extract music/ --model jukebox-mir-5b-36 --output gtzan-layer36
    jukebox-mir extract a.wav b.flac --model DIR --output OUT --layers 12 24 36 --pool max
    jukebox-mir extract music/ --model DIR --output OUT --pool none --frame-rate 15
    accelerate launch --num_processes 4 -m hf_jukebox_mir.cli extract music/ --model DIR --output OUT

The output loads with `datasets.load_from_disk(OUT)`: columns id, path, duration, n_windows, layer_<i>
(+ frame_times, seconds per frame, with --pool none / --frame-rate).
Run the same command again after an interruption: finished inputs are skipped. Inputs that fail (corrupt
files) are listed at the end and in OUT/failures.json; the exit status is then 3 (4 when every input failed:
no dataset is written). Ctrl-C keeps the finished chunks: run the same command again to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models.errors import JukeboxInputError

#: exit status when the run finished but some inputs failed
EXIT_SOME_FAILED = 3
#: exit status when every input failed (no dataset is written)
EXIT_ALL_FAILED = 4


def _layers(values: list[str] | None):
    if values is None:
        return None
    if values == ["all"]:
        return "all"
    try:
        return [int(v) for v in values]
    except ValueError:
        raise JukeboxInputError(
            f"--layers expects block numbers (e.g. --layers 36 or --layers 12 24 36) or 'all', got {' '.join(values)}."
        ) from None


def _default_threads() -> int:
    from ..extraction.threads import default_threads

    return default_threads()


def run(args: argparse.Namespace) -> int:
    """Check every path and option, then extract; prints a summary and the failed inputs."""
    from ..extraction.engine import extract_dataset

    if args.frame_rate is not None and args.pool not in (None, "none"):
        raise JukeboxInputError(
            f"--frame-rate gives frame-level features; it needs --pool none, got --pool {args.pool}."
        )
    if (
        args.num_shards is not None
        and args.shard_index is None
        or args.num_shards is None
        and args.shard_index is not None
    ):
        raise JukeboxInputError("--num-shards and --shard-index go together (e.g. --num-shards 4 --shard-index 0).")
    if args.overwrite and args.no_resume:
        raise JukeboxInputError("--overwrite already starts again; drop --no-resume.")
    result = extract_dataset(
        args.inputs,
        args.model,
        args.output,
        layers=_layers(args.layers),
        pooling=args.pool,
        frame_rate=args.frame_rate,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        resume=not args.no_resume,
        overwrite=args.overwrite,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        chunk_size=args.chunk_size,
        audio_column=args.audio_column,
        split=args.split,
        progress=not args.quiet,
        max_duration=args.max_duration,
        max_input_windows=args.max_input_windows,
        threads=args.threads if args.threads is not None else _default_threads(),
        verify=args.verify,
        max_windows=args.max_windows,
        window_hop=args.window_hop,
    )
    output = Path(args.output)
    for warning in result.warnings[:20]:
        print(f"warning: {warning['id']}: {warning['warning']}")
    if (
        result.failures
        and result.num_done == 0
        and result.num_computed == 0
        and result.num_inputs == len(result.failures)
    ):
        print(
            f"All {result.num_inputs} input(s) failed; no dataset was written (listed in {output / 'failures.json'}):"
        )
        for failure in result.failures[:20]:
            print(f"  {failure['id']}: {failure['error']}")
        return EXIT_ALL_FAILED
    if result.merged:
        print(
            f"Extracted {result.num_done} of {result.num_inputs} inputs into {output} "
            f"({result.num_computed} computed in this run); load it with datasets.load_from_disk('{output}')."
        )
    else:
        print(
            f"Shard done: {result.num_computed} inputs computed; the dataset in {output} is written when every "
            "shard has finished."
        )
    if result.failures:
        print(f"{len(result.failures)} input(s) failed (listed in {output / 'failures.json'}; run again to retry):")
        for failure in result.failures[:20]:
            print(f"  {failure['id']}: {failure['error']}")
        if len(result.failures) > 20:
            print(f"  ... and {len(result.failures) - 20} more")
        return EXIT_SOME_FAILED
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `extract` sub-command."""
    parser = subparsers.add_parser(
        "extract",
        help="extract Jukebox representations of audio files/folders/datasets into a datasets dataset",
        description=__doc__.split("\n\n")[0] + " Resumable, sharded with `accelerate launch`.",
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="audio files, folders (searched recursively) or a folder saved by datasets.save_to_disk",
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="Jukebox MIR folder (jukebox-mir convert --vqvae ... --prior ...)"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="output folder: new, empty, or the folder of an interrupted run to resume",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="N",
        help="1-indexed prior blocks, e.g. 36 (JukeMIR) or 12 24 36, or 'all' (default: the last "
        "stored block); only blocks up to the deepest are loaded",
    )
    parser.add_argument(
        "--pool",
        choices=["mean", "max", "none"],
        default=None,
        help="pooling over time: mean (default, JukeMIR), max, or none (frame-level, 344.5 Hz)",
    )
    parser.add_argument(
        "--frame-rate",
        type=float,
        metavar="HZ",
        help="frame-level features averaged to this rate, e.g. 15 (implies --pool none)",
    )
    parser.add_argument(
        "--max-windows",
        type=int,
        default=None,
        metavar="N",
        help="keep only the first N windows of each input (1 = JukeMIR: the first 23.78 s; default: "
        "every window, averaged with weights proportional to their real frames)",
    )
    parser.add_argument(
        "--window-hop",
        type=int,
        default=None,
        metavar="SAMPLES",
        help="samples between window starts at 44.1 kHz, a multiple of 128 (default: the window length, no overlap)",
    )
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="windows per forward pass (default: 1)")
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model dtype (default auto: bfloat16 on GPU, float32 on CPU; the VQ-VAE encoder stays float32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the prior (slower start, faster batches; needs a C++ compiler on CPU)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse an output folder that already holds results (default: resume it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="delete earlier results in --output and start again")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=32,
        metavar="N",
        help="inputs per saved chunk, the unit of resumption (default: 32)",
    )
    parser.add_argument("--audio-column", default="audio", help="audio column of dataset inputs (default: audio)")
    parser.add_argument(
        "--split",
        default=None,
        help="one split of a saved DatasetDict input (default: every split, with a split column)",
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        metavar="N",
        help="independent jobs: process every N-th input (with --shard-index); not needed with accelerate launch",
    )
    parser.add_argument("--shard-index", type=int, default=None, metavar="K", help="this job's shard, 0..N-1")
    parser.add_argument(
        "--max-duration",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="longest input decoded, checked from the header first (default: 7200); longer inputs "
        "fail with a clear error",
    )
    parser.add_argument(
        "--max-input-windows",
        type=int,
        default=None,
        metavar="N",
        help="most model windows per input, counted after --max-windows (default: as many as --max-duration "
        "needs); an input needing more fails with a clear error",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads per process (default: OMP_NUM_THREADS, else 1 per process under a "
        "multi-process launch, else at most 4; recorded in OUT/extraction.json)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the model folder's files against its conversion_audit.json before loading",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


__all__ = ["EXIT_ALL_FAILED", "EXIT_SOME_FAILED", "add_parser", "run"]
