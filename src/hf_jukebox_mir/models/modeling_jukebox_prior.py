"""Jukebox priors: the sparse transformers over VQ-VAE codes (top prior and upsamplers).

Data flow of `JukeboxPrior.forward` (read bottom-up in this file):

    metadata (labels, timing, lyrics) --JukeboxLabelConditioner--> y_cond (B, 1, W), timing (B, n_ctx, W)
    upper-level codes --JukeboxUpsamplerConditioner--> x_cond (B, T, W)            (upsamplers)
    lyric tokens --JukeboxLyricsEncoder--> encoder states (B, n_lyrics, W)         (5b_lyrics)
    input_ids --embed, shift right (y_cond at position 0), + positions + x_cond--> JukeboxBlock x N
        --(+ x_cond again unless merged decoder)--> lm_head --> logits

Attention patterns are computed with `scaled_dot_product_attention` on reshaped blocks (no dense
T x T masks) for a full pass from position 0, and with a small position mask on the keys a layer can
see for cached (incremental) passes. Both give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_jukebox_prior import JukeboxPriorConfig
from .errors import JukeboxInputError

_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class JukeboxPriorOutput(ModelOutput):
    """Output of [`JukeboxPrior.forward`].

    The sequence axis covers the transformer positions of this call: the music tokens, preceded by the
    lyric tokens for the single-sequence lyrics prior (1b_lyrics) when the call starts at position 0.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): training loss in bits per token (as the
            original: lyric and music losses combined with `prime_loss_fraction`), when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch, seq, vocab)`): next-token scores; position t scores
            token t (the input is shifted right inside the model).
        last_hidden_state (`torch.FloatTensor` of shape `(batch, seq, hidden_size)`): output of the last block.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): index 0 = the embeddings entering block 1,
            index i = the output of block i (i = 1..num_hidden_layers).
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch, n_lyrics, hidden_size)`, *optional*):
            projected lyrics-encoder states read by the "cross" layers (5b_lyrics).
        cache ([`JukeboxPriorCache`], *optional*): the cache, when one was passed or `use_cache=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    cache: "JukeboxPriorCache | None" = None


@dataclass
class JukeboxPriorConditioning(ModelOutput):
    """What a prior computes from its conditioning inputs (`JukeboxPrior.get_conditioning`).

    Args:
        x_cond (`torch.FloatTensor` of shape `(batch, T, hidden_size)`): per-position conditioning of the
            music positions: the timing signal (top priors) or the upsampled upper-level codes (upsamplers).
        y_cond (`torch.FloatTensor` of shape `(batch, 1, hidden_size)`): artist + genre embedding, fed at
            position 0 in place of a start token.
        encoder_hidden_states (`torch.FloatTensor` of shape `(batch, n_lyrics, hidden_size)`, *optional*):
            lyrics-encoder states (5b_lyrics).
        lyric_tokens (`torch.LongTensor` of shape `(batch, n_lyrics)`, *optional*): lyric tokens from the metadata.
    """

    x_cond: torch.FloatTensor | None = None
    y_cond: torch.FloatTensor | None = None
    encoder_hidden_states: torch.FloatTensor | None = None
    lyric_tokens: torch.LongTensor | None = None


# ---------------------------------------------------------------------------------------------- cache
class JukeboxPriorCache:
    """Key/value cache for incremental (token-by-token or chunked) passes of a [`JukeboxPrior`].

    Each layer keeps only the keys its attention pattern can still need ("row": the current block;
    "previous_row": previous + current block; "prime": the first `prime_attention_length` positions;
    "column"/"dense": everything). The cache also holds the conditioning computed on the first call
    (so it is never recomputed per token) and the last input token (consumed at the next position).
    State lives only here, never on the modules, so an exception leaves the model clean.
    """

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.key_start: list[int] = [0] * num_layers  # absolute position of keys[l][:, :, 0]
        self.seen_tokens = 0  # transformer positions processed so far
        self.conditioning: JukeboxPriorConditioning | None = None
        self.encoder_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.last_token: torch.LongTensor | None = None
        #: preallocated buffers of single-position steps, made by `JukeboxPrior.decode_step` at the first one
        self.decode_buffers: JukeboxDecodeBuffers | None = None

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Append this chunk's keys/values (batch, heads, chunk, head_dim); return all kept ones and their start."""
        if self.keys[layer_idx] is None:
            self.keys[layer_idx], self.values[layer_idx] = key, value
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=2)
        return self.keys[layer_idx], self.values[layer_idx], self.key_start[layer_idx]

    def prune(self, layer_idx: int, keep_from: int, keep_until: int | None = None) -> None:
        """Drop keys before absolute position `keep_from` (and from `keep_until` on)."""
        keys = self.keys[layer_idx]
        if keys is None:
            return
        start = self.key_start[layer_idx]
        lo = max(keep_from - start, 0)
        hi = keys.shape[2] if keep_until is None else max(min(keep_until - start, keys.shape[2]), lo)
        if lo > 0 or hi < keys.shape[2]:
            self.keys[layer_idx] = keys[:, :, lo:hi]
            self.values[layer_idx] = self.values[layer_idx][:, :, lo:hi]
            self.key_start[layer_idx] = start + lo


class JukeboxDecodeBuffers:
    """Preallocated, fixed-shape state of single-position steps (the inner loop of sampling).

    A one-query step needs no dense mask: each layer reads only the keys its pattern shows (original sampling
    cache), from a fixed buffer written in place (no per-step concatenation). Slot layout per pattern
    ([`JukeboxAttention.decode_slot`]):

    * "row": ring of `blk` slots, the current block's keys `[block start, p]`;
    * "previous_row": ring of `2 blk` slots, the previous block (block 0: output 0, as the original's zero keys);
    * "column": all positions, stored block-transposed (slot `(p % blk) * n_blocks + p // blk`) so the keys at
      the same offset in every block are contiguous;
    * "dense": all positions `[0, p]`; "prime": the first `prime_attention_length` positions, plus one dump slot
      that later positions write to (never read);
    * "cross": the projected lyrics-encoder keys/values, computed once.

    The eager step reads the visible slots as slices (Python-int position); the static step (what
    `decode_step(..., compile=...)` compiles) reads fixed-size slabs with masks computed from a position
    TENSOR, so one graph serves every position. For the static step the buffers also hold the step's inputs at
    fixed addresses: `token` (B, 1), `position` (0-d), `x_cond` (B, T, W), `y_cond` (B, 1, W).

    Built from a [`JukeboxPriorCache`] after the (chunked) prefill: the keys that cache kept are exactly the ones
    later positions can see, so they are copied into the buffers ([`load`]).
    Shapes: buffers `(batch, heads, slots, head_dim)`.
    """

    def __init__(
        self, prior: "JukeboxPrior", batch: int, max_positions: int, conditioning_length: int, static: bool = True
    ):
        weight = prior.embed_tokens.weight
        device, dtype = weight.device, weight.dtype
        self.batch, self.max_positions, self.conditioning_length = batch, max_positions, conditioning_length
        self.keys: list[torch.Tensor | None] = []
        self.values: list[torch.Tensor | None] = []
        self.encoder_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(prior.layers)
        for layer in prior.layers:
            attn = layer.attn
            if attn.layer_type == "cross":
                self.keys.append(None)
                self.values.append(None)
                continue
            shape = (batch, attn.num_heads, attn.decode_slots(max_positions), attn.head_dim)
            self.keys.append(torch.zeros(shape, dtype=dtype, device=device))
            self.values.append(torch.zeros(shape, dtype=dtype, device=device))
        # the static step's inputs at fixed addresses (the eager step, `static=False`, reads the cache instead)
        width = prior.config.hidden_size if static else 0
        cond_length = conditioning_length if static else 0
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        cond_dtype = prior.pos_emb.dtype
        self.x_cond = torch.zeros(batch, cond_length, width, dtype=cond_dtype, device=device)
        self.y_cond = torch.zeros(batch, 1, width, dtype=cond_dtype, device=device)
        self.owner: int | None = None  # id() of the cache whose pass these buffers hold (static step)
        self.warm: tuple | None = None  # the compiled step (and draw) that already ran in this pass

    def matches(self, batch: int, max_positions: int, conditioning_length: int) -> bool:
        return (batch, max_positions, conditioning_length) == (
            self.batch,
            self.max_positions,
            self.conditioning_length,
        )

    @torch.no_grad()
    def load(self, prior: "JukeboxPrior", cache: JukeboxPriorCache) -> "JukeboxDecodeBuffers":
        """Take over the pass held by `cache`: its kept keys/values (then freed there), the lyrics-encoder
        keys/values and the conditioning. Every slot is rewritten, so buffers can be reused from pass to pass."""
        conditioning = cache.conditioning
        encoder_states = conditioning.encoder_hidden_states
        for idx, layer in enumerate(prior.layers):
            attn = layer.attn
            if attn.layer_type == "cross":
                kv = cache.encoder_kv[idx]
                if kv is None:
                    k, v = attn.kv_proj(encoder_states.to(prior.embed_tokens.weight.dtype)).chunk(2, dim=-1)
                    kv = (attn.split_heads(k), attn.split_heads(v))  # (B, H, n_lyrics, D) each
                self.encoder_kv[idx] = kv
                continue
            keys, values = self.keys[idx], self.values[idx]
            keys.zero_()
            values.zero_()
            kept = cache.keys[idx]
            if kept is not None:  # copy what the prefill cache kept (absolute positions start .. start + n - 1)
                positions = torch.arange(cache.key_start[idx], cache.key_start[idx] + kept.shape[2], device=keys.device)
                slots = attn.decode_slot(positions, keys.shape[2])
                keys[:, :, slots] = kept.to(keys.dtype)
                values[:, :, slots] = cache.values[idx].to(values.dtype)
                if attn.layer_type == "prime":  # the dump slot is never read: keep it clean
                    keys[:, :, -1].zero_()
                    values[:, :, -1].zero_()
            cache.keys[idx] = cache.values[idx] = None  # now held here; free the prefill copy
        if self.x_cond.numel():  # static buffers
            self.x_cond.zero_()
            self.x_cond[:, : conditioning.x_cond.shape[1]].copy_(conditioning.x_cond[:, : self.conditioning_length])
            self.y_cond.copy_(conditioning.y_cond.expand(self.batch, 1, -1))
        self.owner = id(cache)
        self.warm = None
        return self


def _fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear` for a few rows (B, 1, in) written as a product and a sum over `in`, which a compiler fuses into
    one loop over the weight (no BLAS call). Only inside the compiled step: run eagerly it materialises
    (B, 1, out, in)."""
    out = (x.unsqueeze(-2) * weight).sum(-1)
    return out if bias is None else out + bias


def _single_query_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for ONE query (B, H, 1, D) over keys (B, H, S, D), slots where `visible` (S,) is
    False left out. Written as products and sums (no attention kernel call) so that a compiler fuses it into the
    step's own loops: at one query the attention is a pair of dot-product reductions."""
    scores = (q.float() * keys.float()).sum(-1, keepdim=True) * (q.shape[-1] ** -0.5)  # (B, H, S, 1)
    if visible is not None:
        scores = scores.masked_fill(~visible.view(1, 1, -1, 1), -float("inf"))
    weights = torch.softmax(scores, dim=2)
    return (weights * values.float()).sum(2, keepdim=True).to(q.dtype)  # (B, H, 1, D)


# ---------------------------------------------------------------------------------------------- leaf modules
class JukeboxLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (as the original).

    Half-precision inputs with weights of the same dtype go straight to `F.layer_norm`: PyTorch's
    bf16/fp16 kernels (CPU and CUDA) accumulate in float32 and round once, which is the same
    computation without two float32 copies of the activation (each twice its size)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype in (torch.float16, torch.bfloat16) and self.weight.dtype == hidden_states.dtype:
            return F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(
            hidden_states.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).to(hidden_states.dtype)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """`x * sigmoid(1.702 x)`: the activation of every Jukebox MLP (the gate computed in place in a fresh tensor)."""
    return x * torch.sigmoid_(x * 1.702)


class JukeboxMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, intermediate_size)
        self.fc_out = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc_out(quick_gelu(self.fc_in(hidden_states)))


class JukeboxAttention(nn.Module):
    """Factorized self-attention of one layer, its pattern named by `layer_type`.

    Shapes: hidden (B, T, W) -> q, k, v (B, H, T, D) with D = attention_width // heads.
    """

    def __init__(
        self,
        hidden_size: int,
        attention_width: int,
        num_heads: int,
        layer_type: str,
        block_length: int,
        prime_attention_length: int = 0,
    ):
        super().__init__()
        self.layer_type = layer_type
        self.num_heads = num_heads
        self.head_dim = attention_width // num_heads
        self.attention_width = attention_width
        self.block_length = block_length
        self.prime_attention_length = prime_attention_length
        if layer_type == "cross":
            self.q_proj = nn.Linear(hidden_size, attention_width)
            self.kv_proj = nn.Linear(hidden_size, 2 * attention_width)  # reads the lyrics-encoder states
        else:
            self.qkv_proj = nn.Linear(hidden_size, 3 * attention_width)
        self.out_proj = nn.Linear(attention_width, hidden_size)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.attention_width)  # (B, T, H*D)

    # ---- full pass from position 0: patterns as strided views of the fused projection
    def split_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, 3A) slab of the fused projection -> q, k, v as (N, H, L, D) strided views (no copy)."""
        q, k, v = (self.split_heads(t) for t in x.split(self.attention_width, -1))
        return q, k, v

    def full_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention of the whole sequence from position 0: fused projection (B, T, 3A) -> (B, T, A).

        Row and previous-row blocks are views of the projection; the column pattern needs one transposed
        copy of it (the caller passes the projection without keeping it, so the original is freed)."""
        batch, length, _ = qkv.shape
        blk, width = self.block_length, self.attention_width
        kind = self.layer_type
        if kind in ("dense", "prime"):
            q, k, v = self.split_qkv(qkv)  # (B, H, T, D)
            if kind == "dense":
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                n_keys = min(self.prime_attention_length, length)
                # query i sees keys j <= i among the first `prime_attention_length` positions
                mask = torch.ones(length, n_keys, dtype=torch.bool, device=qkv.device).tril()
                out = F.scaled_dot_product_attention(q, k[:, :, :n_keys], v[:, :, :n_keys], attn_mask=mask)
            return self.merge_heads(out)
        # block patterns: pad the end to whole blocks (padded positions are in the future of every real one)
        n_blocks = -(-length // blk)
        pad = n_blocks * blk - length
        if pad:
            qkv = F.pad(qkv, (0, 0, 0, pad))
        if kind == "row":
            # each block attends causally to itself: blocks folded into the batch axis
            q, k, v = self.split_qkv(qkv.view(batch * n_blocks, blk, 3 * width))  # (B*nb, H, blk, D)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out = self.merge_heads(out).view(batch, n_blocks * blk, width)  # (B*nb, blk, A) -> (B, T, A)
        elif kind == "column":
            # positions with the same offset inside their block, causal over blocks
            qkv = qkv.view(batch, n_blocks, blk, 3 * width).transpose(1, 2).reshape(batch * blk, n_blocks, 3 * width)
            q, k, v = self.split_qkv(qkv)  # (B*blk, H, nb, D)
            del qkv
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B*blk, H, nb, D)
            del q, k, v
            out = out.transpose(1, 2).reshape(batch, blk, n_blocks, width).transpose(1, 2)  # (B, nb, blk, A)
            out = out.reshape(batch, n_blocks * blk, width)
        elif kind == "previous_row":
            # block b attends to all of block b-1; block 0 attends to all-zero keys/values -> output 0
            out = qkv.new_zeros(batch, n_blocks, blk, width)  # (B, nb, blk, A)
            if n_blocks > 1:
                blocks = qkv.view(batch, n_blocks, blk, 3 * width)
                for b in range(batch):  # per example, blocks 1.. and blocks ..nb-2 are views (no copy)
                    q, _, _ = self.split_qkv(blocks[b, 1:])  # (nb-1, H, blk, D): the queries of blocks 1..
                    _, k, v = self.split_qkv(blocks[b, :-1])  # keys and values of the block before each
                    prev = F.scaled_dot_product_attention(q, k, v)  # (nb-1, H, blk, D)
                    out[b, 1:].view(n_blocks - 1, blk, self.num_heads, self.head_dim).copy_(prev.transpose(1, 2))
                del blocks, q, k, v, prev
            out = out.view(batch, n_blocks * blk, width)
        else:  # pragma: no cover - validated in the config
            raise ValueError(kind)
        return out[:, :length]

    # ---- cached pass: a chunk of queries at absolute positions [start, start + c)
    def visible_mask(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Boolean (c, n_keys) mask of the keys each query may see (absolute positions)."""
        i, j = q_pos[:, None], k_pos[None, :]
        blk = self.block_length
        kind = self.layer_type
        if kind == "dense":
            return j <= i
        if kind == "row":
            return (j <= i) & (j // blk == i // blk)
        if kind == "column":
            return (j <= i) & (j % blk == i % blk)
        if kind == "previous_row":
            return j // blk == i // blk - 1
        if kind == "prime":
            return (j <= i) & (j < self.prime_attention_length)
        raise ValueError(kind)  # pragma: no cover

    def cached_attention(
        self,
        q: torch.Tensor,
        k_new: torch.Tensor,
        v_new: torch.Tensor,
        cache: JukeboxPriorCache,
        layer_idx: int,
        start: int,
    ) -> torch.Tensor:
        """A chunk of queries (B, H, c, D) at absolute positions `[start, start + c)` against the kept keys."""
        length = q.shape[2]
        keys, values, key_start = cache.update(layer_idx, k_new, v_new)
        q_pos = torch.arange(start, start + length, device=q.device)
        k_pos = torch.arange(key_start, key_start + keys.shape[2], device=q.device)
        mask = self.visible_mask(q_pos, k_pos)
        if self.layer_type == "previous_row":
            # queries of block 0 see blk zero keys/values in the original: their output is exactly 0
            no_keys = ~mask.any(-1)
            mask = mask | no_keys[:, None]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            out = out.masked_fill(no_keys[None, None, :, None], 0.0)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        # keep only what later positions can still see
        end = start + length
        blk = self.block_length
        if self.layer_type == "row":
            cache.prune(layer_idx, (end // blk) * blk)
        elif self.layer_type == "previous_row":
            cache.prune(layer_idx, (end // blk - 1) * blk)
        elif self.layer_type == "prime":
            cache.prune(layer_idx, 0, self.prime_attention_length)
        return out

    # ---- decode pass: one query at `position`, static-shape buffers
    def decode_slots(self, max_positions: int) -> int:
        """Slots of this layer's decode buffer for a pass of `max_positions` positions (see `decode_slot`)."""
        kind, blk = self.layer_type, self.block_length
        if kind == "row":
            return blk
        if kind == "previous_row":
            return 2 * blk
        if kind == "column":
            return -(-max_positions // blk) * blk
        if kind == "prime":
            return min(self.prime_attention_length, max_positions) + 1  # + the dump slot
        return max_positions  # dense

    def decode_slot(self, position, slots: int):
        """Slot of absolute position(s) `position` (int or tensor) in a decode buffer of `slots` slots."""
        kind, blk = self.layer_type, self.block_length
        if kind in ("row", "previous_row"):
            return position % slots
        if kind == "column":
            return (position % blk) * (slots // blk) + position // blk
        if kind == "prime":  # positions past the visible prefix go to the dump slot
            return position.clamp(max=slots - 1) if isinstance(position, torch.Tensor) else min(position, slots - 1)
        return position

    def decode_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        buffers: JukeboxDecodeBuffers,
        layer_idx: int,
        position: int | torch.Tensor,
    ) -> torch.Tensor:
        """ONE query (B, H, 1, D) at `position` after storing its key/value in the preallocated `buffers`.

        Python-int position (eager step): each pattern reads exactly the keys it shows as a slice (no mask).
        0-d tensor position (static step, [`static_decode_attention`]): fixed-size reads and index-math masks."""
        if isinstance(position, torch.Tensor):
            return self.static_decode_attention(q, k, v, buffers.keys[layer_idx], buffers.values[layer_idx], position)
        kind, blk = self.layer_type, self.block_length
        keys, values = buffers.keys[layer_idx], buffers.values[layer_idx]
        slots = keys.shape[2]
        slot = self.decode_slot(position, slots)
        keys[:, :, slot] = k[:, :, 0]
        values[:, :, slot] = v[:, :, 0]
        if kind == "row":
            visible = slice(0, position % blk + 1)
        elif kind == "previous_row":
            block = position // blk
            if block == 0:  # the original's all-zero keys and values: the attention output is exactly 0
                return torch.zeros_like(q)
            first = ((block - 1) * blk) % slots
            visible = slice(first, first + blk)
        elif kind == "column":  # the keys at offset p % blk of blocks 0 .. p // blk: one contiguous run
            n_blocks = slots // blk
            row = (position % blk) * n_blocks
            visible = slice(row, row + position // blk + 1)
        elif kind == "dense":
            visible = slice(0, position + 1)
        elif kind == "prime":
            visible = slice(0, min(position + 1, slots - 1))
        else:  # pragma: no cover - validated in the config
            raise ValueError(kind)
        return F.scaled_dot_product_attention(q, keys[:, :, visible], values[:, :, visible])

    def static_decode_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, position
    ) -> torch.Tensor:
        """`decode_attention` with a 0-d position TENSOR and shapes that never depend on it: the key/value are
        written with `index_copy_`, each pattern reads a fixed-size slab (row: its ring; previous row: one half of
        its ring; column: the block-transposed row of offset p % blk) and masks the slots not visible yet with
        index math. One captured graph serves every position."""
        kind, blk = self.layer_type, self.block_length
        batch, heads, slots, dim = keys.shape
        slot = self.decode_slot(position, slots).reshape(1)
        keys.index_copy_(2, slot, k)
        values.index_copy_(2, slot, v)
        if kind == "previous_row":
            half = ((position // blk + 1) % 2).reshape(1)  # the ring half of block p // blk - 1
            k_prev = keys.view(batch, heads, 2, blk, dim).index_select(2, half).view(batch, heads, blk, dim)
            v_prev = values.view(batch, heads, 2, blk, dim).index_select(2, half).view(batch, heads, blk, dim)
            out = _single_query_attention(q, k_prev, v_prev, None)
            return torch.where(position >= blk, out, torch.zeros_like(out))  # block 0: the original's zero keys
        if kind == "column":
            n_blocks = slots // blk
            offset = (position % blk).reshape(1)
            keys = keys.view(batch, heads, blk, n_blocks, dim).index_select(2, offset).view(batch, heads, n_blocks, dim)
            values = values.view(batch, heads, blk, n_blocks, dim).index_select(2, offset)
            values = values.view(batch, heads, n_blocks, dim)
            visible = torch.arange(n_blocks, device=q.device) <= position // blk
        else:
            index = torch.arange(slots, device=q.device)
            if kind == "row":
                visible = index <= position % blk
            elif kind == "dense":
                visible = index <= position
            elif kind == "prime":
                visible = (index <= position) & (index < slots - 1)
            else:  # pragma: no cover - validated in the config
                raise ValueError(kind)
        return _single_query_attention(q, keys, values, visible)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: JukeboxPriorCache | JukeboxDecodeBuffers | None = None,
        layer_idx: int = 0,
        start: int = 0,
    ) -> torch.Tensor:
        """The three paths of every pattern: `cache=None` the whole sequence from position 0 ([`full_attention`]),
        a [`JukeboxPriorCache`] a chunk of positions from `start` ([`cached_attention`]), [`JukeboxDecodeBuffers`]
        one position `start` ([`decode_attention`]); "cross" reads the lyrics-encoder states (projected once per
        cache)."""
        if self.layer_type == "cross":
            q = self.split_heads(self.q_proj(hidden_states))
            if cache is not None and cache.encoder_kv[layer_idx] is not None:
                k, v = cache.encoder_kv[layer_idx]
            else:
                k, v = self.kv_proj(encoder_hidden_states.to(hidden_states.dtype)).chunk(2, dim=-1)
                k, v = self.split_heads(k), self.split_heads(v)
                if cache is not None:
                    cache.encoder_kv[layer_idx] = (k, v)
            out = F.scaled_dot_product_attention(q, k, v)
            out = self.merge_heads(out)
        elif cache is None:
            out = self.full_attention(self.qkv_proj(hidden_states))  # (B, T, A)
        elif isinstance(cache, JukeboxDecodeBuffers):
            q, k, v = self.split_qkv(self.qkv_proj(hidden_states))  # (B, H, 1, D)
            out = self.merge_heads(self.decode_attention(q, k, v, cache, layer_idx, start))
        else:
            q, k, v = self.split_qkv(self.qkv_proj(hidden_states))  # (B, H, c, D)
            out = self.merge_heads(self.cached_attention(q, k, v, cache, layer_idx, start))
        return self.out_proj(out)


class JukeboxBlock(nn.Module):
    """Pre-LayerNorm block: `a = attn(ln(x)); m = mlp(ln(x + a)); out = x + a + m`."""

    def __init__(
        self,
        hidden_size: int,
        attention_width: int,
        intermediate_size: int,
        num_heads: int,
        layer_type: str,
        block_length: int,
        prime_attention_length: int = 0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.layer_type = layer_type
        self.input_layernorm = JukeboxLayerNorm(hidden_size, eps=eps)
        self.attn = JukeboxAttention(
            hidden_size, attention_width, num_heads, layer_type, block_length, prime_attention_length
        )
        self.post_attention_layernorm = JukeboxLayerNorm(hidden_size, eps=eps)
        self.mlp = JukeboxMLP(hidden_size, intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: JukeboxPriorCache | JukeboxDecodeBuffers | None = None,
        layer_idx: int = 0,
        start: int = 0,
    ) -> torch.Tensor:
        x = hidden_states + self.attn(
            self.input_layernorm(hidden_states), encoder_hidden_states, cache, layer_idx, start
        )
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------------------------- conditioning
class JukeboxRangeEmbedding(nn.Module):
    """Embeds a value (or a linear ramp of `n_time` values) by its bin in `[low, high)`."""

    def __init__(self, n_time: int, bins: int, low: float, high: float, width: int, clamp: bool = False):
        super().__init__()
        self.n_time, self.bins, self.low, self.high, self.clamp = n_time, bins, float(low), float(high), clamp
        self.emb = nn.Embedding(bins, width)

    def forward(self, start: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        # start, end: (B, 1) float32
        if end is not None and self.clamp:
            end = end.clamp(self.low, self.high)
        if self.n_time > 1:
            ramp = torch.arange(self.n_time, dtype=torch.float32, device=start.device).view(1, -1) / self.n_time
            position = start + (end - start) * ramp  # (B, n_time)
        else:
            position = start
        normalised = (position - self.low) / (self.high - self.low)
        index = (self.bins * normalised).floor().long()
        return self.emb(index)  # (B, n_time, W)


class JukeboxLabelConditioner(nn.Module):
    """Artist/genre start embedding and (top priors) the timing signal."""

    def __init__(self, config: JukeboxPriorConfig):
        super().__init__()
        width = config.hidden_size
        self.max_genres = config.max_genres
        self.artist_emb = nn.Embedding(config.num_artists, width)
        self.genre_emb = nn.Embedding(config.num_genres, width)
        self.use_timing = config.use_timing
        if config.use_timing:
            sr = config.sampling_rate
            low, high = config.min_duration * sr, config.max_duration * sr
            self.total_length_emb = JukeboxRangeEmbedding(1, config.timing_bins, low, high, width)
            self.absolute_pos_emb = JukeboxRangeEmbedding(config.n_ctx, config.timing_bins, 0.0, high, width)
            self.relative_pos_emb = JukeboxRangeEmbedding(config.n_ctx, config.timing_bins, 0.0, 1.0, width, clamp=True)

    def forward(self, labels: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # labels: (B, 4 + max_genres) = [total_length, offset, sample_length, artist, genres...]
        total_length, offset, length = labels[:, 0:1], labels[:, 1:2], labels[:, 2:3]
        artist, genres = labels[:, 3:4], labels[:, 4:]
        genre_mask = (genres >= 0).float().unsqueeze(-1)  # empty slots hold -1
        y_cond = self.artist_emb(artist) + (self.genre_emb(genres.clamp(min=0)) * genre_mask).sum(1, keepdim=True)
        if not self.use_timing:
            return y_cond, None
        total, start, end = total_length.float(), offset.float(), (offset + length).float()
        timing = (
            self.total_length_emb(total)
            + self.absolute_pos_emb(start, end)
            + self.relative_pos_emb(start / total, end / total)
        )
        return y_cond, timing  # (B, 1, W), (B, n_ctx, W)


class JukeboxResidualBlock(nn.Module):
    def __init__(self, width: int, dilation: int, res_scale: float):
        super().__init__()
        self.conv_dilated = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv_out = nn.Conv1d(width, width, 1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv_out(F.relu(self.conv_dilated(F.relu(x))))


class JukeboxUpsamplerStage(nn.Module):
    """Residual stack then a x2 transposed convolution."""

    def __init__(self, width: int, out_width: int, depth: int, growth: int, cycle: int | None, res_scale: float):
        super().__init__()
        self.resnet = nn.ModuleList(
            JukeboxResidualBlock(width, growth ** (d if cycle is None else d % cycle), res_scale) for d in range(depth)
        )
        self.upsample = nn.ConvTranspose1d(width, out_width, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnet:
            x = block(x)
        return self.upsample(x)


class JukeboxUpsamplerConditioner(nn.Module):
    """Upper-level codes (B, U) -> per-position conditioning (B, U * factor, W) of an upsampler."""

    def __init__(self, config: JukeboxPriorConfig):
        super().__init__()
        width, cond_width = config.hidden_size, config.upsampler_width
        if config.upsampler_stride_t != 2:
            raise JukeboxInputError("Only stride-2 upsampling conditioners are supported.")
        res_scale = 1.0 / math.sqrt(config.upsampler_depth) if config.upsampler_res_scale else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, width)
        self.conv_in = nn.Conv1d(width, cond_width, 3, padding=1)
        self.stages = nn.ModuleList(
            JukeboxUpsamplerStage(
                cond_width,
                width if i == config.upsampler_down_t - 1 else cond_width,
                config.upsampler_depth,
                config.upsampler_dilation_growth_rate,
                config.upsampler_dilation_cycle,
                res_scale,
            )
            for i in range(config.upsampler_down_t)
        )
        self.layer_norm = JukeboxLayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, upper_codes: torch.LongTensor) -> torch.Tensor:
        x = self.embed_tokens(upper_codes).transpose(1, 2)  # (B, W, U)
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)  # (B, C, 2U), ..., (B, W, factor * U)
        return self.layer_norm(x.transpose(1, 2))  # (B, factor * U, W)


class JukeboxLyricsEncoder(nn.Module):
    """The separate lyrics encoder of 5b_lyrics: lyric tokens -> states read by the "cross" layers."""

    def __init__(self, config: JukeboxPriorConfig):
        super().__init__()
        width = config.encoder_hidden_size
        n_tokens = config.n_lyric_tokens
        self.embed_tokens = nn.Embedding(config.lyric_vocab_size, width)
        self.start_token = nn.Parameter(torch.zeros(1, width))
        self.pos_emb = nn.Parameter(torch.zeros(n_tokens, width))
        block_length = n_tokens // config.encoder_blocks
        self.layers = nn.ModuleList(
            JukeboxBlock(
                width,
                int(config.attention_multiplier * width),
                int(config.mlp_multiplier * width),
                config.encoder_num_heads,
                layer_type,
                block_length,
                eps=config.layer_norm_eps,
            )
            for layer_type in config.encoder_attention_patterns[: config.encoder_num_layers]
        )
        self.proj = nn.Linear(width, config.hidden_size)
        self.layer_norm = JukeboxLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.lyric_vocab_size, bias=False)

    def forward(self, lyric_tokens: torch.LongTensor) -> torch.Tensor:
        batch = lyric_tokens.shape[0]
        h = self.embed_tokens(lyric_tokens)  # (B, n, We)
        # shift right: position 0 gets the learned start token
        h = torch.cat([self.start_token.expand(batch, 1, -1).to(h.dtype), h[:, :-1]], dim=1)
        h = h + self.pos_emb[: h.shape[1]].to(h.dtype)
        for layer in self.layers:
            h = layer(h)
        return self.layer_norm(self.proj(h.to(self.proj.weight.dtype)))  # (B, n, W)


# ---------------------------------------------------------------------------------------------- models
class JukeboxPriorPreTrainedModel(PreTrainedModel):
    config_class = JukeboxPriorConfig
    base_model_prefix = "prior"
    main_input_name = "input_ids"
    _no_split_modules = ["JukeboxBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, JukeboxPrior):
            nn.init.normal_(module.pos_emb, std=0.01)
        elif isinstance(module, JukeboxLyricsEncoder):
            nn.init.normal_(module.pos_emb, std=0.01)
            nn.init.normal_(module.start_token, std=0.01)


class JukeboxPrior(JukeboxPriorPreTrainedModel):
    """A Jukebox prior: top-level prior (5b, 5b_lyrics, 1b_lyrics) or upsampler (levels 1 and 0).

    Example:

    ```python
    >>> from hf_jukebox_mir import JukeboxPrior, JukeboxPriorConfig
    >>> config = JukeboxPriorConfig.from_preset("prior_5b", hidden_size=64, num_hidden_layers=3,
    ...                                         num_attention_heads=2, n_ctx=256, blocks=16)
    >>> prior = JukeboxPrior(config).eval()
    >>> codes = torch.randint(0, 2048, (1, 256))
    >>> metadata = prior.build_metadata(total_length=62 * 44100, offset=0, batch_size=1)
    >>> out = prior(codes, metadata=metadata, output_hidden_states=True)
    >>> out.hidden_states[2].shape   # output of block 2
    torch.Size([1, 256, 64])
    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"^layers\.\d+\."]  # checkpoints deeper than num_hidden_layers

    def __init__(self, config: JukeboxPriorConfig):
        super().__init__(config)
        width = config.hidden_size
        self.metadata_embedding = JukeboxLabelConditioner(config)
        self.upsampler = JukeboxUpsamplerConditioner(config) if config.is_upsampler else None
        self.lyrics_encoder = JukeboxLyricsEncoder(config) if config.lyrics_mode == "separate_encoder" else None
        self.embed_tokens = nn.Embedding(config.total_vocab_size, width)
        self.pos_emb = nn.Parameter(torch.zeros(config.max_seq_length, width))
        self.layers = nn.ModuleList(
            JukeboxBlock(
                width,
                config.attention_width,
                config.intermediate_size,
                config.num_attention_heads,
                layer_type,
                config.block_length,
                config.prime_attention_length,
                config.layer_norm_eps,
            )
            for layer_type in config.attention_patterns[: config.num_hidden_layers]
        )
        self.lm_head = nn.Linear(width, config.total_vocab_size, bias=False)
        self.post_init()

    @property
    def _tied_weights_keys(self):  # tied only when the conditioning is added after the transformer
        return {} if self.config.merged_decoder else {"lm_head.weight": "embed_tokens.weight"}

    def get_input_embeddings(self):
        return self.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    # ------------------------------------------------------------------ input checks
    def _check_codes(self, codes: torch.Tensor, name: str, length_limit: int, vocab: int) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int64, torch.int32):
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise JukeboxInputError(
                f"{name} must be an integer tensor of VQ-VAE codes (torch.long), got {got}. "
                "Pass the `audio_codes` of JukeboxVQVAE.encode, or convert with `.long()`."
            )
        if codes.dim() != 2:
            raise JukeboxInputError(
                f"{name} must have shape (batch, tokens), got shape {tuple(codes.shape)}. "
                "Add a batch axis with `codes[None]` for a single example."
            )
        if codes.shape[1] < 1:
            raise JukeboxInputError(f"{name} is empty: expected at least 1 token, got shape {tuple(codes.shape)}.")
        if codes.shape[1] > length_limit:
            raise JukeboxInputError(
                f"{name} has {codes.shape[1]} tokens but this prior's context holds at most {length_limit} "
                f"(n_ctx). Split longer code sequences into windows of {length_limit} tokens."
            )
        if codes.device.type == "meta":  # shape-only run (memory planning): no values to check
            return
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= vocab:
            raise JukeboxInputError(
                f"{name} holds codes in [{lo}, {hi}] but must lie in [0, {vocab - 1}] (codebook size {vocab})."
            )

    def _check_metadata(self, metadata: torch.Tensor, batch: int) -> None:
        config = self.config
        if metadata is None:
            raise JukeboxInputError(
                "metadata is required: a (batch, "
                f"{config.metadata_length}) label tensor [total_length, offset, sample_length, artist_id, "
                f"{config.max_genres} genre ids padded with -1"
                + (f", {config.n_lyric_tokens} lyric tokens" if config.n_lyric_tokens else "")
                + "]. Build one with `prior.build_metadata(...)`."
            )
        if (
            not isinstance(metadata, torch.Tensor)
            or metadata.dtype not in (torch.int64, torch.int32)
            or metadata.dim() != 2
        ):
            got = (
                f"{metadata.dtype} {tuple(metadata.shape)}"
                if isinstance(metadata, torch.Tensor)
                else type(metadata).__name__
            )
            raise JukeboxInputError(
                f"metadata must be an integer tensor of shape (batch, {config.metadata_length}), got {got}."
            )
        if metadata.shape[1] != config.metadata_length:
            raise JukeboxInputError(
                f"metadata has width {metadata.shape[1]} but this prior expects {config.metadata_length} = 4 + "
                f"{config.max_genres} genre slots + {config.n_lyric_tokens} lyric tokens "
                "[total_length, offset, sample_length, artist_id, genre ids..., lyric tokens...]. "
                "Build it with `prior.build_metadata(...)`."
            )
        if metadata.shape[0] not in (1, batch):
            raise JukeboxInputError(f"metadata has batch size {metadata.shape[0]} but input_ids has {batch}.")
        if metadata.device.type == "meta":  # shape-only run (memory planning): no values to check
            return
        artist = metadata[:, 3]
        genres = metadata[:, 4 : 4 + config.max_genres]
        if int(artist.min()) < 0 or int(artist.max()) >= config.num_artists:
            raise JukeboxInputError(f"artist id must lie in [0, {config.num_artists - 1}], got {artist.tolist()}.")
        if int(genres.min()) < -1 or int(genres.max()) >= config.num_genres:
            raise JukeboxInputError(
                f"genre ids must lie in [0, {config.num_genres - 1}] (or -1 for an empty slot), got {genres.tolist()}."
            )
        if config.n_lyric_tokens:
            lyrics = metadata[:, 4 + config.max_genres :]
            if int(lyrics.min()) < 0 or int(lyrics.max()) >= config.lyric_vocab_size:
                raise JukeboxInputError(
                    f"lyric tokens must lie in [0, {config.lyric_vocab_size - 1}], got values in "
                    f"[{int(lyrics.min())}, {int(lyrics.max())}]."
                )
        if config.use_timing:
            sr = config.sampling_rate
            low, high = config.min_duration * sr, config.max_duration * sr
            total, offset, length = metadata[:, 0].double(), metadata[:, 1].double(), metadata[:, 2].double()
            if bool(((total < low) | (total >= high)).any()):
                raise JukeboxInputError(
                    f"total_length (metadata[:, 0]) must lie in [{int(low)}, {int(high)}) samples "
                    f"({config.min_duration} s to {config.max_duration} s at {sr} Hz) for this prior, got "
                    f"{metadata[:, 0].tolist()}. JukeMIR uses 62 s for the 5b prior."
                )
            if bool(((offset < 0) | (offset >= high) | (offset >= total)).any()):
                raise JukeboxInputError(
                    f"offset (metadata[:, 1]) must lie in [0, total_length), got {metadata[:, 1].tolist()}."
                )
            if bool((offset + length > high).any()) or bool((length < 0).any()):
                raise JukeboxInputError(
                    f"offset + sample_length must lie in [0, {int(high)}] samples, got "
                    f"{(metadata[:, 1] + metadata[:, 2]).tolist()}."
                )

    # ------------------------------------------------------------------ metadata helpers
    def build_metadata(
        self,
        *,
        total_length: int | None = None,
        offset: int = 0,
        sample_length: int | None = None,
        artist_id: int = 0,
        genre_ids: list[int] | tuple[int, ...] = (0,),
        lyric_tokens: list[int] | None = None,
        batch_size: int = 1,
    ) -> torch.LongTensor:
        """Label tensor (batch_size, metadata_length) in the original layout.

        Defaults give the JukeMIR conditioning: unknown artist (0), unknown genre (0), offset 0,
        `sample_length` = one context window. `total_length` defaults to 62 s (JukeMIR) for the 5b prior,
        or to the shortest valid length otherwise. See `tokenization_jukebox.JukeboxTokenizer`
        for names -> ids and lyrics.
        """
        config = self.config
        sr = config.sampling_rate
        if total_length is None:
            total_length = max(int(62 * sr), int(math.ceil(config.min_duration * sr))) if config.use_timing else 0
            total_length -= total_length % config.hop_length
        if sample_length is None:
            sample_length = config.sample_length
        genre_ids = list(genre_ids)
        if len(genre_ids) > config.max_genres:
            raise JukeboxInputError(f"at most {config.max_genres} genre ids fit this prior, got {len(genre_ids)}.")
        genres = genre_ids + [-1] * (config.max_genres - len(genre_ids))
        lyrics = list(lyric_tokens or [])
        if len(lyrics) > config.n_lyric_tokens:
            raise JukeboxInputError(
                f"{len(lyrics)} lyric tokens given but the label vector holds {config.n_lyric_tokens}; window them "
                "with `hf_jukebox_mir.models.tokenization_jukebox.lyric_window`."
            )
        lyrics = [0] * (config.n_lyric_tokens - len(lyrics)) + lyrics  # left-padded with 0 like the original
        row = [int(total_length), int(offset), int(sample_length), int(artist_id), *genres, *lyrics]
        return torch.tensor([row] * batch_size, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ conditioning
    def get_conditioning(
        self,
        metadata: torch.LongTensor | None,
        upper_level_codes: torch.LongTensor | None = None,
        batch_size: int | None = None,
    ) -> JukeboxPriorConditioning:
        """x_cond / y_cond / lyrics-encoder states for a whole context window.

        `x_cond` covers all `n_ctx` music positions (top priors) or `factor * upper length` positions
        (upsamplers).
        """
        config = self.config
        batch = batch_size or (metadata.shape[0] if metadata is not None else 1)
        self._check_metadata(metadata, batch)
        metadata = metadata.to(self.device).long()
        if metadata.shape[0] == 1 and batch > 1:
            metadata = metadata.expand(batch, -1)
        n_labels = 4 + config.max_genres
        labels, lyric_tokens = metadata[:, :n_labels], metadata[:, n_labels:]
        y_cond, timing = self.metadata_embedding(labels)
        if config.is_upsampler:
            if upper_level_codes is None:
                raise JukeboxInputError(
                    f"This upsampler (level {config.level}) needs upper_level_codes: the level-{config.level + 1} "
                    f"codes of the same window, shape (batch, {config.upper_level_length})."
                )
            self._check_codes(upper_level_codes, "upper_level_codes", config.upper_level_length, config.vocab_size)
            if upper_level_codes.shape[0] != batch:
                raise JukeboxInputError(
                    f"upper_level_codes has batch size {upper_level_codes.shape[0]} but input_ids has {batch}."
                )
            x_cond = self.upsampler(upper_level_codes.to(self.device).long())
        else:
            x_cond = timing
        encoder_states = None
        if config.lyrics_mode == "separate_encoder":
            encoder_states = self.lyrics_encoder(lyric_tokens)
        return JukeboxPriorConditioning(
            x_cond=x_cond,
            y_cond=y_cond,
            encoder_hidden_states=encoder_states,
            lyric_tokens=lyric_tokens if config.n_lyric_tokens else None,
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        metadata: torch.LongTensor | None = None,
        upper_level_codes: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
        cache: JukeboxPriorCache | None = None,
        use_cache: bool = False,
        conditioning: JukeboxPriorConditioning | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> JukeboxPriorOutput | tuple:
        r"""Teacher-forced pass over music codes.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, T)`): music codes of this level, 1 <= T <= n_ctx
                (shorter inputs use the first T positions of the window; nothing is padded).
            metadata (`torch.LongTensor` of shape `(batch, 4 + max_genres + n_lyric_tokens)`): labels in the
                original layout, see [`~JukeboxPrior.build_metadata`].
            upper_level_codes (`torch.LongTensor` of shape `(batch, n_ctx // 4)`): codes of the level above
                for the same window (upsamplers only).
            labels (`torch.LongTensor` of shape `(batch, T)`): target codes for the loss (usually `input_ids`).
            output_hidden_states (`bool`): also return every block's output.
            cache ([`JukeboxPriorCache`]): continue from a cache (incremental pass); the codes are
                the next positions' codes; the first call (empty cache) starts at position 0.
            use_cache (`bool`): create a cache when none is given.
            conditioning ([`JukeboxPriorConditioning`]): precomputed conditioning (skips `metadata` processing).
            logits_to_keep (`int`, defaults to 0): compute logits for the last `logits_to_keep` positions only
                (0 = all). Feature extraction passes 1: the output head is then nearly free.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        if cache is None and use_cache:
            cache = JukeboxPriorCache(len(self.layers))
        start = cache.seen_tokens if cache is not None else 0
        prefix = config.prime_length  # lyric positions before the music (single-sequence prior)

        music_start = max(start - prefix, 0)
        self._check_codes(input_ids, "input_ids", config.n_ctx - music_start, config.vocab_size)
        batch, length = input_ids.shape
        input_ids = input_ids.to(self.device).long()

        if conditioning is None and cache is not None and cache.conditioning is not None:
            conditioning = cache.conditioning
        if conditioning is None:
            conditioning = self.get_conditioning(metadata, upper_level_codes, batch)
        if cache is not None:
            cache.conditioning = conditioning
        x_cond_music = conditioning.x_cond  # (B, n_ctx-ish, W)
        y_cond = conditioning.y_cond
        if x_cond_music.shape[1] < music_start + length:
            raise JukeboxInputError(
                f"The conditioning covers {x_cond_music.shape[1]} positions but positions up to "
                f"{music_start + length} were requested; pass upper_level_codes for the whole window."
            )

        if prefix and 0 < start < prefix:
            raise JukeboxInputError(
                "A cached pass of the single-sequence lyrics prior must start with the whole lyric prefix."
            )
        tokens, x_cond = self._sequence(input_ids, conditioning, start)  # (B, L), (B, L, W)
        seq_len = tokens.shape[1]

        if start > 0 and cache.last_token is None:
            raise JukeboxInputError("The cache has no last token; pass it through JukeboxPrior.forward first.")
        if logits_to_keep and labels is not None:
            raise JukeboxInputError("labels need the logits of every position: leave logits_to_keep at 0.")
        encoder_states = conditioning.encoder_hidden_states
        inputs = self._embed_inputs(tokens, y_cond, cache, start)
        hidden_states = self._run_blocks(inputs, x_cond, encoder_states, cache, start, output_hidden_states)
        if cache is not None:
            cache.last_token = tokens[:, -1:]
        last = hidden_states[-1] if output_hidden_states else hidden_states
        if logits_to_keep:
            logits = self.lm_head(self._head_input(last[:, -logits_to_keep:], x_cond[:, -logits_to_keep:]))
        else:
            logits = self.lm_head(self._head_input(last, x_cond))

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(self.device).long(), tokens, conditioning, start, seq_len)

        out = JukeboxPriorOutput(
            loss=loss,
            logits=logits,
            last_hidden_state=last,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            encoder_last_hidden_state=encoder_states,
            cache=cache,
        )
        return out if return_dict else out.to_tuple()

    def _sequence(self, input_ids: torch.Tensor, conditioning: JukeboxPriorConditioning, start: int):
        """Merged-vocabulary tokens (B, L) and per-position conditioning (B, L, W) of the music codes `input_ids`
        from sequence position `start` (with the lyric prefix of the single-sequence lyrics prior at 0)."""
        prefix = self.config.prime_length
        music_start = max(start - prefix, 0)
        tokens = input_ids + self.config.music_token_shift  # (B, T)
        x_cond = conditioning.x_cond[:, music_start : music_start + input_ids.shape[1]]  # (B, T, W)
        if prefix and start == 0:
            tokens = torch.cat([conditioning.lyric_tokens.to(tokens.device), tokens], dim=1)  # (B, P + T)
            x_cond = torch.cat([x_cond.new_zeros(x_cond.shape[0], prefix, x_cond.shape[-1]), x_cond], dim=1)
        return tokens, x_cond

    # ---------------------------------------------------------------------------------- lean inference path
    @torch.no_grad()
    def forward_features(
        self,
        input_ids: torch.LongTensor,
        metadata: torch.LongTensor | None = None,
        upper_level_codes: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        r"""The last block's output (B, L, W) for feature extraction, with the fewest activations alive at once.

        Same values as `forward(...).last_hidden_state` (bit for bit), computed without autograd and without
        logits: the positions, the conditioning and every residual sum are added in place into tensors made here,
        and the MLP gate is applied in place, so one block's activations are alive at a time (planned peak for
        the 5b prior at batch 1: 244 MiB here against 675 MiB through `forward`). The blocks' computations are
        called directly, so **module hooks do not run in this path**: observe activations with `forward` (e.g.
        `output_hidden_states=True`), which never writes into a tensor it hands out. `JukeboxMIRModel` takes this
        path under `torch.inference_mode()` only.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, T)`), metadata, upper_level_codes: as [`forward`].
        """
        config = self.config
        self._check_codes(input_ids, "input_ids", config.n_ctx, config.vocab_size)
        input_ids = input_ids.to(self.device).long()
        conditioning = self.get_conditioning(metadata, upper_level_codes, input_ids.shape[0])
        tokens, x_cond = self._sequence(input_ids, conditioning, 0)  # (B, L), (B, L, W)
        encoder_states = conditioning.encoder_hidden_states
        hidden = self._embed_inputs(tokens, conditioning.y_cond, None, 0)  # a fresh tensor: written in place
        del conditioning, tokens
        hidden.add_(self.pos_emb[: hidden.shape[1]].to(hidden.dtype)).add_(x_cond.to(hidden.dtype))
        del x_cond
        hidden = hidden.to(self.embed_tokens.weight.dtype)
        for idx, layer in enumerate(self.layers):
            # = layer(hidden, encoder_states, None, idx, 0): x + a, then (x + a) + mlp(ln(x + a)), in place
            attn = layer.attn.forward(layer.input_layernorm.forward(hidden), encoder_states, None, idx, 0)
            hidden = hidden.add_(attn)
            del attn
            gate = layer.mlp.fc_in.forward(layer.post_attention_layernorm.forward(hidden))
            gate = gate.mul_(torch.sigmoid_(gate * 1.702))  # quick_gelu, in place
            hidden = layer.mlp.fc_out.forward(gate).add_(hidden)
            del gate
        return hidden

    # ---------------------------------------------------------------------------------- incremental decoding
    def decode_max_positions(self, cache: JukeboxPriorCache) -> int:
        """Positions an incremental pass on `cache` can run: the context, or the positions its conditioning covers
        (the lyric prefix of the single-sequence lyrics prior included)."""
        covered = self.config.prime_length + cache.conditioning.x_cond.shape[1]
        return min(covered, self.config.max_seq_length)

    def _position_conditioning(self, conditioning: JukeboxPriorConditioning, start: int, length: int):
        """Per-position conditioning (B, length, W) of sequence positions `[start, start + length)` (zeros on the
        lyric prefix)."""
        x_cond = conditioning.x_cond  # (B, T_music, W)
        prefix = self.config.prime_length
        if start >= prefix:
            return x_cond[:, start - prefix : start - prefix + length]
        zeros = x_cond.new_zeros(x_cond.shape[0], min(prefix - start, length), x_cond.shape[2])
        return torch.cat([zeros, x_cond[:, : max(start + length - prefix, 0)]], dim=1)

    @torch.no_grad()
    def decode_step(
        self,
        input_ids: torch.LongTensor | None,
        cache: JukeboxPriorCache,
        *,
        return_logits: bool = True,
        compile: bool | dict = False,
        draw=None,
        draw_inputs: tuple = (),
    ) -> torch.Tensor | None:
        r"""The one incremental-decoding entry point: run the next positions of a pass held by `cache`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, c)`, *optional*): merged-vocabulary ids (music code +
                `music_token_shift`, or lyric ids on the prefix) of the next `c` positions, known in advance (a
                prime, teacher forcing): they run as one chunk through `cache` (masked attention over the kept
                keys). `None`: ONE position whose token is not known yet; it consumes the last token and runs on
                the cache's preallocated [`JukeboxDecodeBuffers`] (fixed shapes, allocated at the first such step
                from what the chunks kept; no chunk may follow).
            cache ([`JukeboxPriorCache`]): the pass; `cache.conditioning` must be set
                ([`~JukeboxPrior.get_conditioning`]). Its `last_token` is the token consumed next: set to the last
                of `input_ids` here; after a `None` step, the caller stores the token it chose there.
            return_logits (`bool`): compute the logits (skip them for a prime).
            compile (`bool` or `dict`): single positions only: run the STATIC step (position as a tensor, fixed
                shapes, masks by index math; [`JukeboxAttention.static_decode_attention`]) through
                `torch.compile(fullgraph=True, dynamic=False)`, on CUDA as a CUDA graph (`mode="reduce-overhead"`);
                a dict adds/overrides `torch.compile` options (e.g. `{"backend": "eager"}`). One graph per
                (batch, window length); no recompilation across positions. Its buffers are shared by the prior's
                compiled passes: one compiled pass at a time (starting another ends the previous one). The eager
                step (`False`) is the reference.
            draw (callable, *optional*): single positions only: `draw(logits (batch, vocab), *draw_inputs)` turns
                the logits into the position's tokens `(batch, 1)` (a sampler's choice, e.g. from uniform numbers
                drawn outside); computed in the same graph as the step when compiled, and returned instead of the
                logits. It must be a function of tensors only (no generator); the caller stores the tokens in
                `cache.last_token`.
            draw_inputs (`tuple` of tensors): the extra inputs of `draw`.

        Returns:
            `torch.FloatTensor` of shape `(batch, c or 1, vocab)`, or `None` when `return_logits=False`.
        """
        buffers = cache.decode_buffers
        if input_ids is None and compile and buffers is not None:  # the steady state of compiled sampling
            start = cache.seen_tokens
            if start + 1 > buffers.max_positions:
                raise JukeboxInputError(
                    f"Positions {start}..{start} requested but this window holds {buffers.max_positions} "
                    "positions (context length, or the length covered by the upper-level codes)."
                )
            return self._compiled_decode_step(cache, start, buffers.max_positions, compile, draw, draw_inputs)
        conditioning = cache.conditioning
        if conditioning is None:
            raise JukeboxInputError("decode_step needs cache.conditioning (from JukeboxPrior.get_conditioning).")
        start = cache.seen_tokens
        length = 1 if input_ids is None else input_ids.shape[1]
        limit = self.decode_max_positions(cache)
        if start + length > limit:
            raise JukeboxInputError(
                f"Positions {start}..{start + length - 1} requested but this window holds {limit} "
                "positions (context length, or the length covered by the upper-level codes)."
            )
        if input_ids is not None and cache.decode_buffers is not None:
            raise JukeboxInputError("Chunks of known tokens must come before the first single-position step.")
        if input_ids is None and compile:
            return self._compiled_decode_step(cache, start, limit, compile, draw, draw_inputs)
        if start == 0:  # position 0 consumes the artist/genre embedding
            batch = conditioning.x_cond.shape[0]
            first = conditioning.y_cond.expand(batch, 1, -1).to(self.embed_tokens.weight.dtype)
        else:
            first = self.embed_tokens(cache.last_token)
        hidden = first if length == 1 else torch.cat([first, self.embed_tokens(input_ids[:, :-1])], dim=1)
        x_cond = self._position_conditioning(conditioning, start, length)
        if input_ids is None:
            if cache.decode_buffers is None:
                cache.decode_buffers = JukeboxDecodeBuffers(
                    self, hidden.shape[0], limit, conditioning.x_cond.shape[1], static=False
                ).load(self, cache)
            last = self._run_blocks(hidden, x_cond, None, cache.decode_buffers, start, False)
            cache.seen_tokens = start + 1
        else:
            last = self._run_blocks(hidden, x_cond, conditioning.encoder_hidden_states, cache, start, False)
            cache.last_token = input_ids[:, -1:]
        if not return_logits:
            return None
        logits = self.lm_head(self._head_input(last, x_cond))  # (B, length, V)
        if draw is not None and input_ids is None:
            return draw(logits[:, 0], *draw_inputs)
        return logits

    def _compiled_decode_step(
        self, cache: JukeboxPriorCache, start: int, limit: int, options, draw, draw_inputs
    ) -> torch.Tensor:
        """`decode_step(None, cache, compile=options)`: the static step through its captured graph."""
        buffers = cache.decode_buffers
        if buffers is None:
            batch, length = cache.conditioning.x_cond.shape[:2]
            pool = getattr(self, "_decode_pool", None)
            if pool is None or not pool.matches(batch, limit, length):
                pool = JukeboxDecodeBuffers(self, batch, limit, length)
                if pool.position.device.type == "cuda":  # CUDA graphs replay on fixed addresses
                    for tensor in [*pool.keys, *pool.values, pool.token, pool.position, pool.x_cond, pool.y_cond]:
                        if tensor is not None:
                            torch._dynamo.mark_static_address(tensor)
                self._decode_pool = pool
            buffers = cache.decode_buffers = pool.load(self, cache)
        elif buffers.x_cond.numel() == 0 and buffers.conditioning_length:
            raise JukeboxInputError(
                "This pass started with eager single-position steps: keep compile=False for it (or start a new pass "
                "with compile=True)."
            )
        elif buffers.owner != id(cache):
            raise JukeboxInputError(
                "This compiled pass was taken over by another one (the compiled decode buffers are shared per "
                "prior): run one compiled pass at a time, or use compile=False for interleaved passes."
            )
        if start > 0:
            buffers.token.copy_(cache.last_token)
        buffers.position.fill_(start)
        step = self._decode_graph(options, buffers.position.device.type)
        if buffers.position.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        key = (id(step), draw, tuple((t.shape, t.dtype) for t in draw_inputs))
        if buffers.warm == key:
            # the same graph already ran on these very buffers in this pass: every guarded input is the same
            # object with the same shape, so only the guards that tell cache entries apart need to run (dynamo's
            # full guard check costs ~0.1 ms per step at fixture size, a fifth of the step)
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                out = step(buffers, draw, draw_inputs)
        else:
            out = step(buffers, draw, draw_inputs)
            buffers.warm = key
        if buffers.position.device.type == "cuda":
            out = out.clone()  # the graph's output is overwritten by its next replay
        cache.seen_tokens = start + 1
        return out

    def _decode_graph(self, options, device_type: str):
        """The compiled static step for `options` (True or a dict of `torch.compile` options), made once."""
        graphs = self.__dict__.setdefault("_decode_graphs", {})
        key = (repr(options), device_type)
        if key not in graphs:
            settings: dict[str, Any] = {"fullgraph": True, "dynamic": False}
            if device_type == "cuda":
                settings["mode"] = "reduce-overhead"
            elif device_type == "cpu":  # the step as one C++ function: no Python between its loops
                settings["options"] = {"cpp_wrapper": True}
            if isinstance(options, dict):
                if "mode" in options:  # torch.compile takes a mode or options, not both
                    settings.pop("options", None)
                settings.update(options)
            # each prior of a chain, window length and batch adds an entry to the one cache of static_decode's
            # code: room for them, beyond dynamo's default of 8 (then it would fall back to eager silently)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            graphs[key] = torch.compile(self.static_decode, **settings)
        return graphs[key]

    def static_decode(self, buffers: JukeboxDecodeBuffers, draw=None, draw_inputs: tuple = ()) -> torch.Tensor:
        """The static single-position step: logits (B, 1, V) of position `buffers.position` (a 0-d tensor), which
        consumes `buffers.token` (position 0: the artist/genre embedding); with `draw`, `draw(logits[:, 0],
        *draw_inputs)` instead (see `decode_step`). Every shape is fixed by the buffers and the position enters
        only through tensor ops, so `torch.compile` captures it as one graph (and CUDA as one CUDA graph). Same
        computation as the eager `decode_step(None, cache)`."""
        position = buffers.position
        dtype = self.embed_tokens.weight.dtype
        hidden = torch.where(position == 0, buffers.y_cond.to(dtype), self.embed_tokens(buffers.token))  # (B, 1, W)
        pos = self.pos_emb.index_select(0, position.reshape(1)).to(hidden.dtype)  # (1, W)
        prefix = self.config.prime_length
        x_cond = buffers.x_cond.index_select(1, (position - prefix).clamp(min=0).reshape(1))  # (B, 1, W)
        if prefix:  # no conditioning on the lyric prefix
            x_cond = torch.where(position >= prefix, x_cond, torch.zeros_like(x_cond))
        hidden = (hidden + pos + x_cond.to(hidden.dtype)).to(dtype)
        # CPU: each (1 x in) @ (in x out) product as a fused multiply-sum (a BLAS call per linear layer costs more
        # than its arithmetic at one position); CUDA: the layers' own kernels (cuBLAS), replayed by the CUDA graph
        linear = _fused_linear if hidden.device.type == "cpu" else F.linear
        for idx, layer in enumerate(self.layers):
            attn = layer.attn
            h = layer.input_layernorm(hidden)
            if attn.layer_type == "cross":
                q = attn.split_heads(linear(h, attn.q_proj.weight, attn.q_proj.bias))
                k, v = buffers.encoder_kv[idx]
                out = _single_query_attention(q, k, v, None)
            else:
                q, k, v = attn.split_qkv(linear(h, attn.qkv_proj.weight, attn.qkv_proj.bias))
                out = attn.static_decode_attention(q, k, v, buffers.keys[idx], buffers.values[idx], position)
            hidden = hidden + linear(attn.merge_heads(out), attn.out_proj.weight, attn.out_proj.bias)
            mlp = layer.mlp
            gate = linear(layer.post_attention_layernorm(hidden), mlp.fc_in.weight, mlp.fc_in.bias)
            hidden = hidden + linear(quick_gelu(gate), mlp.fc_out.weight, mlp.fc_out.bias)
        logits = linear(self._head_input(hidden, x_cond), self.lm_head.weight, self.lm_head.bias)
        return logits if draw is None else draw(logits[:, 0], *draw_inputs)

    def _embed_inputs(self, tokens, y_cond, cache, start):
        """Consumed inputs (B, L, W): position p sees the token of position p - 1 (y_cond at position 0)."""
        if start == 0:
            consumed = self.embed_tokens(tokens[:, :-1])
            return torch.cat([y_cond.to(consumed.dtype).expand(tokens.shape[0], 1, -1), consumed], dim=1)
        return self.embed_tokens(torch.cat([cache.last_token, tokens[:, :-1]], dim=1))

    def _run_blocks(self, hidden, x_cond, encoder_states, cache, start, output_hidden_states):
        """Positions, conditioning and the blocks over consumed-token embeddings `hidden` (B, L, W) from position
        `start`. Returns the last state, or the list of all states."""
        pos = self.pos_emb[start : start + hidden.shape[1]].to(hidden.dtype)
        hidden = (hidden + pos + x_cond.to(hidden.dtype)).to(self.embed_tokens.weight.dtype)
        states = [hidden]
        for idx, layer in enumerate(self.layers):
            hidden = layer(hidden, encoder_states, cache, idx, start)
            if output_hidden_states:
                states.append(hidden)
        if isinstance(cache, JukeboxPriorCache):
            cache.seen_tokens = start + pos.shape[0]
        return states if output_hidden_states else hidden

    def _head_input(self, last: torch.Tensor, x_cond: torch.Tensor) -> torch.Tensor:
        if not self.config.merged_decoder:  # conditioning added again after the transformer
            return last + x_cond.to(last.dtype)
        return last

    def _loss(self, logits, labels, tokens, conditioning, start, seq_len):
        config = self.config
        prefix = config.prime_length if start == 0 else 0
        music_logits = logits[:, prefix:]
        if labels.shape != music_logits.shape[:2]:
            raise JukeboxInputError(
                f"labels must have the shape of input_ids {tuple(music_logits.shape[:2])}, got {tuple(labels.shape)}."
            )
        gen_loss = (
            F.cross_entropy(
                music_logits.float().reshape(-1, logits.shape[-1]), (labels + config.music_token_shift).reshape(-1)
            )
            / _LN2
        )
        if config.lyrics_mode is None or not config.prime_loss_fraction:
            return gen_loss
        n_prime, n_gen = config.n_lyric_tokens, labels.shape[1]
        if config.lyrics_mode == "single_sequence":
            if not prefix:
                return gen_loss
            prime_loss = (
                F.cross_entropy(
                    logits[:, :prefix].float().reshape(-1, logits.shape[-1]), tokens[:, :prefix].reshape(-1)
                )
                / _LN2
            )
        else:
            head = self.lyrics_encoder.lm_head
            lyric_logits = head(conditioning.encoder_hidden_states.to(head.weight.dtype)).float()
            prime_loss = (
                F.cross_entropy(
                    lyric_logits.reshape(-1, config.lyric_vocab_size), conditioning.lyric_tokens.reshape(-1)
                )
                / _LN2
            )
        total = n_prime + n_gen
        return config.prime_loss_fraction * prime_loss * n_prime / total + gen_loss * n_gen / total


JukeboxPrior.register_for_auto_class("AutoModel")

__all__ = [
    "JukeboxPrior",
    "JukeboxPriorCache",
    "JukeboxPriorConditioning",
    "JukeboxPriorOutput",
    "JukeboxPriorPreTrainedModel",
]
