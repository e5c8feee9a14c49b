"""Sampling from the priors (generation_jukebox.py): cache path = full forward, filtering, windows, priming."""

from __future__ import annotations

import pytest
import torch

from conftest import PRIOR_FIXTURES as PRIORS  # noqa: E402
from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.models.generation_jukebox import (
    JukeboxSamplingState,
    filter_logits,
    lyric_window,
    plan_windows,
    sample_level,
    sample_prior,
    teacher_forced_logits,
    window_metadata,
    window_starts,
)
from hf_jukebox_mir.models.tokenization_jukebox import lyric_window as labels_lyric_window

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(golden, batch=2):
    upper = golden.get("z_cond_0")
    return golden["y"][:batch], None if upper is None else upper[:batch]


# ---------------------------------------------------------------------------------------------- cache path
@pytest.mark.parametrize("name", list(PRIORS))
def test_teacher_forced_step_path_equals_full_forward(converted, name):
    prior, golden = converted(name)
    metadata, upper = _inputs(golden)
    codes = golden["z"]
    with torch.no_grad():
        full = prior(codes, metadata=metadata, upper_level_codes=upper).logits[:, prior.config.prime_length :]
    # the first positions through chunked prefill (odd chunk, crosses block boundaries), the rest one by one
    n_prefill = codes.shape[1] - 40
    stepped = teacher_forced_logits(
        prior, codes, metadata=metadata, upper_level_codes=upper, n_prefill=n_prefill, chunk_size=7
    )
    assert stepped.shape == full.shape
    tol = 1e-4 * max(1.0, full.abs().max().item())
    assert (stepped - full).abs().max().item() <= tol
    assert torch.equal(stepped.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("name", list(PRIORS))
def test_every_position_one_by_one_equals_full_forward(converted, name):
    # ancestral sampling: no prefill (1b_lyrics: only its lyric prefix), every music position a single step
    prior, golden = converted(name)
    metadata, upper = _inputs(golden, batch=1)
    codes = golden["z"][:1]
    with torch.no_grad():
        full = prior(codes, metadata=metadata, upper_level_codes=upper).logits[:, prior.config.prime_length :]
    stepped = teacher_forced_logits(prior, codes, metadata=metadata, upper_level_codes=upper)
    assert (stepped - full).abs().max().item() <= 1e-4 * max(1.0, full.abs().max().item())


# ---------------------------------------------------------------------------------------------- sampling
def test_fixed_seed_is_reproducible(converted):
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden)

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return sample_prior(prior, n_samples=2, metadata=metadata, num_tokens=24, temperature=0.99, generator=gen)

    first, second, other = draw(1), draw(1), draw(2)
    assert first.shape == (2, 24) and first.dtype == torch.long
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert int(first.min()) >= 0 and int(first.max()) < prior.config.vocab_size


def test_batch_rows_are_sampled_independently(converted):
    prior, golden = converted("prior_5b_top")
    metadata, _ = _inputs(golden, batch=1)
    out = sample_prior(prior, n_samples=3, metadata=metadata, num_tokens=16, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 16)
    assert len({tuple(row.tolist()) for row in out}) == 3


@pytest.mark.parametrize(
    "name,top_k,top_p",
    [("prior_5b_top", 3, 0.0), ("prior_5b_top", 0, 0.6), ("upsampler_level_1", 2, 0.0), ("upsampler_level_1", 0, 0.3)],
)
def test_filtering_never_emits_filtered_tokens(converted, name, top_k, top_p):
    prior, golden = converted(name)
    metadata, upper = _inputs(golden)
    temperature = 1.3  # flatten the distribution so that unfiltered sampling would leave the kept set often
    codes = sample_prior(
        prior,
        n_samples=2,
        metadata=metadata,
        upper_level_codes=upper,
        num_tokens=48,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=torch.Generator().manual_seed(3),
    )
    # the same (cached, step by step) computation gives the logits each token was drawn from
    logits = teacher_forced_logits(prior, codes, metadata=metadata, upper_level_codes=upper)
    filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    chosen = filtered.gather(-1, codes[..., None])[..., 0]
    assert torch.isfinite(chosen).all()
    kept = torch.isfinite(filtered).sum(-1)
    if top_k:
        assert (kept >= top_k).all() and (kept <= top_k + 1).all()  # ties with the k-th largest may stay
    else:
        assert (kept < prior.config.vocab_size).all()
    # without filtering, the same seed leaves the kept set: the check above is not vacuous
    loose = sample_prior(
        prior,
        n_samples=2,
        metadata=metadata,
        upper_level_codes=upper,
        num_tokens=48,
        temperature=temperature,
        generator=torch.Generator().manual_seed(3),
    )
    loose_logits = teacher_forced_logits(prior, loose, metadata=metadata, upper_level_codes=upper)
    loose_filtered = filter_logits(loose_logits / temperature, top_k=top_k, top_p=top_p)
    assert not torch.isfinite(loose_filtered.gather(-1, loose[..., None])).all()


def test_filter_logits_semantics():
    logits = torch.tensor([[1.0, 4.0, 3.0, 3.0, 0.5]])
    top2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(top2).tolist() == [[False, True, True, True, False]]  # tie with the 2nd largest kept
    assert torch.equal(top2[torch.isfinite(top2)], torch.tensor([4.0, 3.0, 3.0]))
    probs = torch.log(torch.tensor([[0.1, 0.5, 0.25, 0.15]]))
    # sorted 0.5, 0.25, 0.15, 0.1 -> cumulative 0.5, 0.75, 0.9, 1.0; > 0.6 from the 2nd on, shifted right:
    # keep the top entry and the first one crossing the threshold
    assert torch.isfinite(filter_logits(probs, top_p=0.6)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_logits(probs, top_p=0.3)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_logits(probs, top_p=0.95)).tolist() == [[True, True, True, True]]
    assert torch.equal(filter_logits(logits), logits)
    assert torch.equal(filter_logits(logits, top_k=50), logits)  # k above the vocabulary is clamped
    with pytest.raises(JukeboxInputError, match="not both"):
        filter_logits(logits, top_k=2, top_p=0.5)


def test_primed_sampling_returns_prime_then_new_codes(converted):
    prior, golden = converted("upsampler_level_1")
    metadata, upper = _inputs(golden)
    prime = golden["z"][:, :37]
    gen = torch.Generator().manual_seed(5)
    out = sample_prior(
        prior, prime_codes=prime, metadata=metadata, upper_level_codes=upper, num_tokens=20, generator=gen, chunk_size=8
    )
    assert out.shape == (2, 57)
    assert torch.equal(out[:, :37], prime)
    # the prime went through the cache: the new codes equal a draw whose first 37 steps are teacher-forced
    gen = torch.Generator().manual_seed(5)
    unchunked = sample_prior(
        prior,
        prime_codes=prime,
        metadata=metadata,
        upper_level_codes=upper,
        num_tokens=20,
        generator=gen,
        chunk_size=None,
    )
    assert torch.equal(out, unchunked)
    # default num_tokens fills the window; nothing to sample returns the prime itself
    full = sample_prior(
        prior,
        prime_codes=golden["z"][:, :250],
        metadata=metadata,
        upper_level_codes=upper,
        generator=torch.Generator().manual_seed(0),
    )
    assert full.shape == (2, prior.config.n_ctx) and torch.equal(full[:, :250], golden["z"][:, :250])
    same = sample_prior(prior, prime_codes=golden["z"], metadata=metadata, upper_level_codes=upper)
    assert torch.equal(same, golden["z"])


def test_single_sequence_lyrics_prior_unshifts_and_clamps(converted):
    prior, golden = converted("prior_1b_lyrics_top")
    metadata, _ = _inputs(golden)
    shift = prior.config.music_token_shift
    assert shift == 79
    prime = golden["z"][:, :5]
    out = sample_prior(
        prior, prime_codes=prime, metadata=metadata, num_tokens=6, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prime)
    assert int(out.min()) >= 0 and int(out.max()) < prior.config.vocab_size

    # force a lyric id (5) at every music position: it is fed back raw and returned as code 0 (original behaviour)
    head = prior.lm_head

    class PreferLyricId(torch.nn.Module):
        def forward(self, hidden):
            logits = head(hidden)
            logits[..., 5] += 1e4
            return logits

    seen = []
    accept = JukeboxSamplingState.accept

    def spy(self, tokens):
        seen.append(tokens.clone())
        accept(self, tokens)

    prior.lm_head = PreferLyricId()
    try:
        JukeboxSamplingState.accept = spy
        forced = sample_prior(
            prior, prime_codes=prime, metadata=metadata, num_tokens=4, generator=torch.Generator().manual_seed(0)
        )
    finally:
        JukeboxSamplingState.accept = accept
        prior.lm_head = head
    assert torch.equal(forced[:, 5:], torch.zeros(2, 4, dtype=torch.long))
    assert all(torch.equal(t, torch.full((2, 1), 5)) for t in seen)


def test_lyrics_encoder_prior_samples(converted):
    prior, golden = converted("prior_5b_lyrics_top")
    metadata, _ = _inputs(golden)
    out = sample_prior(prior, metadata=metadata, num_tokens=10, top_k=10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 10)


def test_sampling_argument_errors(converted):
    prior, golden = converted("upsampler_level_0")
    metadata, upper = _inputs(golden)
    with pytest.raises(JukeboxInputError, match="temperature must be a finite number > 0"):
        sample_prior(prior, metadata=metadata, upper_level_codes=upper, num_tokens=2, temperature=0)
    with pytest.raises(JukeboxInputError, match="not both"):
        sample_prior(prior, metadata=metadata, upper_level_codes=upper, num_tokens=2, top_k=3, top_p=0.5)
    with pytest.raises(JukeboxInputError, match="do not fit one window of 256 tokens"):
        sample_prior(prior, prime_codes=golden["z"][:, :200], metadata=metadata, upper_level_codes=upper, num_tokens=57)
    with pytest.raises(JukeboxInputError, match="the upper-level codes cover 40 positions"):
        sample_prior(prior, metadata=metadata, upper_level_codes=upper[:, :10], num_tokens=41)
    with pytest.raises(JukeboxInputError, match="needs upper_level_codes"):
        sample_prior(prior, metadata=metadata, num_tokens=2)
    with pytest.raises(JukeboxInputError, match="batch size"):
        sample_prior(prior, n_samples=3, metadata=metadata, upper_level_codes=upper, num_tokens=2)
    with pytest.raises(JukeboxInputError, match="prime_codes must lie in"):
        sample_prior(prior, prime_codes=torch.full((2, 3), 5000), metadata=metadata, upper_level_codes=upper)
    with pytest.raises(JukeboxInputError, match="integer tensor"):
        sample_prior(prior, prime_codes=torch.zeros(2, 3), metadata=metadata, upper_level_codes=upper)


# ---------------------------------------------------------------------------------------------- windows
def test_window_starts_match_the_original_rule():
    # original get_starts: range(0, total - n_ctx + hop, hop), windows reaching the end moved to total - n_ctx
    assert window_starts(8192, 8192, 1024) == [0]
    assert window_starts(10000, 8192, 1024) == [0, 1024, 1808]
    assert window_starts(320, 256, 128) == [0, 64]
    assert window_starts(1024, 256, 128) == [0, 128, 256, 384, 512, 640, 768]
    assert plan_windows(100, 256, 128) == [(0, 100)]
    assert plan_windows(1024, 256, 128, n_existing=300) == [
        (128, 384),
        (256, 512),
        (384, 640),
        (512, 768),
        (640, 896),
        (768, 1024),
    ]
    assert plan_windows(1024, 256, 128, n_existing=1024) == []


def test_lyric_window_exists_once():
    # the sampler re-windows lyrics with the tokenizer's function (the original heuristic), not a copy
    assert lyric_window is labels_lyric_window


def test_window_metadata_offsets_lengths_and_lyrics(converted):
    prior, _ = converted("prior_1b_lyrics_top")
    config = prior.config
    base = prior.build_metadata(total_length=40 * 44100, offset=1280, batch_size=2)
    full = list(range(1, 79)) * 4  # 312 lyric tokens, more than the 32 slots
    rows = window_metadata(config, base, 96, full)
    assert rows[:, 1].tolist() == [1280 + 96 * 128] * 2
    assert rows[:, 2].tolist() == [config.n_ctx * 128] * 2
    expected = lyric_window(full, 32, 40 * 44100, 1280 + 96 * 128, config.n_ctx * 128)
    assert rows[0, -32:].tolist() == expected and rows[1, -32:].tolist() == expected
    assert torch.equal(base[:, 3:-32], rows[:, 3:-32])  # artist and genres untouched
    untouched = window_metadata(config, base, 96)  # no full lyrics: the row's lyric slots stay
    assert torch.equal(untouched[:, -32:], base[:, -32:])


def test_sample_level_lengths_prefix_and_windows(converted):
    prior, golden = converted("prior_5b_top")
    n_ctx = prior.config.n_ctx  # 256, hop 0.125 -> 32
    prefix = golden["z"][:1, :250]
    calls = []
    original = prior.get_conditioning

    def spy(metadata, upper_level_codes=None, batch_size=None):
        calls.append(metadata.clone())
        return original(metadata, upper_level_codes, batch_size)

    prior.get_conditioning = spy
    try:
        out = sample_level(prior, prefix, n_ctx + 40, generator=torch.Generator().manual_seed(0))
    finally:
        del prior.get_conditioning
    assert out.shape == (1, n_ctx + 40)
    assert torch.equal(out[:, :250], prefix)
    # windows: [0,256) samples 6 codes, [32,288) samples 32, [40,296) the last 8 (start moved to total - n_ctx)
    offsets = [int(m[0, 1]) for m in calls]
    assert offsets == [0, 32 * 128, 40 * 128]
    assert all(int(m[0, 2]) == n_ctx * 128 for m in calls)
    assert all(int(m[0, 0]) >= 60 * 44100 for m in calls)  # total_length raised to the 5b prior's minimum
    short = sample_level(prior, None, 20, generator=torch.Generator().manual_seed(0))
    assert short.shape == (1, 20)
    with pytest.raises(JukeboxInputError, match="more than total_tokens"):
        sample_level(prior, prefix, 100)


def test_upsampler_windows_are_conditioned_on_their_slice(converted):
    prior, golden = converted("upsampler_level_0")
    metadata, _ = _inputs(golden, batch=1)
    total = 320  # n_ctx 256, hop 128 -> windows [0, 256) and [64, 320)
    upper = torch.randint(0, 2048, (1, total // 4), generator=torch.Generator().manual_seed(1))
    seen = []
    original = prior.get_conditioning

    def spy(metadata, upper_level_codes=None, batch_size=None):
        seen.append(upper_level_codes.clone())
        return original(metadata, upper_level_codes, batch_size)

    prior.get_conditioning = spy
    try:
        out = sample_level(
            prior,
            None,
            total,
            metadata=metadata,
            upper_codes=upper,
            temperature=0.99,
            generator=torch.Generator().manual_seed(7),
        )
    finally:
        del prior.get_conditioning
    assert out.shape == (1, total)
    assert [s.shape[1] for s in seen] == [64, 64]
    assert torch.equal(seen[0], upper[:, 0:64]) and torch.equal(seen[1], upper[:, 16:80])

    # the same draws from direct calls with the sliced codes give the same codes
    gen = torch.Generator().manual_seed(7)
    first = sample_prior(
        prior,
        metadata=window_metadata(prior.config, metadata, 0),
        upper_level_codes=upper[:, 0:64],
        num_tokens=256,
        temperature=0.99,
        generator=gen,
    )
    second = sample_prior(
        prior,
        prime_codes=first[:, 64:],
        metadata=window_metadata(prior.config, metadata, 64),
        upper_level_codes=upper[:, 16:80],
        num_tokens=64,
        temperature=0.99,
        generator=gen,
    )
    assert torch.equal(out, torch.cat([first, second[:, 192:]], dim=1))
    # and conditioning on the wrong slice changes the result
    gen = torch.Generator().manual_seed(7)
    wrong = sample_prior(
        prior, metadata=metadata, upper_level_codes=upper[:, 16:80], num_tokens=256, temperature=0.99, generator=gen
    )
    assert not torch.equal(wrong, first)


def test_sample_level_errors(converted):
    prior, _ = converted("upsampler_level_1")
    with pytest.raises(JukeboxInputError, match="pass upper_codes"):
        sample_level(prior, None, 64)
    with pytest.raises(JukeboxInputError, match="covering 40 tokens of level 1"):
        sample_level(prior, None, 64, upper_codes=torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(JukeboxInputError, match="hop_fraction must lie in"):
        sample_level(prior, None, 64, upper_codes=torch.zeros(1, 16, dtype=torch.long), hop_fraction=0.0)


def test_sampling_benchmark_runs_at_tiny_scale(capsys, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampling.py"
    spec = importlib.util.spec_from_file_location("bench_sampling", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "results.jsonl"
    assert (
        bench.main(
            [
                "--device",
                "cpu",
                "--preset",
                "tiny",
                "--priors",
                "top",
                "upsampler",
                "--tokens",
                "4",
                "--warmup",
                "1",
                "--position",
                "20",
                "--threads",
                "1",
                "--bandwidth-mb",
                "32",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| prior | width x layers | position | tokens/s |" in out
    import json

    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["prior"] for r in rows] == ["top", "upsampler"]
    for row in rows:
        assert row["benchmark"] == "sampling" and row["decode_tokens_per_s"] > 0
        assert row["weight_bytes_per_step"] > 0 and 0 < row["fraction_of_roofline"]
