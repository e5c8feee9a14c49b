"""A folder converted by the previous release (tests/fixtures/previous_release) loads and gives identical outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel

import hf_jukebox_mir
from conftest import FIXTURES, run_without_package

FOLDER = FIXTURES / "previous_release" / "jukebox_mir"
REFERENCE = FIXTURES / "previous_release" / "reference_outputs.safetensors"


@pytest.fixture(scope="module")
def reference():
    return load_file(REFERENCE)


def test_current_package_loads_the_folder_with_identical_outputs(reference, one_thread):
    # the folder's dtype, as the previous release computed (on a CPU with slow bfloat16 matmuls `from_pretrained`
    # would otherwise pick float32 compute)
    model = AutoModel.from_pretrained(FOLDER, dtype=torch.bfloat16).eval()
    assert type(model) is hf_jukebox_mir.JukeboxMIRModel
    audio = reference["input_audio"]
    with torch.no_grad():
        out = model(audio[:, :16384], output_hidden_states=True)
    assert torch.equal(out.audio_codes, reference["audio_codes"])
    assert torch.equal(out.last_hidden_state, reference["last_hidden_state"])
    assert torch.equal(out.pooler_output, reference["pooler_output"])
    assert len(out.hidden_states) == 2
    for i, hidden in enumerate(out.hidden_states):
        assert torch.equal(hidden, reference[f"hidden_states_{i}"]), i
    fe = AutoFeatureExtractor.from_pretrained(FOLDER)
    with torch.no_grad():
        windows = model(**fe(audio[0].numpy(), sampling_rate=44100, return_tensors="pt"))
    assert torch.equal(windows.pooler_output, reference["fe_pooler_output"])


def test_current_pipeline_gives_identical_features(reference, one_thread):
    pipe = hf_jukebox_mir.jukebox_feature_extraction_pipeline(FOLDER, dtype=torch.bfloat16)
    features = pipe({"array": reference["input_audio"][0].numpy(), "sampling_rate": 44100})
    np.testing.assert_array_equal(np.asarray(features), reference["pipeline_output"].numpy())


def test_trust_remote_code_without_the_package(tmp_path):
    script = """
        import numpy as np
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, pipeline
        ref = load_file(sys.argv[1])
        model = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(ref["input_audio"][:, :16384], output_hidden_states=True)
        assert torch.equal(out.audio_codes, ref["audio_codes"])
        assert torch.equal(out.pooler_output, ref["pooler_output"])
        for i, hidden in enumerate(out.hidden_states):
            assert torch.equal(hidden, ref[f"hidden_states_{i}"]), i
        pipe = pipeline("feature-extraction", model=sys.argv[2], trust_remote_code=True)
        features = pipe({"array": ref["input_audio"][0].numpy(), "sampling_rate": 44100})
        np.testing.assert_array_equal(np.asarray(features), ref["pipeline_output"].numpy())
        print("ok")
        """
    result = run_without_package(script, REFERENCE, FOLDER.resolve(), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
