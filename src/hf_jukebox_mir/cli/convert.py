"""`jukebox-mir convert`: convert Jukebox checkpoints into safetensors folders loadable with `from_pretrained`.

Each source kind is handled by one function in `SOURCES`, chosen by which options are given.

Examples:

    jukebox-mir convert --vqvae 5b/vqvae.pth.tar --output converted/jukebox-vqvae
    jukebox-mir convert --prior 5b/prior_level_2.pth.tar --output converted/jukebox-5b-prior
    jukebox-mir convert --vqvae 5b/vqvae.pth.tar --prior 5b/prior_level_2.pth.tar --num-layers 36 \
        --output converted/jukebox-5b-mir-36          # the JukeMIR feature extractor, one folder
    jukebox-mir convert --hf4 jukebox-5b-lyrics/ --output converted/jukebox-vqvae
    jukebox-mir convert --hf4 jukebox-5b-lyrics/ --hf4-part prior-2 --output converted/jukebox-5b-lyrics-prior
    jukebox-mir convert --hf4 jukebox-5b-lyrics/ --hf4-part mir --num-layers 36 --output converted/mir
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..models.errors import JukeboxInputError

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _save_options(args: argparse.Namespace) -> dict:
    return {"overwrite": args.overwrite, "max_shard_size": args.max_shard_size}


def _model_options(args: argparse.Namespace) -> dict:
    import torch

    options = {"num_layers": args.num_layers}
    if args.dtype is not None:
        options["dtype"] = getattr(torch, _DTYPES[args.dtype])
    return options


def convert_prior_source(args: argparse.Namespace) -> Path:
    """`--prior FILE`: an original OpenAI prior checkpoint (`prior_level_{0,1,2}.pth.tar`)."""
    from ..conversion.prior import convert_prior_checkpoint

    if len(args.prior) != 1:
        raise JukeboxInputError(f"--prior alone takes one file, got {len(args.prior)}; add --vqvae for a chain.")
    convert_prior_checkpoint(args.prior[0], args.output, **_model_options(args), **_save_options(args))
    return Path(args.output)


def convert_mir_source(args: argparse.Namespace) -> Path:
    """`--vqvae FILE --prior FILE`: one MIR folder (VQ-VAE top-level encoder + top prior + feature extractor).
    `--vqvae FILE --prior P0 P1 P2`: the whole sampling chain (VQ-VAE + the three priors, level 0 first)."""
    if len(args.prior) == 3:
        from ..conversion.chain import convert_chain_checkpoints

        if args.num_layers is not None:
            raise JukeboxInputError("--num-layers truncates the MIR prior; a sampling chain needs every layer.")
        options = _model_options(args)
        options.pop("num_layers")
        convert_chain_checkpoints(args.vqvae, args.prior, args.output, **options, **_save_options(args))
        return Path(args.output)
    if len(args.prior) != 1:
        raise JukeboxInputError(
            f"--vqvae with --prior takes 1 prior (MIR folder) or 3 priors (level 0, 1, 2: sampling chain), "
            f"got {len(args.prior)}."
        )
    from ..conversion.mir import convert_mir_model

    convert_mir_model(args.vqvae, args.prior[0], args.output, **_model_options(args), **_save_options(args))
    return Path(args.output)


def convert_vqvae_source(args: argparse.Namespace) -> Path:
    """`--vqvae FILE`: an original OpenAI VQ-VAE checkpoint (`5b/vqvae.pth.tar`)."""
    from ..conversion.vqvae import convert_vqvae_checkpoint

    convert_vqvae_checkpoint(args.vqvae, args.output, **_save_options(args))
    return Path(args.output)


def convert_hf4_source(args: argparse.Namespace) -> Path:
    """`--hf4 DIR [--hf4-part PART]`: a part of a transformers-4.x Jukebox folder (`openai/jukebox-*-lyrics`):
    its VQ-VAE (default), one prior (`prior-2` top, `prior-1`, `prior-0`: original level numbering), or the MIR
    model (VQ-VAE + top prior)."""
    part = args.hf4_part
    if part == "vqvae":
        from ..conversion.vqvae import convert_hf4_vqvae

        if args.num_layers is not None:
            raise JukeboxInputError("--num-layers applies to priors; the VQ-VAE has no transformer layers.")
        convert_hf4_vqvae(args.hf4, args.output, **_save_options(args))
    elif part == "mir":
        from ..conversion.mir import convert_hf4_mir

        convert_hf4_mir(args.hf4, args.output, **_model_options(args), **_save_options(args))
    elif part == "chain":
        from ..conversion.chain import convert_hf4_chain

        options = _model_options(args)
        if options.pop("num_layers") is not None:
            raise JukeboxInputError("--num-layers truncates the MIR prior; a sampling chain needs every layer.")
        convert_hf4_chain(args.hf4, args.output, **options, **_save_options(args))
    else:
        from ..conversion.prior import convert_hf4_prior

        level = int(part.split("-")[1])
        convert_hf4_prior(args.hf4, 2 - level, args.output, **_model_options(args), **_save_options(args))
    return Path(args.output)


# --hf4-part -> key prefixes it reads (a Hub source fetches only the shards holding them; None: all)
HF4_PART_PREFIXES: dict[str, tuple[str, ...] | None] = {
    "vqvae": ("vqvae.",),
    "prior-2": ("priors.0.",),
    "prior-1": ("priors.1.",),
    "prior-0": ("priors.2.",),
    "mir": ("vqvae.", "priors.0."),
    "chain": None,
}

# (source options that select a handler, handler), in the order they are documented
SOURCES: list[tuple[tuple[str, ...], Callable[[argparse.Namespace], Path]]] = [
    (("vqvae",), convert_vqvae_source),
    (("prior",), convert_prior_source),
    (("vqvae", "prior"), convert_mir_source),
    (("hf4",), convert_hf4_source),
]


def run(args: argparse.Namespace) -> int:
    """Dispatch to the handler of the source options that were given; write the card; print a summary."""
    from ..conversion.hashing import hash_in_background

    # the audit's source SHA-256 (a full read of a 10 GB file) starts now, beside the imports below
    hash_in_background([*(getattr(args, "prior", None) or []), *filter(None, [getattr(args, "vqvae", None)])])
    from ..extraction.threads import default_threads, set_threads

    set_threads(args.threads if getattr(args, "threads", None) is not None else default_threads())
    given = tuple(dest for dest in ("vqvae", "prior", "hf4") if getattr(args, dest, None) is not None)
    handlers = {dests: handler for dests, handler in SOURCES}
    if given not in handlers:
        accepted = "; ".join(" + ".join(f"--{d}" for d in dests) for dests, _ in SOURCES)
        raise JukeboxInputError(
            f"Unsupported combination of sources: {' + '.join('--' + d for d in given) or 'none'}. "
            f"Give one of: {accepted}."
        )
    if "hf4" in given:
        from ..conversion.hub_source import fetch_hf4_repo, looks_like_repo_id

        if looks_like_repo_id(args.hf4):  # a Hub repository: fetch only the shards this part needs
            args.hf4 = str(fetch_hf4_repo(args.hf4, HF4_PART_PREFIXES[args.hf4_part]))
        elif not Path(args.hf4).is_dir():
            raise JukeboxInputError(
                f"--hf4 {args.hf4} is not a folder (expected config.json + pytorch_model-*.bin) nor a Hub "
                "repository id such as openai/jukebox-1b-lyrics."
            )
    for dest in given:
        for path in [getattr(args, dest)] if dest != "prior" else args.prior:
            if dest != "hf4" and not Path(path).is_file():
                raise JukeboxInputError(f"--{dest} {path} does not exist (expected an original .pth.tar file).")
    if args.num_layers is not None and given == ("vqvae",):
        raise JukeboxInputError("--num-layers applies to priors; the VQ-VAE has no transformer layers.")
    output = handlers[given](args)
    if not args.no_card:
        from ..publishing.cards import write_model_card

        write_model_card(output, overwrite=True)
    from ..conversion.audit import ConversionAudit

    audit = ConversionAudit.read(output)
    files = sorted(p.name for p in output.iterdir() if p.is_file())
    print(f"Converted into {output}: {', '.join(files)}")
    for source in audit.sources:
        print(f"  source {source.file}: sha256 {source.sha256}")
    if audit.key_map:
        kept = sum(1 for v in audit.key_map.values() if v is not None)
        print(f"  {kept} tensors converted, {len(audit.key_map) - kept} dropped (layer truncation)")
    print(f"  stored dtypes: {', '.join(f'{k} {v}' for k, v in audit.dtypes.items())}")
    print(f"  output check passed on the written folder ({audit.output_check.get('loaded_from', '')})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `convert` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert Jukebox checkpoints (original OpenAI files or transformers-4.x folders) to safetensors",
        description=(
            "Convert a Jukebox checkpoint into a folder with config.json, model.safetensors (sharded when large), "
            "the model code (for trust_remote_code) and conversion_audit.json (source SHA-256, key map, output "
            "check). Checkpoints are read tensor by tensor with a restricted unpickler: no pickled code is run, "
            "and memory stays within about one shard whatever the checkpoint's size."
        ),
    )
    parser.add_argument("--vqvae", metavar="PATH", help="original OpenAI VQ-VAE checkpoint, e.g. 5b/vqvae.pth.tar")
    parser.add_argument(
        "--prior",
        metavar="PATH",
        nargs="+",
        help="original OpenAI prior checkpoint, e.g. 5b/prior_level_2.pth.tar (with --vqvae: one "
        "MIR folder; with --vqvae and three files prior_level_0/1/2: the sampling chain)",
    )
    parser.add_argument(
        "--hf4",
        metavar="DIR",
        help="transformers-4.x Jukebox folder (config.json + pytorch_model-*.bin), or a Hub repository id such as "
        "openai/jukebox-1b-lyrics (only the shards the part needs are downloaded, cached); see --hf4-part",
    )
    parser.add_argument(
        "--hf4-part",
        default="vqvae",
        choices=["vqvae", "prior-2", "prior-1", "prior-0", "mir", "chain"],
        help="what to convert from --hf4: the VQ-VAE (default), a prior by original level, the "
        "MIR model (VQ-VAE + top prior) or the whole sampling chain",
    )
    parser.add_argument(
        "--num-layers",
        type=int,
        metavar="N",
        help="keep only the first N prior blocks (JukeMIR: 36); the others are never read",
    )
    parser.add_argument("--dtype", choices=sorted(_DTYPES), help="dtype of the saved weights (default: float32)")
    parser.add_argument("--no-card", action="store_true", help="do not write the README.md model card")
    parser.add_argument("--output", metavar="DIR", required=True, help="output folder (must be empty or new)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads for the output check (default: OMP_NUM_THREADS, else at most 4)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--max-shard-size",
        default="1GB",
        metavar="SIZE",
        help="largest safetensors shard, e.g. 2GB or 500MB (default: 1GB; conversion holds one shard in memory)",
    )
    parser.set_defaults(func=run)
    return parser


__all__ = [
    "SOURCES",
    "add_parser",
    "convert_hf4_source",
    "convert_mir_source",
    "convert_prior_source",
    "convert_vqvae_source",
    "run",
]
