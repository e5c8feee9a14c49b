"""Key-mapping tables for Jukebox prior checkpoints (original OpenAI format and transformers-4.x format).

The tables are pure data: ordered `(regex, replacement)` pairs, `None` = drop the key. The only
thing that depends on the model is which layers are encoder-decoder ("cross") layers, whose
`c_attn` holds queries only, and how many layers are kept (layer truncation), so the tables are built
by functions of the config.

Original (`prior_level_N.pth.tar`) -> ours:

| original | ours |
|---|---|
| `y_emb.artist_emb.emb.weight` / `y_emb.bow_genre_emb.emb.weight` | `metadata_embedding.artist_emb.weight` / `.genre_emb.weight` |
| `y_emb.{total_length,absolute_pos,relative_pos}_emb.emb.weight` | `metadata_embedding.{...}_emb.emb.weight` |
| `conditioner_blocks.0.x_emb.weight` | `upsampler.embed_tokens.weight` |
| `conditioner_blocks.0.cond.model.0.*` | `upsampler.conv_in.*` |
| `conditioner_blocks.0.cond.model.{i}.0.blocks.{r}.model.{1,3}.*` | `upsampler.stages.{i-1}.resnet.{r}.{conv_dilated,conv_out}.*` |
| `conditioner_blocks.0.cond.model.{i}.1.*` | `upsampler.stages.{i-1}.upsample.*` |
| `conditioner_blocks.0.ln.*` | `upsampler.layer_norm.*` |
| `prior.x_emb.weight` / `prior.pos_emb.pos_emb` / `prior.x_out.weight` | `embed_tokens.weight` / `pos_emb` / `lm_head.weight` |
| `prior.transformer._attn_mods.{d}.ln_0.*` / `.ln_1.*` | `layers.{d}.input_layernorm.*` / `.post_attention_layernorm.*` |
| `... .attn.c_attn.{w,b}` | `layers.{d}.attn.qkv_proj.{weight,bias}` (`q_proj` in cross layers) |
| `... .attn.c_enc_kv.{w,b}` / `... .attn.c_proj.{w,b}` | `layers.{d}.attn.kv_proj.*` / `layers.{d}.attn.out_proj.*` |
| `... .mlp.c_fc.{w,b}` / `... .mlp.c_proj.{w,b}` | `layers.{d}.mlp.fc_in.*` / `layers.{d}.mlp.fc_out.*` |
| `prime_prior.{start_token,x_emb.weight,pos_emb.pos_emb}` | `lyrics_encoder.{start_token,embed_tokens.weight,pos_emb}` |
| `prime_prior.transformer._attn_mods.{d}.*` | `lyrics_encoder.layers.{d}.*` (as above) |
| `prime_state_proj.*` / `prime_state_ln.*` / `prime_x_out.weight` | `lyrics_encoder.proj.*` / `.layer_norm.*` / `.lm_head.weight` |

GPT-style `Conv1D` weights (keys ending in `.w`) are stored (in, out) and are transposed into
`nn.Linear` (out, in) weights: `needs_transpose` names them by their converted key.
"""

from __future__ import annotations

import re

from ..models.configuration_jukebox_prior import JukeboxPriorConfig

# Block internals shared by the main transformer and the lyrics encoder ({q} = qkv_proj or q_proj).
_BLOCK_INNER = [
    (r"ln_0\.(weight|bias)$", r"input_layernorm.\1"),
    (r"ln_1\.(weight|bias)$", r"post_attention_layernorm.\1"),
    (r"attn\.c_attn\.w$", r"attn.{q}.weight"),
    (r"attn\.c_attn\.b$", r"attn.{q}.bias"),
    (r"attn\.c_enc_kv\.w$", r"attn.kv_proj.weight"),
    (r"attn\.c_enc_kv\.b$", r"attn.kv_proj.bias"),
    (r"attn\.c_proj\.w$", r"attn.out_proj.weight"),
    (r"attn\.c_proj\.b$", r"attn.out_proj.bias"),
    (r"mlp\.c_fc\.w$", r"mlp.fc_in.weight"),
    (r"mlp\.c_fc\.b$", r"mlp.fc_in.bias"),
    (r"mlp\.c_proj\.w$", r"mlp.fc_out.weight"),
    (r"mlp\.c_proj\.b$", r"mlp.fc_out.bias"),
]


def _block_rules(
    src_prefix: str, dst_prefix: str, attention_patterns: list[str], keep: int
) -> list[tuple[str, str | None]]:
    rules: list[tuple[str, str | None]] = []
    for d, kind in enumerate(attention_patterns):
        src = rf"^{re.escape(src_prefix)}{d}\."
        if d >= keep:
            rules.append((src + r".*$", None))  # layer truncation: dropped
            continue
        q = "q_proj" if kind == "cross" else "qkv_proj"
        for pattern, repl in _BLOCK_INNER:
            rules.append((src + pattern, f"{dst_prefix}{d}." + repl.replace("{q}", q)))
    return rules


def original_prior_key_mapping(config: JukeboxPriorConfig) -> list[tuple[str, str | None]]:
    """Ordered regex table: original OpenAI prior keys -> `JukeboxPrior` keys (None = dropped)."""
    rules: list[tuple[str, str | None]] = [
        (r"^y_emb\.artist_emb\.emb\.weight$", "metadata_embedding.artist_emb.weight"),
        (r"^y_emb\.bow_genre_emb\.emb\.weight$", "metadata_embedding.genre_emb.weight"),
        (
            r"^y_emb\.(total_length|absolute_pos|relative_pos)_emb\.emb\.weight$",
            r"metadata_embedding.\1_emb.emb.weight",
        ),
        (r"^conditioner_blocks\.0\.x_emb\.weight$", "upsampler.embed_tokens.weight"),
        (r"^conditioner_blocks\.0\.cond\.model\.0\.(weight|bias)$", r"upsampler.conv_in.\1"),
        (r"^conditioner_blocks\.0\.ln\.(weight|bias)$", r"upsampler.layer_norm.\1"),
        (r"^prior\.x_emb\.weight$", "embed_tokens.weight"),
        (r"^prior\.pos_emb\.pos_emb$", "pos_emb"),
        (r"^prior\.x_out\.weight$", "lm_head.weight"),
        (r"^prime_prior\.start_token$", "lyrics_encoder.start_token"),
        (r"^prime_prior\.x_emb\.weight$", "lyrics_encoder.embed_tokens.weight"),
        (r"^prime_prior\.pos_emb\.pos_emb$", "lyrics_encoder.pos_emb"),
        (r"^prime_state_proj\.w$", "lyrics_encoder.proj.weight"),
        (r"^prime_state_proj\.b$", "lyrics_encoder.proj.bias"),
        (r"^prime_state_ln\.(weight|bias)$", r"lyrics_encoder.layer_norm.\1"),
        (r"^prime_x_out\.weight$", "lyrics_encoder.lm_head.weight"),
    ]
    for i in range(1, config.upsampler_down_t + 1):  # decoder stages of the conditioner, 1-based there
        src = rf"^conditioner_blocks\.0\.cond\.model\.{i}\."
        rules += [
            (
                src + r"0\.blocks\.(\d+)\.model\.1\.(weight|bias)$",
                rf"upsampler.stages.{i - 1}.resnet.\1.conv_dilated.\2",
            ),
            (src + r"0\.blocks\.(\d+)\.model\.3\.(weight|bias)$", rf"upsampler.stages.{i - 1}.resnet.\1.conv_out.\2"),
            (src + r"1\.(weight|bias)$", rf"upsampler.stages.{i - 1}.upsample.\1"),
        ]
    rules += _block_rules(
        "prior.transformer._attn_mods.", "layers.", config.attention_patterns, config.num_hidden_layers
    )
    if config.lyrics_mode == "separate_encoder":
        rules += _block_rules(
            "prime_prior.transformer._attn_mods.",
            "lyrics_encoder.layers.",
            config.encoder_attention_patterns,
            config.encoder_num_layers,
        )
    return rules


def hf4_prior_key_mapping(config: JukeboxPriorConfig, index: int) -> list[tuple[str, str | None]]:
    """Ordered regex table: transformers-4.x keys `priors.{index}.*` -> `JukeboxPrior` keys.

    The 4.x port stores the top prior as `priors.0`, the middle upsampler as `priors.1`, the bottom one
    as `priors.2`. Its Conv1D weights are already named `weight`/`bias` but keep the (in, out) layout.
    """
    p = rf"^priors\.{index}\."
    rules: list[tuple[str, str | None]] = [
        (p + r"metadata_embedding\.artist_emb\.weight$", "metadata_embedding.artist_emb.weight"),
        (p + r"metadata_embedding\.bow_genre_emb\.weight$", "metadata_embedding.genre_emb.weight"),
        (
            p + r"metadata_embedding\.(total_length|absolute_pos|relative_pos)_emb\.emb\.weight$",
            r"metadata_embedding.\1_emb.emb.weight",
        ),
        (p + r"conditioner_blocks\.embed_tokens\.weight$", "upsampler.embed_tokens.weight"),
        (p + r"conditioner_blocks\.upsampler\.proj_in\.(weight|bias)$", r"upsampler.conv_in.\1"),
        (p + r"conditioner_blocks\.layer_norm\.(weight|bias)$", r"upsampler.layer_norm.\1"),
        (p + r"prior\.embed_tokens\.weight$", "embed_tokens.weight"),
        (p + r"prior\.pos_emb\.pos_emb$", "pos_emb"),
        (p + r"prior\.fc_proj_out\.weight$", "lm_head.weight"),
        (p + r"encoder\.start_token$", "lyrics_encoder.start_token"),
        (p + r"encoder\.embed_tokens\.weight$", "lyrics_encoder.embed_tokens.weight"),
        (p + r"encoder\.pos_emb\.pos_emb$", "lyrics_encoder.pos_emb"),
        (p + r"encoder\.proj_in\.(weight|bias)$", r"lyrics_encoder.proj.\1"),
        (p + r"encoder\.final_layer_norm\.(weight|bias)$", r"lyrics_encoder.layer_norm.\1"),
        (p + r"encoder\.lm_head\.weight$", "lyrics_encoder.lm_head.weight"),
    ]
    for stage in range(config.upsampler_down_t):  # the port flattens (resnet, upsample) pairs: 2s and 2s + 1
        src = p + r"conditioner_blocks\.upsampler\.upsample_block\."
        rules += [
            (
                src + rf"{2 * stage}\.resnet_block\.(\d+)\.conv1d_1\.(weight|bias)$",
                rf"upsampler.stages.{stage}.resnet.\1.conv_dilated.\2",
            ),
            (
                src + rf"{2 * stage}\.resnet_block\.(\d+)\.conv1d_2\.(weight|bias)$",
                rf"upsampler.stages.{stage}.resnet.\1.conv_out.\2",
            ),
            (src + rf"{2 * stage + 1}\.(weight|bias)$", rf"upsampler.stages.{stage}.upsample.\1"),
        ]
    inner = [
        (pat.replace(r"\.w$", r"\.weight$").replace(r"\.b$", r"\.bias$").replace("ln_", "layer_norm_"), repl)
        for pat, repl in _BLOCK_INNER
    ]

    def blocks(src_prefix, dst_prefix, attention_patterns, keep):
        out = []
        for d, kind in enumerate(attention_patterns):
            src = p + rf"{re.escape(src_prefix)}{d}\."
            if d >= keep:
                out.append((src + r".*$", None))
                continue
            q = "q_proj" if kind == "cross" else "qkv_proj"
            out += [(src + pat, f"{dst_prefix}{d}." + repl.replace("{q}", q)) for pat, repl in inner]
        return out

    rules += blocks("prior.transformer._attn_mods.", "layers.", config.attention_patterns, config.num_hidden_layers)
    if config.lyrics_mode == "separate_encoder":
        rules += blocks(
            "encoder.transformer._attn_mods.",
            "lyrics_encoder.layers.",
            config.encoder_attention_patterns,
            config.encoder_num_layers,
        )
    return rules


# Our keys whose source tensors are GPT-style Conv1D weights, stored (in, out) in BOTH source formats
# (the 4.x port renamed them but kept the layout): transposed into nn.Linear (out, in) on conversion.
TRANSPOSED_KEYS = re.compile(
    r"(attn\.(qkv_proj|q_proj|kv_proj|out_proj)|mlp\.(fc_in|fc_out))\.weight$|^lyrics_encoder\.proj\.weight$"
)


def needs_transpose(converted_key: str) -> bool:
    """True when the tensor for `converted_key` comes from a Conv1D (in, out) weight."""
    return TRANSPOSED_KEYS.search(converted_key) is not None


__all__ = ["TRANSPOSED_KEYS", "hf4_prior_key_mapping", "needs_transpose", "original_prior_key_mapping"]
