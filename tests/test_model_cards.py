"""Model cards: templates, front matter (parsed back with huggingface_hub), content, probing results schema."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, metadata_load
from safetensors.torch import save_file

from hf_jukebox_mir.conversion.audit import ConversionAudit, SourceFile, WrittenFile
from hf_jukebox_mir.models.errors import JukeboxCheckpointError, JukeboxInputError
from hf_jukebox_mir.probing.reports import ProbeResults
from hf_jukebox_mir.publishing.cards import (
    BASE_TAGS,
    CARD_MARKER,
    KIND_TO_TEMPLATE,
    LICENSE_LINK,
    LICENSE_NAME,
    JukeboxModelCardData,
    JukeboxSourceFile,
    inspect_weights,
    load_probe_results,
    read_safetensors_header,
    render_model_card,
    template_path,
    validate_card_metadata,
    write_model_card,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_TEMPLATES = REPO_ROOT / "src" / "hf_jukebox_mir" / "publishing" / "card_templates"
MODEL_TYPES = {
    "vqvae": "jukebox_mir_vqvae", "prior": "jukebox_mir_prior", "mir": "jukebox_mir", "probe": "jukebox_mir_probe",
    "chain": "jukebox_mir_chain",
}  # fmt: skip
PIPELINE_TAGS = {"probe": "audio-classification", "chain": "text-to-audio"}  # others: feature-extraction
SOURCES = {  # as the converters record them (conversion.audit.SourceFile)
    "vqvae": [{"file": "5b/vqvae.pth.tar", "sha256": "1" * 64, "bytes": 10, "role": "vqvae"}],
    "prior": [{"file": "5b_lyrics/prior_level_2.pth.tar", "sha256": "2" * 64, "bytes": 20, "role": "prior_level_2"}],
    "mir": [
        {"file": "5b/vqvae.pth.tar", "sha256": "1" * 64, "bytes": 10, "role": "vqvae"},
        {"file": "5b/prior_level_2.pth.tar", "sha256": "3" * 64, "bytes": 30, "role": "prior_level_2"},
    ],
    "chain": [
        {"file": "5b/vqvae.pth.tar", "sha256": "1" * 64, "bytes": 10, "role": "vqvae"},
        {"file": "5b/prior_level_0.pth.tar", "sha256": "4" * 64, "bytes": 40, "role": "prior_level_0"},
        {"file": "5b/prior_level_1.pth.tar", "sha256": "5" * 64, "bytes": 50, "role": "prior_level_1"},
        {"file": "5b_lyrics/prior_level_2.pth.tar", "sha256": "2" * 64, "bytes": 20, "role": "prior_level_2"},
    ],
}


def write_audit(folder: Path, kind: str, **fields) -> None:
    """`conversion_audit.json` written by the code the converters use (`ConversionAudit`)."""
    values = {
        "model_class": "FakeModel",
        "source_format": "openai",
        "sources": [SourceFile(**s) for s in SOURCES[kind]],
        "key_map": {"a": "weight", "b": "bias"},
        "output_check": {"codes_equal": True, "max_abs_diff": 2.5e-6},
        "versions": {"hf-jukebox-mir": "0.1.0"},
    }
    values.update(fields)
    ConversionAudit(**values).write(folder)


def chain_config(lyrics_mode: str | None = "separate_encoder") -> dict:
    """The parts of a `jukebox_mir_chain` config.json that the card reads (shapes of the released 5b models)."""

    def prior(level, width, layers, n_ctx):
        return {"model_type": "jukebox_mir_prior", "level": level, "hidden_size": width, "num_hidden_layers": layers,
                "num_attention_heads": 8, "n_ctx": n_ctx, "hop_length": (8, 32, 128)[level], "sampling_rate": 44100,
                "lyrics_mode": None}  # fmt: skip

    return {
        "hop_fractions": [0.5, 0.5, 0.125],
        "temperatures": [0.99, 0.99, 0.99],
        "vqvae_config": {"model_type": "jukebox_mir_vqvae", "codebook_size": 2048, "sampling_rate": 44100},
        "prior_level_0_config": prior(0, 1920, 72, 8192),
        "prior_level_1_config": prior(1, 1920, 72, 8192),
        "prior_level_2_config": {**prior(2, 4800, 72, 8192), "lyrics_mode": lyrics_mode},
    }


RESULTS = {
    "model": "me/jukebox-mir-5b-layer36",
    "split": "test",
    "layer": 36,
    "results": [
        {"task": "gtzan_genre", "dataset": "gtzan_ff", "dataset_name": "GTZAN (fault-filtered)", "metric": "accuracy",
         "value": 0.797},
        {"task": "magnatagatune_tagging", "dataset": "magnatagatune",
         "metrics": {"roc_auc": 0.915, "average_precision": 0.414}},
    ],
}  # fmt: skip


def make_folder(root: Path, kind: str, *, dtype: torch.dtype = torch.float32, audit: bool = True) -> Path:
    """A tiny stand-in for a converted folder: config, safetensors, module files, audit (no real model)."""
    folder = root / f"fake-{kind}"
    folder.mkdir()
    config = {
        "model_type": MODEL_TYPES[kind],
        "auto_map": {"AutoConfig": "configuration_fake.FakeConfig", "AutoModel": "modeling_fake.FakeModel"},
        "hidden_size": 16,
        "num_hidden_layers": 3,
        "sampling_rate": 44100,
    }
    if kind == "prior":
        config.update(level=2, n_ctx=128, num_attention_heads=2)
    if kind == "probe":
        config.update(problem_type="single_label_classification", id2label={"0": "blues", "1": "rock"})
    if kind == "chain":
        del config["hidden_size"], config["num_hidden_layers"], config["sampling_rate"]
        config.update(chain_config())
    if kind == "mir":
        config["custom_pipelines"] = {
            "feature-extraction": {"impl": "pipeline_fake.FakePipeline", "pt": ["AutoModel"], "type": "audio"}
        }
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"auto_map": {"AutoFeatureExtractor": "feature_extraction_fake.FakeFE"}})
        )
        (folder / "pipeline_fake.py").write_text("from .modeling_fake import FakeModel\n")
        (folder / "feature_extraction_fake.py").write_text("import numpy\n")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_fake.py").write_text("from __future__ import annotations\n")
    (folder / "modeling_fake.py").write_text("from .configuration_fake import FakeConfig\nfrom .layers_fake import X\n")
    (folder / "layers_fake.py").write_text("X = 1\n")
    tensors = {"weight": torch.zeros(4, 3, dtype=dtype), "bias": torch.zeros(3, dtype=dtype)}
    save_file(tensors, str(folder / "model.safetensors"))
    if audit and kind in SOURCES:
        write_audit(folder, kind)
    return folder


# ---------------------------------------------------------------------------------------------------------------


def test_repo_model_cards_folder_matches_package_templates():
    root_copies = REPO_ROOT / "model_cards"
    assert sorted(p.name for p in PACKAGE_TEMPLATES.glob("*.md")) == sorted(KIND_TO_TEMPLATE.values())
    assert sorted(p.name for p in root_copies.glob("*.md")) == sorted(KIND_TO_TEMPLATE.values())
    for name in KIND_TO_TEMPLATE.values():
        assert (root_copies / name).read_bytes() == (PACKAGE_TEMPLATES / name).read_bytes(), (
            f"model_cards/{name} differs from src/hf_jukebox_mir/publishing/card_templates/{name} "
            "(the canonical copy); "
            f"run: cp src/hf_jukebox_mir/publishing/card_templates/{name} model_cards/"
        )


def test_template_path_resolves_package_data():
    for kind, name in KIND_TO_TEMPLATE.items():
        assert template_path(kind) == PACKAGE_TEMPLATES / name
    with pytest.raises(JukeboxInputError, match="Unknown card kind 'tokenizer'"):
        template_path("tokenizer")


@pytest.mark.parametrize("kind", ["vqvae", "prior", "mir", "probe", "chain"])
def test_card_front_matter_parses_and_passes_our_validation(tmp_path, kind):
    folder = make_folder(tmp_path, kind)
    readme = write_model_card(folder, repo_id="me/fake-model")
    assert readme == folder / "README.md"

    metadata = metadata_load(readme)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == PIPELINE_TAGS.get(kind, "feature-extraction")
    assert metadata["license"] == "other"
    assert metadata["license_name"] == LICENSE_NAME
    assert metadata["license_link"] == LICENSE_LINK == "https://github.com/openai/jukebox/blob/master/LICENSE"
    assert set(BASE_TAGS) <= set(metadata["tags"])
    assert "model-index" not in metadata  # no results given
    assert validate_card_metadata(metadata, kind) == []

    card = ModelCard.load(readme)
    assert card.data.pipeline_tag == metadata["pipeline_tag"]
    text = card.text
    for section in ("## Usage", "## Limitations", "## License", "## Citation"):
        assert section in text, section
    assert CARD_MARKER in text
    assert 'from_pretrained("me/fake-model", trust_remote_code=True)' in text
    assert "arXiv:2005.00341" in text and "Noncommercial Use License" in text
    if kind == "chain":  # a generative model: JukeMIR is not what it is for
        assert "music-generation" in metadata["tags"] and "Castellon" not in text
    else:
        assert "Castellon, Rodrigo and Donahue, Chris and Liang, Percy" in text and "ISMIR" in text
    assert "{{" not in text and "{%" not in text
    fences = [line for line in text.splitlines() if "```" in line]
    assert len(fences) % 2 == 0 and all(line.startswith("```") for line in fences), fences


@pytest.mark.parametrize("kind", ["vqvae", "prior", "mir", "chain"])
def test_card_provenance_lists_sources_checksums_and_version(tmp_path, kind):
    folder = make_folder(tmp_path, kind)
    text = str(render_model_card(folder))
    assert "## Provenance" in text
    assert "Converted with `hf-jukebox-mir` 0.1.0 from these files (format: openai):" in text
    for source in SOURCES[kind]:
        assert f"`{source['file']}`" in text
        assert f"`{source['sha256']}`" in text
    assert "2 tensors were converted key by key; the full key map is in" in text
    assert "| codes_equal | true |" in text and "| max_abs_diff | 2.5e-06 |" in text
    if kind != "prior":
        assert "(https://openaipublic.azureedge.net/jukebox/models/5b/vqvae.pth.tar)" in text


def test_card_without_audit_says_provenance_is_unknown(tmp_path):
    folder = make_folder(tmp_path, "vqvae", audit=False)
    text = str(render_model_card(folder))
    assert "No `conversion_audit.json` was found" in text


def test_model_index_contains_given_results(tmp_path):
    folder = make_folder(tmp_path, "mir")
    write_model_card(folder, repo_id="me/jukebox-mir-5b-layer36", results_json=RESULTS)
    metadata = metadata_load(folder / "README.md")
    (entry,) = metadata["model-index"]
    assert entry["name"] == "jukebox-mir-5b-layer36"
    by_task = {r["task"]["name"]: r for r in entry["results"]}
    assert set(by_task) == {"gtzan_genre", "magnatagatune_tagging"}
    gtzan = by_task["gtzan_genre"]
    assert gtzan["task"]["type"] == "audio-classification"
    assert gtzan["dataset"] == {"name": "GTZAN (fault-filtered)", "type": "gtzan_ff", "split": "test"}
    assert gtzan["metrics"] == [{"type": "accuracy", "value": 0.797, "name": "accuracy (layer 36)"}]
    mtt = {m["type"]: m["value"] for m in by_task["magnatagatune_tagging"]["metrics"]}
    assert mtt == {"roc_auc": 0.915, "average_precision": 0.414}
    assert sorted(metadata["metrics"]) == ["accuracy", "average_precision", "roc_auc"]

    # huggingface_hub reads it back into EvalResults
    card = ModelCard.load(folder / "README.md")
    values = sorted((r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results)
    assert values == [
        ("gtzan_ff", "accuracy", 0.797),
        ("magnatagatune", "average_precision", 0.414),
        ("magnatagatune", "roc_auc", 0.915),
    ]
    assert "| gtzan_genre | GTZAN (fault-filtered) | test | 36 | accuracy | 0.797 |" in card.text
    assert validate_card_metadata(metadata, "mir") == []


def test_results_json_file_and_probe_base_model(tmp_path):
    folder = make_folder(tmp_path, "probe")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    card = render_model_card(folder, results_json=results, repo_id="me/gtzan-probe")
    assert card.data.base_model == "me/jukebox-mir-5b-layer36"  # from the results' "model"
    text = str(card)
    assert 'pipeline("feature-extraction", model="me/jukebox-mir-5b-layer36"' in text
    assert "probe.config.id2label" in text
    assert "| labels | blues, rock |" in text
    override = render_model_card(folder, results_json=results, base_model="other/model")
    assert override.data.base_model == "other/model"


def test_base_model_only_names_hub_repos_holding_the_same_weights(tmp_path):
    assert render_model_card(make_folder(tmp_path, "vqvae")).data.base_model == "openai/jukebox-5b-lyrics"
    assert render_model_card(make_folder(tmp_path, "prior")).data.base_model == "openai/jukebox-5b-lyrics"
    # the non-lyrics 5b top prior has no Hub copy, so the MIR card names no base model
    mir = render_model_card(make_folder(tmp_path, "mir"))
    assert mir.data.base_model is None
    assert "base_model" not in yaml.safe_load(str(mir).split("---")[1])


def test_mir_card_usage_and_dtype_notes(tmp_path):
    (tmp_path / "bf16").mkdir()
    text = str(render_model_card(make_folder(tmp_path / "bf16", "mir", dtype=torch.bfloat16), repo_id="me/mir"))
    assert 'pipeline("feature-extraction", model="me/mir", trust_remote_code=True)' in text
    assert 'AutoFeatureExtractor.from_pretrained("me/mir", trust_remote_code=True)' in text
    assert "jukebox-mir extract song.wav more_audio/ --model me/mir --output features --layers 3 --pool mean" in text
    assert "stored in bfloat16" in text and "`dtype=torch.float32`" in text
    assert "| stored dtype | bfloat16 |" in text and "| stored parameters | 15 |" in text
    assert "Only the first 3 of the prior's 72 blocks" in text
    fp32 = str(render_model_card(make_folder(tmp_path, "mir"), repo_id="me/mir"))
    assert "stored in bfloat16" not in fp32 and "bfloat16 keeps 8" not in fp32


def test_prior_card_describes_level_and_variant(tmp_path):
    card = render_model_card(make_folder(tmp_path, "prior"), repo_id="me/prior")
    text = str(card)
    assert text.count("# Jukebox 5b_lyrics top-level prior (OpenAI)") == 1
    assert "| level | 2 |" in text and "| layers | 3 |" in text and "| attention heads | 2 |" in text
    assert "jukebox-mir convert --prior prior_level_2.pth.tar --output prior" in text
    assert "upper_level_codes" not in text  # only upsamplers take the level above


def test_templates_also_work_with_model_card_from_template(tmp_path):
    folder = make_folder(tmp_path, "vqvae")
    data = JukeboxModelCardData.from_folder(folder, repo_id="me/vqvae")
    template = str(template_path("vqvae"))
    card = ModelCard.from_template(data.to_card_data(), template_path=template, **data.template_kwargs())
    assert card.data.license_name == LICENSE_NAME
    assert "## Provenance" in card.text


def test_custom_template_dir(tmp_path):
    folder = make_folder(tmp_path, "vqvae")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "jukebox_vqvae.md").write_text("---\n{{ card_data }}\n---\n\n# {{ title }} for {{ repo_id }}\n")
    text = str(render_model_card(folder, repo_id="me/x", template_dir=templates))
    assert text.endswith("# Jukebox VQ-VAE (OpenAI, 5b) for me/x\n")
    (templates / "jukebox_vqvae.md").write_text("{{ no_such_variable }}")
    with pytest.raises(Exception, match="no_such_variable"):  # StrictUndefined: template typos fail loudly
        render_model_card(folder, template_dir=templates)


def test_write_model_card_keeps_hand_written_readme(tmp_path):
    folder = make_folder(tmp_path, "vqvae")
    (folder / "README.md").write_text("# My own notes\n")
    with pytest.raises(JukeboxInputError, match="was not generated by hf-jukebox-mir; refusing to overwrite"):
        write_model_card(folder)
    assert (folder / "README.md").read_text() == "# My own notes\n"
    write_model_card(folder, overwrite=True)
    first = (folder / "README.md").read_text()
    assert CARD_MARKER in first
    write_model_card(folder, repo_id="me/again")  # a generated card is simply re-rendered
    assert 'from_pretrained("me/again"' in (folder / "README.md").read_text()


def test_bad_folders_and_arguments(tmp_path):
    with pytest.raises(JukeboxInputError, match="Model folder not found"):
        render_model_card(tmp_path / "nope")
    folder = make_folder(tmp_path, "vqvae")
    with pytest.raises(JukeboxInputError, match="repo_id must look like 'owner/name', got 'no-owner'"):
        render_model_card(folder, repo_id="no-owner")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(JukeboxCheckpointError, match="model_type 'bert', which is not a hf-jukebox-mir model type"):
        render_model_card(folder)
    (folder / "config.json").unlink()
    with pytest.raises(JukeboxCheckpointError, match="config.json not found"):
        render_model_card(folder)


# --- our own metadata validation (the Hub validates nothing offline) -------------------------------------------


def _good_metadata(kind: str = "mir") -> dict:
    return {
        "license": "other",
        "license_name": LICENSE_NAME,
        "license_link": LICENSE_LINK,
        "library_name": "transformers",
        "pipeline_tag": "audio-classification" if kind == "probe" else "feature-extraction",
        "tags": list(BASE_TAGS),
    }


def test_validate_card_metadata_catches_licence_tag_and_pipeline_mistakes():
    assert validate_card_metadata(_good_metadata(), "mir") == []
    bad = {**_good_metadata(), "license": "mit"}
    (problem,) = validate_card_metadata(bad, "mir")
    assert "license is 'mit'" in problem and "Noncommercial" in problem and "jukebox-mir card DIR" in problem
    (problem,) = validate_card_metadata({**_good_metadata(), "pipeline_tag": "text-generation"}, "vqvae")
    assert "pipeline_tag is 'text-generation', expected 'feature-extraction'" in problem
    (problem,) = validate_card_metadata(_good_metadata("mir"), "probe")
    assert "expected 'audio-classification' for a probe model" in problem
    (problem,) = validate_card_metadata({**_good_metadata(), "license_link": None}, "mir")
    assert "license_link is missing" in problem
    (problem,) = validate_card_metadata({**_good_metadata(), "tags": ["audio"]}, "mir")
    assert "['custom_code', 'jukebox']" in problem
    (problem,) = validate_card_metadata({**_good_metadata(), "library_name": "timm"}, "mir")
    assert "library_name is 'timm'" in problem
    assert "no YAML front matter" in validate_card_metadata(None, "mir")[0]
    broken_index = {**_good_metadata(), "model-index": [{"name": "x", "results": [{"task": {}}]}]}
    assert "model-index does not parse" in validate_card_metadata(broken_index, "mir")[0]


# --- probing results schema ------------------------------------------------------------------------------------


def test_load_probe_results_accepts_the_three_layouts():
    as_list = load_probe_results(
        [
            {
                "task": "key",
                "dataset": "giantsteps",
                "split": "test",
                "metric": "mirex_weighted",
                "value": 0.667,
                "layer": 36,
            }
        ]  # fmt: skip
    )
    single = load_probe_results({"task": "key", "dataset": "giantsteps", "split": "test", "layer": 36,
                                 "metrics": {"mirex_weighted": 0.667}})  # fmt: skip
    assert as_list == single
    (result,) = single
    assert (result.task, result.dataset, result.split, result.metric, result.value, result.layer) == (
        "key", "giantsteps", "test", "mirex_weighted", 0.667, 36,
    )  # fmt: skip
    nested = load_probe_results(RESULTS)
    assert [(r.task, r.metric, r.layer, r.split) for r in nested] == [
        ("gtzan_genre", "accuracy", 36, "test"),
        ("magnatagatune_tagging", "roc_auc", 36, "test"),
        ("magnatagatune_tagging", "average_precision", 36, "test"),
    ]
    eval_result = nested[0].to_eval_result()
    assert (eval_result.task_type, eval_result.dataset_type, eval_result.dataset_split) == (
        "audio-classification", "gtzan_ff", "test",
    )  # fmt: skip


def test_load_probe_results_names_every_problem(tmp_path):
    bad = {
        "results": [
            {"task": "gtzan", "dataset": "gtzan_ff", "split": "test", "metric": "accuracy", "value": "high"},
            {"task": "", "dataset": "mtt", "split": "test", "metrics": {"roc_auc": math.nan}},
            {"task": "emo", "dataset": "emomusic", "split": "test", "metric": "r2", "value": True, "layer": -1},
            {"task": "key", "dataset": "gs", "split": "test", "metric": "w", "value": 0.5, "metrics": {"w": 0.5}},
            {"task": "key", "dataset": "gs", "split": "test", "metric": "w", "value": 0.5, "source_name": "paper",
             "task_type": "Audio Classification"},
            "not an object",
        ]
    }  # fmt: skip
    with pytest.raises(JukeboxInputError) as info:
        load_probe_results(bad)
    message = str(info.value)
    for expected in (
        "results[0].value: expected a finite number, got 'high'",
        "results[1].task: expected a non-empty string, got ''",
        "results[1].metrics.roc_auc: expected a finite number, got nan",
        "results[2].value: expected a finite number, got True",
        "results[2].layer: expected an integer >= 0, a non-empty string or null, got -1",
        "results[3]: give either 'metric' + 'value' or 'metrics', not both",
        "results[4].source_name: given without source_url",
        "results[4].task_type: expected a Hub task id such as 'audio-classification', got 'Audio Classification'",
        "results[5]: expected an object, got str",
    ):
        assert expected in message, expected

    with pytest.raises(JukeboxInputError, match="the results list is empty"):
        load_probe_results({"results": []})
    with pytest.raises(JukeboxInputError, match="expected a list of results, an object with a 'results' list"):
        load_probe_results({"results": "accuracy=0.8"})
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(JukeboxInputError, match="is not valid JSON"):
        load_probe_results(path)
    with pytest.raises(JukeboxInputError, match="Probing results file not found"):
        load_probe_results(tmp_path / "missing.json")


def test_bad_results_fail_rendering_before_writing(tmp_path):
    folder = make_folder(tmp_path, "probe")
    with pytest.raises(JukeboxInputError, match=r"result\.split: expected a non-empty string"):
        write_model_card(folder, results_json={"task": "t", "dataset": "d", "metric": "accuracy", "value": 0.5})
    assert not (folder / "README.md").exists()


# --- weights headers --------------------------------------------------------------------------------------------


def test_safetensors_header_and_truncation(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(10, 10), "b": torch.zeros(5, dtype=torch.bfloat16)}, str(path))
    header = read_safetensors_header(path)
    assert header["a"]["shape"] == [10, 10] and header["b"]["dtype"] == "BF16"
    summary = inspect_weights(tmp_path)
    assert (summary.files, summary.num_parameters, summary.dtypes, summary.problems) == (
        ["model.safetensors"], 105, ["float32", "bfloat16"], [],
    )  # fmt: skip
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(JukeboxCheckpointError, match="header describes .* bytes; the file is truncated or corrupt"):
        read_safetensors_header(path)
    path.write_bytes(b"abc")
    with pytest.raises(JukeboxCheckpointError, match="too short to be a safetensors file"):
        read_safetensors_header(path)


def test_source_file_urls():
    assert JukeboxSourceFile("x/5b_lyrics/prior_level_2.pth.tar").url == (
        "https://openaipublic.azureedge.net/jukebox/models/5b_lyrics/prior_level_2.pth.tar"
    )
    assert JukeboxSourceFile("vqvae.pth.tar").url.endswith("/5b/vqvae.pth.tar")
    assert JukeboxSourceFile("prior_level_1.pth.tar").url.endswith("/5b/prior_level_1.pth.tar")
    assert JukeboxSourceFile("prior_level_2.pth.tar").url is None  # three different files have this name
    assert JukeboxSourceFile("jukebox-5b-lyrics/pytorch_model-00001-of-00004.bin").url is None


# --- CLI ----------------------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from hf_jukebox_mir.cli import card

    parser = argparse.ArgumentParser(prog="jukebox-mir")
    card.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_card_command_writes_and_prints(tmp_path, capsys):
    folder = make_folder(tmp_path, "mir")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    assert _cli(["card", str(folder), "--results", str(results), "--repo-id", "me/mir"]) == 0
    assert f"wrote {folder / 'README.md'}" in capsys.readouterr().out
    assert metadata_load(folder / "README.md")["model-index"][0]["name"] == "mir"
    assert _cli(["card", str(folder), "--stdout"]) == 0
    assert capsys.readouterr().out.startswith("---\nlicense: other\n")
    (folder / "README.md").write_text("hand written")
    with pytest.raises(JukeboxInputError, match="--force"):
        _cli(["card", str(folder)])
    assert _cli(["card", str(folder), "--force"]) == 0


# --- inputs in the formats the converters and the probe trainer actually write ----------------------------------


def test_audit_written_by_the_converters_is_rendered(tmp_path):
    folder = make_folder(tmp_path, "prior", audit=False)
    config = json.loads((folder / "config.json").read_text())
    config.update(lyrics_mode=None)  # the non-lyrics 5b top prior
    (folder / "config.json").write_text(json.dumps(config))
    write_audit(  # what the prior converter records
        folder,
        "prior",
        sources=[SourceFile(file="prior_level_2.pth.tar", sha256="f" * 64, bytes=123, role="prior")],
        key_map={"prior.x_emb.weight": "embed_tokens.weight", "prior.transformer._attn_mods.5.w": None},
        versions={"hf-jukebox-mir": "0.2.0", "torch": "2.13.0"},
        output_check={
            "outputs": {
                "logits": {"shape": [1, 8, 16], "dtype": "float32", "finite": True, "mean": 0.25, "std": 1.5,
                           "max_abs": 4.0, "first": [0.1, 0.2]},
                "codes": {"shape": [1, 8], "dtype": "int64", "min": 3, "max": 2040, "first": [3, 17]},
            },
            "reload_identical": True,
        },
        files={"model.safetensors": WrittenFile(sha256="0" * 64, bytes=1)},
    )  # fmt: skip
    card = render_model_card(folder)
    text = str(card)
    assert "# Jukebox 5b top-level prior (OpenAI)" in text
    # the directory is not recorded, but the config says which prior_level_2 this is
    url = "https://openaipublic.azureedge.net/jukebox/models/5b/prior_level_2.pth.tar"
    assert f"| prior | [`prior_level_2.pth.tar`]({url}) | `{'f' * 64}` |" in text
    assert "Converted with `hf-jukebox-mir` 0.2.0" in text
    assert "1 tensors were converted key by key (1 source tensors of layers not kept were left out)" in text
    assert "| logits | shape (1, 8, 16) float32; mean 0.25; std 1.5; max abs 4; first 0.1, 0.2 |" in text
    assert "| codes | shape (1, 8) int64; min 3; max 2040; first 3, 17 |" in text
    assert "| reload_identical | true |" in text
    assert card.data.base_model is None  # no Hub copy of the non-lyrics top prior


@pytest.mark.parametrize("lyrics_mode, variant, base_model", [
    ("separate_encoder", "5b_lyrics", "openai/jukebox-5b-lyrics"),
    ("single_sequence", "1b_lyrics", "openai/jukebox-1b-lyrics"),
])  # fmt: skip
def test_prior_variant_comes_from_the_config(tmp_path, lyrics_mode, variant, base_model):
    folder = make_folder(tmp_path, "prior", audit=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "lyrics_mode": lyrics_mode}))
    card = render_model_card(folder)
    assert f"# Jukebox {variant} top-level prior (OpenAI)" in str(card)
    assert card.data.base_model == base_model


def test_probe_grid_results_json_is_accepted(tmp_path):
    grid = ProbeResults(  # what a probe run writes to results.json
        task="emomusic",
        description="Emomusic arousal / valence",
        feature_source="me/jukebox-mir-5b-layer36",
        primary_metric="r2",
        greater_is_better=True,
        chance_level={"r2": 0.0},
        grid="small",
        num_configs=4,
        layers=["36"],
        schedule={},
        split_sizes={"train": 504, "validation": 115, "test": 125},
        best={
            "layer": 1,
            "layer_name": "36",
            "validation": {"r2": 0.5},
            "test": {"r2": 0.66, "arousal_r2": 0.72, "valence_r2": 0.6, "primary": 0.66, "num_examples": 125},
        },
        jukemir_score=66.0,
    )
    results = load_probe_results(grid)
    assert [(r.task, r.dataset, r.split, r.layer, r.metric, r.value) for r in results] == [
        ("emomusic", "emomusic", "test", 36, "r2", 0.66),
        ("emomusic", "emomusic", "test", 36, "arousal_r2", 0.72),
        ("emomusic", "emomusic", "test", 36, "valence_r2", 0.6),
    ]
    assert len(load_probe_results([grid, grid])) == 6
    path = grid.write(tmp_path)
    card = render_model_card(make_folder(tmp_path, "probe"), results_json=path, repo_id="me/emo-probe")
    assert card.data.base_model == "me/jukebox-mir-5b-layer36"  # from feature_source
    assert [r.metric_type for r in card.data.eval_results] == ["r2", "arousal_r2", "valence_r2"]
    # a results.json of another layout is refused, with the way out
    path.write_text(json.dumps({"task": "emomusic", "best": {"test": {"r2": 0.66}}}))
    with pytest.raises(JukeboxInputError, match="is not version-1 probe results .* run `jukebox-mir probe` again"):
        load_probe_results(path)


def test_probe_usage_names_the_auto_class_its_folder_registers(tmp_path):
    folder = make_folder(tmp_path, "probe")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_fake.FakeConfig",
        "AutoModelForAudioClassification": "modeling_fake.FakeProbe",
    }
    (folder / "config.json").write_text(json.dumps(config))
    text = str(render_model_card(folder, repo_id="me/probe"))
    assert 'probe = AutoModelForAudioClassification.from_pretrained("me/probe", trust_remote_code=True)' in text
    assert "from transformers import AutoModelForAudioClassification, pipeline" in text


def test_upsampler_card(tmp_path):
    folder = make_folder(tmp_path, "prior", audit=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "level": 1}))
    card = render_model_card(folder, repo_id="me/up1")
    text = str(card)
    assert "# Jukebox upsampler prior, level 1 (OpenAI, 5b)" in text
    assert "This repository holds the level-1 upsampler." in text
    assert "upper_level_codes=upper_codes" in text
    assert "jukebox-mir convert --prior prior_level_1.pth.tar --output up1" in text
    assert card.data.base_model == "openai/jukebox-5b-lyrics"  # the upsamplers are inside the hf4 repos


# --- sampling chains (the real converted folder is tested in test_hub.py) ---------------------------------------


@pytest.mark.parametrize("lyrics_mode, variant, base_model", [
    (None, "5b", None),
    ("separate_encoder", "5b_lyrics", "openai/jukebox-5b-lyrics"),
    ("single_sequence", "1b_lyrics", "openai/jukebox-1b-lyrics"),
])  # fmt: skip
def test_chain_card_per_released_model(tmp_path, lyrics_mode, variant, base_model):
    folder = make_folder(tmp_path, "chain")
    config = json.loads((folder / "config.json").read_text())
    config["prior_level_2_config"]["lyrics_mode"] = lyrics_mode
    config["prior_level_2_config"]["n_ctx"] = 6144 if variant == "1b_lyrics" else 8192
    (folder / "config.json").write_text(json.dumps(config))
    card = render_model_card(folder, repo_id=f"me/jukebox-{variant.replace('_', '-')}-chain")
    text = str(card)
    name = f"jukebox-{variant.replace('_', '-')}-chain"

    assert f"# Jukebox {variant} sampling chain (OpenAI)" in text
    assert card.data.pipeline_tag == "text-to-audio" and card.data.base_model == base_model
    assert validate_card_metadata(card.data.to_dict(), "chain") == []
    # the top prior (not the first upsampler among the sub-configs) sizes the model
    assert "| top prior (level 2) | width 4800, layers 72, heads 8, context" in text
    assert "| bottom upsampler (level 0) | width 1920, layers 72, heads 8, context 8192, hop 8 |" in text
    assert "| window hop fractions (levels 0, 1, 2) | 0.5, 0.5, 0.125 |" in text
    context = "17.8" if variant == "1b_lyrics" else "23.8"  # n_ctx * 128 / 44100
    assert f"The top prior sees about {context} s of audio at once" in text
    # usage: AutoModel + generate_audio, and the sample CLI; lyrics only for the lyrics models
    assert f'model = AutoModel.from_pretrained("me/{name}", trust_remote_code=True).eval()' in text
    assert "out = model.generate_audio(\n    seconds=10.0," in text
    assert f"jukebox-mir sample --model {name} --seconds 20" in text
    assert f"hf download me/{name} --local-dir {name}" in text
    has_lyrics = lyrics_mode is not None
    assert ('    lyrics="' in text) is has_lyrics and ("--lyrics-file lyrics.txt" in text) is has_lyrics
    assert ("lyric_tokens=[...]" in text) is has_lyrics
    # reproducing it: the original files, and for the lyrics models the hf4 repo holding the same weights
    assert f"5b/prior_level_1.pth.tar {variant}/prior_level_2.pth.tar \\\n    --output {name}" in text
    assert (f"--hf4 jukebox-{variant.replace('_', '-')}/ --hf4-part chain" in text) is has_lyrics
    # provenance: one row per part, named by the audit's roles; the top prior's URL follows the variant
    root = "https://openaipublic.azureedge.net/jukebox/models"
    assert f"| prior_level_0 | [`5b/prior_level_0.pth.tar`]({root}/5b/prior_level_0.pth.tar) | `{'4' * 64}` |" in text
    assert f"| vqvae | [`5b/vqvae.pth.tar`]({root}/5b/vqvae.pth.tar) |" in text
    assert f"| prior_level_2 | [`5b_lyrics/prior_level_2.pth.tar`]({root}/5b_lyrics/prior_level_2.pth.tar) |" in text
    assert "{{" not in text and "{%" not in text
    fences = [line for line in text.splitlines() if "```" in line]
    assert len(fences) % 2 == 0 and all(line.startswith("```") for line in fences), fences


def test_chain_variant_without_config_hint_comes_from_the_top_prior_file(tmp_path):
    """Only the top prior's path names the released model: the VQ-VAE and upsamplers always come from 5b/."""
    folder = make_folder(tmp_path, "chain")
    config = json.loads((folder / "config.json").read_text())
    del config["prior_level_2_config"]["lyrics_mode"]
    (folder / "config.json").write_text(json.dumps(config))
    card = render_model_card(folder)
    assert "# Jukebox 5b_lyrics sampling chain (OpenAI)" in str(card)
    assert card.data.base_model == "openai/jukebox-5b-lyrics"


def test_an_audit_of_another_layout_is_refused_with_the_way_out(tmp_path):
    folder = make_folder(tmp_path, "vqvae", audit=False)
    (folder / "conversion_audit.json").write_text(json.dumps({"package_version": "0.1.0", "sources": []}))
    with pytest.raises(JukeboxCheckpointError, match="is not a version-1 conversion audit .* convert the folder again"):
        render_model_card(folder)
