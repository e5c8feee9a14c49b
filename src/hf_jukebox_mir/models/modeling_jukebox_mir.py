"""Jukebox MIR model: audio -> VQ-VAE top-level codes -> top prior hidden states (the JukeMIR recipe).

Data flow of `JukeboxMIRModel.forward`:

    input_values (B, S) 44.1 kHz mono --vqvae.encode(top level only)--> audio_codes (B, T = S // 128)
    --prior (artist/genre "unknown", 62 s, offset 0)--> hidden_states[i] (B, T, W), i = 0..num_hidden_layers

Padded audio (from the feature extractor's `attention_mask`) is handled without changing real frames: the
prior is causal, so the trailing padded frames cannot influence earlier ones; the returned `frame_mask`
marks the real frames and `pool_hidden_states` averages only over them.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_jukebox_mir import JukeboxMIRConfig
from .errors import JukeboxCheckpointError, JukeboxInputError
from .modeling_jukebox_prior import JukeboxPrior
from .modeling_jukebox_vqvae import JukeboxVQVAEEncoderModel

logger = logging.get_logger(__name__)

POOLING_MODES = ("mean", "max", "none")


@dataclass
class JukeboxMIROutput(ModelOutput):
    """Output of [`JukeboxMIRModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, T, hidden_size)`): output of the last built block.
        pooler_output (`torch.FloatTensor` of shape `(batch, hidden_size)`): mean of `last_hidden_state` over the
            real frames (the JukeMIR feature when 36 blocks are built).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): index 0 = input of block 1, index i = output of
            block i, each `(batch, T, hidden_size)`.
        audio_codes (`torch.LongTensor` of shape `(batch, T)`): the VQ-VAE top-level codes.
        frame_mask (`torch.BoolTensor` of shape `(batch, T)`): True for frames made of real (not padded) audio.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_codes: torch.LongTensor | None = None
    frame_mask: torch.BoolTensor | None = None


def pool_hidden_states(
    hidden: torch.Tensor, frame_mask: torch.Tensor | None = None, mode: str = "mean"
) -> torch.Tensor:
    """Pool (batch, T, W) over time, counting only frames where `frame_mask` is True.

    `mode`: "mean", "max" or "none" (returns the frames unchanged).
    """
    if mode not in POOLING_MODES:
        raise JukeboxInputError(f"Unknown pooling {mode!r}: expected one of {POOLING_MODES}.")
    if mode == "none":
        return hidden
    if frame_mask is None:
        return hidden.mean(1) if mode == "mean" else hidden.amax(1)
    return pool_float32(hidden, frame_mask, mode).to(hidden.dtype)


def pool_float32(
    hidden: torch.Tensor, frame_mask: torch.Tensor, mode: str = "mean", chunk_frames: int = 1024
) -> torch.Tensor:
    """Masked mean or max over time of (batch, T, W) in float32 -> (batch, W) float32.

    Runs over `chunk_frames` frames at a time, so that no float32 copy of the whole activation (twice the
    size of a bf16 one) is ever made: pooling never sets the peak memory of an extraction."""
    mask = frame_mask.to(hidden.device)[..., None]  # (B, T, 1)
    batch, frames, width = hidden.shape
    if mode == "mean":
        total = hidden.new_zeros(batch, width, dtype=torch.float32)
        for begin in range(0, frames, chunk_frames):
            part = slice(begin, begin + chunk_frames)
            total += (hidden[:, part].float() * mask[:, part]).sum(1)
        return total / mask.sum(1).clamp(min=1)
    if mode == "max":
        best = hidden.new_full((batch, width), float("-inf"), dtype=torch.float32)
        for begin in range(0, frames, chunk_frames):
            part = slice(begin, begin + chunk_frames)
            best = torch.maximum(best, hidden[:, part].float().masked_fill(~mask[:, part], float("-inf")).amax(1))
        return best
    raise JukeboxInputError(f"Unknown pooling {mode!r} for pool_float32: expected 'mean' or 'max'.")


@functools.lru_cache(maxsize=1)
def has_fast_half_precision() -> bool:
    """A CUDA device, or a CPU whose bfloat16 matmul is not much slower than float32 (measured once, ~0.1 s).

    CPU flags do not tell: a Zen 4 EPYC with AVX512-BF16 ran bfloat16 2.5x faster than float32 here, while an
    AVX2 CPU without it ran 8x slower. So a small matmul of the prior's kind is timed in both dtypes.
    """
    if torch.cuda.is_available():
        return True
    generator = torch.Generator().manual_seed(0)
    pairs = {
        dtype: (
            torch.randn(128, 1024, generator=generator).to(dtype),
            torch.randn(1024, 1024, generator=generator).to(dtype),
        )
        for dtype in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(pairs, float("inf"))
    for step in range(9):  # interleaved, fastest of 8 after a warm-up call: robust to a busy machine
        for dtype, (x, w) in pairs.items():
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            if step:
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] <= 1.25 * best[torch.float32]


def check_loading_info(name: str, source, info: dict) -> None:
    """Refuse a model whose weights did not all load: transformers would initialise the missing ones at random
    (with only a log line) and give wrong features without an error."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = [k if isinstance(k, str) else k[0] for k in (info.get("mismatched_keys") or [])]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            parts.append(f"{len(keys)} weight(s) {what} ({shown})")
    raise JukeboxCheckpointError(
        f"{name} weights in '{source}' do not match the model: {'; '.join(parts)}. A converted folder holds every "
        "weight; refusing to initialise the rest at random. The folder is damaged or incomplete: check it with "
        "`jukebox-mir verify FOLDER` and convert it again."
    )


class JukeboxMIRPreTrainedModel(PreTrainedModel):
    config_class = JukeboxMIRConfig
    base_model_prefix = "jukebox_mir"
    main_input_name = "input_values"
    input_modalities = "audio"
    _no_split_modules = ["JukeboxBlock"]
    # the codes must be exact (JukeMIR ran the VQ-VAE in float32, bf16 changes ~7 % of the top codes): the
    # encoder stays float32 when loading in half precision; it is small (~4 MB) and sets no memory peak
    _keep_in_fp32_modules_strict = ["vqvae"]
    _supports_sdpa = True
    # decoders are never built; prior blocks beyond num_hidden_layers are skipped (JukeMIR's 36 of 72)
    _keys_to_ignore_on_load_unexpected = [r"^vqvae\.decoders\.", r"^prior\.layers\.\d+\."]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with the compute dtype fitted to a CPU-only machine.

        Without `dtype` (or with `dtype="auto"`, what `pipeline()` passes), on a machine without CUDA whose CPU
        computes bfloat16 matmuls slower than float32 (measured once per process), the model is loaded for float32
        compute: on AVX2 CPUs a bfloat16 matmul of the prior's shape ran ~8x slower than float32. The weights may
        stay bfloat16 on disk. Pass `dtype=torch.bfloat16` to keep half precision anyway.

        Every weight must load (missing, unexpected or mis-shaped ones raise `JukeboxCheckpointError`), except
        those named in `new_modules=` (modules or parameters a subclass adds, e.g. the audio classifier's `head`
        and `layer_weights`, filled by the caller).
        """
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if dtype in (None, "auto") and kwargs.get("device_map") in (None, "cpu") and not has_fast_half_precision():
            kwargs.pop("torch_dtype", None)
            kwargs["dtype"] = torch.float32
            logger.info(
                "Computing in float32: this machine has no GPU and its CPU runs bfloat16 matmuls slower than "
                "float32 (pass dtype=torch.bfloat16 to keep half precision)."
            )
        wants_info = kwargs.pop("output_loading_info", False)
        # modules a subclass adds on top of a MIR folder (the audio classifier's `head`, filled by the caller
        # from a trained probe): their weights may be absent; every other weight must load
        new_modules = tuple(kwargs.pop("new_modules", ()))
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        checked = info
        if new_modules:
            prefixes = tuple(f"{m}." for m in new_modules)
            missing = [k for k in info.get("missing_keys") or [] if k not in new_modules and not k.startswith(prefixes)]
            checked = dict(info, missing_keys=missing)
        check_loading_info(cls.__name__, args[0] if args else kwargs.get("pretrained_model_name_or_path"), checked)
        return (model, info) if wants_info else model

    def _init_weights(self, module):
        # sub-models initialise their own modules
        for sub in (getattr(self, "vqvae", None), getattr(self, "prior", None)):
            if sub is not None and any(m is module for m in sub.modules()):
                sub._init_weights(module)
                return


class JukeboxMIRModel(JukeboxMIRPreTrainedModel):
    """Jukebox representations of audio: top-level VQ-VAE encoder + top prior (JukeMIR).

    Example:

    ```python
    >>> from transformers import AutoFeatureExtractor, AutoModel
    >>> import hf_jukebox_mir  # registers the classes (or pass trust_remote_code=True)
    >>> model = AutoModel.from_pretrained("jukebox-mir-5b", num_hidden_layers=36)
    >>> fe = AutoFeatureExtractor.from_pretrained("jukebox-mir-5b")
    >>> inputs = fe("song.wav", return_tensors="pt", return_window_info=False)
    >>> features = model(**inputs).pooler_output   # (windows, 4800): JukeMIR layer-36 features
    ```
    """

    def __init__(self, config: JukeboxMIRConfig):
        super().__init__(config)
        # the prior first: its dtype is the model's (`model.dtype`, the saved config's `dtype`), while the
        # small encoder stays float32 (`_keep_in_fp32_modules_strict`)
        self.prior = JukeboxPrior(config.prior_config)
        self.vqvae = JukeboxVQVAEEncoderModel(config.vqvae_config)
        self.post_init()

    def build_metadata(self, batch_size: int) -> torch.LongTensor:
        """The JukeMIR label rows: artist/genre from the config, total length 62 s, offset 0."""
        cfg = self.config
        total = int(cfg.total_length_seconds * cfg.prior_config.sampling_rate)
        total -= total % cfg.hop_length
        return self.prior.build_metadata(
            total_length=total, offset=0, artist_id=cfg.artist_id, genre_ids=cfg.genre_ids, batch_size=batch_size
        )

    def _encode_unpadded(self, input_values, attention_mask, level):
        """Top-level codes of each example at its real length (as if it had never been padded).

        The encoder's convolutions see across the end of the real audio, so padded and unpadded audio give
        different codes near the end; encoding every length group on its own keeps results independent of
        padding. Codes are then right-padded with 0 and masked: the causal prior never lets a padded frame
        influence a real one. Returns codes (B, T) and frame_mask (B, T).
        """
        hop = self.config.hop_length
        real = attention_mask.long().sum(-1).tolist()  # real samples per example
        lengths = [max(n // hop, 1) * hop for n in real]
        codes = [None] * len(lengths)
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            batch = input_values[rows, :length] if isinstance(input_values, torch.Tensor) else input_values
            out = self.vqvae.encode(batch, start_level=level).audio_codes[0]  # (len(rows), length // hop)
            for j, i in enumerate(rows):
                codes[i] = out[j]
        n_frames = max(c.shape[0] for c in codes)
        padded = torch.stack([torch.nn.functional.pad(c, (0, n_frames - c.shape[0])) for c in codes])  # (B, T)
        frame_mask = (
            torch.arange(n_frames, device=padded.device)[None, :]
            < torch.tensor([c.shape[0] for c in codes], device=padded.device)[:, None]
        )
        return padded, frame_mask

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> JukeboxMIROutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): mono audio at 44.1 kHz in [-1, 1], at
                most one prior window (`config.window_length` samples); longer audio is windowed by
                [`JukeboxFeatureExtractor`].
            attention_mask (`torch.LongTensor` of shape `(batch, samples)`, *optional*): 1 for real samples,
                0 for padding (as returned by the feature extractor).
            output_hidden_states (`bool`, defaults to `config.output_hidden_states`, False): also return every
                block's output. Without it only the last built block's output is kept (`last_hidden_state`,
                pooled in `pooler_output`): load the model with `num_hidden_layers=36` for JukeMIR's layer 36.
                Under `torch.inference_mode()` (what the pipeline and `extract_dataset` use) this runs
                [`JukeboxPrior.forward_features`], the prior's lean inference path (one block's activations alive at
                a time; module hooks do not run there). Anywhere else, `torch.no_grad()` included, the prior's
                `forward` runs, with every module hook.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if (
            isinstance(input_values, torch.Tensor)
            and input_values.dim() == 2
            and input_values.shape[1] > config.window_length
        ):
            raise JukeboxInputError(
                f"input_values has {input_values.shape[1]} samples but one prior window holds {config.window_length} "
                f"({config.window_length / config.vqvae_config.sampling_rate:.2f} s). Window long audio with "
                "JukeboxFeatureExtractor (or the pipeline), which returns one row per window."
            )
        top = config.vqvae_config.levels - 1
        if attention_mask is None:
            codes = self.vqvae.encode(input_values, start_level=top).audio_codes[0]  # (B, T)
            frame_mask = torch.ones(codes.shape, dtype=torch.bool, device=codes.device)
        else:
            codes, frame_mask = self._encode_unpadded(input_values, attention_mask, top)
        metadata = self.build_metadata(codes.shape[0])
        hidden_states = None
        if output_hidden_states or not torch.is_inference_mode_enabled():
            out = self.prior(codes, metadata=metadata, output_hidden_states=output_hidden_states, logits_to_keep=1)
            last = out.last_hidden_state  # (logits_to_keep=1: features only, the output head is nearly free)
            if output_hidden_states:
                hidden_states = out.hidden_states
        else:  # torch.inference_mode, last block only: the prior's lean path (module hooks do not run there)
            last = self.prior.forward_features(codes, metadata=metadata)
        # music positions only (the single-sequence lyrics prior puts its lyric tokens first)
        prefix = config.prior_config.prime_length
        last = last[:, prefix:]
        if hidden_states is not None:
            hidden_states = tuple(h[:, prefix:] for h in hidden_states)
        pooled = pool_hidden_states(last, frame_mask, "mean")
        result = JukeboxMIROutput(
            last_hidden_state=last,
            pooler_output=pooled,
            hidden_states=hidden_states,
            audio_codes=codes,
            frame_mask=frame_mask,
        )
        return result if return_dict else result.to_tuple()


JukeboxMIRModel.register_for_auto_class("AutoModel")

__all__ = [
    "POOLING_MODES",
    "JukeboxMIRModel",
    "JukeboxMIROutput",
    "JukeboxMIRPreTrainedModel",
    "pool_float32",
    "pool_hidden_states",
]
