"""The full Jukebox chain in one model: VQ-VAE + top prior + middle and bottom upsamplers.

Generation (original `sample.py`):

    prime audio --VQ-VAE encode--> prime codes z0, z1, z2 (optional)
    top prior: z2 extended to N codes          (windows of n_ctx, hop 0.125 n_ctx)
    middle upsampler: z1 = 4N codes given z2   (windows hop 0.5 n_ctx, each conditioned on its z2 slice)
    bottom upsampler: z0 = 16N codes given z1  (same)
    VQ-VAE decoder 0: z0 -> 128N samples of 44.1 kHz audio

Lengths round-trip exactly: N top codes <-> 4N middle <-> 16N bottom <-> 128N samples.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_jukebox_chain import JukeboxChainConfig
from .errors import JukeboxInputError
from .generation_jukebox import sample_level
from .modeling_jukebox_prior import JukeboxPrior
from .modeling_jukebox_vqvae import JukeboxVQVAE
from .tokenization_jukebox import JukeboxTokenizer, tokenizer_folder

_LEVEL_NAMES = {0: "bottom", 1: "middle", 2: "top"}


@dataclass
class JukeboxChainOutput(ModelOutput):
    """Output of [`JukeboxChainModel.generate_audio`] / [`~JukeboxChainModel.generate_codes`].

    Args:
        audio_values (`torch.FloatTensor` of shape `(batch, 128 * N)`, *optional*): decoded mono audio at
            `sampling_rate` (from the bottom-level codes), when decoding was requested.
        audio_codes (`list[torch.LongTensor]`): codes of levels 0, 1, 2 (bottom first, like
            `JukeboxVQVAE.encode`), shapes `(batch, 16N)`, `(batch, 4N)`, `(batch, N)`. Levels that were not
            sampled hold what was given (or `None`).
        sampling_rate (`int`): audio sampling rate (44100).
    """

    audio_values: torch.FloatTensor | None = None
    audio_codes: list[torch.LongTensor | None] | None = None
    sampling_rate: int | None = None


class JukeboxChainPreTrainedModel(PreTrainedModel):
    config_class = JukeboxChainConfig
    base_model_prefix = "jukebox"
    main_input_name = "input_values"
    input_modalities = "audio"
    _no_split_modules: ClassVar[list[str]] = ["JukeboxBlock", "JukeboxEncoder", "JukeboxDecoder"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        # every parameter lives in a sub-model (VQ-VAE, priors), which initialises its own weights
        pass


class JukeboxChainModel(JukeboxChainPreTrainedModel):
    r"""VQ-VAE and the three priors of a released Jukebox model, with generation from scratch or from a prime.

    Sub-models: `vqvae` ([`JukeboxVQVAE`]), `prior_level_0` / `prior_level_1` (bottom / middle upsamplers) and
    `prior_level_2` (top prior) ([`JukeboxPrior`]); levels use the original numbering (0 = hop 8).

    Example:

    ```python
    >>> model = JukeboxChainModel.from_pretrained("converted/jukebox-1b-lyrics-chain")  # doctest: +SKIP
    >>> gen = torch.Generator().manual_seed(0)
    >>> out = model.generate_audio(seconds=4.0, artist="Alan Jackson", genre="Country", lyrics="...",
    ...                            generator=gen, progress=True)  # doctest: +SKIP
    >>> out.audio_values.shape  # (1, 128 * (4 * 44100 // 128))  # doctest: +SKIP
    ```
    """

    def __init__(self, config: JukeboxChainConfig):
        super().__init__(config)
        self.vqvae = JukeboxVQVAE(config.vqvae_config)
        self.prior_level_0 = JukeboxPrior(config.prior_level_0_config)
        self.prior_level_1 = JukeboxPrior(config.prior_level_1_config)
        self.prior_level_2 = JukeboxPrior(config.prior_level_2_config)
        self.post_init()

    # ------------------------------------------------------------------ parts
    @classmethod
    def from_parts(
        cls,
        vqvae: JukeboxVQVAE,
        prior_level_0: JukeboxPrior,
        prior_level_1: JukeboxPrior,
        prior_level_2: JukeboxPrior,
        **config_kwargs,
    ) -> JukeboxChainModel:
        """Assemble a chain from loaded sub-models (their weights are shared, not copied)."""
        for level, prior in enumerate((prior_level_0, prior_level_1, prior_level_2)):
            if not isinstance(prior, JukeboxPrior) or prior.config.level != level:
                got = getattr(getattr(prior, "config", None), "level", type(prior).__name__)
                raise JukeboxInputError(f"prior_level_{level} must be a JukeboxPrior of level {level}, got {got}.")
        config = JukeboxChainConfig(
            vqvae_config=vqvae.config,
            prior_level_0_config=prior_level_0.config,
            prior_level_1_config=prior_level_1.config,
            prior_level_2_config=prior_level_2.config,
            **config_kwargs,
        )
        with torch.device("meta"):
            model = cls(config)
        model.vqvae, model.prior_level_0, model.prior_level_1, model.prior_level_2 = (
            vqvae,
            prior_level_0,
            prior_level_1,
            prior_level_2,
        )
        return model.eval()

    def prior(self, level: int) -> JukeboxPrior:
        """The prior of `level` (0 = bottom upsampler, 1 = middle upsampler, 2 = top prior)."""
        if level not in (0, 1, 2):
            raise JukeboxInputError(f"level must be 0, 1 or 2, got {level!r}.")
        return getattr(self, f"prior_level_{level}")

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    def num_tokens(self, seconds: float) -> list[int]:
        """Codes per level 0, 1, 2 for `seconds` of audio: N top codes -> [N * 16, N * 4, N] (floored)."""
        hops = self.config.hop_lengths
        top = int(round(seconds * self.sampling_rate, 6)) // hops[2]
        return [top * (hops[2] // hops[level]) for level in (0, 1, 2)]

    # ------------------------------------------------------------------ labels
    def save_vocabularies(self, save_directory: str | os.PathLike) -> list[Path]:
        """Write each prior's [`JukeboxTokenizer`] (artists, genres, lyric characters) to
        `save_directory/tokenizer_level_{level}/`, so that names work in a `trust_remote_code=True` copy without the
        package. Called by `save_pretrained`; needs the packaged vocabularies (an installed package)."""
        written = []
        for level in (0, 1, 2):
            tokenizer = JukeboxTokenizer.for_config(self.prior(level).config)
            written += tokenizer.save_pretrained(Path(save_directory) / tokenizer_folder(level))
        return written

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the vocabularies beside the weights ([`save_vocabularies`])."""
        super().save_pretrained(save_directory, *args, **kwargs)
        try:
            self.save_vocabularies(save_directory)
        except JukeboxInputError:  # a remote-code copy: the vocabularies it was loaded with are already there
            pass

    def _labels(self, level: int, total_length: int, offset: int, metadata, artist, genre, lyrics, lyric_tokens):
        """(piece-level label rows, full lyric tokens or None) of one level."""
        prior = self.prior(level)
        config = prior.config
        given = metadata.get(level) if isinstance(metadata, dict) else None
        if given is not None:
            rows = torch.as_tensor(given).long()
            if rows.dim() == 1:
                rows = rows.unsqueeze(0)
            rows = rows.clone()
            rows[:, 0], rows[:, 1] = int(total_length), int(offset)
            full = lyric_tokens if level == 2 else None
            return rows.to(self.device), full
        if artist is None and genre is None and lyrics is None:
            rows = prior.build_metadata(total_length=total_length, offset=offset, batch_size=1)
            full = lyric_tokens if (level == 2 and config.n_lyric_tokens) else None
            return rows, full
        # names -> ids: the tokenizer saved in the model folder (save_vocabularies), else the packaged vocabularies
        folder = Path(self.name_or_path) / tokenizer_folder(level) if self.name_or_path else None
        labeller = JukeboxTokenizer.for_config(config, folder)
        rows = labeller.metadata(artist=artist, genre=genre, lyrics=None, total_length=total_length, offset=offset)
        full = None
        if config.n_lyric_tokens:
            full = lyric_tokens if lyric_tokens is not None else labeller.tokenize_lyrics(lyrics)
        return rows.to(self.device), full

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_codes(
        self,
        seconds: float | None = None,
        *,
        prime_audio: torch.Tensor | None = None,
        prime_codes: Sequence[torch.LongTensor | None] | None = None,
        n_samples: int = 1,
        artist: str | None = None,
        genre: str | None = None,
        lyrics: str | None = None,
        metadata: dict[int, torch.LongTensor] | None = None,
        lyric_tokens: Sequence[int] | None = None,
        total_length: int | None = None,
        offset: int = 0,
        levels: Sequence[int] = (2, 1, 0),
        temperature: float | Sequence[float] | None = None,
        top_k: int = 0,
        top_p: float = 0.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
        progress: bool | Callable[[int, int], None] = False,
    ) -> JukeboxChainOutput:
        r"""Sample codes of the requested levels (top first), optionally continuing a prime.

        Args:
            seconds (`float`): length of the result; `N = floor(seconds * 44100 / 128)` top codes, 4N middle, 16N
                bottom codes (128N samples once decoded). Default: the length of the given top codes.
            prime_audio (`torch.FloatTensor` of shape `(1 or batch, samples)`, *optional*): audio to continue: it is
                encoded at every level (its codes trimmed to whole top codes: `floor(samples / 128)` top codes and
                4x / 16x as many below) and kept unchanged at the start of every level.
            prime_codes (`list` of 3 `torch.LongTensor | None`, *optional*): existing codes of levels 0, 1, 2
                instead of `prime_audio` (e.g. top codes to upsample: give the full top level and `levels=(1, 0)`).
            n_samples (`int`): samples to draw (primes with batch 1 are broadcast).
            artist, genre, lyrics (`str`, *optional*): conditioning by name (v3 vocabularies for the 1b_lyrics top
                prior, v2 elsewhere; unknown names map to 0 with a warning). Default: unknown, no lyrics.
            metadata (`dict[int, torch.LongTensor]`, *optional*): per level, a label row with ids
                `[*, *, *, artist_id, genre ids..., lyric tokens...]` instead of names (the first two fields are
                replaced by `total_length` and `offset`, the third per window).
            lyric_tokens (`list[int]`, *optional*): the full lyrics as tokens of the top prior's vocabulary;
                re-windowed for every top-level window.
            total_length (`int`, *optional*): total length of the piece in samples for the timing embedding;
                default: the generated length, raised to the top prior's `min_duration` if shorter.
            offset (`int`): samples before the first generated code within the piece (timing embedding).
            levels (`tuple[int]`): levels to sample, from the top down (default all three).
            temperature (`float` or 3 floats for levels 0, 1, 2): default `config.temperatures` (0.99).
            top_k, top_p, generator, chunk_size: as [`~generation_jukebox.sample_prior`].
            progress (`bool` or callable): a progress bar per level, or `callback(level, n_new_tokens)`.

        Returns:
            [`JukeboxChainOutput`] with `audio_codes` (levels 0, 1, 2).
        """
        config = self.config
        hops = config.hop_lengths
        levels = sorted({int(level) for level in levels}, reverse=True)
        if not levels or any(level not in (0, 1, 2) for level in levels):
            raise JukeboxInputError(f"levels must be a non-empty subset of (0, 1, 2), got {levels}.")
        if prime_audio is not None and prime_codes is not None:
            raise JukeboxInputError("Pass prime_audio or prime_codes, not both.")

        codes: list[torch.Tensor | None] = [None, None, None]
        if prime_audio is not None:
            audio = torch.as_tensor(prime_audio)
            if audio.dim() == 1:
                audio = audio.unsqueeze(0)
            if audio.dim() != 2:
                raise JukeboxInputError(
                    f"prime_audio must be mono audio of shape (batch, samples), got {tuple(audio.shape)}."
                )
            n_prime_top = audio.shape[1] // hops[2]
            if n_prime_top < 1:
                raise JukeboxInputError(
                    f"prime_audio has {audio.shape[1]} samples; at least {hops[2]} (one top-level code) are needed."
                )
            audio = audio[:, : n_prime_top * hops[2]]
            encoded = self.vqvae.encode(audio.to(self.device), start_level=0).audio_codes
            codes = [encoded[level][:, : n_prime_top * (hops[2] // hops[level])] for level in (0, 1, 2)]
        elif prime_codes is not None:
            if len(prime_codes) != 3:
                raise JukeboxInputError(
                    f"prime_codes must list 3 entries (levels 0, 1, 2; None for none), got {len(prime_codes)}."
                )
            for level, value in enumerate(prime_codes):
                if value is not None:
                    value = torch.as_tensor(value)
                    codes[level] = (value.unsqueeze(0) if value.dim() == 1 else value).long().to(self.device)

        if seconds is None:
            if codes[2] is None:
                raise JukeboxInputError("Give seconds (the length to generate) or the top-level codes.")
            n_top = codes[2].shape[1]
        else:
            if not (isinstance(seconds, (int, float)) and seconds > 0 and math.isfinite(seconds)):
                raise JukeboxInputError(f"seconds must be a positive number, got {seconds!r}.")
            n_top = self.num_tokens(seconds)[2]
            if n_top < 1:
                raise JukeboxInputError(
                    f"seconds={seconds} is shorter than one top-level code ({hops[2]} samples = "
                    f"{hops[2] / self.sampling_rate:.4f} s)."
                )
        totals = [n_top * (hops[2] // hops[level]) for level in (0, 1, 2)]
        for level in (0, 1, 2):
            if codes[level] is not None and codes[level].shape[1] > totals[level]:
                raise JukeboxInputError(
                    f"The prime holds {codes[level].shape[1]} codes at level {level} but only {totals[level]} are "
                    f"requested ({n_top * hops[2] / self.sampling_rate:.3f} s); ask for more seconds than the prime."
                )
        for level in levels:
            if (
                level < 2
                and (level + 1) not in levels
                and (codes[level + 1] is None or codes[level + 1].shape[1] < totals[level + 1])
            ):
                raise JukeboxInputError(
                    f"Upsampling level {level} needs all {totals[level + 1]} codes of level {level + 1}: sample that "
                    "level too or pass them in prime_codes."
                )
        batch = max([n_samples] + [c.shape[0] for c in codes if c is not None])
        temps = config.temperatures if temperature is None else temperature
        temps = [float(temps)] * 3 if isinstance(temps, (int, float)) else [float(t) for t in temps]
        if len(temps) != 3:
            raise JukeboxInputError(f"temperature must be one number or 3 (levels 0, 1, 2), got {temperature!r}.")
        chunk_size = config.chunk_size if chunk_size is None else chunk_size

        sample_length = n_top * hops[2]
        top_config = self.prior_level_2.config
        if total_length is None:
            total_length = offset + sample_length
            if top_config.use_timing:
                total_length = max(total_length, math.ceil(top_config.min_duration * top_config.sampling_rate))

        for level in levels:
            prior = self.prior(level)
            rows, full_lyrics = self._labels(level, total_length, offset, metadata, artist, genre, lyrics, lyric_tokens)
            if callable(progress):
                report = functools.partial(progress, level)
            elif progress:
                from transformers.utils.logging import tqdm

                done = 0 if codes[level] is None else codes[level].shape[1]
                bar = tqdm(total=totals[level] - done, desc=f"level {level} ({_LEVEL_NAMES[level]})", unit="tok")
                report = bar.update
            else:
                report = False
            try:
                codes[level] = sample_level(
                    prior,
                    codes[level],
                    totals[level],
                    hop_fraction=config.hop_fractions[level],
                    metadata=rows,
                    lyric_tokens=full_lyrics,
                    upper_codes=codes[level + 1] if level < 2 else None,
                    n_samples=batch,
                    temperature=temps[level],
                    top_k=top_k,
                    top_p=top_p,
                    generator=generator,
                    chunk_size=chunk_size,
                    progress=report,
                )
            finally:
                if progress and not callable(progress):
                    bar.close()
        return JukeboxChainOutput(audio_codes=codes, sampling_rate=self.sampling_rate)

    @torch.no_grad()
    def decode_codes(self, codes: torch.LongTensor, level: int = 0) -> torch.FloatTensor:
        """Audio (batch, T * hop_level) from the codes (batch, T) of one level, with that level's decoder."""
        return self.vqvae.decode(codes, start_level=level).audio_values

    @torch.no_grad()
    def generate_audio(self, seconds: float | None = None, **kwargs) -> JukeboxChainOutput:
        r"""[`generate_codes`] for all three levels, then decode the bottom codes to audio.

        Takes the arguments of [`generate_codes`] (except `levels`). Returns [`JukeboxChainOutput`] with
        `audio_values` of shape `(batch, 128 * N)` (N top codes) and the codes of every level.
        """
        if "levels" in kwargs:
            raise JukeboxInputError("generate_audio samples every level; use generate_codes(levels=...) for a subset.")
        out = self.generate_codes(seconds, **kwargs)
        out.audio_values = self.decode_codes(out.audio_codes[0], level=0)
        return out

    @torch.no_grad()
    def upsample(self, top_codes: torch.LongTensor, **kwargs) -> JukeboxChainOutput:
        """Upsample complete top-level codes (batch, N) to the middle and bottom levels and decode them."""
        out = self.generate_codes(None, prime_codes=[None, None, top_codes], levels=(1, 0), **kwargs)
        out.audio_values = self.decode_codes(out.audio_codes[0], level=0)
        return out

    def forward(self, input_values: torch.Tensor, **kwargs) -> JukeboxChainOutput:
        """Encode audio (batch, samples) at every level and decode it again from the bottom level."""
        codes = self.vqvae.encode(input_values, start_level=0).audio_codes
        return JukeboxChainOutput(
            audio_values=self.decode_codes(codes[0], 0), audio_codes=codes, sampling_rate=self.sampling_rate
        )


JukeboxChainModel.register_for_auto_class("AutoModel")

__all__ = ["JukeboxChainModel", "JukeboxChainOutput", "JukeboxChainPreTrainedModel"]
