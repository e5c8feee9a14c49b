"""Configuration of the Jukebox priors (top-level prior and the two upsamplers).

One config class covers the five released priors:

| preset | level | what conditions it |
|---|---|---|
| `prior_5b` | 2 | artist, genre bag, timing |
| `prior_5b_lyrics` | 2 | as `prior_5b` + a separate lyrics encoder read through encoder-decoder ("cross") layers |
| `prior_1b_lyrics` | 2 | v3 artist/genre, timing, lyrics tokens prepended to the music tokens in ONE sequence |
| `upsampler_level_1` | 1 | artist/genre + the top-level codes through the upsampling conditioner |
| `upsampler_level_0` | 0 | artist/genre + the middle-level codes through the upsampling conditioner |

Attention patterns are named per layer in `attention_patterns` (see `ATTENTION_TYPES`), never as the original
integer `attn_order`; `attention_layer_types(attn_order, depth)` converts the original numbering.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .errors import JukeboxConfigError

# Named attention patterns (original `attn_func` id in brackets):
#   "row"           [1] keys in the query's own block of `block_length` positions, causal
#   "column"        [2] keys at the same offset inside every earlier block (stride `block_length`), causal
#   "previous_row"  [3] all keys of the previous block (block 0 sees all-zero keys and values)
#   "dense"         [0] every earlier key, causal
#   "prime"         [7] keys restricted to the first `prime_attention_length` positions, causal
#   "cross"         [6] every lyrics-encoder state (encoder-decoder attention, no mask)
ATTENTION_TYPES = ("row", "column", "previous_row", "dense", "prime", "cross")
_ATTN_FUNC_NAMES = {0: "dense", 1: "row", 2: "column", 3: "previous_row", 6: "cross", 7: "prime"}
LYRICS_MODES = (None, "separate_encoder", "single_sequence")


def attention_layer_types(attn_order: int, depth: int) -> list[str]:
    """Per-layer attention pattern names for the original `attn_order` numbering.

    Only the orders used by released checkpoints (0, 2, 10, 12) and the simple alternations
    (1, 8, 9) are supported; the summary patterns (4, 5) have no released model.
    """
    cycles = {
        0: lambda d: 0,
        1: lambda d: [1, 2][d % 2],
        2: lambda d: [1, 2, 3][d % 3],
        8: lambda d: [1, 2, 3, 1, 2, 3, 1, 2, 3, 6][d % 10],
        9: lambda d: [1, 2, 3, 0][d % 4],
        10: lambda d: ([1, 2, 3] * 3 + ([1, 2, 3] * 3 + [6]) * 7)[d % 79],
        12: lambda d: [7, 7, 0][d % 3] if d % 16 == 15 else [1, 2, 3][d % 3],
    }
    if attn_order not in cycles:
        raise JukeboxConfigError(
            f"attn_order={attn_order!r} is not supported: expected one of {sorted(cycles)} "
            "(the orders of the released Jukebox priors and simple alternations)."
        )
    return [_ATTN_FUNC_NAMES[cycles[attn_order](d)] for d in range(depth)]


class JukeboxPriorConfig(PreTrainedConfig):
    r"""Configuration of a Jukebox prior ([`JukeboxPrior`]).

    Args:
        level (`int`): VQ-VAE level modelled, original numbering (0 = bottom / hop 8, 2 = top / hop 128).
        hop_length (`int`): audio samples per token at this level (8, 32 or 128).
        vocab_size (`int`): number of music codes (VQ-VAE codebook size, 2048).
        hidden_size (`int`): transformer width (`prior_width`).
        num_hidden_layers (`int`): number of transformer blocks BUILT. May be smaller than
            `len(attention_patterns)` of a checkpoint: the extra blocks are skipped at load time.
        num_attention_heads (`int`): heads.
        attention_multiplier (`float`): attention inner width = `int(attention_multiplier * hidden_size)`.
        mlp_multiplier (`float`): MLP inner width = `int(mlp_multiplier * hidden_size)`.
        n_ctx (`int`): music tokens per context window.
        blocks (`int`): number of blocks the sequence is factored into (block length = seq length // blocks).
        attention_patterns (`list[str]`): attention pattern of every layer, names from `ATTENTION_TYPES`.
        merged_decoder (`bool`): True for the 5b priors: the conditioning is added only before the
            transformer and the output head is untied. False: added before AND after, head tied to the
            token embedding.
        num_artists, num_genres (`int`): label embedding rows (`y_bins` reversed).
        max_genres (`int`): genre slots in the label vector (`max_bow_genre_size`).
        use_timing (`bool`): total-length / absolute / relative position embeddings (top priors).
        timing_bins, min_duration, max_duration, sampling_rate: timing embedding settings.
        labels_version (`int`): 2 (5b models, upsamplers) or 3 (1b_lyrics top prior) artist/genre vocabularies.
        lyrics_mode (`str` or `None`): None, `"separate_encoder"` (5b_lyrics) or `"single_sequence"` (1b_lyrics).
        n_lyric_tokens (`int`): lyric tokens in the label vector (`n_tokens`).
        lyric_vocab_size (`int`): lyric characters (80 for v2, 79 for v3).
        prime_loss_fraction (`float`): weight of the lyric loss in the training loss.
        encoder_*: the separate lyrics encoder of `prime_5b_lyrics`.
        upsampler_*: the upsampling conditioner of the upsamplers (level < 2).
        layer_norm_eps (`float`): LayerNorm epsilon (1e-5).
    """

    model_type = "jukebox_mir_prior"

    level: int = 2
    hop_length: int = 128
    vocab_size: int = 2048
    hidden_size: int = 4800
    num_hidden_layers: int = 72
    num_attention_heads: int = 8
    attention_multiplier: float = 0.25
    mlp_multiplier: float = 1.0
    n_ctx: int = 8192
    blocks: int = 128
    attention_patterns: list[str] | None = None
    merged_decoder: bool = True
    num_artists: int = 4111
    num_genres: int = 120
    max_genres: int = 5
    use_timing: bool = True
    timing_bins: int = 128
    min_duration: float = 60.0
    max_duration: float = 600.0
    sampling_rate: int = 44100
    labels_version: int = 2
    lyrics_mode: str | None = None
    n_lyric_tokens: int = 0
    lyric_vocab_size: int = 80
    prime_loss_fraction: float = 0.0
    encoder_hidden_size: int = 1280
    encoder_num_layers: int = 18
    encoder_num_heads: int = 4
    encoder_blocks: int = 32
    encoder_attention_patterns: list[str] | None = None
    upsampler_width: int = 1024
    upsampler_depth: int = 16
    upsampler_dilation_growth_rate: int = 3
    upsampler_dilation_cycle: int | None = 8
    upsampler_res_scale: bool = False
    upsampler_down_t: int = 2
    upsampler_stride_t: int = 2
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # derived defaults: the checkpoint's attention pattern names, one per layer
        if self.attention_patterns is None:
            self.attention_patterns = attention_layer_types(2, self.num_hidden_layers)
        self.attention_patterns = list(self.attention_patterns)
        if self.encoder_attention_patterns is None:
            self.encoder_attention_patterns = attention_layer_types(2, self.encoder_num_layers)
        self.encoder_attention_patterns = list(self.encoder_attention_patterns)
        kwargs.pop("tie_word_embeddings", None)  # derived: tied only when the conditioning is added after
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = not self.merged_decoder
        self._validate_jukebox()

    # ------------------------------------------------------------------ derived values
    @property
    def is_upsampler(self) -> bool:
        """Upsamplers (level < 2) are conditioned on the codes of the level above."""
        return self.level < 2

    @property
    def prime_length(self) -> int:
        """Lyric positions prepended to the music tokens (single-sequence lyrics prior only)."""
        return self.n_lyric_tokens if self.lyrics_mode == "single_sequence" else 0

    @property
    def max_seq_length(self) -> int:
        """Transformer length: lyric prefix (single-sequence model) + `n_ctx` music tokens."""
        return self.prime_length + self.n_ctx

    @property
    def block_length(self) -> int:
        """Positions per attention block (`blk`)."""
        return self.max_seq_length // self.blocks

    @property
    def prime_attention_length(self) -> int:
        """Keys seen by "prime" layers: `(prime_len // blocks + 1) * blocks` (448 for 1b_lyrics)."""
        return (self.prime_length // self.blocks + 1) * self.blocks

    @property
    def attention_width(self) -> int:
        return int(self.attention_multiplier * self.hidden_size)

    @property
    def head_dim(self) -> int:
        return self.attention_width // self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        return int(self.mlp_multiplier * self.hidden_size)

    @property
    def total_vocab_size(self) -> int:
        """Output classes: music codes, plus lyric characters for the single-sequence model."""
        return self.vocab_size + (self.lyric_vocab_size if self.lyrics_mode == "single_sequence" else 0)

    @property
    def music_token_shift(self) -> int:
        """Offset added to music codes in the merged vocabulary (79 for 1b_lyrics, else 0)."""
        return self.lyric_vocab_size if self.lyrics_mode == "single_sequence" else 0

    @property
    def metadata_length(self) -> int:
        """Width of the label vector: 4 + max_genres + n_lyric_tokens."""
        return 4 + self.max_genres + self.n_lyric_tokens

    @property
    def sample_length(self) -> int:
        """Audio samples covered by one context window (`n_ctx * hop_length`)."""
        return self.n_ctx * self.hop_length

    @property
    def upsampling_factor(self) -> int:
        """Tokens of this level per token of the level above (4 for the released upsamplers)."""
        return self.upsampler_stride_t**self.upsampler_down_t

    @property
    def upper_level_length(self) -> int:
        return self.n_ctx // self.upsampling_factor

    # ------------------------------------------------------------------ validation
    def _validate_jukebox(self) -> None:
        def bad(field, value, allowed):
            raise JukeboxConfigError(f"JukeboxPriorConfig.{field}={value!r} is invalid: expected {allowed}.")

        if self.level not in (0, 1, 2):
            bad("level", self.level, "0 (bottom), 1 (middle) or 2 (top)")
        for field in ("hidden_size", "num_attention_heads", "n_ctx", "blocks", "vocab_size", "hop_length"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) <= 0:
                bad(field, getattr(self, field), "a positive integer")
        if not isinstance(self.num_hidden_layers, int) or self.num_hidden_layers < 0:
            bad("num_hidden_layers", self.num_hidden_layers, "an integer >= 0")
        if self.num_hidden_layers > len(self.attention_patterns):
            bad(
                "num_hidden_layers",
                self.num_hidden_layers,
                f"at most len(attention_patterns) = {len(self.attention_patterns)} "
                "(attention_patterns names every layer of the checkpoint)",
            )
        for i, name in enumerate(self.attention_patterns):
            if name not in ATTENTION_TYPES:
                bad(f"attention_patterns[{i}]", name, f"one of {ATTENTION_TYPES}")
        if self.attention_width % self.num_attention_heads:
            bad(
                "num_attention_heads",
                self.num_attention_heads,
                f"a divisor of the attention width {self.attention_width}",
            )
        if self.max_seq_length % self.blocks:
            bad("blocks", self.blocks, f"a divisor of the sequence length {self.max_seq_length}")
        if self.lyrics_mode not in LYRICS_MODES:
            bad("lyrics_mode", self.lyrics_mode, f"one of {LYRICS_MODES}")
        if self.lyrics_mode is not None and self.n_lyric_tokens <= 0:
            bad("n_lyric_tokens", self.n_lyric_tokens, f"> 0 with lyrics_mode={self.lyrics_mode!r}")
        if self.lyrics_mode is None and self.n_lyric_tokens != 0:
            bad("n_lyric_tokens", self.n_lyric_tokens, "0 when lyrics_mode is None")
        if "cross" in self.attention_patterns and self.lyrics_mode != "separate_encoder":
            bad("attention_patterns", "cross", "'cross' layers only with lyrics_mode='separate_encoder'")
        if self.lyrics_mode == "separate_encoder":
            if self.n_lyric_tokens % self.encoder_blocks:
                bad("encoder_blocks", self.encoder_blocks, f"a divisor of n_lyric_tokens={self.n_lyric_tokens}")
            if len(self.encoder_attention_patterns) < self.encoder_num_layers:
                bad("encoder_attention_patterns", self.encoder_attention_patterns, f"{self.encoder_num_layers} names")
        if self.use_timing and not (0 <= self.min_duration < self.max_duration):
            bad("min_duration", self.min_duration, f"0 <= min_duration < max_duration={self.max_duration}")
        if self.is_upsampler and self.use_timing:
            bad("use_timing", self.use_timing, "False for upsamplers (level < 2): they have no timing embedding")
        if self.is_upsampler and self.n_ctx % self.upsampling_factor:
            bad("n_ctx", self.n_ctx, f"a multiple of the upsampling factor {self.upsampling_factor}")
        if self.labels_version not in (2, 3):
            bad("labels_version", self.labels_version, "2 (5b vocabularies) or 3 (1b_lyrics vocabularies)")

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "JukeboxPriorConfig":
        """A released prior's configuration (`prior_5b`, `prior_5b_lyrics`, `prior_1b_lyrics`,
        `upsampler_level_1`, `upsampler_level_0`), with optional field overrides.

        Overriding `num_hidden_layers` below the preset depth keeps the checkpoint's `attention_patterns`
        (e.g. `from_preset("prior_5b", num_hidden_layers=36)` for JukeMIR layer-36 features). Overriding
        `hidden_size`/`n_ctx`/... builds a smaller model with the same structure (benchmarks, tests).
        """
        if name not in PRIOR_PRESETS:
            raise JukeboxConfigError(f"Unknown prior preset {name!r}: expected one of {sorted(PRIOR_PRESETS)}.")
        values = dict(PRIOR_PRESETS[name])
        depth = overrides.get("num_hidden_layers", values["num_hidden_layers"])
        if "attention_patterns" not in overrides:
            order = values.pop("attn_order")
            values["attention_patterns"] = attention_layer_types(order, max(depth, values["num_hidden_layers"]))
        else:
            values.pop("attn_order")
        if "encoder_attention_patterns" not in overrides and "encoder_num_layers" in overrides:
            values["encoder_attention_patterns"] = attention_layer_types(2, overrides["encoder_num_layers"])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_original_hparams(cls, hps: dict, **overrides) -> "JukeboxPriorConfig":
        """Configuration from an original checkpoint's `hps` dict (see `conversion/prior.py`)."""
        from .errors import JukeboxCheckpointError

        required = ("level", "prior_width", "prior_depth", "heads", "n_ctx", "attn_order", "l_bins")
        missing = [k for k in required if k not in hps]
        if missing:
            raise JukeboxCheckpointError(
                f"The checkpoint's hps lack {missing}: this does not look like a Jukebox prior checkpoint "
                "(expected hps of prior_level_N.pth.tar)."
            )
        level = int(hps["level"])
        hop = 1
        for down, stride in zip(hps["downs_t"][: level + 1], hps["strides_t"][: level + 1]):
            hop *= stride**down
        lyrics_mode = None
        n_tokens = int(hps.get("n_tokens", 0) or 0)
        if hps.get("single_enc_dec"):
            lyrics_mode = "single_sequence"
        elif n_tokens and hps.get("use_tokens"):
            lyrics_mode = "separate_encoder"
        else:
            n_tokens = 0
        genre_bins, artist_bins = hps["y_bins"]
        n_ctx = int(hps["n_ctx"])
        blocks = int(hps["blocks"]) if hps.get("blocks") else 1
        values = dict(
            level=level,
            hop_length=hop,
            vocab_size=int(hps["l_bins"]),
            hidden_size=int(hps["prior_width"]),
            num_hidden_layers=int(hps["prior_depth"]),
            num_attention_heads=int(hps["heads"]),
            attention_multiplier=float(hps.get("m_attn", 0.25)),
            mlp_multiplier=float(hps.get("m_mlp", 1.0)),
            n_ctx=n_ctx,
            blocks=blocks,
            attention_patterns=attention_layer_types(int(hps["attn_order"]), int(hps["prior_depth"])),
            merged_decoder=bool(hps.get("merged_decoder", False)) and lyrics_mode != "single_sequence",
            num_artists=int(artist_bins),
            num_genres=int(genre_bins),
            max_genres=int(hps["max_bow_genre_size"]),
            use_timing=level == 2,
            timing_bins=int(hps.get("t_bins", 128)),
            min_duration=float(hps["min_duration"]) if hps.get("min_duration") is not None else 0.0,
            max_duration=float(hps["max_duration"]) if hps.get("max_duration") is not None else 600.0,
            sampling_rate=int(hps.get("sr", 44100)),
            labels_version=3 if hps.get("labels_v3") else 2,
            lyrics_mode=lyrics_mode,
            n_lyric_tokens=n_tokens,
            lyric_vocab_size=int(hps.get("n_vocab", 80)),
            prime_loss_fraction=float(hps.get("prime_loss_fraction", 0.0)) if lyrics_mode else 0.0,
        )
        if level < 2:  # the upsampling conditioner (cond_* hps are meaningless for top priors)
            values.update(
                upsampler_width=int(hps.get("cond_width", 1024)),
                upsampler_depth=int(hps.get("cond_depth", 16)),
                upsampler_dilation_growth_rate=int(hps.get("cond_dilation_growth_rate", 3)),
                upsampler_dilation_cycle=hps.get("cond_dilation_cycle"),
                upsampler_res_scale=bool(hps.get("cond_res_scale", False)),
                upsampler_down_t=int(hps["downs_t"][level + 1]),
                upsampler_stride_t=int(hps["strides_t"][level + 1]),
            )
        if lyrics_mode == "separate_encoder":
            enc_depth = int(hps["prime_depth"])
            values.update(
                encoder_hidden_size=int(hps["prime_width"]),
                encoder_num_layers=enc_depth,
                encoder_num_heads=int(hps["prime_heads"]),
                encoder_blocks=int(hps["prime_blocks"]) if hps.get("prime_blocks") else 1,
                encoder_attention_patterns=attention_layer_types(int(hps["prime_attn_order"]), enc_depth),
            )
            if float(hps.get("prime_m_attn", 0.25)) != 0.25 or float(hps.get("prime_m_mlp", 1.0)) != 1.0:
                raise JukeboxCheckpointError(
                    "Lyrics encoders with prime_m_attn != 0.25 or prime_m_mlp != 1.0 are not supported."
                )
        for flag in ("res_scale", "pos_init", "copy_input"):
            if hps.get(flag):
                raise JukeboxCheckpointError(
                    f"hps[{flag!r}]={hps[flag]!r} is not supported (no released Jukebox prior uses it)."
                )
        if hps.get("spread"):
            raise JukeboxCheckpointError("Summary-spread attention (hps['spread']) is not supported.")
        values.update(overrides)
        return cls(**values)


_COMMON_TOP = dict(
    level=2,
    hop_length=128,
    vocab_size=2048,
    attention_multiplier=0.25,
    mlp_multiplier=1.0,
    use_timing=True,
    max_duration=600.0,
    sampling_rate=44100,
)
_COMMON_UPSAMPLER = dict(
    vocab_size=2048,
    hidden_size=1920,
    num_hidden_layers=72,
    num_attention_heads=1,
    attention_multiplier=0.25,
    mlp_multiplier=1.0,
    n_ctx=8192,
    blocks=128,
    attn_order=2,
    merged_decoder=False,
    num_artists=4111,
    num_genres=120,
    max_genres=5,
    use_timing=False,
    timing_bins=128,
    min_duration=0.0,
    labels_version=2,
    upsampler_width=1024,
    upsampler_depth=16,
    upsampler_dilation_growth_rate=3,
    upsampler_dilation_cycle=8,
    upsampler_down_t=2,
    upsampler_stride_t=2,
)

# Facts of the released checkpoints (architecture.md §2.2; checked against full_size_inventory.json).
PRIOR_PRESETS: dict[str, dict] = {
    "prior_5b": dict(
        _COMMON_TOP,
        hidden_size=4800,
        num_hidden_layers=72,
        num_attention_heads=8,
        n_ctx=8192,
        blocks=128,
        attn_order=2,
        merged_decoder=True,
        num_artists=4111,
        num_genres=120,
        max_genres=5,
        timing_bins=128,
        min_duration=60.0,
        labels_version=2,
    ),
    "prior_5b_lyrics": dict(
        _COMMON_TOP,
        hidden_size=4800,
        num_hidden_layers=79,
        num_attention_heads=8,
        n_ctx=8192,
        blocks=128,
        attn_order=10,
        merged_decoder=True,
        num_artists=4111,
        num_genres=120,
        max_genres=5,
        timing_bins=128,
        min_duration=23.8,
        labels_version=2,
        lyrics_mode="separate_encoder",
        n_lyric_tokens=512,
        lyric_vocab_size=80,
        prime_loss_fraction=0.4,
        encoder_hidden_size=1280,
        encoder_num_layers=18,
        encoder_num_heads=4,
        encoder_blocks=32,
    ),
    "prior_1b_lyrics": dict(
        _COMMON_TOP,
        hidden_size=2048,
        num_hidden_layers=72,
        num_attention_heads=2,
        n_ctx=6144,
        blocks=64,
        attn_order=12,
        merged_decoder=False,
        num_artists=7898,
        num_genres=604,
        max_genres=1,
        timing_bins=64,
        min_duration=17.84,
        labels_version=3,
        lyrics_mode="single_sequence",
        n_lyric_tokens=384,
        lyric_vocab_size=79,
        prime_loss_fraction=0.4,
    ),
    "upsampler_level_1": dict(_COMMON_UPSAMPLER, level=1, hop_length=32, upsampler_res_scale=True),
    "upsampler_level_0": dict(_COMMON_UPSAMPLER, level=0, hop_length=8, upsampler_res_scale=False),
}

JukeboxPriorConfig.register_for_auto_class()

__all__ = ["ATTENTION_TYPES", "PRIOR_PRESETS", "JukeboxPriorConfig", "attention_layer_types"]
