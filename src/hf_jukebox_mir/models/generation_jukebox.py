"""Sampling from Jukebox priors: token loop with a KV cache, windows, upsampling conditioning.

Three layers, each usable on its own:

* [`JukeboxSamplingState`]: the incremental state of ONE context window (the window's conditioning and a
  KV cache). `prefill(tokens)` pushes known tokens through the transformer in chunks (the prior's own cached
  pass, [`JukeboxPriorCache`]); `next_logits()` runs the next position alone and returns its logits before its
  token is known; `accept(tokens)` records the chosen token, which the following position consumes. Single
  positions run on the prior's [`JukeboxDecodeBuffers`]: preallocated per-layer key/value buffers written in
  place, each layer reading only the keys its attention pattern shows (no masks, no per-step concatenation),
  so a step costs about one read of the weights. All of it through one public call,
  [`JukeboxPrior.decode_step`]; the prior owns every attention path.
* [`sample_prior`]: ancestral (no prime) or primed sampling inside one window: returns the prime unchanged
  followed by the new codes. Temperature, top-k / top-p ([`filter_logits`], as the original), batch > 1,
  a seeded `torch.Generator`; each token drawn with exactly the random numbers and arithmetic of
  `torch.multinomial` ([`draw_noise`], [`draw_from_noise`]), so seeded runs reproduce the original's codes.
  `compile=True`: every token through the prior's compiled static decode step, the draw in the same graph
  (`JukeboxPrior.decode_step(None, cache, compile=..., draw=...)`).
* [`sample_level`]: a whole level of any length with overlapping windows (original `sample_level`,
  hop fractions 0.5 / 0.5 / 0.125 for levels 0 / 1 / 2). Each window gets its own labels (offset, window
  length, lyric window) and, for upsamplers, exactly the codes of the level above that it covers. With `seed`,
  every window draws from its own generator ([`window_seed`]), so a level continued from the codes of its
  finished windows (`on_window` hands them out) equals the uninterrupted level.

Position bookkeeping (original `get_emb`): position p of the transformer consumes the token of position
p - 1 (the artist/genre embedding `y_cond` at position 0) and its logits score token p. The single-sequence
lyrics prior (1b_lyrics) puts its lyric tokens at the first `prime_length` positions; its music codes are
shifted by `music_token_shift` (79) in the merged vocabulary; all 2127 logits stay unmasked while sampling,
a sampled id is fed back as is, and the returned codes are `id - 79` clamped at 0 (original
`prior_postprocess`).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import JukeboxInputError
from .modeling_jukebox_prior import (
    JukeboxPrior,
    JukeboxPriorCache,
    JukeboxPriorConditioning,
)
from .tokenization_jukebox import lyric_window

# Window hop as a fraction of the context, per level (0 = bottom, 2 = top): the values of the original
# README / sampling notebook (`hop_fraction`); the original hparams have no default.
DEFAULT_HOP_FRACTIONS = (0.5, 0.5, 0.125)
LEVEL_NAMES = ("bottom", "middle", "top")


def window_seed(seed: int, level: int, start: int) -> int:
    """The seed of the generator of the window starting at token `start` of `level`, for a run seeded with `seed`.

    Every window draws from its own generator, so a window's codes depend only on the run seed and the codes before
    it: a run resumed from the codes of its finished windows draws exactly what the uninterrupted run draws."""
    digest = hashlib.sha256(f"jukebox-mir window {int(seed)} {int(level)} {int(start)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ---------------------------------------------------------------------------------------------- logits
def filter_logits(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, filter_value: float = -float("inf")
) -> torch.Tensor:
    """Top-k or nucleus (top-p) filtering of the last axis, as the original `filter_logits`.

    * top-k: every logit strictly below the k-th largest becomes `filter_value` (ties with the k-th are kept).
    * top-p: sort descending, cumulative softmax; entries whose cumulative probability exceeds `top_p` are
      removed, shifted right by one so the first entry crossing the threshold (and always the top entry)
      are kept.

    At most one of `top_k` and `top_p` may be non-zero (0 = off). Returns a filtered copy.
    """
    if top_k < 0 or not 0.0 <= top_p <= 1.0:
        raise JukeboxInputError(f"Expected top_k >= 0 and 0 <= top_p <= 1, got top_k={top_k}, top_p={top_p}.")
    if top_k and top_p:
        raise JukeboxInputError(
            f"Use top_k or top_p, not both (got top_k={top_k}, top_p={top_p}); set the other one to 0."
        )
    logits = logits.clone()
    top_k = min(int(top_k), logits.shape[-1])
    if top_k > 0:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, filter_value)
    if top_p > 0.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.cumsum(F.softmax(sorted_logits.float(), dim=-1), dim=-1)
        remove_sorted = cumulative > top_p
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()  # keep the first entry crossing top_p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_index, remove_sorted)
        logits = logits.masked_fill(remove, filter_value)
    return logits


def draw_noise(
    batch: int, vocab: int, generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The random numbers of one draw per row: (B, V) samples of Exp(1), taken from `generator` exactly as
    `torch.multinomial(probs, 1, generator=generator)` takes them (its one-sample path draws one exponential per
    category and picks `argmax(probs / noise)`). Seeded runs therefore draw the codes the original draws
    (`torch.distributions.Categorical(...).sample()` is that multinomial)."""
    return torch.empty(batch, vocab, device=device).exponential_(1, generator=generator)


def _draw(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.LongTensor:
    """One categorical draw per row of `logits` (B, V) -> (B, 1), identical to `torch.multinomial` (see
    [`draw_noise`], [`draw_from_noise`])."""
    noise = draw_noise(logits.shape[0], logits.shape[-1], generator, logits.device)
    return draw_from_noise(logits, noise, torch.tensor(float(temperature)), top_k=top_k, top_p=top_p)


def draw_from_noise(
    logits: torch.Tensor, noise: torch.Tensor, temperature: torch.Tensor, top_k: int = 0, top_p: float = 0.0
) -> torch.LongTensor:
    """One categorical draw per row of `logits` (B, V) -> (B, 1) from exponential noise (B, V) ([`draw_noise`]):
    `argmax(softmax(filter(logits / temperature)) / noise)`, the computation of `torch.multinomial`'s one-sample
    path, in tensor operations only, so the compiled decode step runs it in its own graph. A filtered category
    (probability 0) is never drawn."""
    logits = logits.float() / temperature.to(device=logits.device, dtype=torch.float32)
    if top_k or top_p:
        logits = filter_logits(logits, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits, dim=-1)  # filtered entries have probability exactly 0
    return torch.argmax(probs / noise.to(probs.dtype), dim=-1, keepdim=True)


@functools.lru_cache(maxsize=None)
def _drawer(top_k: int, top_p: float) -> Callable:
    """`draw(logits, uniform, temperature)` for fixed filtering, one function object per (top_k, top_p): the
    compiled step sees the same function every call (no recompilation)."""

    def draw(logits: torch.Tensor, noise: torch.Tensor, temperature: torch.Tensor) -> torch.LongTensor:
        return draw_from_noise(logits, noise, temperature, top_k=top_k, top_p=top_p)

    return draw


# ---------------------------------------------------------------------------------------------- state
class JukeboxSamplingState:
    """Incremental (KV-cached) pass through one context window of a [`JukeboxPrior`].

    Sequence positions include the lyric prefix of the single-sequence lyrics prior; tokens are ids of the
    prior's merged vocabulary (music code + `music_token_shift`). Usage:

    ```python
    >>> state = JukeboxSamplingState(prior, prior.get_conditioning(metadata, upper_codes, batch_size=2))
    >>> state.prefill(prefix_tokens, chunk_size=32)   # known tokens of positions 0 .. n-1 (optional)
    >>> logits = state.next_logits()                   # (2, vocab) for position n
    >>> state.accept(chosen)                           # (2, 1): the token of position n
    ```
    """

    def __init__(self, prior: JukeboxPrior, conditioning: JukeboxPriorConditioning, compile: bool | dict = False):
        self.prior = prior
        self.compile = compile
        self.config = prior.config
        self.cache = JukeboxPriorCache(len(prior.layers))
        self.cache.conditioning = conditioning
        self.batch_size = conditioning.x_cond.shape[0]
        self.max_positions = prior.decode_max_positions(self.cache)
        self._stepping = False
        self._pending = False
        self._temperature: tuple[float, torch.Tensor] | None = None
        self._vocab = prior.config.total_vocab_size  # logits per position (the head's width)

    @property
    def position(self) -> int:
        """Next position to run (= positions already in the cache)."""
        return self.cache.seen_tokens

    def _chunk(self, tokens: torch.LongTensor, return_logits: bool) -> torch.Tensor | None:
        if self._stepping or self._pending:
            raise JukeboxInputError("prefill() must come before the first next_logits() of a sampling state.")
        return self.prior.decode_step(tokens, self.cache, return_logits=return_logits)

    @torch.no_grad()
    def prefill(self, tokens: torch.LongTensor, chunk_size: int | None = 32) -> None:
        """Push known tokens (B, n) (merged-vocabulary ids of the next n positions) through the cache.

        Chunks of `chunk_size` positions bound the memory of the attention scores; the chunk outputs are
        discarded (only the cache matters), as in the original `primed_sample`.
        """
        if tokens.shape[1] == 0:
            return
        chunk = tokens.shape[1] if not chunk_size else int(chunk_size)
        for begin in range(0, tokens.shape[1], chunk):
            self._chunk(tokens[:, begin : begin + chunk], return_logits=False)

    @torch.no_grad()
    def prefill_logits(self, tokens: torch.LongTensor) -> torch.Tensor:
        """Like `prefill` for one chunk, but return its logits (B, n, V) (teacher forcing through the cache)."""
        return self._chunk(tokens, return_logits=True)

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits (B, V) of the next position, which consumes the last accepted token (or y_cond at 0)."""
        if self._pending:
            raise JukeboxInputError(
                "next_logits() was called twice: accept() the token of the previous position first."
            )
        if self.position + 1 > self.max_positions:
            raise JukeboxInputError(f"The window is full: it holds {self.max_positions} positions.")
        self._stepping = self._pending = True
        return self.prior.decode_step(None, self.cache, compile=self.compile)[:, 0]

    @torch.no_grad()
    def draw_next(
        self, temperature: float, top_k: int = 0, top_p: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.LongTensor:
        """Run the next position, draw its tokens (B, 1) ([`draw_from_noise`], the random numbers of
        `torch.multinomial` from `generator`) and accept them. With `compile`, the draw runs in the compiled step's
        graph."""
        if self._pending:
            raise JukeboxInputError(
                "next_logits() was called without accept(): accept() the token of the previous position first."
            )
        if self.position + 1 > self.max_positions:
            raise JukeboxInputError(f"The window is full: it holds {self.max_positions} positions.")
        self._stepping = True
        device = self.cache.conditioning.x_cond.device
        if self._temperature is None or self._temperature[0] != float(temperature):  # made once per window
            self._temperature = (float(temperature), torch.tensor(float(temperature), device=device))
        noise = draw_noise(self.batch_size, self._vocab, generator, device)
        tokens = self.prior.decode_step(
            None,
            self.cache,
            compile=self.compile,
            draw=_drawer(int(top_k), float(top_p)),
            draw_inputs=(noise, self._temperature[1]),
        )
        self.cache.last_token = tokens.reshape(self.batch_size, 1).long()
        return self.cache.last_token

    def accept(self, tokens: torch.LongTensor) -> None:
        """Record the tokens (B, 1) chosen for the position just run by `next_logits`."""
        if not self._pending:
            raise JukeboxInputError("accept() must follow next_logits(): there is no position waiting for a token.")
        self.cache.last_token = tokens.reshape(self.batch_size, 1).long()
        self._pending = False


# ---------------------------------------------------------------------------------------------- checks
def _batch_rows(tensor: torch.Tensor | None, batch: int, name: str) -> torch.Tensor | None:
    """Broadcast a batch-1 tensor to `batch` rows; check the others."""
    if tensor is None:
        return None
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise JukeboxInputError(
        f"{name} has batch size {tensor.shape[0]} but {batch} samples are drawn; give 1 or {batch} rows."
    )


def _infer_batch(n_samples: int, *tensors: torch.Tensor | None) -> int:
    sizes = {t.shape[0] for t in tensors if t is not None and t.shape[0] != 1}
    if len(sizes) > 1:
        raise JukeboxInputError(f"Inputs disagree on the batch size: {sorted(sizes)}.")
    if sizes:
        size = sizes.pop()
        if n_samples not in (1, size):
            raise JukeboxInputError(f"n_samples={n_samples} but the inputs have batch size {size}.")
        return size
    if n_samples < 1:
        raise JukeboxInputError(f"n_samples must be >= 1, got {n_samples}.")
    return n_samples


def _check_sampling_args(temperature: float, top_k: int, top_p: float, chunk_size: int | None) -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise JukeboxInputError(f"temperature must be a finite number > 0, got {temperature!r} (0.98-0.99 is usual).")
    filter_logits(torch.zeros(1, 2), top_k=top_k, top_p=top_p)  # validates top_k / top_p
    if chunk_size is not None and int(chunk_size) < 1:
        raise JukeboxInputError(f"chunk_size must be >= 1 (or None for one chunk), got {chunk_size!r}.")


def _as_codes(codes, name: str) -> torch.LongTensor | None:
    if codes is None:
        return None
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
        raise JukeboxInputError(
            f"{name} must be an integer tensor of codes (batch, tokens), got {type(codes).__name__}"
            + (f" {codes.dtype}" if isinstance(codes, torch.Tensor) else "")
            + "."
        )
    if codes.dim() == 1:
        codes = codes.unsqueeze(0)
    if codes.dim() != 2:
        raise JukeboxInputError(f"{name} must have shape (batch, tokens), got {tuple(codes.shape)}.")
    return codes.long()


def _progress_callback(progress, total: int, desc: str):
    """(update(n) callable, close()) for `progress` = False / True / a callable."""
    if callable(progress):
        return progress, lambda: None
    if progress:
        bar = _progress_bar(total, desc)
        return bar.update, bar.close
    return (lambda n: None), (lambda: None)


def _progress_bar(total: int, desc: str, batch: int = 1):
    """A tqdm bar counting positions, shown as tokens of all `batch` rows: rate in tokens/s and the time left (ETA)
    from the recent rate."""
    from transformers.utils.logging import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=batch, smoothing=0.1, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- one window
@torch.no_grad()
def sample_prior(
    prior: JukeboxPrior,
    *,
    n_samples: int = 1,
    prime_codes: torch.LongTensor | None = None,
    metadata: torch.LongTensor | None = None,
    upper_level_codes: torch.LongTensor | None = None,
    num_tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = 32,
    progress: bool | Callable[[int], None] = False,
    conditioning: JukeboxPriorConditioning | None = None,
    compile: bool | dict = False,
) -> torch.LongTensor:
    r"""Sample music codes inside one context window of `prior` (ancestral or primed).

    Args:
        prior ([`JukeboxPrior`]): top prior or upsampler.
        n_samples (`int`): samples to draw; inputs with batch size 1 are broadcast.
        prime_codes (`torch.LongTensor` of shape `(batch, T0)`, *optional*): existing codes of this level at
            the start of the window; they are pushed through the KV cache in chunks of `chunk_size` and
            returned unchanged. None or T0 = 0: ancestral sampling.
        metadata (`torch.LongTensor` of shape `(1 or batch, 4 + max_genres + n_lyric_tokens)`): the label row of
            THIS window (see [`window_metadata`]); lyric tokens included for the lyrics priors.
        upper_level_codes (`torch.LongTensor` of shape `(batch, U)`, *optional*): upsamplers only: the codes
            of the level above covering this window (`U = n_ctx // 4` for a full window).
        num_tokens (`int`, *optional*): new codes to draw; default: fill the window (`n_ctx - T0`, or what the
            upper-level codes cover).
        temperature (`float`): logits are divided by it (> 0).
        top_k (`int`), top_p (`float`): filtering as [`filter_logits`] (0 = off; not both).
        generator (`torch.Generator`, *optional*): source of randomness (same device as the prior) for
            reproducible draws; the global RNG otherwise.
        chunk_size (`int`, *optional*): prefill chunk length (None: the whole prime at once).
        progress (`bool` or callable): a progress bar, or a callable receiving the number of new tokens.
        conditioning ([`JukeboxPriorConditioning`], *optional*): precomputed `prior.get_conditioning(...)`
            (then `metadata` and `upper_level_codes` are not read).
        compile (`bool` or `dict`): draw every new token through the compiled static decode step
            (`prior.decode_step(None, cache, compile=...)`: one captured graph for every position; a CUDA graph on
            CUDA); a dict passes `torch.compile` options. The first call of a (batch, window length) compiles
            (seconds); the eager step (`False`) is the reference.

    Returns:
        `torch.LongTensor` of shape `(batch, T0 + num_tokens)`: the prime followed by the new codes.
    """
    config = prior.config
    _check_sampling_args(temperature, top_k, top_p, chunk_size)
    prime_codes = _as_codes(prime_codes, "prime_codes")
    upper_level_codes = _as_codes(upper_level_codes, "upper_level_codes")
    if conditioning is not None:
        batch = _infer_batch(n_samples, prime_codes, conditioning.x_cond)
    else:
        batch = _infer_batch(n_samples, prime_codes, upper_level_codes, metadata)
    device = prior.device
    if prime_codes is None:
        prime_codes = torch.zeros(batch, 0, dtype=torch.long, device=device)
    prime_codes = _batch_rows(prime_codes.to(device), batch, "prime_codes")
    n_prime = prime_codes.shape[1]
    if n_prime and (int(prime_codes.min()) < 0 or int(prime_codes.max()) >= config.vocab_size):
        raise JukeboxInputError(
            f"prime_codes must lie in [0, {config.vocab_size - 1}], got [{int(prime_codes.min())}, "
            f"{int(prime_codes.max())}]."
        )

    if conditioning is None:
        upper = _batch_rows(upper_level_codes, batch, "upper_level_codes")
        meta = metadata if metadata is None else metadata.to(device)
        conditioning = prior.get_conditioning(meta, None if upper is None else upper.to(device), batch)
    elif conditioning.x_cond.shape[0] != batch:
        conditioning = JukeboxPriorConditioning(
            **{k: (_batch_rows(v, batch, k) if isinstance(v, torch.Tensor) else v) for k, v in conditioning.items()}
        )
    window = min(config.n_ctx, conditioning.x_cond.shape[1])
    if num_tokens is None:
        num_tokens = window - n_prime
    if num_tokens < 0 or n_prime + num_tokens > window:
        covered = "" if window == config.n_ctx else f" (the upper-level codes cover {window} positions)"
        raise JukeboxInputError(
            f"{n_prime} prime codes + {num_tokens} new codes do not fit one window of {window} tokens{covered}. "
            "Use sample_level(...) for longer sequences."
        )
    if num_tokens == 0:
        return prime_codes.clone()

    shift = config.music_token_shift
    state = JukeboxSamplingState(prior, conditioning, compile=compile)
    prefix = prime_codes + shift
    if config.prime_length:
        prefix = torch.cat([conditioning.lyric_tokens.to(device).long().expand(batch, -1), prefix], dim=1)
    update, close = _progress_callback(progress, num_tokens, f"level {config.level}")
    try:
        state.prefill(prefix, chunk_size)
        new_tokens = []
        for _ in range(num_tokens):
            new_tokens.append(state.draw_next(temperature, top_k, top_p, generator))  # (B, 1) merged ids
            update(1)
    finally:
        close()
    new = torch.cat(new_tokens, dim=1)
    new = (new - shift).clamp(min=0)  # a lyric id drawn at a music position becomes code 0 (original)
    return torch.cat([prime_codes, new], dim=1)


@torch.no_grad()
def teacher_forced_logits(
    prior: JukeboxPrior,
    codes: torch.LongTensor,
    *,
    metadata: torch.LongTensor | None = None,
    upper_level_codes: torch.LongTensor | None = None,
    n_prefill: int = 0,
    chunk_size: int | None = 32,
) -> torch.Tensor:
    """Logits of every position of `codes` computed through the sampling path (cache, step by step).

    The first `n_prefill` music positions go through `prefill` in chunks (their logits through
    `prefill_logits`), the rest one position at a time with `next_logits` / `accept`, exactly as
    [`sample_prior`] runs them. Equal to `prior(codes, ...).logits` (music positions); used by the tests.
    Returns (batch, T, vocab) for the music positions.
    """
    codes = _as_codes(codes, "codes").to(prior.device)
    batch = codes.shape[0]
    conditioning = prior.get_conditioning(metadata, upper_level_codes, batch)
    state = JukeboxSamplingState(prior, conditioning)
    config = prior.config
    tokens = codes + config.music_token_shift
    if config.prime_length:
        tokens = torch.cat([conditioning.lyric_tokens.to(codes.device).long().expand(batch, -1), tokens], dim=1)
    n_known = config.prime_length + n_prefill
    logits = []
    chunk = chunk_size or max(n_known, 1)
    for begin in range(0, n_known, chunk):
        logits.append(state.prefill_logits(tokens[:, begin : min(begin + chunk, n_known)]))
    for pos in range(n_known, tokens.shape[1]):
        logits.append(state.next_logits()[:, None])
        state.accept(tokens[:, pos : pos + 1])
    return torch.cat(logits, dim=1)[:, config.prime_length :]


# ---------------------------------------------------------------------------------------------- windows
def window_starts(total_tokens: int, n_ctx: int, hop: int) -> list[int]:
    """Start of every full window over `total_tokens` (original `get_starts`; needs total >= n_ctx).

    Starts step by `hop`; a window that would reach the end is moved to `total_tokens - n_ctx`.
    """
    if hop < 1:
        raise JukeboxInputError(f"The window hop must be >= 1 token, got {hop}.")
    starts = []
    for start in range(0, total_tokens - n_ctx + hop, hop):
        if start + n_ctx >= total_tokens:
            start = total_tokens - n_ctx
        starts.append(start)
    return starts


def window_metadata(
    config, metadata: torch.LongTensor, start: int, lyric_tokens: Sequence[int] | Sequence[Sequence[int]] | None = None
) -> torch.LongTensor:
    """The label rows of a window starting at token `start` (original `get_y`).

    `metadata` holds the labels of the whole piece: `[total_length, offset, *, artist, genres...,
    lyrics...]` with the offset of token 0. For the window: `offset += start * hop_length`,
    `sample_length = n_ctx * hop_length`, and, when the full `lyric_tokens` of the piece are given (one
    list, or one per row), the lyric slots are re-windowed with [`lyric_window`].
    """
    rows = metadata.clone().long()
    hop = config.hop_length
    rows[:, 1] = rows[:, 1] + int(start) * hop
    rows[:, 2] = config.n_ctx * hop
    n_tokens = config.n_lyric_tokens
    if n_tokens and lyric_tokens is not None:
        per_row = lyric_tokens if len(lyric_tokens) and isinstance(lyric_tokens[0], (list, tuple)) else None
        for i in range(rows.shape[0]):
            full = per_row[i] if per_row is not None else lyric_tokens
            total, offset, duration = (int(v) for v in rows[i, :3])
            rows[i, -n_tokens:] = torch.tensor(lyric_window(full, n_tokens, total, offset, duration))
    return rows


def default_metadata(
    prior: JukeboxPrior,
    total_tokens: int,
    *,
    offset: int = 0,
    artist_id: int = 0,
    genre_ids: Sequence[int] = (0,),
    batch_size: int = 1,
) -> torch.LongTensor:
    """Piece-level labels with unknown artist/genre: `total_length` = the piece length, raised to the
    prior's minimum duration (top priors assert `total_length >= min_duration`)."""
    config = prior.config
    total_length = total_tokens * config.hop_length + offset
    if config.use_timing:
        total_length = max(total_length, math.ceil(config.min_duration * config.sampling_rate))
    return prior.build_metadata(
        total_length=total_length, offset=offset, artist_id=artist_id, genre_ids=list(genre_ids), batch_size=batch_size
    )


def plan_windows(total_tokens: int, n_ctx: int, hop: int, n_existing: int = 0) -> list[tuple[int, int]]:
    """`(start, end)` of each window that samples something, for a level holding `n_existing` codes.

    Full windows (`total >= n_ctx`) follow [`window_starts`]; a shorter level is one window `[0, total)`.
    A window whose codes all exist already is skipped (original `sample_single_window`).
    """
    if total_tokens >= n_ctx:
        spans = [(s, s + n_ctx) for s in window_starts(total_tokens, n_ctx, hop)]
    else:
        spans = [(0, total_tokens)]
    plan, covered = [], n_existing
    for start, end in spans:
        if end > covered:
            plan.append((start, end))
            covered = end
    return plan


@torch.no_grad()
def sample_level(
    prior: JukeboxPrior,
    codes_so_far: torch.LongTensor | None,
    total_tokens: int,
    *,
    hop_fraction: float | None = None,
    metadata: torch.LongTensor | Callable[[int], torch.LongTensor] | None = None,
    lyric_tokens: Sequence[int] | Sequence[Sequence[int]] | None = None,
    upper_codes: torch.LongTensor | None = None,
    n_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = 32,
    progress: bool | Callable[[int], None] = False,
    compile: bool | dict = False,
    seed: int | None = None,
    on_window: Callable[[torch.LongTensor], None] | None = None,
) -> torch.LongTensor:
    r"""Sample a whole level of `total_tokens` codes with overlapping windows (original `sample_level`).

    Window `[start, start + n_ctx)` re-uses the codes already present there as its prime and samples the rest;
    starts step by `hop = int(hop_fraction * n_ctx)`, the last one moved to `total - n_ctx`. A level shorter
    than one context is a single window from 0.

    Args:
        prior ([`JukeboxPrior`]): the prior of this level.
        codes_so_far (`torch.LongTensor` of shape `(batch, T0)`, *optional*): codes of this level already known
            (a prime from the VQ-VAE, or an earlier run); kept unchanged. T0 <= total_tokens.
        total_tokens (`int`): length of the level to produce.
        hop_fraction (`float`, *optional*): window hop / n_ctx; default 0.5, 0.5, 0.125 for levels 0, 1, 2.
        metadata (`torch.LongTensor` or callable): piece-level label rows `(1 or batch, metadata_length)`
            (offset of token 0, artist, genres; see [`window_metadata`]), or `start -> rows of that window`.
            Default: unknown artist/genre ([`default_metadata`]).
        lyric_tokens (`list[int]` or one list per row, *optional*): the full lyrics of the piece as tokens, re-
            windowed per window (lyrics priors). Without them the lyric slots of `metadata` are used as given.
        upper_codes (`torch.LongTensor` of shape `(batch, >= ceil(total_tokens / 4))`): upsamplers: the codes of
            the level above; window `[s, e)` is conditioned on exactly `upper_codes[:, s // 4 : e // 4]`.
        n_samples, temperature, top_k, top_p, generator, chunk_size, compile: as [`sample_prior`].
        progress (`bool` or callable): one bar for the new tokens of the whole level (tokens/s, time left, which
            window of how many), or a callback receiving the number of new tokens.
        seed (`int`, *optional*): instead of `generator`: every window draws from its own generator seeded with
            [`window_seed`]`(seed, level, start)`, so that sampling resumed from the codes of the finished windows
            (`codes_so_far`) gives the same codes as an uninterrupted run.
        on_window (callable, *optional*): called after every finished window with the codes of the level so far
            `(batch, end)` (e.g. to save them).

    Returns:
        `torch.LongTensor` of shape `(batch, total_tokens)`.
    """
    config = prior.config
    _check_sampling_args(temperature, top_k, top_p, chunk_size)
    codes_so_far = _as_codes(codes_so_far, "codes_so_far")
    upper_codes = _as_codes(upper_codes, "upper_codes")
    meta_tensor = metadata if isinstance(metadata, torch.Tensor) else None
    batch = _infer_batch(n_samples, codes_so_far, upper_codes, meta_tensor)
    device = prior.device
    if codes_so_far is None:
        codes_so_far = torch.zeros(batch, 0, dtype=torch.long, device=device)
    codes = _batch_rows(codes_so_far.to(device), batch, "codes_so_far")
    if codes.shape[1] > total_tokens:
        raise JukeboxInputError(
            f"codes_so_far holds {codes.shape[1]} codes, more than total_tokens={total_tokens}; "
            "trim it or ask for a longer level."
        )
    if total_tokens < 1:
        raise JukeboxInputError(f"total_tokens must be >= 1, got {total_tokens}.")
    if hop_fraction is None:
        hop_fraction = DEFAULT_HOP_FRACTIONS[config.level]
    if not 0 < hop_fraction <= 1:
        raise JukeboxInputError(f"hop_fraction must lie in (0, 1], got {hop_fraction}.")
    hop = max(int(hop_fraction * config.n_ctx), 1)
    factor = config.upsampling_factor if config.is_upsampler else 1
    if config.is_upsampler:
        if upper_codes is None:
            raise JukeboxInputError(
                f"Level {config.level} is an upsampler: pass upper_codes, the level-{config.level + 1} codes "
                f"(at least {math.ceil(total_tokens / factor)} of them)."
            )
        upper_codes = _batch_rows(upper_codes.to(device), batch, "upper_codes")
        if upper_codes.shape[1] * factor < total_tokens:
            raise JukeboxInputError(
                f"upper_codes has {upper_codes.shape[1]} codes, covering {upper_codes.shape[1] * factor} tokens of "
                f"level {config.level}, but total_tokens={total_tokens}."
            )
    if metadata is None:
        metadata = default_metadata(prior, total_tokens)
    if seed is not None and generator is not None:
        raise JukeboxInputError("Pass seed (one generator per window) or generator, not both.")

    windows = plan_windows(total_tokens, config.n_ctx, hop, codes.shape[1])
    n_windows = len(plan_windows(total_tokens, config.n_ctx, hop, 0))
    bar = None
    if progress and not callable(progress):
        desc = f"level {config.level} ({LEVEL_NAMES[config.level]})"
        bar = _progress_bar(total_tokens - codes.shape[1], desc, batch)
        update, close = bar.update, bar.close
    else:
        update, close = _progress_callback(progress, 0, "")
    try:
        for number, (start, end) in enumerate(windows, start=n_windows - len(windows) + 1):
            if bar is not None:
                bar.set_postfix_str(f"window {number}/{n_windows}", refresh=False)
            if callable(metadata) and not isinstance(metadata, torch.Tensor):
                rows = metadata(start)
            else:
                rows = window_metadata(config, metadata, start, lyric_tokens)
            upper = None
            if config.is_upsampler:
                if start % factor or (end - start == config.n_ctx and end % factor):
                    raise JukeboxInputError(
                        f"Window [{start}, {end}) of level {config.level} does not align with the level above "
                        f"(multiples of {factor} needed); use a total length that is a multiple of {factor}."
                    )
                upper = upper_codes[:, start // factor : -(-end // factor)]  # exactly the window's upper codes
            prime = codes[:, start:end]
            window_codes = sample_prior(
                prior,
                n_samples=batch,
                prime_codes=prime,
                metadata=rows.to(device),
                upper_level_codes=upper,
                num_tokens=end - start - prime.shape[1],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator if seed is None else _window_generator(seed, config.level, start, device),
                chunk_size=chunk_size,
                progress=update,
                compile=compile,
            )
            codes = torch.cat([codes, window_codes[:, prime.shape[1] :]], dim=1)
            if on_window is not None:
                on_window(codes)
    finally:
        close()
    return codes


def _window_generator(seed: int, level: int, start: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(window_seed(seed, level, start))


__all__ = [
    "DEFAULT_HOP_FRACTIONS",
    "LEVEL_NAMES",
    "JukeboxSamplingState",
    "default_metadata",
    "draw_from_noise",
    "draw_noise",
    "filter_logits",
    "lyric_window",
    "plan_windows",
    "sample_level",
    "sample_prior",
    "teacher_forced_logits",
    "window_metadata",
    "window_seed",
    "window_starts",
]
