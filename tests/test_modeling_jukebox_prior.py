"""JukeboxPrior against the original implementation's outputs (tests/fixtures/<prior>/golden.safetensors)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from safetensors.torch import load_file

from conftest import PRIOR_FIXTURES as PRIORS
from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.conversion.prior import load_prior_checkpoint
from hf_jukebox_mir.models.configuration_jukebox_prior import JukeboxPriorConfig
from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxAttention, JukeboxPrior, JukeboxPriorCache


def assert_close(ours: torch.Tensor, ref: torch.Tensor, name: str = ""):
    """The fixture README's tolerance: max |ours - ref| <= 1e-4 * max(1, max |ref|)."""
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= tol, f"{name}: max abs diff {diff:.3e} > tolerance {tol:.3e}"


def _forward(model, golden, **kw):
    with torch.no_grad():
        return model(golden["z"], metadata=golden["y"], upper_level_codes=golden.get("z_cond_0"), **kw)


@pytest.mark.parametrize("name", list(PRIORS))
def test_parity_with_original(converted, name):
    model, golden = converted(name)
    with torch.no_grad():
        cond = model.get_conditioning(golden["y"], golden.get("z_cond_0"), batch_size=2)
    assert_close(cond.x_cond, golden["x_cond"], "x_cond")
    assert_close(cond.y_cond, golden["y_cond"], "y_cond")
    out = _forward(model, golden, labels=golden["z"], output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    for i in range(1, model.config.num_hidden_layers + 1):
        assert_close(out.hidden_states[i], golden[f"hidden_state_{i}"], f"hidden_state_{i}")
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1])
    assert_close(out.logits[:, :16], golden["logits_first16"], "logits_first16")
    assert_close(out.logits[:, -16:], golden["logits_last16"], "logits_last16")
    assert torch.equal(out.logits.argmax(-1), golden["logits_argmax"])
    assert_close(out.loss.reshape(1), golden["loss"], "loss")


def test_jukemir_path_prior_part(fixtures_dir, converted):
    """top codes -> prior with the JukeMIR conditioning -> mean over time of every block (also truncated)."""
    golden = load_file(fixtures_dir / "prior_5b_top" / "jukemir_golden.safetensors")
    model, _ = converted("prior_5b_top")
    metadata = model.build_metadata(batch_size=2)  # unknown artist/genre, 62 s, offset 0, one window
    assert torch.equal(metadata, golden["y"])
    with torch.no_grad():
        out = model(golden["top_codes"], metadata=metadata, output_hidden_states=True)
    assert_close(out.last_hidden_state, golden["final_acts"], "final_acts")
    depth = model.config.num_hidden_layers
    for i in range(1, depth + 1):
        assert_close(out.hidden_states[i].mean(1), golden[f"meanpool_layer_{i}"], f"meanpool_layer_{i}")
    for layers in (1, 3):
        short = load_prior_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", num_layers=layers)
        assert len(short.layers) == layers
        with torch.no_grad():
            h = short(golden["top_codes"], metadata=metadata).last_hidden_state
        assert_close(h.mean(1), golden[f"meanpool_layer_{layers}"], f"truncated to {layers}")


@pytest.mark.parametrize("name", list(PRIORS))
def test_incremental_equals_full(converted, name):
    model, golden = converted(name)
    full = _forward(model, golden).logits
    length = golden["z"].shape[1]
    for chunks in ([length], [1, 5, 16, 3], [1] * 20):
        cache = JukeboxPriorCache(len(model.layers))
        outs, pos = [], 0
        sizes = list(chunks)
        while pos < length:
            c = min(sizes.pop(0) if sizes else 37, length - pos)
            with torch.no_grad():
                outs.append(
                    model(
                        golden["z"][:, pos : pos + c],
                        metadata=golden["y"],
                        upper_level_codes=golden.get("z_cond_0"),
                        cache=cache,
                    ).logits
                )
            pos += c
        assert cache.get_seq_length() == full.shape[1]
        assert_close(torch.cat(outs, 1), full, f"chunks {chunks[:4]}")


def test_cache_keeps_only_needed_keys(converted):
    model, golden = converted("prior_5b_top")  # 6 layers: row, column, previous_row, ...
    cache = JukeboxPriorCache(len(model.layers))
    with torch.no_grad():
        model(golden["z"], metadata=golden["y"], cache=cache)
    blk = model.config.block_length
    sizes = {model.layers[i].layer_type: cache.keys[i].shape[2] for i in range(3)}
    assert sizes == {"row": 0, "column": golden["z"].shape[1], "previous_row": blk}


@pytest.mark.parametrize("name", ["prior_5b_top", "upsampler_level_1", "prior_1b_lyrics_top", "prior_5b_lyrics_top"])
def test_batched_equals_one_by_one(converted, name):
    model, golden = converted(name)
    both = _forward(model, golden, output_hidden_states=True)
    for b in range(2):
        with torch.no_grad():
            one = model(
                golden["z"][b : b + 1],
                metadata=golden["y"][b : b + 1],
                upper_level_codes=None if "z_cond_0" not in golden else golden["z_cond_0"][b : b + 1],
                output_hidden_states=True,
            )
        assert_close(one.logits[0], both.logits[b], "logits")
        assert_close(one.hidden_states[-1][0], both.hidden_states[-1][b], "last hidden")


def test_shorter_inputs_are_prefixes(converted):
    model, golden = converted("prior_5b_top")
    full = _forward(model, golden, output_hidden_states=True)
    for length in (1, 7, 16, 100):
        with torch.no_grad():
            part = model(golden["z"][:, :length], metadata=golden["y"], output_hidden_states=True)
        assert part.logits.shape[1] == length
        assert_close(part.hidden_states[3], full.hidden_states[3][:, :length], f"length {length}")


@pytest.mark.parametrize("name", list(PRIORS))
def test_bfloat16_close_to_float32(converted, name):
    model, golden = converted(name)
    ref = _forward(model, golden, output_hidden_states=True)
    bf16 = JukeboxPrior(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()
    out = _forward(bf16, golden, output_hidden_states=True)
    assert out.last_hidden_state.dtype == torch.bfloat16
    for i in range(1, len(ref.hidden_states)):
        rel = (out.hidden_states[i].float() - ref.hidden_states[i]).norm() / ref.hidden_states[i].norm()
        assert rel < 3e-2, f"block {i}: relative error {rel:.3e}"
    agree = (out.logits.float().argmax(-1) == ref.logits.argmax(-1)).float().mean()
    assert agree > 0.9, f"argmax agreement {agree:.3f}"  # random-weight logits are close: near-ties flip


@pytest.mark.parametrize("layer_type", ["row", "column", "previous_row", "dense", "prime"])
def test_factorized_patterns_match_dense_mask_reference(layer_type):
    """The reshaped-block SDPA path equals a plain masked softmax over the named pattern."""
    torch.manual_seed(0)
    heads, dim, blk, length = 2, 8, 4, 19  # length not a multiple of the block length
    attn = JukeboxAttention(heads * dim * 2, heads * dim, heads, layer_type, blk, prime_attention_length=8)
    qkv = torch.randn(2, length, 3 * heads * dim)  # a fused projection, batch 2
    q, k, v = attn.split_qkv(qkv)  # (B, H, T, D)
    ours = attn.full_attention(qkv.clone()).view(2, length, heads, dim).transpose(1, 2)
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    visible = attn.visible_mask(torch.arange(length), torch.arange(length))
    scores = (q @ k.transpose(-1, -2)) / dim**0.5
    weights = scores.masked_fill(~visible, float("-inf")).softmax(-1).nan_to_num(0.0)
    ref = weights @ v
    if layer_type == "previous_row":  # block 0 attends to zeros in the original: output 0
        ref[:, :, (i[:, 0] // blk) == 0] = 0.0
    assert torch.allclose(ours, ref, atol=1e-5)
    assert visible[j[0] > i[:, 0]].sum() == 0 if layer_type != "previous_row" else True


def test_layer_truncation_from_saved_folder(tmp_path, fixtures_dir, converted, caplog):
    model, golden = converted("prior_5b_top")
    model.save_pretrained(tmp_path / "full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            short, info = JukeboxPrior.from_pretrained(tmp_path / "full", num_hidden_layers=2, output_loading_info=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert len(short.layers) == 2 and short.config.num_hidden_layers == 2
    assert len(short.config.attention_patterns) == 6  # the checkpoint's layers stay named
    full = _forward(model, golden, output_hidden_states=True)
    with torch.no_grad():
        part = short.eval()(golden["z"], metadata=golden["y"])
    assert torch.equal(part.last_hidden_state, full.hidden_states[2])


def test_truncated_load_reads_only_kept_layers(tmp_path, converted, monkeypatch):
    import safetensors

    model, _ = converted("prior_5b_top")
    model.save_pretrained(tmp_path / "full")
    read = []
    original = safetensors.safe_open

    class Recorder:
        def __init__(self, *a, **k):
            self._f = original(*a, **k)

        def __enter__(self):
            self._f.__enter__()
            return self

        def __exit__(self, *a):
            return self._f.__exit__(*a)

        def get_tensor(self, name):
            read.append(name)
            return self._f.get_tensor(name)

        def get_slice(self, name):  # lazy: record only when the data is materialised
            inner = self._f.get_slice(name)

            class Slice:
                def __getitem__(self, item):
                    read.append(name)
                    return inner[item]

                def __getattr__(self, attr):
                    return getattr(inner, attr)

            return Slice()

        def __getattr__(self, item):
            return getattr(self._f, item)

    monkeypatch.setattr(safetensors, "safe_open", Recorder)
    import transformers.modeling_utils as mu

    if hasattr(mu, "safe_open"):
        monkeypatch.setattr(mu, "safe_open", Recorder)
    JukeboxPrior.from_pretrained(tmp_path / "full", num_hidden_layers=2)
    assert read, "no tensor reads recorded"
    assert not [k for k in read if k.startswith(("layers.2.", "layers.3.", "layers.4.", "layers.5."))]


def test_misuse_errors(converted):
    model, golden = converted("prior_5b_top")
    z, y = golden["z"], golden["y"]
    with pytest.raises(JukeboxInputError, match=r"input_ids holds codes in \[.*\] but must lie in \[0, 2047\]"):
        model(z + 2048, metadata=y)
    with pytest.raises(JukeboxInputError, match="input_ids must be an integer tensor of VQ-VAE codes"):
        model(z.float(), metadata=y)
    with pytest.raises(JukeboxInputError, match=r"input_ids has 257 tokens but this prior's context holds at most 256"):
        model(torch.zeros(1, 257, dtype=torch.long), metadata=y[:1])
    with pytest.raises(JukeboxInputError, match=r"metadata has width 8 but this prior expects 9"):
        model(z, metadata=y[:, :8])
    with pytest.raises(JukeboxInputError, match="metadata is required"):
        model(z)
    bad = y.clone()
    bad[:, 0] = 44100  # 1 s: below the 5b prior's 60 s minimum
    with pytest.raises(JukeboxInputError, match=r"total_length \(metadata\[:, 0\]\) must lie in \[2646000, 26460000\)"):
        model(z, metadata=bad)
    up, g = converted("upsampler_level_1")
    with pytest.raises(JukeboxInputError, match="needs upper_level_codes"):
        up(g["z"], metadata=g["y"])
    with pytest.raises(JukeboxInputError, match=r"input_ids must have shape \(batch, tokens\)"):
        model(z[0], metadata=y)


def test_build_metadata_defaults_and_errors(converted):
    model, _ = converted("prior_5b_top")
    row = model.build_metadata()[0].tolist()
    assert row[:4] == [2734080, 0, 32768, 0] and row[4:] == [0, -1, -1, -1, -1]
    with pytest.raises(JukeboxInputError, match="at most 5 genre ids"):
        model.build_metadata(genre_ids=[1, 2, 3, 4, 5, 6])


def test_config_round_trip_and_presets(tmp_path):
    config = JukeboxPriorConfig.from_preset("prior_1b_lyrics")
    assert config.prime_attention_length == 448 and config.max_seq_length == 6528 and config.block_length == 102
    assert [d for d, t in enumerate(config.attention_patterns) if t == "prime"] == [15, 31, 63]
    assert [d for d, t in enumerate(config.attention_patterns) if t == "dense"] == [47]
    lyrics = JukeboxPriorConfig.from_preset("prior_5b_lyrics")
    assert [d for d, t in enumerate(lyrics.attention_patterns) if t == "cross"] == [18, 28, 38, 48, 58, 68, 78]
    config.save_pretrained(tmp_path)
    again = JukeboxPriorConfig.from_pretrained(tmp_path)
    assert again.attention_patterns == config.attention_patterns and again.lyrics_mode == "single_sequence"
    short = JukeboxPriorConfig.from_preset("prior_5b", num_hidden_layers=36)
    assert short.num_hidden_layers == 36 and len(short.attention_patterns) == 72


def test_config_validation_errors():
    from hf_jukebox_mir import JukeboxConfigError

    with pytest.raises(JukeboxConfigError, match=r"JukeboxPriorConfig.level=5 is invalid: expected 0 \(bottom\)"):
        JukeboxPriorConfig(level=5)
    with pytest.raises(JukeboxConfigError, match=r"attention_patterns\[1\]='diagonal' is invalid"):
        JukeboxPriorConfig(num_hidden_layers=2, attention_patterns=["row", "diagonal"])
    with pytest.raises(JukeboxConfigError, match="Unknown prior preset 'prior_9b'"):
        JukeboxPriorConfig.from_preset("prior_9b")
    with pytest.raises(
        JukeboxConfigError, match=r"num_hidden_layers=80 is invalid: expected at most len\(attention_patterns\) = 72"
    ):
        JukeboxPriorConfig(num_hidden_layers=80, attention_patterns=["row"] * 72)


def test_logits_to_keep_matches_full_logits(converted):
    model, golden = converted("upsampler_level_1")
    full = _forward(model, golden).logits
    last = _forward(model, golden, logits_to_keep=3).logits
    assert last.shape[1] == 3
    assert torch.allclose(last, full[:, -3:], atol=1e-5)
    with pytest.raises(JukeboxInputError, match="labels need the logits of every position"):
        _forward(model, golden, logits_to_keep=1, labels=golden["z"])


def test_inference_path_equals_autograd_path_and_trains(converted):
    """Without autograd the blocks add and gate in place; with it they must not (and must train)."""
    model, golden = converted("prior_5b_top")
    with torch.inference_mode():
        frozen = _forward(model, golden, output_hidden_states=True)
    try:
        graded = model(golden["z"], metadata=golden["y"], output_hidden_states=True, labels=golden["z"])
        graded.loss.backward()
        grads = [p.grad for p in model.layers[0].mlp.parameters()]
    finally:
        model.zero_grad(set_to_none=True)  # the converted model is shared by the session
    for a, b in zip(frozen.hidden_states, graded.hidden_states):
        assert torch.equal(a, b.detach())
    assert torch.equal(frozen.logits, graded.logits.detach())
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_forward_hooks_see_activations_that_later_blocks_do_not_overwrite(converted):
    """No block writes into a tensor that a hook (or a caller) may hold: the JukeMIR way of grabbing activations
    with hooks keeps working, with and without output_hidden_states."""
    model, golden = converted("prior_5b_top")
    with torch.inference_mode():
        reference = _forward(model, golden, output_hidden_states=True)
        lean = _forward(model, golden)  # only the last state asked for
    assert torch.equal(lean.last_hidden_state, reference.last_hidden_state)
    captured = {}

    def keep(name):
        return lambda module, args, output: captured.__setitem__(name, output)

    handles = [model.layers[i].register_forward_hook(keep(f"block{i}")) for i in range(len(model.layers))]
    handles.append(model.layers[0].mlp.fc_in.register_forward_hook(keep("fc_in0")))
    try:
        with torch.inference_mode():
            _forward(model, golden)
    finally:
        for handle in handles:
            handle.remove()
    for i in range(len(model.layers)):
        assert torch.equal(captured[f"block{i}"], reference.hidden_states[i + 1]), f"block {i}"
    block = model.layers[0]
    with torch.inference_mode():
        attn = block.attn(block.input_layernorm(reference.hidden_states[0]))
        fc_in = block.mlp.fc_in(block.post_attention_layernorm(reference.hidden_states[0] + attn))
    assert torch.equal(captured["fc_in0"], fc_in)  # not gated in place afterwards


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layer_norm_is_the_float32_layer_norm(dtype):
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxLayerNorm

    torch.manual_seed(0)
    norm = JukeboxLayerNorm(256)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    norm = norm.to(dtype)
    x = (torch.randn(2, 512, 256) * 3 + 0.5).to(dtype)
    upcast = torch.nn.functional.layer_norm(x.float(), (256,), norm.weight.float(), norm.bias.float(), norm.eps)
    out = norm(x)
    assert out.dtype == dtype
    # PyTorch's half kernels accumulate in float32: at most one rounding step from the float32 result
    ulp = torch.finfo(dtype).eps * upcast.abs().clamp_min(1.0)
    assert ((out.float() - upcast).abs() <= ulp).all()


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """The whole prior compiles (one graph break at the input-value check) and stays exact across batch sizes."""
    config = JukeboxPriorConfig.from_preset(
        "prior_5b", hidden_size=32, num_hidden_layers=3, num_attention_heads=2, n_ctx=64, blocks=8
    )
    model = JukeboxPrior(config).eval()
    compiled = torch.compile(model)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in (1, 2, 4):  # the second size recompiles with a dynamic batch
            codes = torch.randint(0, 2048, (batch, 64), generator=generator)
            metadata = model.build_metadata().expand(batch, -1)
            eager = model(codes, metadata=metadata, output_hidden_states=True)
            fast = compiled(codes, metadata=metadata, output_hidden_states=True)
            assert fast.logits.shape == (batch, 64, 2048)
            for a, b in zip(fast.hidden_states, eager.hidden_states):
                assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", list(PRIORS))
def test_lean_forward_features_equal_forward_bit_for_bit(converted, name):
    """The lean inference path (in-place sums, no logits) gives exactly `forward(...).last_hidden_state`, and a
    forward hook on a block does not run there (documented: hooks are observed through `forward`)."""
    model, golden = converted(name)
    reference = _forward(model, golden).last_hidden_state
    seen = []
    handle = model.layers[0].register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        lean = model.forward_features(golden["z"], metadata=golden["y"], upper_level_codes=golden.get("z_cond_0"))
    finally:
        handle.remove()
    assert torch.equal(lean, reference)
    assert seen == [] and not lean.requires_grad
