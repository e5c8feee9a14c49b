"""The static decode step (what `sample_prior(..., compile=...)` compiles) against the eager reference step.

Default suite: the static step run WITHOUT a compiler (position as a tensor, fixed-size buffers, index-math masks)
gives the eager step's logits at every position, for every fixture prior (row / column / previous-row / prime /
cross layers, the lyric prefix). Slow (`-m slow`): the compiled step samples the same codes as the eager one
(greedy and seeded) and is captured once: no recompilation across positions or windows of the same length.
"""

from __future__ import annotations

import pytest
import torch

from conftest import PRIOR_FIXTURES as PRIORS  # noqa: E402
from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.models.generation_jukebox import sample_level, sample_prior
from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxDecodeBuffers, JukeboxPriorCache

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(golden, batch):
    upper = golden.get("z_cond_0")
    return golden["y"][:batch], None if upper is None else upper[:batch]


def _cache(prior, metadata, upper, batch):
    cache = JukeboxPriorCache(len(prior.layers))
    cache.conditioning = prior.get_conditioning(metadata, upper, batch)
    return cache


@pytest.mark.parametrize("name", list(PRIORS))
def test_static_step_equals_eager_step(converted, name):
    prior, golden = converted(name)
    batch = 2
    metadata, upper = _inputs(golden, batch)
    config = prior.config
    tokens = golden["z"][:batch] + config.music_token_shift
    eager, static = _cache(prior, metadata, upper, batch), _cache(prior, metadata, upper, batch)
    if config.prime_length:
        lyrics = eager.conditioning.lyric_tokens.long().expand(batch, -1)
        tokens = torch.cat([lyrics, tokens], dim=1)
    n_prefill = config.prime_length + 21  # chunks crossing block boundaries, then single positions
    with torch.no_grad():
        for cache in (eager, static):
            prior.decode_step(tokens[:, :n_prefill], cache, return_logits=False)
        limit = prior.decode_max_positions(static)
        buffers = JukeboxDecodeBuffers(prior, batch, limit, static.conditioning.x_cond.shape[1]).load(prior, static)
        worst = 0.0
        for pos in range(n_prefill, tokens.shape[1]):
            expected = prior.decode_step(None, eager)
            buffers.token.copy_(tokens[:, pos - 1 : pos])
            buffers.position.fill_(pos)
            got = prior.static_decode(buffers)
            assert got.shape == expected.shape == (batch, 1, config.total_vocab_size)
            worst = max(worst, (got - expected).abs().max().item() / max(1.0, expected.abs().max().item()))
            assert torch.equal(got.argmax(-1), expected.argmax(-1)), pos
            eager.last_token = tokens[:, pos : pos + 1]
    assert worst <= 1e-4


def test_static_step_from_position_zero_equals_eager(converted):
    # ancestral sampling: position 0 consumes the artist/genre embedding (no last token yet)
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden, 1)
    eager, static = _cache(prior, metadata, None, 1), _cache(prior, metadata, None, 1)
    with torch.no_grad():
        buffers = JukeboxDecodeBuffers(prior, 1, prior.decode_max_positions(static), 256).load(prior, static)
        for pos, token in enumerate(golden["z"][0, :40].tolist()):
            expected = prior.decode_step(None, eager)
            buffers.position.fill_(pos)
            got = prior.static_decode(buffers)
            assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
            eager.last_token = buffers.token.fill_(token + prior.config.music_token_shift).clone()


def test_compiled_pass_taken_over_is_refused(converted, monkeypatch):
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden, 1)
    # no compiler needed to check the bookkeeping: the "compiled" step is the static step run eagerly
    monkeypatch.setattr(type(prior), "_decode_graph", lambda self, options, device: self.static_decode)
    first, second = _cache(prior, metadata, None, 1), _cache(prior, metadata, None, 1)
    with torch.no_grad():
        prior.decode_step(None, first, compile=True)
        first.last_token = torch.zeros(1, 1, dtype=torch.long)
        prior.decode_step(None, second, compile=True)  # takes the prior's compiled buffers over
        with pytest.raises(JukeboxInputError, match="taken over by another one"):
            prior.decode_step(None, first, compile=True)
        eager = _cache(prior, metadata, None, 1)
        prior.decode_step(None, eager)
        eager.last_token = torch.zeros(1, 1, dtype=torch.long)
        with pytest.raises(JukeboxInputError, match="started with eager single-position steps"):
            prior.decode_step(None, eager, compile=True)
        monkeypatch.undo()


def test_static_sampling_equals_eager_sampling(converted, monkeypatch):
    # the whole sampler through the static step (run eagerly): same codes as the eager step, seeded
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden, 1)
    kwargs = dict(n_samples=2, metadata=metadata, num_tokens=48, temperature=0.99)
    eager = sample_prior(prior, generator=torch.Generator().manual_seed(3), **kwargs)
    monkeypatch.setattr(type(prior), "_decode_graph", lambda self, options, device: self.static_decode)
    static = sample_prior(prior, generator=torch.Generator().manual_seed(3), compile=True, **kwargs)
    assert torch.equal(static, eager)


# ---------------------------------------------------------------------------------------------- compiled (slow)
def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prior_5b_top", "upsampler_level_0"])
def test_compiled_sampling_equals_eager_without_recompiling(converted, name):
    prior, golden = converted(name)
    metadata, upper = _inputs(golden, 1)
    torch._dynamo.reset()
    before = _graphs()
    for top_k in (1, 0):  # greedy, then seeded sampling
        for temperature, prime in ((0.99, None), (0.9, golden["z"][:1, :37])):  # ancestral and primed windows
            kwargs = dict(metadata=metadata, upper_level_codes=upper, temperature=temperature, top_k=top_k)
            eager = sample_prior(prior, prime_codes=prime, generator=torch.Generator().manual_seed(5), **kwargs)
            compiled = sample_prior(
                prior, prime_codes=prime, generator=torch.Generator().manual_seed(5), compile=True, **kwargs
            )
            assert torch.equal(compiled, eager), (top_k, prime is not None)
    # one graph per filtering (the draw runs in the graph: top-k 1, then none) for every position of two windows
    # each, primed or not, at two temperatures: nothing recompiled across positions, windows or temperatures
    assert _graphs() - before == 2


@pytest.mark.slow
def test_compiled_level_equals_eager_level(converted):
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden, 1)
    kwargs = dict(hop_fraction=0.5, metadata=metadata, temperature=0.99)
    eager = sample_level(prior, None, 512, generator=torch.Generator().manual_seed(1), **kwargs)
    compiled = sample_level(prior, None, 512, generator=torch.Generator().manual_seed(1), compile=True, **kwargs)
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("preset, layers", [("prior_5b", 6), ("prior_1b_lyrics", 12)])
def test_static_step_equals_eager_step_at_real_contexts(preset, layers):
    # the real n_ctx and block lengths (5b: 8192 / 64; 1b_lyrics: 6144 / 102 with a 384-token lyric prefix), width 32
    from hf_jukebox_mir import JukeboxPrior, JukeboxPriorConfig

    torch.manual_seed(0)
    config = JukeboxPriorConfig.from_preset(preset, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2)
    prior = JukeboxPrior(config).eval()
    conditioning = prior.get_conditioning(prior.build_metadata(total_length=200 * 44100, batch_size=1), None, 1)
    tokens = torch.randint(0, 2048, (1, config.prime_length + 900)) + config.music_token_shift
    if config.prime_length:
        tokens[:, : config.prime_length] = conditioning.lyric_tokens.long()
    n_prefill = config.prime_length + 700
    eager, static = JukeboxPriorCache(layers), JukeboxPriorCache(layers)
    eager.conditioning = static.conditioning = conditioning
    with torch.no_grad():
        for cache in (eager, static):
            for begin in range(0, n_prefill, 97):
                prior.decode_step(tokens[:, begin : min(begin + 97, n_prefill)], cache, return_logits=False)
        limit = prior.decode_max_positions(static)
        buffers = JukeboxDecodeBuffers(prior, 1, limit, conditioning.x_cond.shape[1]).load(prior, static)
        for pos in range(n_prefill, tokens.shape[1]):
            expected = prior.decode_step(None, eager)
            buffers.token.copy_(tokens[:, pos - 1 : pos])
            buffers.position.fill_(pos)
            assert (prior.static_decode(buffers) - expected).abs().max().item() <= 1e-6, pos
            eager.last_token = tokens[:, pos : pos + 1]
