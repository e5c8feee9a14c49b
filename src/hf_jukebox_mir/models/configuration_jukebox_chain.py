"""Configuration of the full Jukebox sampling chain: VQ-VAE + top prior + two upsamplers.

`JukeboxChainConfig` nests one [`JukeboxVQVAEConfig`] and three [`JukeboxPriorConfig`]s, named by the ORIGINAL
level numbering (0 = bottom, hop 8; 2 = top, hop 128), like the original checkpoint files
`prior_level_{0,1,2}.pth.tar`. (The transformers-4.x port numbered its priors the other way round.)
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PreTrainedConfig

from .configuration_jukebox_prior import (
    PRIOR_PRESETS,
    JukeboxPriorConfig,
    attention_layer_types,
)
from .configuration_jukebox_vqvae import JukeboxVQVAEConfig
from .errors import JukeboxConfigError

# The top prior of each released model; the VQ-VAE and both upsamplers are shared by all three.
TOP_PRIOR_PRESETS = {"5b": "prior_5b", "5b_lyrics": "prior_5b_lyrics", "1b_lyrics": "prior_1b_lyrics"}


def _preset_kwargs(name: str) -> dict:
    values = dict(PRIOR_PRESETS[name])
    values["attention_patterns"] = attention_layer_types(values.pop("attn_order"), values["num_hidden_layers"])
    return values


def _as_config(value, cls, default: dict, field: str):
    if value is None:
        return cls(**default)
    if isinstance(value, cls):
        return value
    if isinstance(value, PreTrainedConfig):
        raise JukeboxConfigError(f"JukeboxChainConfig.{field} must be a {cls.__name__}, got {type(value).__name__}.")
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
        return cls(**value)
    raise JukeboxConfigError(
        f"JukeboxChainConfig.{field} must be a {cls.__name__} or a dict, got {type(value).__name__}."
    )


class JukeboxChainConfig(PreTrainedConfig):
    r"""Configuration of [`JukeboxChainModel`]: the VQ-VAE and the priors of levels 0, 1 and 2.

    Args:
        vqvae_config ([`JukeboxVQVAEConfig`] or `dict`): the VQ-VAE (default: the released one).
        prior_level_0_config, prior_level_1_config ([`JukeboxPriorConfig`] or `dict`): the bottom and middle
            upsamplers (defaults: the released `upsampler_level_0` / `upsampler_level_1`).
        prior_level_2_config ([`JukeboxPriorConfig`] or `dict`): the top prior (default: `prior_5b_lyrics`).
        hop_fractions (`list[float]`): window hop as a fraction of the context, per level 0, 1, 2
            (original README values 0.5, 0.5, 0.125).
        temperatures (`list[float]`): default sampling temperature per level 0, 1, 2 (original `sample.py`: 0.99).
        chunk_size (`int`): default prefill chunk length (positions pushed through the cache at once).

    Example:

    ```python
    >>> from hf_jukebox_mir.models.configuration_jukebox_chain import JukeboxChainConfig
    >>> config = JukeboxChainConfig.from_preset("1b_lyrics")
    >>> config.prior_level_2_config.n_ctx, config.prior_level_0_config.hop_length
    (6144, 8)
    ```
    """

    model_type = "jukebox_mir_chain"
    sub_configs: ClassVar[dict[str, type[PreTrainedConfig]]] = {
        "vqvae_config": JukeboxVQVAEConfig,
        "prior_level_0_config": JukeboxPriorConfig,
        "prior_level_1_config": JukeboxPriorConfig,
        "prior_level_2_config": JukeboxPriorConfig,
    }

    vqvae_config: JukeboxVQVAEConfig | dict | None = None
    prior_level_0_config: JukeboxPriorConfig | dict | None = None
    prior_level_1_config: JukeboxPriorConfig | dict | None = None
    prior_level_2_config: JukeboxPriorConfig | dict | None = None
    hop_fractions: list[float] | tuple[float, ...] = (0.5, 0.5, 0.125)
    temperatures: list[float] | tuple[float, ...] = (0.99, 0.99, 0.99)
    chunk_size: int = 32

    def __post_init__(self, **kwargs):
        self.vqvae_config = _as_config(self.vqvae_config, JukeboxVQVAEConfig, {}, "vqvae_config")
        self.prior_level_0_config = _as_config(
            self.prior_level_0_config, JukeboxPriorConfig, _preset_kwargs("upsampler_level_0"), "prior_level_0_config"
        )
        self.prior_level_1_config = _as_config(
            self.prior_level_1_config, JukeboxPriorConfig, _preset_kwargs("upsampler_level_1"), "prior_level_1_config"
        )
        self.prior_level_2_config = _as_config(
            self.prior_level_2_config, JukeboxPriorConfig, _preset_kwargs("prior_5b_lyrics"), "prior_level_2_config"
        )
        self.hop_fractions = [float(v) for v in self.hop_fractions]
        self.temperatures = [float(v) for v in self.temperatures]
        self.chunk_size = int(self.chunk_size)
        super().__post_init__(**kwargs)
        self._validate_chain()

    # ------------------------------------------------------------------ derived values
    def prior_config(self, level: int) -> JukeboxPriorConfig:
        """The prior config of `level` (0 = bottom upsampler, 1 = middle upsampler, 2 = top prior)."""
        if level not in (0, 1, 2):
            raise JukeboxConfigError(f"level must be 0, 1 or 2, got {level!r}.")
        return getattr(self, f"prior_level_{level}_config")

    @property
    def sampling_rate(self) -> int:
        return self.vqvae_config.sampling_rate

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Audio samples per code at levels 0, 1, 2 (8, 32, 128)."""
        return tuple(self.vqvae_config.hop_lengths)

    # ------------------------------------------------------------------ validation
    def _validate_chain(self) -> None:
        if self.vqvae_config.levels != 3:
            raise JukeboxConfigError(
                f"JukeboxChainConfig needs a 3-level VQ-VAE, got vqvae_config.levels={self.vqvae_config.levels}."
            )
        for name, values in (("hop_fractions", self.hop_fractions), ("temperatures", self.temperatures)):
            if len(values) != 3 or not all(v > 0 for v in values):
                raise JukeboxConfigError(
                    f"JukeboxChainConfig.{name} must hold 3 positive numbers (levels 0, 1, 2), got {values}."
                )
        if not all(v <= 1 for v in self.hop_fractions):
            raise JukeboxConfigError(f"JukeboxChainConfig.hop_fractions must lie in (0, 1], got {self.hop_fractions}.")
        if self.chunk_size < 1:
            raise JukeboxConfigError(f"JukeboxChainConfig.chunk_size must be >= 1, got {self.chunk_size}.")
        hops = self.hop_lengths
        for level in (0, 1, 2):
            prior = self.prior_config(level)
            field = f"prior_level_{level}_config"
            if prior.level != level:
                raise JukeboxConfigError(f"JukeboxChainConfig.{field}.level is {prior.level}, expected {level}.")
            if prior.hop_length != hops[level]:
                raise JukeboxConfigError(
                    f"JukeboxChainConfig.{field}.hop_length is {prior.hop_length} but the VQ-VAE's level {level} "
                    f"has hop {hops[level]}."
                )
            if prior.vocab_size != self.vqvae_config.codebook_size:
                raise JukeboxConfigError(
                    f"JukeboxChainConfig.{field}.vocab_size is {prior.vocab_size} but the VQ-VAE has "
                    f"{self.vqvae_config.codebook_size} codes per level."
                )
            if level < 2 and prior.upsampling_factor != hops[level + 1] // hops[level]:
                raise JukeboxConfigError(
                    f"JukeboxChainConfig.{field} upsamples by {prior.upsampling_factor} but the VQ-VAE hops "
                    f"{hops[level]} -> {hops[level + 1]} differ by {hops[level + 1] // hops[level]}."
                )

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str = "5b_lyrics", **kwargs) -> JukeboxChainConfig:
        """The released model `name` (`5b`, `5b_lyrics` or `1b_lyrics`): shared VQ-VAE and upsamplers, its top prior."""
        if name not in TOP_PRIOR_PRESETS:
            raise JukeboxConfigError(f"Unknown Jukebox model {name!r}: expected one of {sorted(TOP_PRIOR_PRESETS)}.")
        return cls(
            vqvae_config=JukeboxVQVAEConfig.from_preset(name),
            prior_level_2_config=JukeboxPriorConfig.from_preset(TOP_PRIOR_PRESETS[name]),
            **kwargs,
        )


JukeboxChainConfig.register_for_auto_class()

__all__ = ["TOP_PRIOR_PRESETS", "JukeboxChainConfig"]
