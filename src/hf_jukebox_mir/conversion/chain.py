"""Convert a whole Jukebox model (VQ-VAE + three priors) into one `JukeboxChainModel` folder.

Two sources, reusing the per-part converters (`vqvae.py`, `prior.py`):

* the original OpenAI files: `5b/vqvae.pth.tar`, `5b/prior_level_0.pth.tar`, `5b/prior_level_1.pth.tar` and the
  top prior (`5b/`, `5b_lyrics/` or `1b_lyrics/prior_level_2.pth.tar`): `convert_chain_checkpoints`;
* a transformers-4.x folder (the `openai/jukebox-1b-lyrics` / `-5b-lyrics` Hub layout, `priors.0` = top prior):
  `convert_hf4_chain`.

The result is saved like the other conversions: safetensors + config + `conversion_audit.json`, atomically, after
an output check on fixed inputs that is repeated on the reloaded folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..models.errors import JukeboxCheckpointError
from ..models.modeling_jukebox_chain import JukeboxChainModel
from .checkpoint_io import load_hf4_folder, sha256_file
from .export import run_output_check, save_converted
from .prior import convert_hf4_prior, convert_prior_checkpoint, prior_output_check
from .vqvae import convert_hf4_vqvae, convert_vqvae_checkpoint, vqvae_output_check


def chain_output_check(model: JukeboxChainModel) -> dict[str, torch.Tensor]:
    """Fixed-input outputs of every part (VQ-VAE codes and decodes, each prior's logits)."""
    outputs = {f"vqvae.{k}": v for k, v in vqvae_output_check(model.vqvae).items()}
    for level in (0, 1, 2):
        outputs.update({f"prior_level_{level}.{k}": v for k, v in prior_output_check(model.prior(level)).items()})
    return outputs


def _finish(model: JukeboxChainModel, audit: dict[str, Any], output_dir, dtype, overwrite, max_shard_size):
    if dtype is not None:
        model.to(dtype)
    model.eval()
    if output_dir is None:
        run_output_check(model, chain_output_check)
    else:
        save_converted(model, output_dir, audit=audit, output_check=chain_output_check,
                       max_shard_size=max_shard_size, overwrite=overwrite)
    return model


def convert_chain_checkpoints(
    vqvae_path: str | os.PathLike,
    prior_paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "2GB",
) -> JukeboxChainModel:
    """Convert the original files of one Jukebox model into a `JukeboxChainModel` (saved if `output_dir` is given).

    Args:
        vqvae_path: `vqvae.pth.tar`.
        prior_paths: `prior_level_0.pth.tar`, `prior_level_1.pth.tar`, `prior_level_2.pth.tar` in this order
            (levels 0 = bottom upsampler, 1 = middle upsampler, 2 = top prior).

    Example:

    ```python
    >>> convert_chain_checkpoints("5b/vqvae.pth.tar", ["5b/prior_level_0.pth.tar", "5b/prior_level_1.pth.tar",
    ...                           "1b_lyrics/prior_level_2.pth.tar"], "jukebox-1b-lyrics-chain")  # doctest: +SKIP
    ```
    """
    if len(prior_paths) != 3:
        raise JukeboxCheckpointError(
            f"Expected 3 prior files (prior_level_0, prior_level_1, prior_level_2, in this order), got {len(prior_paths)}."
        )
    vqvae = convert_vqvae_checkpoint(vqvae_path)
    priors = [convert_prior_checkpoint(path) for path in prior_paths]
    for level, prior in enumerate(priors):
        if prior.config.level != level:
            raise JukeboxCheckpointError(
                f"{Path(prior_paths[level]).name} (position {level} of prior_paths) holds a level-{prior.config.level} "
                f"prior; give the files in the order prior_level_0, prior_level_1, prior_level_2."
            )
    model = JukeboxChainModel.from_parts(vqvae, *priors)
    sources = [Path(vqvae_path), *(Path(p) for p in prior_paths)]
    audit = {
        "source_format": "openai",
        "model_class": type(model).__name__,
        "sources": [{"file": f"{p.parent.name}/{p.name}", "sha256": sha256_file(p), "bytes": p.stat().st_size}
                    for p in sources],
        "parts": {"vqvae": sources[0].name, "prior_level_0": sources[1].name, "prior_level_1": sources[2].name,
                  "prior_level_2": sources[3].name},
    }
    return _finish(model, audit, output_dir, dtype, overwrite, max_shard_size)


def convert_hf4_chain(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "2GB",
) -> JukeboxChainModel:
    """Convert a transformers-4.x Jukebox folder (VQ-VAE + `priors.0..2`) into a `JukeboxChainModel`.

    The 4.x prior index is reversed against the level: `priors.0` is the top prior (level 2), `priors.2` the
    bottom upsampler (level 0).
    """
    checkpoint = load_hf4_folder(folder, prefixes=("priors.",))
    if len(checkpoint.prior_configs) != 3:
        raise JukeboxCheckpointError(f"{folder} lists {len(checkpoint.prior_configs)} priors; a Jukebox model has 3.")
    vqvae = convert_hf4_vqvae(folder)
    priors = [convert_hf4_prior(checkpoint, 2 - level) for level in (0, 1, 2)]
    model = JukeboxChainModel.from_parts(vqvae, *priors)
    audit = {
        "source_format": "transformers-4.x",
        "model_class": type(model).__name__,
        "sources": [{"file": name, "sha256": sha} for name, sha in sorted(checkpoint.shard_sha256.items())]
        + [{"file": "config.json", "sha256": sha256_file(Path(folder) / "config.json")}],
        "parts": {"vqvae": "vqvae.*", "prior_level_0": "priors.2.*", "prior_level_1": "priors.1.*",
                  "prior_level_2": "priors.0.*"},
    }
    return _finish(model, audit, output_dir, dtype, overwrite, max_shard_size)


__all__ = ["chain_output_check", "convert_chain_checkpoints", "convert_hf4_chain"]
