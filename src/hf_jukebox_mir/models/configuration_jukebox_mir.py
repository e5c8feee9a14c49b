"""Configuration of the Jukebox MIR model: VQ-VAE top-level encoder + top prior, in ONE folder.

The JukeMIR recipe (Castellon et al., ISMIR 2021): 44.1 kHz mono peak-normalised audio -> VQ-VAE top-level
codes -> the 5b top prior conditioned on artist "unknown", genre "unknown", total length 62 s, offset 0 ->
the activations of block 36 of 72 -> mean over time (4800-d).
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .configuration_jukebox_prior import JukeboxPriorConfig
from .configuration_jukebox_vqvae import JukeboxVQVAEConfig
from .errors import JukeboxConfigError


class JukeboxMIRConfig(PreTrainedConfig):
    r"""Configuration of [`JukeboxMIRModel`].

    Args:
        vqvae_config (`dict` or [`JukeboxVQVAEConfig`]): the VQ-VAE (only its top-level encoder is built).
        prior_config (`dict` or [`JukeboxPriorConfig`]): the top-level prior (`level` 2).
        num_hidden_layers (`int`, *optional*): prior blocks to build and load (e.g. 36 of 72 for JukeMIR
            features); defaults to the prior config's value. Set it at load time:
            `AutoModel.from_pretrained(folder, num_hidden_layers=36)`.
        artist_id (`int`), genre_ids (`list[int]`): conditioning labels (0 = "unknown", as JukeMIR).
        total_length_seconds (`float`): the `total_length` label in seconds (62 s as JukeMIR; rounded down to
            whole top-level tokens).
    """

    model_type = "jukebox_mir"

    vqvae_config: dict | JukeboxVQVAEConfig | None = None
    prior_config: dict | JukeboxPriorConfig | None = None
    artist_id: int = 0
    genre_ids: list[int] | None = None
    total_length_seconds: float = 62.0

    def __post_init__(self, **kwargs):
        if self.vqvae_config is None:
            self.vqvae_config = JukeboxVQVAEConfig.from_preset("5b")
        elif isinstance(self.vqvae_config, dict):
            self.vqvae_config = JukeboxVQVAEConfig(**{k: v for k, v in self.vqvae_config.items() if k != "model_type"})
        if self.prior_config is None:
            self.prior_config = JukeboxPriorConfig.from_preset("prior_5b")
        elif isinstance(self.prior_config, dict):
            self.prior_config = JukeboxPriorConfig(**{k: v for k, v in self.prior_config.items() if k != "model_type"})
        self.genre_ids = list(self.genre_ids) if self.genre_ids is not None else [0]
        num_hidden_layers = kwargs.pop("num_hidden_layers", None)  # lives in prior_config (property below)
        super().__post_init__(**kwargs)
        if num_hidden_layers is not None:
            self.num_hidden_layers = num_hidden_layers
        self._validate_mir()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """`PreTrainedConfig.from_dict`, refusing a saved config without its sub-configs: the 5b defaults would
        build a ~20 GB model for weights of another shape (a config read from a file never falls back to them)."""
        missing = [key for key in ("vqvae_config", "prior_config") if not isinstance(config_dict.get(key), dict)]
        if missing and config_dict.get("model_type", cls.model_type) == cls.model_type:
            raise JukeboxConfigError(
                f"This Jukebox MIR config.json has no {' and no '.join(missing)}; a converted folder always has both "
                "(without them the full-size 5b defaults would be built, ~20 GB, for weights of another shape). The "
                "folder is damaged or hand-edited: convert it again with `jukebox-mir convert --vqvae ... --prior ...`."
            )
        return super().from_dict(config_dict, **kwargs)

    def _validate_mir(self) -> None:
        if self.prior_config.level != 2:
            raise JukeboxConfigError(
                f"JukeboxMIRConfig.prior_config.level={self.prior_config.level} is invalid: expected the top prior "
                "(level 2); upsamplers need codes of the level above and are not MIR feature extractors."
            )
        if self.prior_config.hop_length != self.vqvae_config.top_level_hop:
            raise JukeboxConfigError(
                f"The prior's hop_length {self.prior_config.hop_length} differs from the VQ-VAE's top-level hop "
                f"{self.vqvae_config.top_level_hop}: they do not belong together."
            )

    @property
    def num_hidden_layers(self) -> int:
        """Prior blocks built (<= the checkpoint's depth)."""
        return self.prior_config.num_hidden_layers

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        depth = len(self.prior_config.attention_patterns)
        if not isinstance(value, int) or not 1 <= value <= depth:
            raise JukeboxConfigError(
                f"JukeboxMIRConfig.num_hidden_layers={value!r} is invalid: expected an integer in [1, {depth}] "
                "(the prior checkpoint's depth)."
            )
        self.prior_config.num_hidden_layers = value

    @property
    def hidden_size(self) -> int:
        return self.prior_config.hidden_size

    @property
    def hop_length(self) -> int:
        """Audio samples per top-level token (128)."""
        return self.vqvae_config.top_level_hop

    @property
    def window_length(self) -> int:
        """Audio samples per prior context window (n_ctx x hop: 1,048,576 = 23.78 s for the 5b prior)."""
        return self.prior_config.n_ctx * self.hop_length

    @property
    def frame_rate(self) -> float:
        """Hidden-state frames per second (344.53 at 44.1 kHz)."""
        return self.vqvae_config.sampling_rate / self.hop_length

    def to_dict(self):
        output = super().to_dict()
        output.pop("num_hidden_layers", None)  # lives in prior_config
        return output


JukeboxMIRConfig.register_for_auto_class()

__all__ = ["JukeboxMIRConfig"]
