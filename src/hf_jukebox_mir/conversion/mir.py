"""Build a Jukebox MIR folder (VQ-VAE top-level encoder + top prior + feature extractor) in one go.

`jukebox-mir convert --vqvae vqvae.pth.tar --prior prior_level_2.pth.tar --num-layers 36 --output DIR` and
the transformers-4.x variant (`--hf4 DIR --mir`) end here. The folder loads with
`AutoModel.from_pretrained(DIR)` (package imported, or `trust_remote_code=True` without it) and
`AutoFeatureExtractor.from_pretrained(DIR)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..models.configuration_jukebox_mir import JukeboxMIRConfig
from ..models.configuration_jukebox_prior import JukeboxPriorConfig
from ..models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from ..models.errors import JukeboxCheckpointError
from ..models.feature_extraction_jukebox import JukeboxFeatureExtractor
from ..models.modeling_jukebox_mir import JukeboxMIRModel
from ..models.modeling_jukebox_prior import JukeboxPrior
from ..models.modeling_jukebox_vqvae import JukeboxVQVAE
from .audit import ConversionAudit
from .checkpoint_io import load_hf4_folder
from .export import strict_load_state_dict
from .plan import ConversionPlan, load_plan, prefixed
from .prior import CHECK_MAX_TOKENS, PriorSource, open_hf4_prior, open_prior_checkpoint
from .streaming import DEFAULT_MAX_SHARD_SIZE, save_model, write_plan
from .vqvae import VQVAESource, open_hf4_vqvae, open_vqvae_checkpoint


def mir_config(vqvae_config: JukeboxVQVAEConfig, prior_config: JukeboxPriorConfig, **config_kwargs) -> JukeboxMIRConfig:
    """The MIR config: the VQ-VAE reduced to its top-level encoder, and the top prior."""
    if prior_config.level != 2:
        raise JukeboxCheckpointError(
            f"The MIR model needs the top-level prior (level 2), got a level-{prior_config.level} prior "
            "(an upsampler). Use prior_level_2.pth.tar."
        )
    vqvae = vqvae_config.to_dict()
    vqvae["encoder_levels"] = [vqvae_config.levels - 1]  # features need only the top-level encoder
    return JukeboxMIRConfig(vqvae_config=vqvae, prior_config=prior_config.to_dict(), **config_kwargs)


def _mir_skeleton(config: JukeboxMIRConfig, dtype: torch.dtype | None) -> JukeboxMIRModel:
    """The MIR model on the meta device with the stored dtypes: the prior in `dtype`, the encoder float32."""
    with torch.device("meta"):
        model = JukeboxMIRModel(config)
    if dtype is not None:
        model.prior.to(dtype)
    return model


def mir_plan(model: JukeboxMIRModel, vqvae: VQVAESource, prior: PriorSource) -> ConversionPlan:
    """The MIR model's tensors: the VQ-VAE tensors it keeps (top encoder, codebooks) and the whole prior."""
    wanted = set(model.state_dict())
    return {
        **prefixed(vqvae.plan, "vqvae.", keep=lambda key: f"vqvae.{key}" in wanted),
        **prefixed(prior.plan, "prior."),
    }


def _mir_audit(vqvae: VQVAESource, prior: PriorSource) -> ConversionAudit:
    return ConversionAudit(
        model_class="JukeboxMIRModel",
        source_format=prior.source_format,
        key_map={
            **{f"vqvae:{k}": v and f"vqvae.{v}" for k, v in vqvae.key_map.items()},
            **{f"prior:{k}": v and f"prior.{v}" for k, v in prior.key_map.items()},
        },
        num_hidden_layers=prior.config.num_hidden_layers,
        checkpoint_depth=prior.checkpoint_depth,
        details=dict(prior.details),
    )


def compose_mir_model(vqvae: JukeboxVQVAE, prior: JukeboxPrior, **config_kwargs) -> JukeboxMIRModel:
    """A `JukeboxMIRModel` holding the VQ-VAE's encoders/codebooks and the given (possibly truncated) prior."""
    config = mir_config(vqvae.config, prior.config, **config_kwargs)
    with torch.device("meta"):
        model = JukeboxMIRModel(config)
    wanted = set(model.state_dict())
    state = {f"vqvae.{k}": v for k, v in vqvae.state_dict().items() if f"vqvae.{k}" in wanted}
    state.update({f"prior.{k}": v for k, v in prior.state_dict().items()})
    strict_load_state_dict(model, state, source="the converted VQ-VAE and prior")
    if model.prior.config.merged_decoder is False:
        model.prior.tie_weights()
    return model.eval()


def mir_output_check(model: JukeboxMIRModel) -> dict[str, torch.Tensor]:
    """Fixed-input check: a chirp of two attention blocks' worth of top-level codes (at most CHECK_MAX_TOKENS)
    through the whole MIR path."""
    config = model.config
    tokens = min(2 * config.prior_config.block_length, CHECK_MAX_TOKENS)
    n = min(config.window_length, tokens * config.hop_length)
    t = torch.arange(n, dtype=torch.float32) / config.vqvae_config.sampling_rate
    audio = (0.5 * torch.sin(2 * torch.pi * (220.0 + 200.0 * t) * t))[None]
    param = next(model.vqvae.parameters())  # audio in the encoder's dtype (float32), never rounded to the prior's
    with torch.no_grad():
        out = model(audio.to(param.device, param.dtype), output_hidden_states=False)
    return {"audio_codes": out.audio_codes, "pooler_output": out.pooler_output.float()}


def _mir_files(config: JukeboxMIRConfig, feature_extractor_kwargs: dict | None) -> Callable[[Path], None]:
    """Writes the feature extractor and the pipeline module beside the weights."""
    fe = JukeboxFeatureExtractor(
        sampling_rate=config.vqvae_config.sampling_rate,
        window_length=config.window_length,
        hop_length=config.hop_length,
        **(feature_extractor_kwargs or {}),
    )

    def add_files(folder: Path) -> None:
        from ..models.pipeline_jukebox import save_pipeline_files

        fe.save_pretrained(folder)
        # custom pipeline entry + module: `pipeline(..., trust_remote_code=True)` works without the package
        save_pipeline_files(folder)

    return add_files


def save_mir_folder(
    model: JukeboxMIRModel,
    output_dir,
    *,
    audit: ConversionAudit,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    feature_extractor_kwargs: dict | None = None,
) -> Path:
    """Save an in-memory MIR model (e.g. the demo's) the same way conversions do: audited, with its feature
    extractor, atomically."""
    return save_model(
        model,
        output_dir,
        audit=audit,
        output_check=mir_output_check,
        add_files=_mir_files(model.config, feature_extractor_kwargs),
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def _save_mir(
    vqvae: VQVAESource, prior: PriorSource, output_dir, *, dtype, overwrite, max_shard_size, feature_extractor_kwargs
) -> Path:
    model = _mir_skeleton(mir_config(vqvae.config, prior.config), dtype)
    plan = mir_plan(model, vqvae, prior)
    return write_plan(
        model,
        plan,
        output_dir,
        audit=_mir_audit(vqvae, prior),
        source=f"{vqvae.name} + {prior.name}",
        sources=vqvae.sources + prior.sources,
        output_check=mir_output_check,
        add_files=_mir_files(model.config, feature_extractor_kwargs),
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def _build_mir(vqvae: VQVAESource, prior: PriorSource, dtype: torch.dtype | None) -> JukeboxMIRModel:
    model = _mir_skeleton(mir_config(vqvae.config, prior.config), None)
    load_plan(model, mir_plan(model, vqvae, prior), source=f"{vqvae.name} + {prior.name}")
    if dtype is not None:
        model.prior.to(dtype)
    return model.eval()


def convert_mir_model(
    vqvae_path: str | os.PathLike,
    prior_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    feature_extractor_kwargs: dict | None = None,
) -> Path:
    """Original OpenAI files -> MIR folder, tensor by tensor. `num_layers=36` gives the JukeMIR layer-36 model;
    the blocks above it and the VQ-VAE's decoders and lower encoders are never read. The prior is stored in
    `dtype` (default float32); the encoder stays float32 (exact codes)."""
    return _save_mir(
        open_vqvae_checkpoint(vqvae_path),
        open_prior_checkpoint(prior_path, num_layers=num_layers),
        output_dir,
        dtype=dtype,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
        feature_extractor_kwargs=feature_extractor_kwargs,
    )


def load_mir_model(
    vqvae_path: str | os.PathLike,
    prior_path: str | os.PathLike,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
) -> JukeboxMIRModel:
    """Original OpenAI files -> `JukeboxMIRModel` in memory."""
    return _build_mir(
        open_vqvae_checkpoint(vqvae_path), open_prior_checkpoint(prior_path, num_layers=num_layers), dtype
    )


def convert_hf4_mir(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    feature_extractor_kwargs: dict | None = None,
) -> Path:
    """transformers-4.x Jukebox folder -> MIR folder (its VQ-VAE + its top prior `priors.0`), tensor by tensor."""
    checkpoint = load_hf4_folder(folder, prefixes=("vqvae.", "priors.0."))
    return _save_mir(
        open_hf4_vqvae(checkpoint),
        open_hf4_prior(checkpoint, 0, num_layers=num_layers),
        output_dir,
        dtype=dtype,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
        feature_extractor_kwargs=feature_extractor_kwargs,
    )


def load_hf4_mir(
    folder: str | os.PathLike, *, num_layers: int | None = None, dtype: torch.dtype | None = None
) -> JukeboxMIRModel:
    """transformers-4.x Jukebox folder -> `JukeboxMIRModel` in memory."""
    checkpoint = load_hf4_folder(folder, prefixes=("vqvae.", "priors.0."))
    return _build_mir(open_hf4_vqvae(checkpoint), open_hf4_prior(checkpoint, 0, num_layers=num_layers), dtype)


__all__ = [
    "compose_mir_model",
    "convert_hf4_mir",
    "convert_mir_model",
    "load_hf4_mir",
    "load_mir_model",
    "mir_config",
    "mir_output_check",
    "mir_plan",
    "save_mir_folder",
]
