"""`jukebox-mir push DIR --repo-id OWNER/NAME`: check a Hub folder, then upload it in one commit."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `push` sub-command."""
    parser = subparsers.add_parser(
        "push",
        help="check a converted model or probe folder and upload it to the Hugging Face Hub",
        description=(
            "Check DIR (config, safetensors weights and shards, module files, preprocessor config for MIR "
            "folders, conversion audit, README.md card) and upload it in one commit; nothing is uploaded while "
            "anything is missing. Log in first with `hf auth login` or set HF_TOKEN."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="the folder to publish")
    parser.add_argument(
        "--repo-id", required=True, metavar="OWNER/NAME", help="target repository, e.g. me/jukebox-vqvae"
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created when missing)")
    parser.add_argument(
        "--commit-message", metavar="TEXT", help="commit message (default: names the model kind and version)"
    )
    parser.add_argument("--token", metavar="TOKEN", help="Hub token (default: the logged-in user or HF_TOKEN)")
    parser.add_argument(
        "--check", action="store_true", help="only check the folder and list the files an upload would contain"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check, then upload (or only list with --check); errors are `ValueError`s that the CLI prints."""
    from ..publishing.hub import check_hub_folder, check_repo_id, push_folder

    if args.check:
        check_repo_id(args.repo_id)
        files = check_hub_folder(args.folder)
        print(f"{args.folder} is ready; an upload to {args.repo_id} would contain {len(files)} files:")
        for name in files:
            print(f"  {name}")
        return 0
    result = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
    )
    where = f"{args.repo_id}@{args.revision}" if args.revision else args.repo_id
    print(f"uploaded {len(result.files)} files to https://huggingface.co/{args.repo_id} ({where})")
    if result.commit_url:
        print(f"commit: {result.commit_url}")
    return 0
