"""Configuration of the Jukebox VQ-VAE (OpenAI Jukebox, arXiv 2005.00341).

The defaults are the released 5b VQ-VAE (shared by the `5b`, `5b_lyrics` and `1b_lyrics` models):
three levels with hop lengths 8, 32 and 128 samples at 44.1 kHz, 2048 codes of 64 dimensions per level.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from .errors import JukeboxConfigError

# Names accepted by `JukeboxVQVAEConfig.from_preset`. The three released Jukebox models share one VQ-VAE
# (`5b/vqvae.pth.tar`), so all names give the same configuration.
_PRESETS: dict[str, dict] = {
    "5b": {},
    "5b_lyrics": {},
    "1b_lyrics": {},
}


def _conv_out_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a `Conv1d` (no dilation) on `length` steps, as PyTorch computes it."""
    return (length + 2 * padding - kernel) // stride + 1


class JukeboxVQVAEConfig(PreTrainedConfig):
    r"""
    Configuration of [`JukeboxVQVAE`]. Field names follow the original hyperparameters where they are
    unambiguous; the codebook fields have clearer names (`l_bins` and `emb_width` are accepted as aliases).

    Args:
        levels (`int`, *optional*, defaults to 3):
            Number of levels (codebooks). Level 0 is the finest (hop 8), level `levels - 1` the coarsest.
        downs_t (`tuple[int, ...]`, *optional*, defaults to `(3, 2, 2)`):
            Number of strided convolutions of each level block (original `downs_t`).
        strides_t (`tuple[int, ...]`, *optional*, defaults to `(2, 2, 2)`):
            Stride of those convolutions (kernel `2 * stride`, padding `stride // 2`, original `strides_t`).
        codebook_size (`int`, *optional*, defaults to 2048):
            Codes per level (original `l_bins`).
        codebook_dim (`int`, *optional*, defaults to 64):
            Code dimension, also the channel count between level blocks (original `emb_width`).
        width (`int`, *optional*, defaults to 32):
            Base channel count of the convolution stacks, multiplied per level by `multipliers`.
        depth (`int`, *optional*, defaults to 4):
            Base number of residual units per stack, multiplied per level by `multipliers`.
        multipliers (`tuple[int, ...]`, *optional*, defaults to `(2, 1, 1)`):
            Per-level multiplier of `width` and `depth` (original `hvqvae_multipliers`).
        m_conv (`float`, *optional*, defaults to 1.0):
            Inner width of a residual unit as a fraction of its channel count.
        dilation_growth_rate (`int`, *optional*, defaults to 3):
            Residual unit `r` has dilation `dilation_growth_rate ** r`.
        dilation_cycle (`int`, *optional*):
            If set, the dilation exponent cycles: `r % dilation_cycle`.
        reverse_decoder_dilation (`bool`, *optional*, defaults to `True`):
            Decoder residual stacks run from the largest dilation to the smallest (original
            `vqvae_reverse_decoder_dilation`).
        sampling_rate (`int`, *optional*, defaults to 44100):
            Audio sampling rate in Hz.
        encoder_levels (`tuple[int, ...]`, *optional*):
            Levels whose encoder and codebook [`JukeboxVQVAEEncoderModel`] builds (default: all). E.g. `(2,)` for
            a model that only computes top-level codes; the other levels' weights are skipped silently when
            loading a full checkpoint. [`JukeboxVQVAE`] always builds every level.

    Example:

    ```python
    >>> from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig

    >>> config = JukeboxVQVAEConfig.from_preset("5b")
    >>> config.hop_lengths
    (8, 32, 128)
    ```
    """

    model_type = "jukebox_mir_vqvae"
    attribute_map = {"l_bins": "codebook_size", "emb_width": "codebook_dim"}

    levels: int = 3
    downs_t: list[int] | tuple[int, ...] = (3, 2, 2)
    strides_t: list[int] | tuple[int, ...] = (2, 2, 2)
    codebook_size: int = 2048
    codebook_dim: int = 64
    width: int = 32
    depth: int = 4
    multipliers: list[int] | tuple[int, ...] = (2, 1, 1)
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    reverse_decoder_dilation: bool = True
    sampling_rate: int = 44100
    encoder_levels: list[int] | tuple[int, ...] | None = None

    def __post_init__(self, **kwargs):
        self.downs_t = self._int_tuple("downs_t", self.downs_t, minimum=1)
        self.strides_t = self._int_tuple("strides_t", self.strides_t, minimum=1)
        self.multipliers = self._int_tuple("multipliers", self.multipliers, minimum=1)
        if self.encoder_levels is not None:
            self.encoder_levels = tuple(sorted(set(self._int_tuple("encoder_levels", self.encoder_levels, 0))))
        self._validate()
        super().__post_init__(**kwargs)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _int_tuple(name: str, value, minimum: int) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise JukeboxConfigError(
                f"JukeboxVQVAEConfig.{name} must be a list of integers >= {minimum}, got {value!r}."
            )
        items = tuple(value)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in items):
            raise JukeboxConfigError(
                f"JukeboxVQVAEConfig.{name} must be a list of integers >= {minimum}, got {list(items)!r}."
            )
        return items

    def _validate(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise JukeboxConfigError(f"JukeboxVQVAEConfig.{name} must be a positive integer, got {value!r}.")

        for name in (
            "levels",
            "codebook_size",
            "codebook_dim",
            "width",
            "depth",
            "dilation_growth_rate",
            "sampling_rate",
        ):
            positive_int(name)
        for name in ("downs_t", "strides_t", "multipliers"):
            value = getattr(self, name)
            if len(value) != self.levels:
                raise JukeboxConfigError(
                    f"JukeboxVQVAEConfig.{name} must have one entry per level (levels={self.levels}), "
                    f"got {list(value)!r} ({len(value)} entries)."
                )
        if not isinstance(self.m_conv, (int, float)) or isinstance(self.m_conv, bool) or not self.m_conv > 0:
            raise JukeboxConfigError(f"JukeboxVQVAEConfig.m_conv must be a number > 0, got {self.m_conv!r}.")
        for level, mult in enumerate(self.multipliers):
            if int(self.m_conv * self.width * mult) < 1:
                raise JukeboxConfigError(
                    f"JukeboxVQVAEConfig.m_conv={self.m_conv!r} gives residual units of width "
                    f"int(m_conv * {self.width * mult}) = 0 at level {level}; use a larger m_conv or width."
                )
        if self.dilation_cycle is not None:
            positive_int("dilation_cycle")
        if self.encoder_levels is not None and (not self.encoder_levels or self.encoder_levels[-1] >= self.levels):
            raise JukeboxConfigError(
                f"JukeboxVQVAEConfig.encoder_levels must be None or a non-empty list of levels in "
                f"0..{self.levels - 1}, got {list(self.encoder_levels)!r}."
            )
        if not isinstance(self.reverse_decoder_dilation, bool):
            raise JukeboxConfigError(
                "JukeboxVQVAEConfig.reverse_decoder_dilation must be True or False, "
                f"got {self.reverse_decoder_dilation!r}."
            )

    # ------------------------------------------------------------------ presets

    @classmethod
    def from_preset(cls, name: str = "5b", **kwargs) -> JukeboxVQVAEConfig:
        """The configuration of a released VQ-VAE.

        `"5b"`, `"5b_lyrics"` and `"1b_lyrics"` all name the one released VQ-VAE (`5b/vqvae.pth.tar`).
        Keyword arguments override single fields.
        """
        if name not in _PRESETS:
            raise JukeboxConfigError(
                f"Unknown JukeboxVQVAEConfig preset {name!r}; allowed: {', '.join(repr(p) for p in _PRESETS)}."
            )
        return cls(**{**_PRESETS[name], **kwargs})

    # ------------------------------------------------------------------ derived quantities

    @property
    def level_downsampling(self) -> tuple[int, ...]:
        """Downsampling factor of each level block: `strides_t[L] ** downs_t[L]` (8, 4, 4)."""
        return tuple(s**d for s, d in zip(self.strides_t, self.downs_t, strict=True))

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Audio samples per code at each level, level 0 first: (8, 32, 128) for the 5b VQ-VAE."""
        return tuple(math.prod(self.level_downsampling[: level + 1]) for level in range(self.levels))

    @property
    def top_level_hop(self) -> int:
        """Audio samples per code at the top (coarsest) level: 128 for the 5b VQ-VAE."""
        return self.hop_lengths[-1]

    @property
    def level_widths(self) -> tuple[int, ...]:
        """Channel count of the convolution stacks of each level: (64, 32, 32)."""
        return tuple(self.width * m for m in self.multipliers)

    @property
    def level_depths(self) -> tuple[int, ...]:
        """Residual units per stack at each level: (8, 4, 4)."""
        return tuple(self.depth * m for m in self.multipliers)

    def frame_rates(self) -> tuple[float, ...]:
        """Codes per second at each level (5512.5, 1378.125, 344.53125 at 44.1 kHz)."""
        return tuple(self.sampling_rate / hop for hop in self.hop_lengths)

    def num_codes(self, num_samples: int, level: int) -> int:
        """Number of codes that level `level` gives for `num_samples` audio samples (0 if too short).

        Every strided convolution floors its output length, so for stride 2 this is `num_samples // hop`
        (20000 samples -> 2500, 625, 156 codes); the tail beyond the last full hop is dropped, never padded.
        """
        length = int(num_samples)
        for block in range(level + 1):
            stride = self.strides_t[block]
            for _ in range(self.downs_t[block]):
                if length < 1:
                    return 0
                length = _conv_out_length(length, 2 * stride, stride, stride // 2)
        return max(length, 0)

    def min_num_samples(self, level: int) -> int:
        """Smallest number of audio samples that gives at least one code at `level`."""
        low, high = 1, max(1, self.hop_lengths[level]) * 4
        while self.num_codes(high, level) < 1:  # only for unusual strides
            high *= 2
        while low < high:  # num_codes is non-decreasing in num_samples
            mid = (low + high) // 2
            if self.num_codes(mid, level) >= 1:
                high = mid
            else:
                low = mid + 1
        return low


__all__ = ["JukeboxVQVAEConfig"]

# `save_pretrained` writes `auto_map` and copies this module beside the weights (trust_remote_code loading).
JukeboxVQVAEConfig.register_for_auto_class()
