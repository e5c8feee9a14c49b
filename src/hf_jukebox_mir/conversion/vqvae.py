"""Conversion of the Jukebox VQ-VAE: original OpenAI `vqvae.pth.tar` or a transformers-4.x folder -> `JukeboxVQVAE`.

```python
>>> from hf_jukebox_mir.conversion.vqvae import convert_vqvae_checkpoint
>>> model = convert_vqvae_checkpoint("5b/vqvae.pth.tar", "converted/jukebox-vqvae")  # doctest: +SKIP
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from ..models.errors import JukeboxCheckpointError, JukeboxConfigError
from ..models.modeling_jukebox_vqvae import JukeboxVQVAE
from .audit import ConversionAudit
from .checkpoint_io import (
    Hf4Checkpoint,
    SourceSpec,
    hf4_sources,
    load_hf4_folder,
    load_original_checkpoint,
    source_file,
)
from .export import run_output_check
from .key_mapping import HF4_VQVAE_KEY_MAPPING, VQVAE_KEY_MAPPING, convert_keys
from .plan import ConversionPlan, load_plan, plan_from_mapping
from .streaming import DEFAULT_MAX_SHARD_SIZE, write_plan

# original hyperparameter -> JukeboxVQVAEConfig field (all required)
_REQUIRED_HPS = {
    "levels": "levels",
    "downs_t": "downs_t",
    "strides_t": "strides_t",
    "emb_width": "codebook_dim",
    "l_bins": "codebook_size",
    "width": "width",
    "depth": "depth",
    "dilation_growth_rate": "dilation_growth_rate",
    "vqvae_reverse_decoder_dilation": "reverse_decoder_dilation",
}
# optional ones, with the value the original code uses when they are absent or None
_OPTIONAL_HPS = {
    "hvqvae_multipliers": "multipliers",
    "m_conv": "m_conv",
    "dilation_cycle": "dilation_cycle",
    "sr": "sampling_rate",
}

# Length of the fixed output-check input: 2 clips of 0.19 s (8192 samples = 64 top-level codes).
CHECK_NUM_SAMPLES = 8192


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def vqvae_config_from_hps(hps: Mapping[str, Any]) -> JukeboxVQVAEConfig:
    """`JukeboxVQVAEConfig` from the hyperparameters (`hps`) stored in an original VQ-VAE checkpoint.

    Raises:
        JukeboxCheckpointError: a required hyperparameter is missing, or the hps describe something this
            implementation does not build (no bottleneck, invalid values).
    """
    missing = [name for name in _REQUIRED_HPS if hps.get(name) is None]
    if missing:
        raise JukeboxCheckpointError(
            f"The checkpoint's hps lack the VQ-VAE hyperparameter(s) {missing}; cannot build the VQ-VAE. "
            "Is this an original Jukebox VQ-VAE checkpoint (e.g. 5b/vqvae.pth.tar)?"
        )
    if hps.get("use_bottleneck", True) is False:
        raise JukeboxCheckpointError(
            "Unsupported VQ-VAE hps: use_bottleneck=False (a VQ-VAE without quantisation); only the released "
            "VQ-VAE layout with codebooks is supported."
        )
    kwargs = {field: _as_list(hps[name]) for name, field in _REQUIRED_HPS.items()}
    for name, field in _OPTIONAL_HPS.items():
        if hps.get(name) is not None:
            kwargs[field] = _as_list(hps[name])
    if hps.get("hvqvae_multipliers") is None:
        kwargs["multipliers"] = [1] * int(hps["levels"])  # the original's default
    try:
        return JukeboxVQVAEConfig(**kwargs)
    except JukeboxConfigError as err:
        raise JukeboxCheckpointError(f"Unsupported VQ-VAE hps: {err}") from None


# transformers-4.x `JukeboxVQVAEConfig` field -> ours; missing fields take the 4.x defaults (= released values)
_HF4_FIELDS = {
    "levels": "levels",
    "res_downs_t": "downs_t",
    "res_strides_t": "strides_t",
    "embed_dim": "codebook_dim",
    "nb_discrete_codes": "codebook_size",
    "res_conv_width": "width",
    "res_conv_depth": "depth",
    "multipliers": "multipliers",
    "res_convolution_multiplier": "m_conv",
    "res_dilation_growth_rate": "dilation_growth_rate",
    "res_dilation_cycle": "dilation_cycle",
}


def vqvae_config_from_hf4(vqvae_config: Mapping[str, Any], sampling_rate: int = 44100) -> JukeboxVQVAEConfig:
    """`JukeboxVQVAEConfig` from the `vqvae_config` entry of a transformers-4.x Jukebox `config.json`."""
    if vqvae_config.get("conv_input_shape", 1) != 1:
        raise JukeboxCheckpointError(
            f"Unsupported hf4 vqvae_config: conv_input_shape={vqvae_config['conv_input_shape']!r}; Jukebox is mono (1)."
        )
    if vqvae_config.get("conv_res_scale", False):
        raise JukeboxCheckpointError(
            "Unsupported hf4 vqvae_config: conv_res_scale=true (the released VQ-VAE has no residual scaling)."
        )
    kwargs: dict[str, Any] = {"reverse_decoder_dilation": True, "sampling_rate": int(sampling_rate)}
    for name, field in _HF4_FIELDS.items():
        if name in vqvae_config and (vqvae_config[name] is not None or field == "dilation_cycle"):
            kwargs[field] = _as_list(vqvae_config[name])
    try:
        return JukeboxVQVAEConfig(**kwargs)
    except JukeboxConfigError as err:
        raise JukeboxCheckpointError(f"Unsupported hf4 vqvae_config: {err}") from None


def vqvae_check_input(num_samples: int | None = None, sampling_rate: int = 44100) -> torch.Tensor:
    """Fixed, deterministic check audio `(2, num_samples)` in [-1, 1] (default `CHECK_NUM_SAMPLES`): a chord and
    a rising chirp."""
    num_samples = CHECK_NUM_SAMPLES if num_samples is None else num_samples
    t = torch.arange(num_samples, dtype=torch.float64) / sampling_rate
    chord = sum(torch.sin(2 * math.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    chirp = torch.sin(2 * math.pi * (100.0 * t + 0.5 * 8000.0 * t**2))
    return (0.5 * torch.stack([chord, chirp])).to(torch.float32)


def vqvae_output_check(model: JukeboxVQVAE) -> dict[str, torch.Tensor]:
    """Run the VQ-VAE on `vqvae_check_input()`: codes of every level and the audio decoded from each level."""
    audio = vqvae_check_input(sampling_rate=model.config.sampling_rate)
    codes = model.encode(audio, return_dict=True).audio_codes
    outputs: dict[str, torch.Tensor] = {}
    for level, level_codes in enumerate(codes):
        outputs[f"codes_level_{level}"] = level_codes
        outputs[f"decoded_from_level_{level}"] = model.decode(level_codes, start_level=level).audio_values
    return outputs


@dataclass
class VQVAESource:
    """A VQ-VAE checkpoint opened for conversion: its config, key map and plan (no tensor read yet)."""

    config: JukeboxVQVAEConfig
    key_map: dict[str, str | None]
    plan: ConversionPlan
    sources: list[SourceSpec]
    source_format: str
    name: str

    def audit(self, model_class: str = "JukeboxVQVAE") -> ConversionAudit:
        return ConversionAudit(model_class=model_class, source_format=self.source_format, key_map=self.key_map)


def open_vqvae_checkpoint(path: str | os.PathLike) -> VQVAESource:
    """Open an original OpenAI VQ-VAE checkpoint (e.g. `5b/vqvae.pth.tar`) for conversion."""
    checkpoint = load_original_checkpoint(path, expected_kind="vqvae")
    config = vqvae_config_from_hps(checkpoint.hps)
    name = checkpoint.path.name
    key_map = convert_keys(checkpoint.state_dict, VQVAE_KEY_MAPPING, source=str(checkpoint.path))
    return VQVAESource(
        config,
        key_map,
        plan_from_mapping(checkpoint.state_dict, key_map, source=name),
        [source_file(path, role="vqvae")],
        "openai",
        name,
    )


def open_hf4_vqvae(folder: str | os.PathLike | Hf4Checkpoint) -> VQVAESource:
    """Open the VQ-VAE of a transformers-4.x Jukebox folder; only the shards holding `vqvae.*` keys are opened."""
    checkpoint = folder if isinstance(folder, Hf4Checkpoint) else load_hf4_folder(folder, prefixes=("vqvae.",))
    config = vqvae_config_from_hf4(checkpoint.vqvae_config, sampling_rate=checkpoint.config.get("sampling_rate", 44100))
    state = checkpoint.state_dict.select(lambda key: key.startswith("vqvae."))
    name = f"{checkpoint.path.name} (vqvae.*)"
    key_map = convert_keys(state, HF4_VQVAE_KEY_MAPPING, source=str(checkpoint.path))
    return VQVAESource(
        config,
        key_map,
        plan_from_mapping(state, key_map, source=name),
        hf4_sources(checkpoint),
        "transformers-4.x",
        name,
    )


def build_vqvae(source: VQVAESource) -> JukeboxVQVAE:
    """The converted VQ-VAE in memory, after a finite-output check on the fixed input."""
    model = load_plan(JukeboxVQVAE(source.config), source.plan, source=source.name).eval()
    run_output_check(model, vqvae_output_check)
    return model


def save_vqvae(
    source: VQVAESource,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Write the converted VQ-VAE folder tensor by tensor (see `streaming.write_plan`)."""
    with torch.device("meta"):
        model = JukeboxVQVAE(source.config)
    return write_plan(
        model,
        source.plan,
        output_dir,
        audit=source.audit(),
        source=source.name,
        sources=source.sources,
        output_check=vqvae_output_check,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def load_vqvae_checkpoint(path: str | os.PathLike) -> JukeboxVQVAE:
    """An original OpenAI VQ-VAE checkpoint as a `JukeboxVQVAE` in memory."""
    return build_vqvae(open_vqvae_checkpoint(path))


def load_hf4_vqvae(folder: str | os.PathLike | Hf4Checkpoint) -> JukeboxVQVAE:
    """The VQ-VAE of a transformers-4.x Jukebox folder as a `JukeboxVQVAE` in memory."""
    return build_vqvae(open_hf4_vqvae(folder))


def convert_vqvae_checkpoint(
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert an original OpenAI VQ-VAE checkpoint (e.g. `5b/vqvae.pth.tar`) into a `JukeboxVQVAE` folder.

    The file is read safely and tensor by tensor, the config built from its `hps`, the keys renamed with
    `VQVAE_KEY_MAPPING` and accounted for strictly before anything is written; the folder holds safetensors, the
    config, the model code and `conversion_audit.json` (source SHA-256, old -> new key map, output check).

    Raises:
        JukeboxCheckpointError: unreadable/unsafe file, a prior instead of a VQ-VAE, unmapped or mis-shaped keys,
            non-finite outputs, or a non-empty `output_dir` without `overwrite=True`.
    """
    return save_vqvae(open_vqvae_checkpoint(path), output_dir, overwrite=overwrite, max_shard_size=max_shard_size)


def convert_hf4_vqvae(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert the VQ-VAE of a transformers-4.x Jukebox folder (e.g. a download of `openai/jukebox-5b-lyrics`).

    Only the shards holding `vqvae.*` keys are read. The config comes from `config.json`'s `vqvae_config`.
    """
    return save_vqvae(open_hf4_vqvae(folder), output_dir, overwrite=overwrite, max_shard_size=max_shard_size)


__all__ = [
    "CHECK_NUM_SAMPLES",
    "VQVAESource",
    "build_vqvae",
    "convert_hf4_vqvae",
    "convert_vqvae_checkpoint",
    "load_hf4_vqvae",
    "load_vqvae_checkpoint",
    "open_hf4_vqvae",
    "open_vqvae_checkpoint",
    "save_vqvae",
    "vqvae_check_input",
    "vqvae_config_from_hf4",
    "vqvae_config_from_hps",
    "vqvae_output_check",
]
