"""Build a Jukebox MIR folder (VQ-VAE top-level encoder + top prior + feature extractor) in one go.

`jukebox-mir convert --vqvae vqvae.pth.tar --prior prior_level_2.pth.tar --num-layers 36 --output DIR` and
the transformers-4.x variant (`--hf4 DIR --mir`) end here. The folder loads with
`AutoModel.from_pretrained(DIR)` (package imported, or `trust_remote_code=True` without it) and
`AutoFeatureExtractor.from_pretrained(DIR)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..models.configuration_jukebox_mir import JukeboxMIRConfig
from ..models.errors import JukeboxCheckpointError
from ..models.feature_extraction_jukebox import JukeboxFeatureExtractor
from ..models.modeling_jukebox_mir import JukeboxMIRModel
from ..models.modeling_jukebox_prior import JukeboxPrior
from ..models.modeling_jukebox_vqvae import JukeboxVQVAE
from .checkpoint_io import load_hf4_folder
from .export import save_converted, strict_load_state_dict
from .prior import convert_hf4_prior, convert_prior_checkpoint
from .vqvae import convert_hf4_vqvae, convert_vqvae_checkpoint


def compose_mir_model(vqvae: JukeboxVQVAE, prior: JukeboxPrior, **config_kwargs) -> JukeboxMIRModel:
    """A `JukeboxMIRModel` holding the VQ-VAE's encoders/codebooks and the given (possibly truncated) prior."""
    if prior.config.level != 2:
        raise JukeboxCheckpointError(
            f"The MIR model needs the top-level prior (level 2), got a level-{prior.config.level} prior "
            "(an upsampler). Use prior_level_2.pth.tar."
        )
    vqvae_config = vqvae.config.to_dict()
    vqvae_config["encoder_levels"] = [vqvae.config.levels - 1]  # features need only the top-level encoder
    config = JukeboxMIRConfig(vqvae_config=vqvae_config, prior_config=prior.config.to_dict(), **config_kwargs)
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
    """Fixed-input check: a 2-window-block chirp through the whole MIR path."""
    config = model.config
    n = min(config.window_length, 8 * config.prior_config.block_length * config.hop_length)
    t = torch.arange(n, dtype=torch.float32) / config.vqvae_config.sampling_rate
    audio = (0.5 * torch.sin(2 * torch.pi * (220.0 + 200.0 * t) * t))[None]
    param = next(model.vqvae.parameters())  # audio in the encoder's dtype (float32), never rounded to the prior's
    with torch.no_grad():
        out = model(audio.to(param.device, param.dtype), output_hidden_states=False)
    return {"audio_codes": out.audio_codes, "pooler_output": out.pooler_output.float()}


def save_mir_folder(model: JukeboxMIRModel, output_dir, *, audit: dict[str, Any], overwrite: bool = False,
                    max_shard_size: int | str = "2GB", feature_extractor_kwargs: dict | None = None) -> Path:
    """Save the model (safetensors, audited) and its `JukeboxFeatureExtractor` into one folder."""
    output_dir = Path(output_dir)
    fe = JukeboxFeatureExtractor(
        sampling_rate=model.config.vqvae_config.sampling_rate,
        window_length=model.config.window_length,
        hop_length=model.config.hop_length,
        **(feature_extractor_kwargs or {}),
    )
    def add_files(folder: Path) -> None:
        from ..models.pipeline_jukebox import save_pipeline_files

        fe.save_pretrained(folder)
        # custom pipeline entry + module: `pipeline(..., trust_remote_code=True)` works without the package
        save_pipeline_files(folder)

    save_converted(model, output_dir, audit=audit, output_check=mir_output_check, overwrite=overwrite,
                   max_shard_size=max_shard_size, add_files=add_files)
    return output_dir


def convert_mir_model(
    vqvae_path: str | os.PathLike,
    prior_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "2GB",
    feature_extractor_kwargs: dict | None = None,
) -> JukeboxMIRModel:
    """Original OpenAI files -> MIR folder. `num_layers=36` gives the JukeMIR layer-36 model."""
    from .checkpoint_io import sha256_file

    vqvae = convert_vqvae_checkpoint(vqvae_path)
    prior = convert_prior_checkpoint(prior_path, num_layers=num_layers)
    sources = [{"file": Path(p).name, "sha256": sha256_file(p)} for p in (vqvae_path, prior_path)]
    return _finish(compose_mir_model(vqvae, prior), output_dir, "openai", sources, dtype=dtype, overwrite=overwrite,
                   max_shard_size=max_shard_size, feature_extractor_kwargs=feature_extractor_kwargs)


def convert_hf4_mir(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "2GB",
    feature_extractor_kwargs: dict | None = None,
) -> JukeboxMIRModel:
    """transformers-4.x Jukebox folder -> MIR folder (its VQ-VAE + its top prior `priors.0`)."""
    checkpoint = load_hf4_folder(folder, prefixes=("vqvae.", "priors.0."))
    vqvae = convert_hf4_vqvae(folder)
    prior = convert_hf4_prior(checkpoint, 0, num_layers=num_layers)
    sources = [{"file": n, "sha256": s} for n, s in sorted(checkpoint.shard_sha256.items())]
    return _finish(compose_mir_model(vqvae, prior), output_dir, "transformers-4.x", sources, dtype=dtype,
                   overwrite=overwrite, max_shard_size=max_shard_size, feature_extractor_kwargs=feature_extractor_kwargs)


def _finish(model: JukeboxMIRModel, output_dir, source_format: str, sources: list[dict], *, dtype, overwrite,
            max_shard_size, feature_extractor_kwargs) -> JukeboxMIRModel:
    """Cast the prior (the VQ-VAE encoder stays float32: exact codes), then (if `output_dir` is given) save the
    MIR folder with its audit."""
    if dtype is not None:
        model.prior.to(dtype)
    if output_dir is not None:
        audit = {
            "source_format": source_format,
            "sources": sources,
            "num_hidden_layers": model.config.num_hidden_layers,
            "dtype": str(next(model.prior.parameters()).dtype).replace("torch.", ""),
            "vqvae_dtype": str(next(model.vqvae.parameters()).dtype).replace("torch.", ""),
        }
        save_mir_folder(model, output_dir, audit=audit, overwrite=overwrite, max_shard_size=max_shard_size,
                        feature_extractor_kwargs=feature_extractor_kwargs)
    return model


__all__ = ["compose_mir_model", "convert_hf4_mir", "convert_mir_model", "mir_output_check", "save_mir_folder"]
