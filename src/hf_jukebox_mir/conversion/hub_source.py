"""transformers-4.x Jukebox repositories on the Hub (`openai/jukebox-1b-lyrics`, `openai/jukebox-5b-lyrics`) as
conversion sources: fetch only the weight shards that hold the wanted keys.

The repositories are ~10 GB and ~31 GB of pickled float32 shards, and a MIR folder needs the VQ-VAE and the top
prior only. `fetch_hf4_repo` downloads `config.json` and the weight index, then the shards the index names for
the wanted key prefixes, through `huggingface_hub` (cached and resumable: an interrupted download continues where
it stopped). Offline (`HF_HUB_OFFLINE=1` or no network), it uses the cache and fails at once, listing the files
still to fetch and the command that fetches them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..models.errors import JukeboxCheckpointError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")


def looks_like_repo_id(value: str) -> bool:
    """`owner/name` that is not an existing local path."""
    return bool(REPO_ID.match(value)) and not Path(value).exists()


def fetch_hf4_repo(
    repo_id: str,
    prefixes: Sequence[str] | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
) -> Path:
    """Download (or find in the cache) what converting `prefixes` of `repo_id` needs; returns the snapshot folder.

    Args:
        prefixes: key prefixes to convert (e.g. `("vqvae.", "priors.0.")` for a MIR folder); `None`: every shard.
        offline: use only the local cache (default: `huggingface_hub`'s `HF_HUB_OFFLINE` setting).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if offline is None:
        offline = bool(constants.HF_HUB_OFFLINE)
    missing: list[str] = []

    def get(filename: str, *, required: bool = True) -> Path | None:
        try:
            return Path(
                hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline)
            )
        except LocalEntryNotFoundError:
            missing.append(filename)
            return None
        except EntryNotFoundError:
            if required:
                raise JukeboxCheckpointError(
                    f"{repo_id} has no {filename}; is it a transformers-4.x Jukebox "
                    "repository (e.g. openai/jukebox-1b-lyrics)?"
                ) from None
            return None

    config = get("config.json")
    index_path = None
    for name in _INDEXES:
        index_path = get(name, required=False)
        if index_path is not None:
            missing = [m for m in missing if m not in _INDEXES]
            break
    if config is None or index_path is None:
        if offline:
            raise _offline_error(repo_id, missing or ["config.json", _INDEXES[1]], revision)
        shards = [name for name in _SINGLE if get(name, required=False) is not None]
        if not shards:
            raise JukeboxCheckpointError(f"{repo_id} has no weight index nor single weight file.")
    else:
        weight_map = json.loads(index_path.read_text()).get("weight_map", {})
        wanted = sorted(
            {file for key, file in weight_map.items() if prefixes is None or key.startswith(tuple(prefixes))}
        )
        if not wanted:
            raise JukeboxCheckpointError(f"{repo_id}: no weights start with {list(prefixes or [])}.")
        for name in wanted:
            get(name)
    if missing:
        raise _offline_error(repo_id, missing, revision)
    assert config is not None
    return config.parent


def _offline_error(repo_id: str, missing: list[str], revision: str | None) -> JukeboxCheckpointError:
    rev = f" --revision {revision}" if revision else ""
    return JukeboxCheckpointError(
        f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached (offline). Files still to "
        f"fetch: {', '.join(missing)}. On a machine with network access run `hf download {repo_id} "
        f"{' '.join(missing)}{rev}` (the files land in the same cache), or convert a local folder with --hf4 DIR."
    )


__all__ = ["fetch_hf4_repo", "looks_like_repo_id"]
