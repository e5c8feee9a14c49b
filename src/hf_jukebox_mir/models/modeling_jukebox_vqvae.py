"""PyTorch Jukebox VQ-VAE: OpenAI Jukebox's three-level audio tokenizer (arXiv 2005.00341).

Each level L has its own encoder (audio -> 64-dim frames at hop 8, 32 or 128 samples), codebook of 2048 codes
and decoder. The levels are independent networks, so encoding only the top level runs only the top encoder.
The maths reproduces the original implementation exactly (the codes equal the original's bit for bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_jukebox_vqvae import JukeboxVQVAEConfig
from .errors import JukeboxInputError

# Rows of the (rows, codebook_size) distance matrix computed at once when quantising (8192 rows x 2048 codes
# = 64 MiB in float32). Each row's distances are independent of the others, so the chunking only bounds memory.
_QUANTIZE_CHUNK_ROWS = 8192


# ---------------------------------------------------------------------------------------------- outputs


@dataclass
class JukeboxVQVAEEncoderOutput(ModelOutput):
    """
    Output of [`JukeboxVQVAE.encode`].

    Args:
        audio_codes (`list[torch.LongTensor]`, each of shape `(batch_size, num_codes_L)`):
            Codes of the requested levels, ordered from the finest requested level to the coarsest (level 0, hop 8,
            first when it is requested). `num_codes_L = num_samples // hop_length_L`.
    """

    audio_codes: list[torch.LongTensor] | None = None


@dataclass
class JukeboxVQVAEDecoderOutput(ModelOutput):
    """
    Output of [`JukeboxVQVAE.decode`].

    Args:
        audio_values (`torch.FloatTensor` of shape `(batch_size, num_codes * hop_length)`):
            Decoded mono audio at the model's sampling rate.
    """

    audio_values: torch.FloatTensor | None = None


@dataclass
class JukeboxVQVAEOutput(ModelOutput):
    """
    Output of [`JukeboxVQVAE.forward`] (encode, then decode from the first encoded level).

    Args:
        audio_values (`torch.FloatTensor` of shape `(batch_size, num_codes * hop_length)`):
            Reconstruction from the codes of `start_level`.
        audio_codes (`list[torch.LongTensor]`, each of shape `(batch_size, num_codes_L)`):
            Codes of the encoded levels, finest first.
    """

    audio_values: torch.FloatTensor | None = None
    audio_codes: list[torch.LongTensor] | None = None


# ---------------------------------------------------------------------------------------------- blocks


class JukeboxResidualUnit(nn.Module):
    """`x + conv2(relu(conv1(relu(x))))` with a dilated kernel-3 `conv1` and a kernel-1 `conv2`.

    Original: `ResConv1DBlock` (`.model.1` = conv1, `.model.3` = conv2; the ReLUs have no parameters).
    """

    def __init__(self, channels: int, inner_channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, inner_channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(inner_channels, channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (batch, channels, time) -> same shape. The original computes x + 1.0 * branch(x); the in-place ReLU on a
        # fresh tensor and the in-place (commutative) addition give the same bits with fewer large allocations.
        branch = self.conv2(F.relu(self.conv1(F.relu(hidden_states)), inplace=True))
        return branch.add_(hidden_states)


class JukeboxResidualStack(nn.Module):
    """`depth` residual units with dilations `growth ** r` (r cycled by `cycle`), optionally reversed.

    Original: `Resnet1D`. When reversed, the stored index 0 holds the largest dilation, as in the checkpoints.
    """

    def __init__(self, channels: int, depth: int, config: JukeboxVQVAEConfig, reverse: bool):
        super().__init__()
        growth, cycle = config.dilation_growth_rate, config.dilation_cycle
        dilations = [growth ** (r if cycle is None else r % cycle) for r in range(depth)]
        if reverse:
            dilations = dilations[::-1]
        inner = int(config.m_conv * channels)
        self.layers = nn.ModuleList([JukeboxResidualUnit(channels, inner, d) for d in dilations])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class JukeboxDownsampleStage(nn.Module):
    """Strided convolution (kernel `2 * stride`, padding `stride // 2`) followed by a residual stack."""

    def __init__(self, in_channels: int, channels: int, stride: int, depth: int, config: JukeboxVQVAEConfig):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel_size=2 * stride, stride=stride, padding=stride // 2)
        self.residual = JukeboxResidualStack(channels, depth, config, reverse=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.residual(self.conv(hidden_states))


class JukeboxUpsampleStage(nn.Module):
    """Residual stack followed by a transposed convolution that multiplies the length by `stride`."""

    def __init__(self, channels: int, out_channels: int, stride: int, depth: int, config: JukeboxVQVAEConfig):
        super().__init__()
        self.residual = JukeboxResidualStack(channels, depth, config, reverse=config.reverse_decoder_dilation)
        self.conv = nn.ConvTranspose1d(
            channels, out_channels, kernel_size=2 * stride, stride=stride, padding=stride // 2
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(self.residual(hidden_states))


class JukeboxEncoderBlock(nn.Module):
    """One level block of an encoder: `downs_t[j]` downsampling stages, then a kernel-3 projection to
    `codebook_dim` channels. Original: `EncoderConvBlock`."""

    def __init__(self, block: int, level: int, config: JukeboxVQVAEConfig):
        super().__init__()
        width, depth = config.level_widths[level], config.level_depths[level]
        in_channels = 1 if block == 0 else config.codebook_dim
        self.downsample = nn.ModuleList(
            [
                JukeboxDownsampleStage(in_channels if i == 0 else width, width, config.strides_t[block], depth, config)
                for i in range(config.downs_t[block])
            ]
        )
        self.proj_out = nn.Conv1d(width, config.codebook_dim, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for stage in self.downsample:
            hidden_states = stage(hidden_states)
        return self.proj_out(hidden_states)


class JukeboxDecoderBlock(nn.Module):
    """One level block of a decoder: a kernel-3 projection from `codebook_dim` channels, then `downs_t[j]`
    upsampling stages (the last one back to `codebook_dim` channels). Original: `DecoderConvBock`."""

    def __init__(self, block: int, level: int, config: JukeboxVQVAEConfig):
        super().__init__()
        width, depth = config.level_widths[level], config.level_depths[level]
        down_t = config.downs_t[block]
        self.proj_in = nn.Conv1d(config.codebook_dim, width, kernel_size=3, padding=1)
        self.upsample = nn.ModuleList(
            [
                JukeboxUpsampleStage(
                    width, config.codebook_dim if i == down_t - 1 else width, config.strides_t[block], depth, config
                )
                for i in range(down_t)
            ]
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.proj_in(hidden_states)
        for stage in self.upsample:
            hidden_states = stage(hidden_states)
        return hidden_states


class JukeboxEncoder(nn.Module):
    """Encoder of level L: level blocks 0..L in order, audio `(batch, 1, samples)` -> `(batch, codebook_dim,
    num_codes_L)`, with the width and depth of level L."""

    def __init__(self, level: int, config: JukeboxVQVAEConfig):
        super().__init__()
        self.blocks = nn.ModuleList([JukeboxEncoderBlock(j, level, config) for j in range(level + 1)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


class JukeboxDecoder(nn.Module):
    """Decoder of level L: level blocks L..0 (block j undoes the downsampling of encoder block j), then a
    kernel-3 projection to one audio channel. `(batch, codebook_dim, T) -> (batch, 1, T * hop_length_L)`."""

    def __init__(self, level: int, config: JukeboxVQVAEConfig):
        super().__init__()
        self.blocks = nn.ModuleList([JukeboxDecoderBlock(j, level, config) for j in range(level + 1)])
        self.proj_out = nn.Conv1d(config.codebook_dim, 1, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            hidden_states = block(hidden_states)
        return self.proj_out(hidden_states)


class JukeboxCodebook(nn.Module):
    """Codebook of one level: a persistent `(codebook_size, codebook_dim)` buffer (saved with the weights).

    Original: `BottleneckBlock` (buffer `k`). Quantisation is nearest neighbour in Euclidean distance, computed
    with the original's float32 expansion `|x|^2 - 2 x.k + |k|^2`; another formula (e.g. `torch.cdist`) rounds
    differently and can flip near-ties.
    """

    def __init__(self, config: JukeboxVQVAEConfig):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.codebook_dim), persistent=True)

    def quantize(self, hidden_states: torch.Tensor) -> torch.LongTensor:
        """`(batch, codebook_dim, T)` encoder output -> `(batch, T)` int64 codes."""
        batch, dim, length = hidden_states.shape
        # (batch, dim, T) -> (batch, T, dim) -> (batch * T, dim)
        flat = hidden_states.float().permute(0, 2, 1).contiguous().view(-1, dim)
        codebook_t = self.codebook.float().t()  # (dim, codebook_size)
        codebook_sq = torch.sum(codebook_t**2, dim=0, keepdim=True)  # (1, codebook_size)
        codes = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for start in range(0, flat.shape[0], _QUANTIZE_CHUNK_ROWS):
            rows = flat[start : start + _QUANTIZE_CHUNK_ROWS]
            # distance = (|x|^2 - 2 x @ k^T) + |k|^2, evaluated in place; bit-identical to the original because
            # -2 * m is exact and a - b == a + (-b) in IEEE arithmetic.
            distance = torch.matmul(rows, codebook_t)
            distance.mul_(-2).add_(torch.sum(rows**2, dim=-1, keepdim=True)).add_(codebook_sq)
            codes[start : start + rows.shape[0]] = torch.min(distance, dim=-1).indices  # first index on ties
        return codes.view(batch, length)

    def dequantize(self, codes: torch.LongTensor) -> torch.Tensor:
        """`(batch, T)` codes -> `(batch, codebook_dim, T)` code vectors."""
        # (batch, T) -> (batch, T, dim) -> (batch, dim, T)
        return F.embedding(codes, self.codebook).permute(0, 2, 1).contiguous()


# ---------------------------------------------------------------------------------------------- input checks


def _check_levels(config: JukeboxVQVAEConfig, start_level: int, end_level: int | None) -> tuple[int, int]:
    levels = config.levels
    end = levels if end_level is None else end_level
    if not isinstance(start_level, int) or not isinstance(end, int) or not 0 <= start_level < end <= levels:
        raise JukeboxInputError(
            f"Expected 0 <= start_level < end_level <= {levels} (levels of this VQ-VAE: 0 = hop "
            f"{config.hop_lengths[0]} ... {levels - 1} = hop {config.hop_lengths[-1]}), "
            f"got start_level={start_level!r}, end_level={end_level!r}."
        )
    return start_level, end


def _prepare_audio(
    input_values, config: JukeboxVQVAEConfig, levels: range, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Validate raw audio and return it as `(batch, 1, samples)` in the model's dtype and device."""
    if isinstance(input_values, np.ndarray):
        if input_values.dtype == object:
            raise JukeboxInputError(
                "Expected input_values as a float array of shape (batch, samples); got a numpy array of Python "
                "objects (ragged list?). Pad or trim the clips to one length first."
            )
        input_values = torch.from_numpy(input_values)
    if not isinstance(input_values, torch.Tensor):
        raise JukeboxInputError(
            f"Expected input_values as a torch.Tensor or numpy array of shape (batch, samples), got "
            f"{type(input_values).__name__}. Convert with torch.as_tensor(audio, dtype=torch.float32)."
        )
    if input_values.is_complex() or not input_values.is_floating_point():
        raise JukeboxInputError(
            f"Expected float audio in [-1, 1], got dtype {input_values.dtype}. Convert it to float32 in [-1, 1] "
            "first (for int16 PCM: audio.float() / 32768)."
        )
    if input_values.dim() == 1:
        input_values = input_values.unsqueeze(0)
    if input_values.dim() != 2:
        raise JukeboxInputError(
            f"Expected mono audio of shape (batch, samples) or (samples,), got shape {tuple(input_values.shape)}. "
            "Jukebox is mono: downmix multi-channel audio first, e.g. x.mean(-1) for (batch, samples, channels) "
            "or x.mean(1) for (batch, channels, samples)."
        )
    batch, num_samples = input_values.shape
    sr = config.sampling_rate
    needed = max(config.min_num_samples(level) for level in levels)
    if batch == 0 or num_samples == 0:
        raise JukeboxInputError(
            f"Expected non-empty audio, got shape {tuple(input_values.shape)}. Encoding level(s) "
            f"{list(levels)} needs at least {needed} samples ({needed / sr:.6f} s at {sr} Hz) per clip."
        )
    if num_samples < needed:
        raise JukeboxInputError(
            f"Audio too short: {num_samples} samples ({num_samples / sr:.6f} s); encoding level(s) {list(levels)} "
            f"needs at least {needed} samples ({needed / sr:.6f} s at {sr} Hz). Pad the clip or encode only "
            "finer levels."
        )
    if input_values.device.type != "meta" and not bool(torch.isfinite(input_values).all()):  # meta: shapes only
        raise JukeboxInputError(
            "Expected finite audio, but input_values contains NaN or infinite values. Clean the audio first "
            "(e.g. torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))."
        )
    # (batch, samples) -> (batch, 1, samples)
    return input_values.to(device=device, dtype=dtype).unsqueeze(1)


def _prepare_codes(codes, config: JukeboxVQVAEConfig, level: int, device: torch.device) -> torch.Tensor:
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(codes)
    if not isinstance(codes, torch.Tensor):
        raise JukeboxInputError(
            f"Expected the codes of level {level} as a LongTensor of shape (batch, num_codes), got "
            f"{type(codes).__name__}."
        )
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise JukeboxInputError(
            f"Expected integer codes (torch.long) for level {level}, got dtype {codes.dtype}. "
            "Use the audio_codes returned by encode(), or convert with codes.long()."
        )
    if codes.dim() == 1:
        codes = codes.unsqueeze(0)
    if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise JukeboxInputError(
            f"Expected the codes of level {level} with shape (batch, num_codes), both > 0, got shape "
            f"{tuple(codes.shape)}."
        )
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= config.codebook_size:
        raise JukeboxInputError(
            f"Codes of level {level} out of range: expected values in [0, {config.codebook_size}), got min {low}, "
            f"max {high}."
        )
    return codes.to(device=device, dtype=torch.long)


# ---------------------------------------------------------------------------------------------- models


class JukeboxVQVAEPreTrainedModel(PreTrainedModel):
    """Base class: configuration, weight initialisation and the shared `encode` of the VQ-VAE models."""

    config_class = JukeboxVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "input_values"
    input_modalities = "audio"
    _no_split_modules = ["JukeboxEncoder", "JukeboxDecoder"]

    def _init_weights(self, module: nn.Module) -> None:
        # Convolutions: PyTorch's default (kaiming-uniform); codebooks: standard normal.
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, JukeboxCodebook):
            init.normal_(module.codebook, mean=0.0, std=1.0)

    def _encode(self, input_values, start_level: int, end_level: int | None) -> list[torch.LongTensor]:
        start, end = _check_levels(self.config, start_level, end_level)
        missing = [level for level in range(start, end) if not isinstance(self.encoders[level], JukeboxEncoder)]
        if missing:
            built = [level for level, encoder in enumerate(self.encoders) if isinstance(encoder, JukeboxEncoder)]
            raise JukeboxInputError(
                f"This {type(self).__name__} only has the encoders of level(s) {built} "
                f"(config.encoder_levels={list(self.config.encoder_levels or [])}); cannot encode level(s) "
                f"{missing}. Load the full JukeboxVQVAE, or an encoder model with those levels."
            )
        weight = self.quantizers[start].codebook
        dtype = next(self.encoders[start].parameters()).dtype
        audio = _prepare_audio(input_values, self.config, range(start, end), dtype, weight.device)
        codes = []
        with torch.no_grad():  # codes are integers: no gradient flows through the argmin anyway
            for level in range(start, end):  # each level has its own encoder: run only the requested ones
                codes.append(self.quantizers[level].quantize(self.encoders[level](audio)))
        return codes

    def encode(
        self,
        input_values: torch.Tensor,
        start_level: int = 0,
        end_level: int | None = None,
        return_dict: bool | None = None,
    ) -> JukeboxVQVAEEncoderOutput | tuple:
        r"""
        Encode mono audio into codes, running only the encoders of levels `start_level .. end_level - 1`.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)` or `(num_samples,)`):
                Mono audio in [-1, 1] at `config.sampling_rate` (44.1 kHz). Lengths that are not a multiple of
                the hop length are floored (the tail is dropped), as in the original.
            start_level (`int`, defaults to 0): first level to encode (0 = hop 8).
            end_level (`int`, *optional*): one past the last level to encode (default: all levels).

        Returns:
            [`JukeboxVQVAEEncoderOutput`] with `audio_codes`, a list of `(batch_size, num_samples // hop_L)`
            LongTensors for L = start_level .. end_level - 1 (finest first).
        """
        codes = self._encode(input_values, start_level, end_level)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return JukeboxVQVAEEncoderOutput(audio_codes=codes) if return_dict else (codes,)


class JukeboxVQVAE(JukeboxVQVAEPreTrainedModel):
    r"""
    The Jukebox VQ-VAE: for each level L, an encoder, a codebook (`quantizers.L.codebook`) and a decoder.

    Example:

    ```python
    >>> import torch
    >>> from hf_jukebox_mir.models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
    >>> from hf_jukebox_mir.models.modeling_jukebox_vqvae import JukeboxVQVAE

    >>> model = JukeboxVQVAE(JukeboxVQVAEConfig.from_preset("5b")).eval()
    >>> audio = torch.zeros(1, 44100)  # one second of mono audio at 44.1 kHz, in [-1, 1]
    >>> codes = model.encode(audio, start_level=2).audio_codes  # top level only: runs only encoder 2
    >>> codes[0].shape
    torch.Size([1, 344])
    >>> model.decode(codes, start_level=2).audio_values.shape
    torch.Size([1, 44032])
    ```
    """

    def __init__(self, config: JukeboxVQVAEConfig):
        super().__init__(config)
        self.encoders = nn.ModuleList([JukeboxEncoder(level, config) for level in range(config.levels)])
        self.quantizers = nn.ModuleList([JukeboxCodebook(config) for _ in range(config.levels)])
        self.decoders = nn.ModuleList([JukeboxDecoder(level, config) for level in range(config.levels)])
        self.post_init()

    def decode(
        self,
        audio_codes: list[torch.Tensor] | tuple[torch.Tensor, ...] | torch.Tensor,
        start_level: int = 0,
        end_level: int | None = None,
        return_dict: bool | None = None,
    ) -> JukeboxVQVAEDecoderOutput | tuple:
        r"""
        Decode the codes of one level into audio with that level's decoder.

        As in the original, only the codes of `start_level` are used: pass either the list of codes of levels
        `start_level, start_level + 1, ...` (e.g. `encode(x).audio_codes[L:]`; the later items are checked but
        not used) or a single tensor holding the codes of `start_level`.

        Args:
            audio_codes (`list[torch.LongTensor]` or `torch.LongTensor` of shape `(batch_size, num_codes)`):
                Codes in `[0, config.codebook_size)`.
            start_level (`int`, defaults to 0): level of `audio_codes[0]`, whose decoder runs.
            end_level (`int`, *optional*): if given, the list must hold exactly `end_level - start_level` items.

        Returns:
            [`JukeboxVQVAEDecoderOutput`] with `audio_values` of shape `(batch_size, num_codes * hop_length)`.
        """
        start, end = _check_levels(self.config, start_level, end_level)
        if isinstance(audio_codes, (list, tuple)):
            max_items = end - start
            if (
                len(audio_codes) == 0
                or len(audio_codes) > max_items
                or (end_level is not None and len(audio_codes) != max_items)
            ):
                expected = f"exactly {max_items}" if end_level is not None else f"1 to {max_items}"
                raise JukeboxInputError(
                    f"Expected {expected} code tensors for levels {start}..{end - 1} (start_level={start}), got "
                    f"{len(audio_codes)}. Pass encode(...).audio_codes[{start}:] or the codes of level {start} alone."
                )
            device = self.quantizers[start].codebook.device
            checked = [_prepare_codes(c, self.config, start + i, device) for i, c in enumerate(audio_codes)]
            codes = checked[0]
        else:
            codes = _prepare_codes(audio_codes, self.config, start, self.quantizers[start].codebook.device)
        dtype = self.decoders[start].proj_out.weight.dtype
        hidden_states = self.quantizers[start].dequantize(codes).to(dtype)  # (batch, dim, num_codes)
        audio = self.decoders[start](hidden_states)  # (batch, 1, num_codes * hop)
        audio = audio.squeeze(1)  # (batch, samples)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return JukeboxVQVAEDecoderOutput(audio_values=audio) if return_dict else (audio,)

    def forward(
        self,
        input_values: torch.Tensor,
        start_level: int = 0,
        end_level: int | None = None,
        return_dict: bool | None = None,
    ) -> JukeboxVQVAEOutput | tuple:
        r"""
        Encode levels `start_level .. end_level - 1`, then reconstruct the audio from the codes of `start_level`.

        Returns:
            [`JukeboxVQVAEOutput`] with `audio_values` `(batch_size, samples)` and `audio_codes` (finest first).
        """
        codes = self._encode(input_values, start_level, end_level)
        audio = self.decode(codes[0], start_level=start_level, return_dict=True).audio_values
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return JukeboxVQVAEOutput(audio_values=audio, audio_codes=codes) if return_dict else (audio, codes)


class JukeboxVQVAEEncoderModel(JukeboxVQVAEPreTrainedModel):
    r"""
    Encoder half of the Jukebox VQ-VAE: the encoders and codebooks only (no decoder weights are built or loaded),
    optionally only those of `config.encoder_levels` (e.g. `(2,)` for top-level codes). Loads from a full
    [`JukeboxVQVAE`] folder; the weights it does not build are skipped silently (also when this model is a
    sub-module of a larger model: the ignore patterns match `decoders.` after any prefix).

    Example:

    ```python
    >>> encoder = JukeboxVQVAEEncoderModel.from_pretrained("converted/jukebox-vqvae")  # doctest: +SKIP
    >>> top_codes = encoder.encode(audio, start_level=2).audio_codes[0]  # doctest: +SKIP
    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"(^|\.)decoders\.\d+\."]

    def __init__(self, config: JukeboxVQVAEConfig):
        super().__init__(config)
        built = set(range(config.levels) if config.encoder_levels is None else config.encoder_levels)
        # unbuilt levels keep their index with a parameter-free placeholder, so names stay `encoders.{L}...`
        self.encoders = nn.ModuleList(
            [JukeboxEncoder(level, config) if level in built else nn.Identity() for level in range(config.levels)]
        )
        self.quantizers = nn.ModuleList(
            [JukeboxCodebook(config) if level in built else nn.Identity() for level in range(config.levels)]
        )
        skipped = [level for level in range(config.levels) if level not in built]
        self._keys_to_ignore_on_load_unexpected = list(type(self)._keys_to_ignore_on_load_unexpected) + [
            rf"(^|\.)(encoders|quantizers)\.{level}\." for level in skipped
        ]
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        start_level: int = 0,
        end_level: int | None = None,
        return_dict: bool | None = None,
    ) -> JukeboxVQVAEEncoderOutput | tuple:
        """Same as [`encode`](#encode)."""
        return self.encode(input_values, start_level, end_level, return_dict=return_dict)


# `save_pretrained` writes `auto_map` and copies this module (and its `from .x import` siblings) beside the weights.
JukeboxVQVAE.register_for_auto_class("AutoModel")

__all__ = [
    "JukeboxVQVAE",
    "JukeboxVQVAEDecoderOutput",
    "JukeboxVQVAEEncoderModel",
    "JukeboxVQVAEEncoderOutput",
    "JukeboxVQVAEOutput",
    "JukeboxVQVAEPreTrainedModel",
]
