"""Convert a whole Jukebox model (VQ-VAE + three priors) into one `JukeboxChainModel` folder.

Two sources, reusing the per-part converters (`vqvae.py`, `prior.py`):

* the original OpenAI files: `5b/vqvae.pth.tar`, `5b/prior_level_0.pth.tar`, `5b/prior_level_1.pth.tar` and the
  top prior (`5b/`, `5b_lyrics/` or `1b_lyrics/prior_level_2.pth.tar`): `convert_chain_checkpoints`;
* a transformers-4.x folder (the `openai/jukebox-1b-lyrics` / `-5b-lyrics` Hub layout, `priors.0` = top prior):
  `convert_hf4_chain`.

The result is saved like the other conversions: safetensors + config + `conversion_audit.json`, atomically, after
an output check on fixed inputs run on the written folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..models.configuration_jukebox_chain import JukeboxChainConfig
from ..models.errors import JukeboxCheckpointError
from ..models.modeling_jukebox_chain import JukeboxChainModel
from .audit import ConversionAudit
from .checkpoint_io import load_hf4_folder
from .export import run_output_check
from .plan import ConversionPlan, load_plan, prefixed
from .prior import PriorSource, open_hf4_prior, open_prior_checkpoint, prior_output_check
from .streaming import DEFAULT_MAX_SHARD_SIZE, write_plan
from .vqvae import VQVAESource, open_hf4_vqvae, open_vqvae_checkpoint, vqvae_output_check


def chain_output_check(model: JukeboxChainModel) -> dict[str, torch.Tensor]:
    """Fixed-input outputs of every part (VQ-VAE codes and decodes, each prior's logits)."""
    outputs = {f"vqvae.{k}": v for k, v in vqvae_output_check(model.vqvae).items()}
    for level in (0, 1, 2):
        outputs.update({f"prior_level_{level}.{k}": v for k, v in prior_output_check(model.prior(level)).items()})
    return outputs


def _check_levels(priors: Sequence[PriorSource]) -> None:
    for level, prior in enumerate(priors):
        if prior.config.level != level:
            raise JukeboxCheckpointError(
                f"{prior.name} (position {level} of the priors) holds a level-{prior.config.level} prior; give the "
                "files in the order prior_level_0, prior_level_1, prior_level_2."
            )


def _skeleton(vqvae: VQVAESource, priors: Sequence[PriorSource], dtype: torch.dtype | None) -> JukeboxChainModel:
    config = JukeboxChainConfig(
        vqvae_config=vqvae.config,
        prior_level_0_config=priors[0].config,
        prior_level_1_config=priors[1].config,
        prior_level_2_config=priors[2].config,
    )
    with torch.device("meta"):
        model = JukeboxChainModel(config)
    if dtype is not None:
        model.to(dtype)
    return model


def _plan(vqvae: VQVAESource, priors: Sequence[PriorSource]) -> ConversionPlan:
    plan = prefixed(vqvae.plan, "vqvae.")
    for level, prior in enumerate(priors):
        plan.update(prefixed(prior.plan, f"prior_level_{level}."))
    return plan


def _audit(vqvae: VQVAESource, priors: Sequence[PriorSource]) -> ConversionAudit:
    key_map = {f"vqvae:{k}": v and f"vqvae.{v}" for k, v in vqvae.key_map.items()}
    for level, prior in enumerate(priors):
        key_map.update({f"{prior.name}:{k}": v and f"prior_level_{level}.{v}" for k, v in prior.key_map.items()})
    return ConversionAudit(
        model_class="JukeboxChainModel",
        source_format=priors[2].source_format,
        key_map=key_map,
        details={"parts": {"vqvae": vqvae.name, **{f"prior_level_{level}": p.name for level, p in enumerate(priors)}}},
    )


def _save(vqvae, priors, output_dir, dtype, overwrite, max_shard_size) -> Path:
    _check_levels(priors)
    model = _skeleton(vqvae, priors, dtype)
    return write_plan(
        model,
        _plan(vqvae, priors),
        output_dir,
        audit=_audit(vqvae, priors),
        source="the chain's files",
        sources=[spec for part in (vqvae, *priors) for spec in part.sources],
        output_check=chain_output_check,
        add_files=model.save_vocabularies,  # the tokenizers beside the weights, as save_pretrained writes them
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def _build(vqvae, priors, dtype) -> JukeboxChainModel:
    _check_levels(priors)
    model = load_plan(_skeleton(vqvae, priors, None), _plan(vqvae, priors), source="the chain's files").eval()
    run_output_check(model, chain_output_check)
    return model.to(dtype) if dtype is not None else model


def _open_original(vqvae_path, prior_paths) -> tuple[VQVAESource, list[PriorSource]]:
    if len(prior_paths) != 3:
        raise JukeboxCheckpointError(
            "Expected 3 prior files (prior_level_0, prior_level_1, prior_level_2, in this order), got "
            f"{len(prior_paths)}."
        )
    vqvae, priors = open_vqvae_checkpoint(vqvae_path), [open_prior_checkpoint(path) for path in prior_paths]
    parts: list[VQVAESource | PriorSource] = [vqvae, *priors]
    for part in parts:  # named with their folder: 5b/vqvae.pth.tar, 1b_lyrics/prior_level_2.pth.tar
        part.sources = [dataclasses.replace(s, name=f"{s.path.parent.name}/{s.path.name}") for s in part.sources]
    return vqvae, priors


def _open_hf4(folder) -> tuple[VQVAESource, list[PriorSource]]:
    checkpoint = load_hf4_folder(folder, prefixes=("vqvae.", "priors."))
    if len(checkpoint.prior_configs) != 3:
        raise JukeboxCheckpointError(f"{folder} lists {len(checkpoint.prior_configs)} priors; a Jukebox model has 3.")
    # the 4.x prior index is reversed against the level: priors.0 is the top prior (level 2)
    return open_hf4_vqvae(checkpoint), [open_hf4_prior(checkpoint, 2 - level) for level in (0, 1, 2)]


def convert_chain_checkpoints(
    vqvae_path: str | os.PathLike,
    prior_paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert the original files of one Jukebox model into a `JukeboxChainModel` folder, tensor by tensor.

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
    vqvae, priors = _open_original(vqvae_path, prior_paths)
    return _save(vqvae, priors, output_dir, dtype, overwrite, max_shard_size)


def load_chain_checkpoints(
    vqvae_path: str | os.PathLike, prior_paths: Sequence[str | os.PathLike], *, dtype: torch.dtype | None = None
) -> JukeboxChainModel:
    """The original files of one Jukebox model as a `JukeboxChainModel` in memory."""
    vqvae, priors = _open_original(vqvae_path, prior_paths)
    return _build(vqvae, priors, dtype)


def convert_hf4_chain(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert a transformers-4.x Jukebox folder (VQ-VAE + `priors.0..2`) into a `JukeboxChainModel` folder."""
    vqvae, priors = _open_hf4(folder)
    return _save(vqvae, priors, output_dir, dtype, overwrite, max_shard_size)


def load_hf4_chain(folder: str | os.PathLike, *, dtype: torch.dtype | None = None) -> JukeboxChainModel:
    """A transformers-4.x Jukebox folder as a `JukeboxChainModel` in memory."""
    vqvae, priors = _open_hf4(folder)
    return _build(vqvae, priors, dtype)


__all__ = [
    "chain_output_check",
    "convert_chain_checkpoints",
    "convert_hf4_chain",
    "load_chain_checkpoints",
    "load_hf4_chain",
]
