"""Convert Jukebox prior checkpoints into `JukeboxPrior` folders (safetensors + config + audit).

Two sources:

* the ORIGINAL OpenAI files `prior_level_{0,1,2}.pth.tar` (`{"hps", "model", ...}`; the 5b top priors store
  their Conv1D weights in float16): `convert_prior_checkpoint`;
* the transformers-4.x Hub format (`config.json` + sharded `pytorch_model-*.bin`, keys `priors.N.*`, the top
  prior at N = 0): `convert_hf4_prior`.

Steps, for both: safe load (no arbitrary unpickling) -> config from the source's hyperparameters -> pure key
mapping (`prior_keys.py`) -> Conv1D transposes -> strict load (every missing / extra / mis-shaped key named)
-> output check on a fixed input -> `save_pretrained` (safetensors) + `conversion_audit.json`.

`num_layers` truncates the transformer (e.g. 36 of 72 for JukeMIR features): the dropped layers' keys are
mapped to `None` by the table and never copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.configuration_jukebox_prior import JukeboxPriorConfig, attention_layer_types
from ..models.errors import JukeboxCheckpointError
from ..models.modeling_jukebox_prior import JukeboxPrior
from .audit import ConversionAudit
from .checkpoint_io import (
    Hf4Checkpoint,
    SourceSpec,
    hf4_sources,
    load_hf4_folder,
    load_original_checkpoint,
    source_file,
)
from .key_mapping import convert_keys
from .plan import ConversionPlan, load_plan, plan_from_mapping
from .prior_keys import hf4_prior_key_mapping, needs_transpose, original_prior_key_mapping
from .streaming import DEFAULT_MAX_SHARD_SIZE, write_plan

# attention_pattern names of the transformers-4.x port -> original attn_order
HF4_ATTENTION_ORDERS = {
    "all_dense_attention": 0,
    "raw_column_previous_row_attention": 2,
    "large_separated_enc_dec_w_lyrics": 10,
    "enc_dec_with_lyrics": 12,
}


def _check_num_layers(num_layers: int | None, depth: int) -> int:
    if num_layers is None:
        return depth
    if not isinstance(num_layers, int) or not 1 <= num_layers <= depth:
        raise JukeboxCheckpointError(
            f"num_layers must be an integer in [1, {depth}] for this checkpoint, got {num_layers!r}."
        )
    return num_layers


# The fixed-input checks run every block of the converted model on this many tokens at most (two attention blocks
# of the fixture-size priors; at real size a short input keeps the check to seconds per block stack).
CHECK_MAX_TOKENS = 64


def prior_output_check(model: JukeboxPrior) -> dict[str, torch.Tensor]:
    """Fixed-input check: logits and last hidden state on two attention blocks' worth of tokens (at most
    CHECK_MAX_TOKENS)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    length = min(config.n_ctx, 2 * config.block_length, CHECK_MAX_TOKENS)
    codes = torch.randint(0, config.vocab_size, (1, length), generator=generator)
    metadata = model.build_metadata(batch_size=1)
    if config.n_lyric_tokens:
        metadata[:, 4 + config.max_genres :] = torch.randint(
            1, config.lyric_vocab_size, (1, config.n_lyric_tokens), generator=generator
        )
    upper = None
    if config.is_upsampler:
        # the upper-level codes under the checked tokens only (the conditioner is the costly part at real size)
        upper_length = max(1, length * config.upper_level_length // config.n_ctx)
        upper = torch.randint(0, config.vocab_size, (1, upper_length), generator=generator)
    param = next(model.parameters())
    with torch.no_grad():
        out = model(codes.to(param.device), metadata=metadata, upper_level_codes=upper)
    return {"logits": out.logits.float(), "last_hidden_state": out.last_hidden_state.float()}


@dataclass
class PriorSource:
    """A prior checkpoint opened for conversion: its config, key map and plan (no tensor read yet)."""

    config: JukeboxPriorConfig
    checkpoint_depth: int
    key_map: dict[str, str | None]
    plan: ConversionPlan
    sources: list[SourceSpec]
    source_format: str
    name: str
    details: dict[str, Any]


def _audit(source: PriorSource, model_class: str) -> ConversionAudit:
    return ConversionAudit(
        model_class=model_class,
        source_format=source.source_format,
        key_map=source.key_map,
        transposed=sorted(new for new in source.key_map.values() if new is not None and needs_transpose(new)),
        num_hidden_layers=source.config.num_hidden_layers,
        checkpoint_depth=source.checkpoint_depth,
        details=source.details,
    )


def open_prior_checkpoint(path: str | os.PathLike, *, num_layers: int | None = None) -> PriorSource:
    """Open an original `prior_level_N.pth.tar` for conversion (hyperparameters and tensor headers only)."""
    checkpoint = load_original_checkpoint(path, expected_kind="prior")
    base = JukeboxPriorConfig.from_original_hparams(checkpoint.hps)
    keep = _check_num_layers(num_layers, base.num_hidden_layers)
    config = JukeboxPriorConfig.from_original_hparams(checkpoint.hps, num_hidden_layers=keep)
    mapping = convert_keys(checkpoint.state_dict, original_prior_key_mapping(config), source=str(path))
    name = Path(path).name
    return PriorSource(
        config=config,
        checkpoint_depth=base.num_hidden_layers,
        key_map=mapping,
        plan=plan_from_mapping(checkpoint.state_dict, mapping, source=name, transpose=needs_transpose),
        sources=[source_file(path, role=f"prior_level_{config.level}")],
        source_format="openai",
        name=name,
        details={
            "stored_dtypes": sorted(
                {str(h.dtype).replace("torch.", "") for h in checkpoint.state_dict.headers.values()}
            )
        },
    )


def build_prior(source: PriorSource, *, dtype: torch.dtype | None = None) -> JukeboxPrior:
    """The converted prior in memory (reads every planned tensor)."""
    model = load_plan(JukeboxPrior(source.config), source.plan, source=source.name).eval()
    return model.to(dtype) if dtype is not None else model


def save_prior(
    source: PriorSource,
    output_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Write the converted prior folder tensor by tensor (see `streaming.write_plan`)."""
    with torch.device("meta"):
        model = JukeboxPrior(source.config)
    if dtype is not None:
        model.to(dtype)
    return write_plan(
        model,
        source.plan,
        output_dir,
        audit=_audit(source, "JukeboxPrior"),
        source=source.name,
        sources=source.sources,
        output_check=prior_output_check,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def load_prior_checkpoint(
    path: str | os.PathLike, *, num_layers: int | None = None, dtype: torch.dtype | None = None
) -> JukeboxPrior:
    """An original `prior_level_N.pth.tar` as a `JukeboxPrior` in memory (`num_layers` keeps the first blocks)."""
    return build_prior(open_prior_checkpoint(path, num_layers=num_layers), dtype=dtype)


def convert_prior_checkpoint(
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert an original `prior_level_N.pth.tar` into a `JukeboxPrior` folder, tensor by tensor.

    Example:

    ```python
    >>> convert_prior_checkpoint("5b/prior_level_2.pth.tar", "jukebox-5b-prior-36", num_layers=36)  # doctest: +SKIP
    ```
    """
    return save_prior(
        open_prior_checkpoint(path, num_layers=num_layers),
        output_dir,
        dtype=dtype,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def prior_config_from_hf4(prior: dict[str, Any], top: dict[str, Any], index: int, **overrides) -> JukeboxPriorConfig:
    """`JukeboxPriorConfig` from a transformers-4.x prior config (`prior_{index}`) and the top-level config."""
    try:
        level = 2 - index
        is_top = index == 0
        pattern = prior["attention_pattern"]
        if pattern not in HF4_ATTENTION_ORDERS:
            raise JukeboxCheckpointError(
                f"Unsupported attention_pattern {pattern!r} in prior_{index}; expected one of "
                f"{sorted(HF4_ATTENTION_ORDERS)}."
            )
        depth = int(prior["num_layers"])
        hop = 1
        for down, stride in zip(prior["res_downs_t"][: level + 1], prior["res_strides_t"][: level + 1]):
            hop *= stride**down
        single = bool(prior.get("is_encoder_decoder"))
        n_tokens = int(prior.get("nb_relevant_lyric_tokens") or 0)
        lyrics_mode = "single_sequence" if single else ("separate_encoder" if n_tokens else None)
        genre_bins, artist_bins = prior["metadata_dims"]
        values: dict[str, Any] = dict(
            level=level,
            hop_length=hop,
            vocab_size=int(prior["music_vocab_size"]),
            hidden_size=int(prior["hidden_size"]),
            num_hidden_layers=depth,
            num_attention_heads=int(prior["n_heads"]),
            attention_multiplier=float(prior["attention_multiplier"]),
            mlp_multiplier=float(prior["mlp_multiplier"]),
            n_ctx=int(prior["n_ctx"]),
            blocks=int(prior["blocks"]),
            attention_patterns=attention_layer_types(HF4_ATTENTION_ORDERS[pattern], depth),
            merged_decoder=bool(prior["merged_decoder"]) and not single,
            num_artists=int(artist_bins),
            num_genres=int(genre_bins),
            # The 4.x JukeboxModel copies the top prior's genre/timing fields onto every prior; the upsamplers
            # always use v2 labels with 5 genre slots and have no timing embedding.
            max_genres=int(top.get("max_nb_genres", prior["max_nb_genres"])) if is_top else 5,
            use_timing=is_top,
            timing_bins=int(top.get("timing_dims", prior["timing_dims"])) if is_top else 128,
            min_duration=float(top.get("min_duration", prior["min_duration"])) if is_top else 0.0,
            max_duration=float(top.get("max_duration", prior["max_duration"])),
            sampling_rate=int(top.get("sampling_rate", 44100)),
            labels_version=3 if single else 2,
            lyrics_mode=lyrics_mode,
            n_lyric_tokens=n_tokens if lyrics_mode else 0,
            lyric_vocab_size=int(prior["lyric_vocab_size"]),
            prime_loss_fraction=float(prior.get("encoder_loss_fraction", 0.0)) if lyrics_mode else 0.0,
        )
        if not is_top:
            values.update(
                upsampler_width=int(prior["res_conv_width"]),
                upsampler_depth=int(prior["res_conv_depth"]),
                upsampler_dilation_growth_rate=int(prior["res_dilation_growth_rate"]),
                upsampler_dilation_cycle=prior["res_dilation_cycle"],
                upsampler_res_scale=bool(prior["conv_res_scale"]),
                upsampler_down_t=int(prior["res_downs_t"][level + 1]),
                upsampler_stride_t=int(prior["res_strides_t"][level + 1]),
            )
        if lyrics_mode == "separate_encoder":
            enc = prior["encoder_config"]
            enc_depth = int(enc["num_layers"])
            values.update(
                encoder_hidden_size=int(enc["hidden_size"]),
                encoder_num_layers=enc_depth,
                encoder_num_heads=int(enc["n_heads"]),
                encoder_blocks=int(enc["blocks"]),
                encoder_attention_patterns=attention_layer_types(
                    HF4_ATTENTION_ORDERS[enc["attention_pattern"]], enc_depth
                ),
            )
    except KeyError as err:
        raise JukeboxCheckpointError(
            f"prior_{index} of the transformers-4.x config.json lacks the field {err}; is this a Jukebox folder?"
        ) from None
    values.update(overrides)
    return JukeboxPriorConfig(**values)


def open_hf4_prior(
    folder: str | os.PathLike | Hf4Checkpoint, index: int, *, num_layers: int | None = None
) -> PriorSource:
    """Open prior `priors.{index}` of a transformers-4.x folder for conversion (0 = top prior, 1 = middle
    upsampler, 2 = bottom upsampler); only the shards holding its keys are opened."""
    checkpoint = (
        folder if isinstance(folder, Hf4Checkpoint) else load_hf4_folder(folder, prefixes=(f"priors.{index}.",))
    )
    configs = checkpoint.prior_configs
    if not 0 <= index < len(configs):
        raise JukeboxCheckpointError(f"{checkpoint.path} has {len(configs)} priors; index {index} does not exist.")
    base = prior_config_from_hf4(configs[index], checkpoint.config, index)
    keep = _check_num_layers(num_layers, base.num_hidden_layers)
    config = prior_config_from_hf4(configs[index], checkpoint.config, index, num_hidden_layers=keep)
    prefix = f"priors.{index}."
    state = checkpoint.state_dict.select(lambda key: key.startswith(prefix))
    if not len(state):
        raise JukeboxCheckpointError(f"{checkpoint.path} holds no tensors under {prefix!r}.")
    mapping = convert_keys(state, hf4_prior_key_mapping(config, index), source=str(checkpoint.path))
    name = f"{Path(checkpoint.path).name}:{prefix}"
    return PriorSource(
        config=config,
        checkpoint_depth=base.num_hidden_layers,
        key_map=mapping,
        plan=plan_from_mapping(state, mapping, source=name, transpose=needs_transpose),
        sources=hf4_sources(checkpoint),
        source_format="transformers-4.x",
        name=name,
        details={"hf4_prior_index": index},
    )


def convert_hf4_prior(
    folder: str | os.PathLike | Hf4Checkpoint,
    index: int,
    output_dir: str | os.PathLike,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Convert prior `priors.{index}` of a transformers-4.x Jukebox folder into a `JukeboxPrior` folder."""
    return save_prior(
        open_hf4_prior(folder, index, num_layers=num_layers),
        output_dir,
        dtype=dtype,
        overwrite=overwrite,
        max_shard_size=max_shard_size,
    )


def load_hf4_prior(
    folder: str | os.PathLike | Hf4Checkpoint,
    index: int,
    *,
    num_layers: int | None = None,
    dtype: torch.dtype | None = None,
) -> JukeboxPrior:
    """Prior `priors.{index}` of a transformers-4.x folder as a `JukeboxPrior` in memory."""
    return build_prior(open_hf4_prior(folder, index, num_layers=num_layers), dtype=dtype)


__all__ = [
    "HF4_ATTENTION_ORDERS",
    "PriorSource",
    "build_prior",
    "convert_hf4_prior",
    "convert_prior_checkpoint",
    "load_hf4_prior",
    "load_prior_checkpoint",
    "open_hf4_prior",
    "open_prior_checkpoint",
    "prior_config_from_hf4",
    "prior_output_check",
    "save_prior",
]
