"""Tests of `pipeline("feature-extraction")` on Jukebox MIR models: parity, every input kind, windows, loading routes.

The model is the tiny parity fixture (VQ-VAE + 6-block top prior, width 64, 32768-sample windows) converted
once per session by `convert_mir_model`. Tests that do not need the golden audio use a feature extractor with
4096-sample windows so that each forward pass stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from safetensors.numpy import load_file

import hf_jukebox_mir
from conftest import run_without_package
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from hf_jukebox_mir.models.pipeline_jukebox import (
    CUSTOM_PIPELINE_ENTRY,
    JukeboxFeatureExtractionPipeline,
    aggregate_pooled,
    bin_frames,
    concat_frames,
    jukebox_feature_extraction_pipeline,
    resolve_layers,
)

hf_jukebox_mir.register()  # the Auto classes (AutoModel/AutoFeatureExtractor on our folders)

SR = 44100
SMALL = 4096  # window of the cheap pipeline
_MIR_FOLDER: dict[str, Path] = {}


def build_mir_folder(tmp_path_factory, fixtures_dir: Path) -> Path:
    """The converted parity MIR folder, built once per session (also used by test_extraction.py)."""
    if "dir" not in _MIR_FOLDER:
        from hf_jukebox_mir.conversion.mir import convert_mir_model

        out = tmp_path_factory.mktemp("jukebox_mir") / "mir"
        convert_mir_model(
            fixtures_dir / "vqvae" / "vqvae.pth.tar", fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", out
        )
        _MIR_FOLDER["dir"] = out
    return _MIR_FOLDER["dir"]


def _tolerance(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    tone = 0.4 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
    return (tone + 0.1 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def mir_dir(tmp_path_factory, fixtures_dir) -> Path:
    return build_mir_folder(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(str(fixtures_dir / "prior_5b_top" / "jukemir_golden.safetensors"))


@pytest.fixture(scope="module")
def pipe(mir_dir):
    """Route (b): the task name, the folder and `pipeline_class=` (package imported, no trust_remote_code)."""
    from transformers import pipeline

    return pipeline(
        "feature-extraction", model=str(mir_dir), pipeline_class=JukeboxFeatureExtractionPipeline, device="cpu"
    )


@pytest.fixture(scope="module")
def small(pipe):
    """Route (c): model and feature extractor objects (4096-sample windows)."""

    return jukebox_feature_extraction_pipeline(
        pipe.model, feature_extractor=JukeboxFeatureExtractor(window_length=SMALL), device="cpu"
    )


def _reference(model, waveform: np.ndarray, layers=(6,), window_length: int = SMALL):
    """Per-window mean over real frames by hand: feature extractor -> model -> masked mean. (windows, L, D)."""
    fe = JukeboxFeatureExtractor(window_length=window_length)
    feats = fe(waveform, sampling_rate=SR, return_tensors="pt", return_window_info=False)
    with torch.no_grad():
        out = model(**feats, output_hidden_states=True)
    mask = out.frame_mask[:, None, :, None].float()  # (W, 1, T, 1)
    hidden = torch.stack([out.hidden_states[i] for i in layers], 1)  # (W, L, T, D)
    return ((hidden * mask).sum(2) / mask.sum(2)).numpy(), out


# ------------------------------------------------------------------------------------------ folder + routes


def test_converted_folder_carries_the_pipeline(mir_dir):
    config = json.loads((mir_dir / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINE_ENTRY
    assert (mir_dir / "pipeline_jukebox.py").is_file() and (mir_dir / "errors.py").is_file()
    from transformers import AutoConfig

    loaded = AutoConfig.from_pretrained(mir_dir)
    # the config is the same object with and without the package: the entry is kept and saved again
    assert loaded.custom_pipelines == CUSTOM_PIPELINE_ENTRY
    assert loaded.to_dict()["custom_pipelines"] == CUSTOM_PIPELINE_ENTRY


def test_the_helper_and_pipeline_class_give_the_same_pipeline(pipe, mir_dir):
    helper = jukebox_feature_extraction_pipeline(str(mir_dir), device="cpu")
    assert type(helper) is type(pipe) is JukeboxFeatureExtractionPipeline
    audio = _signal(SMALL * 2)
    np.testing.assert_array_equal(
        helper({"array": audio, "sampling_rate": SR}), pipe({"array": audio, "sampling_rate": SR})
    )


def test_the_plain_task_without_trust_remote_code_is_transformers_refusal(mir_dir):
    # the package does not re-route transformers' task: a folder with custom code needs trust_remote_code
    # (or pipeline_class=), exactly as without the package
    from transformers import pipeline

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("feature-extraction", model=str(mir_dir), device="cpu")


def test_pipeline_save_pretrained_writes_a_remote_code_folder(small, tmp_path):
    small.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINE_ENTRY
    assert (tmp_path / "saved" / "pipeline_jukebox.py").is_file()
    assert json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())["window_length"] == SMALL


def test_golden_meanpool_every_layer_from_wav_files(pipe, golden, tmp_path):
    assert type(pipe) is JukeboxFeatureExtractionPipeline
    paths = []
    for i, clip in enumerate(golden["input_audio"][..., 0]):  # (2, 32768)
        paths.append(str(tmp_path / f"clip{i}.wav"))
        sf.write(paths[-1], clip, SR, subtype="FLOAT")
    out = pipe(paths, layers="all", batch_size=2)
    assert isinstance(out, list) and [o.shape for o in out] == [(6, 64), (6, 64)]
    assert all(o.dtype == np.float32 for o in out)
    for i in range(1, 7):
        ref = golden[f"meanpool_layer_{i}"]
        ours = np.stack([o[i - 1] for o in out])
        assert np.abs(ours - ref).max() <= _tolerance(ref), f"layer {i}"


_TEXT_PIPELINE = """
    import json
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, pipeline
    from transformers.pipelines import PIPELINE_REGISTRY

    def registration():
        entry = PIPELINE_REGISTRY.supported_tasks["feature-extraction"]
        return {key: repr(value) for key, value in sorted(entry.items())}

    folder = sys.argv[1]
    before = registration()
    if sys.argv[2] == "import":
        import hf_jukebox_mir
        hf_jukebox_mir.register()
    after = registration()
    text = pipeline("feature-extraction", model=folder, device="cpu")
    try:
        unnamed = BertModel(BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
        pipeline("feature-extraction", model=unnamed, device="cpu")
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"before": before, "after": after, "class": f"{type(text).__module__}.{type(text).__name__}",
                      "out": np.asarray(text("hello music")).tolist(), "error": error}))
    """


def test_import_leaves_transformers_text_feature_extraction_alone(tmp_path):
    """transformers' "feature-extraction" registration and a text model's pipeline are the same with and
    without `import hf_jukebox_mir` (fresh interpreters, a tiny random BERT saved locally, offline)."""
    import os
    import subprocess
    import sys
    import textwrap

    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nmusic\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    model = BertModel(
        BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).eval()
    folder = tmp_path / "bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = {}
    for mode in ("plain", "import"):
        script = "import sys\n" + textwrap.dedent(_TEXT_PIPELINE)
        done = subprocess.run(
            [sys.executable, "-c", script, str(folder), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    plain, imported = runs["plain"], runs["import"]
    assert imported["before"] == imported["after"] == plain["before"] == plain["after"]
    assert plain["class"] == imported["class"] == "transformers.pipelines.feature_extraction.FeatureExtractionPipeline"
    assert plain["out"] == imported["out"]
    assert plain["error"] == imported["error"] and "Impossible to guess which tokenizer" in plain["error"]


_REMOTE_SCRIPT = """
    import json

    from transformers import pipeline

    pipe = pipeline("feature-extraction", model=sys.argv[1], trust_remote_code=True, device="cpu")
    out = pipe(sys.argv[2:], layers="all")
    print(json.dumps({
        "cls": type(pipe).__name__, "module": type(pipe).__module__, "model_module": type(pipe.model).__module__,
        "out": [o.tolist() for o in out], "loaded": sorted(m for m in sys.modules if m.startswith("hf_jukebox_mir")),
    }))
    """


def test_trust_remote_code_without_the_package(mir_dir, golden, tmp_path):
    """Route (b): a fresh process that cannot import hf_jukebox_mir runs the folder's own pipeline code."""
    path = str(tmp_path / "clip1.wav")
    sf.write(path, golden["input_audio"][1, :, 0], SR, subtype="FLOAT")
    run = run_without_package(_REMOTE_SCRIPT, mir_dir, path, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["cls"] == "JukeboxFeatureExtractionPipeline"
    assert result["module"].startswith("transformers_modules.")
    assert result["model_module"].startswith("transformers_modules.")
    assert result["loaded"] == []
    out = np.asarray(result["out"], dtype=np.float32)  # (1, 6, 64)
    for i in range(1, 7):
        ref = golden[f"meanpool_layer_{i}"][1:]
        assert np.abs(out[:, i - 1] - ref).max() <= _tolerance(ref), f"layer {i}"


# ---------------------------------------------------------------------------------------------- input kinds


@pytest.fixture(scope="module")
def kinds(small, tmp_path_factory):
    """Every input kind of one clip (and its stereo / 22.05 kHz variants), run in ONE batched call."""
    folder = tmp_path_factory.mktemp("kinds")
    x = _signal(SMALL)
    wav = folder / "x.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    data = wav.read_bytes()
    y22 = _signal(SMALL // 2, seed=3)  # 22.05 kHz source
    wav22 = folder / "y22.wav"
    sf.write(wav22, y22, 22050, subtype="FLOAT")
    y44 = soxr.resample(y22, 22050, SR, quality="HQ").astype(np.float32)
    d = np.float32(0.3) * _signal(SMALL, seed=7)
    named = {
        "path": str(wav),
        "pathlib": wav,
        "bytes": data,
        "array": x,
        "tensor": torch.from_numpy(x),
        "dict_array": {"array": x, "sampling_rate": SR},
        "dict_path": {"path": str(wav), "bytes": None},
        "dict_bytes": {"path": None, "bytes": data},
        "stereo": np.stack([x + d, x - d]),  # channel mean == x
        "stereo_frames_last": np.stack([x + d, x - d]).T.copy(),
        "file_22k": str(wav22),
        "dict_22k": {"array": y22, "sampling_rate": 22050},
        "resampled_by_hand": y44,
        "misdeclared_rate": {"array": y22, "sampling_rate": SR},
    }
    out = small(list(named.values()), sampling_rate=SR, batch_size=len(named))
    ref, _ = _reference(small.model, x)
    return dict(zip(named, out)), ref[0, 0]


@pytest.mark.parametrize(
    "kind", ["path", "pathlib", "bytes", "array", "tensor", "dict_array", "dict_path", "dict_bytes"]
)
def test_every_input_kind_gives_the_reference(kinds, kind):
    outputs, ref = kinds
    assert outputs[kind].shape == (64,)
    np.testing.assert_allclose(outputs[kind], ref, atol=_tolerance(ref))


def test_stereo_is_downmixed_to_the_channel_mean(kinds):
    outputs, ref = kinds
    np.testing.assert_allclose(outputs["stereo"], ref, atol=_tolerance(ref))
    np.testing.assert_allclose(outputs["stereo_frames_last"], ref, atol=_tolerance(ref))


def test_22khz_input_is_resampled_with_soxr(kinds):
    outputs, _ = kinds
    expected = outputs["resampled_by_hand"]
    np.testing.assert_allclose(outputs["file_22k"], expected, atol=_tolerance(expected))
    np.testing.assert_allclose(outputs["dict_22k"], expected, atol=_tolerance(expected))
    # the rate matters: the same samples declared as 44.1 kHz give something else
    assert np.abs(outputs["misdeclared_rate"] - expected).max() > 100 * _tolerance(expected)


# --------------------------------------------------------------------------------------- short / long clips


def test_short_clip_pools_only_real_frames(small):
    x = _signal(1000, seed=1)  # 7 top-level frames, padded to one 4096-sample window
    pooled = small(x, sampling_rate=SR, layers=[1, 6])
    frames = small(x, sampling_rate=SR, layers=[1, 6], pooling="none")
    assert pooled.shape == (2, 64) and frames.shape == (2, 7, 64)
    np.testing.assert_allclose(pooled, frames.mean(1), atol=1e-5)
    fe = JukeboxFeatureExtractor(window_length=SMALL)
    feats = fe(x, sampling_rate=SR, return_tensors="pt", return_window_info=False)
    with torch.no_grad():
        out = small.model(**feats, output_hidden_states=True)
    assert out.frame_mask.sum().item() == 7
    expected = torch.stack([out.hidden_states[1][0, :7], out.hidden_states[6][0, :7]]).numpy()
    np.testing.assert_allclose(frames, expected, atol=1e-5)


@pytest.fixture(scope="module")
def long_clip(small):
    """2 full windows + 1500 samples, frame-level per window, computed once through the pipeline's steps."""
    x = _signal(2 * SMALL + 1500, seed=2)
    items = list(small.preprocess(x, sampling_rate=SR, pooling="none"))
    outs = [small.forward(item, layers=[2, 6], pooling="none") for item in items]
    return x, outs


def test_long_clip_frames_per_window_and_concatenated(small, long_clip):
    x, outs = long_clip
    per_window = small.postprocess(outs, layers=[2, 6], pooling="none", window_aggregation="none")
    assert [w.shape for w in per_window] == [(2, 32, 64)] * 2 + [(2, 11, 64)]  # 1500 // 128 = 11 real frames
    joined = small.postprocess(outs, layers=[2, 6], pooling="none")  # default: concat
    assert joined.shape == (2, 2 * 32 + 11, 64)
    np.testing.assert_array_equal(joined, np.concatenate(per_window, axis=1))
    binned = small.postprocess(outs, layers=[2, 6], pooling="none", frame_rate=100.0)[1]
    rate = small.model.config.frame_rate  # 344.53 Hz
    edges = np.floor(np.arange(joined.shape[1]) * 100.0 / rate + 1e-9).astype(int)
    expected = np.stack([joined[1][edges == b].mean(0) for b in range(edges.max() + 1)])
    assert binned.shape == expected.shape == (edges.max() + 1, 64)
    np.testing.assert_allclose(binned, expected, atol=1e-5)
    # the same through a normal call (frame_rate alone implies frame-level)
    np.testing.assert_allclose(small(x, sampling_rate=SR, layers=6, frame_rate=100.0, batch_size=4), binned, atol=1e-5)


def test_long_clip_window_aggregation_against_manual(small, long_clip):
    x, outs = long_clip
    frames = small.postprocess(outs, layers=[2, 6], pooling="none", window_aggregation="none")
    counts = np.array([f.shape[1] for f in frames])
    per_window = small(x, sampling_rate=SR, layers=[2, 6], window_aggregation="none", batch_size=4)
    assert per_window.shape == (3, 2, 64)
    np.testing.assert_allclose(per_window, np.stack([f.mean(1) for f in frames]), atol=1e-5)
    joined = small(x, sampling_rate=SR, layers=[2, 6], batch_size=4)  # default: frame-weighted mean of windows
    expected = (per_window * counts[:, None, None]).sum(0) / counts.sum()
    np.testing.assert_allclose(joined, expected, atol=1e-5)
    np.testing.assert_allclose(joined, np.concatenate(frames, axis=1).mean(1), atol=1e-5)
    assert not np.allclose(joined, per_window.mean(0), atol=1e-4)  # weighting matters (short last window)
    maxed = small(x, sampling_rate=SR, layers=[2, 6], pooling="max", batch_size=4)
    np.testing.assert_allclose(maxed, np.concatenate(frames, axis=1).max(1), atol=1e-5)


def test_batching_equals_unbatched(small):
    inputs = [_signal(SMALL + 700, seed=4), _signal(900, seed=5), _signal(SMALL, seed=6)]
    one = small(inputs, sampling_rate=SR, layers="all", batch_size=1)
    many = small(inputs, sampling_rate=SR, layers="all", batch_size=4)
    assert [o.shape for o in one] == [(6, 64)] * 3
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b, atol=1e-5)


# -------------------------------------------------------------------------------------------- options, math


def test_resolve_layers():
    assert resolve_layers(None, 36) == ([36], True)
    assert resolve_layers(12, 36) == ([12], True)
    assert resolve_layers([1, 36], 36) == ([1, 36], False)
    assert resolve_layers("all", 3) == ([1, 2, 3], False)
    assert resolve_layers(range(2, 4), 6) == ([2, 3], False)
    with pytest.raises(JukeboxInputError, match=r"Layer 40 is not available: the model has 36 blocks"):
        resolve_layers([12, 40], 36)
    with pytest.raises(JukeboxInputError, match=r"layers='last' is not supported"):
        resolve_layers("last", 36)
    with pytest.raises(JukeboxInputError, match=r"layers has duplicates"):
        resolve_layers([3, 3], 36)
    with pytest.raises(JukeboxInputError, match=r"layers must be integers, got 1.5"):
        resolve_layers([1.5], 36)


def test_bad_options_fail_before_any_audio_is_read(small):
    with pytest.raises(JukeboxInputError, match=r"Unknown option\(s\) \['layer'\]"):
        small("missing.wav", layer=3)
    with pytest.raises(JukeboxInputError, match=r"Layer 7 is not available: the model has 6 blocks"):
        small("missing.wav", layers=7)
    with pytest.raises(JukeboxInputError, match=r"pooling='median' is not supported"):
        small("missing.wav", pooling="median")
    with pytest.raises(JukeboxInputError, match=r"frame_rate=15.0 gives frame-level features and needs pooling='none'"):
        small("missing.wav", pooling="mean", frame_rate=15.0)
    with pytest.raises(
        JukeboxInputError, match=r"frame_rate=1000.0 is not supported: expected a number of Hz in \(0, 344.53\]"
    ):
        small("missing.wav", frame_rate=1000.0)
    with pytest.raises(JukeboxInputError, match=r"window_aggregation='concat' joins frames and needs pooling='none'"):
        small("missing.wav", window_aggregation="concat")
    with pytest.raises(JukeboxInputError, match=r"window_aggregation='mean' needs pooled windows"):
        small("missing.wav", pooling="none", window_aggregation="mean")
    with pytest.raises(JukeboxInputError, match=r"Audio file 'missing.wav' does not exist"):
        small("missing.wav")


def test_pipeline_needs_a_feature_extractor(small):
    with pytest.raises(JukeboxInputError, match=r"needs the model's feature extractor"):
        JukeboxFeatureExtractionPipeline(model=small.model, device="cpu")


def test_concat_frames_takes_each_frame_from_its_earliest_window():
    a = np.arange(8, dtype=np.float32).reshape(1, 8, 1)  # frames 0..7
    b = np.arange(4, 12, dtype=np.float32).reshape(1, 8, 1)  # frames 4..11 (50 % overlap)
    c = np.arange(8, 11, dtype=np.float32).reshape(1, 3, 1)  # frames 8..10 (shorter last window)
    joined = concat_frames([a, b * 10, c * 100], [0, 4, 8])
    assert joined[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 80, 90, 100, 110]
    assert concat_frames([a, b], [0, 8])[0, :, 0].tolist() == list(range(8)) + list(range(4, 12))


def test_bin_frames_and_aggregate_pooled():
    frames = np.arange(10, dtype=np.float32).reshape(1, 10, 1)
    np.testing.assert_allclose(bin_frames(frames, 10.0, 4.0)[0, :, 0], [1.0, 3.5, 6.0, 8.5])  # bins of 2.5 frames
    np.testing.assert_array_equal(bin_frames(frames, 10.0, 10.0), frames)
    pooled = np.array([[[1.0]], [[4.0]]], dtype=np.float32)  # (windows, layers, dim)
    assert aggregate_pooled(pooled, np.array([3, 1]), "mean").item() == pytest.approx(1.75)
    assert aggregate_pooled(pooled, np.array([3, 1]), "max").item() == 4.0
