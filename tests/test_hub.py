"""Hub publishing: folder checks, one-commit upload through a mocked HfApi, offline errors, convert-all planning."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from hf_jukebox_mir.conversion.audit import ConversionAudit, SourceFile
from hf_jukebox_mir.models.errors import JukeboxCheckpointError, JukeboxInputError
from hf_jukebox_mir.publishing.cards import CARD_MARKER, render_model_card, validate_card_metadata, write_model_card
from hf_jukebox_mir.publishing.hub import (
    JukeboxHubConnectionError,
    check_hub_folder,
    hub_files,
    push_folder,
    validate_hub_folder,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_TYPES = {
    "vqvae": "jukebox_mir_vqvae", "prior": "jukebox_mir_prior", "mir": "jukebox_mir", "probe": "jukebox_mir_probe",
    "chain": "jukebox_mir_chain",
}  # fmt: skip
CHAIN_PARTS = ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2")


def make_hub_folder(root: Path, kind: str = "mir", *, sharded: bool = False, card: bool = True) -> Path:
    """A complete (tiny, fake) Hub folder: config with auto_map, safetensors, module files, audit, card."""
    folder = root / f"hub-{kind}"
    folder.mkdir()
    config = {
        "model_type": MODEL_TYPES[kind],
        "auto_map": {"AutoConfig": "configuration_fake.FakeConfig", "AutoModel": "modeling_fake.FakeModel"},
    }
    if kind == "mir":
        config["custom_pipelines"] = {
            "feature-extraction": {"impl": "pipeline_fake.FakePipeline", "pt": ["AutoModel"], "type": "audio"}
        }
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"auto_map": {"AutoFeatureExtractor": "feature_extraction_fake.FakeFE"}})
        )
        (folder / "pipeline_fake.py").write_text("from .modeling_fake import FakeModel\n")
        # an optional package import inside try: is fine (transformers' check_imports skips it too)
        (folder / "feature_extraction_fake.py").write_text(
            "try:\n    import hf_jukebox_mir\nexcept ImportError:\n    pass\n"
        )
    if kind == "chain":  # a sampling chain: the VQ-VAE and the priors of levels 0, 1, 2 as sub-configs
        config["vqvae_config"] = {"model_type": "jukebox_mir_vqvae"}
        config.update({f"prior_level_{n}_config": {"model_type": "jukebox_mir_prior", "level": n} for n in (0, 1, 2)})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_fake.py").write_text("from __future__ import annotations\n")
    (folder / "modeling_fake.py").write_text(
        "import torch\nfrom .configuration_fake import FakeConfig\nfrom .layers_fake import (\n    X,\n)\n"
    )
    (folder / "layers_fake.py").write_text("X = 1\n")
    tensors = {"a": torch.zeros(4, 3), "b": torch.ones(3)}
    if kind == "chain":  # one tensor per part, named like JukeboxChainModel's state dict
        tensors = {f"{part}.weight": torch.zeros(2) for part in CHAIN_PARTS}
    if sharded:
        names = list(tensors)
        shards = {
            "model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2 :],
        }
        for shard, shard_names in shards.items():
            save_file({name: tensors[name] for name in shard_names}, str(folder / shard))
        (folder / "model.safetensors.index.json").write_text(
            json.dumps(
                {
                    "metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())},
                    "weight_map": {name: shard for shard, shard_names in shards.items() for name in shard_names},
                }
            )
        )
    else:
        save_file(tensors, str(folder / "model.safetensors"))
    if kind != "probe":
        source = SourceFile(file="5b/vqvae.pth.tar", sha256="0" * 64, bytes=1, role="vqvae")
        ConversionAudit(model_class="FakeModel", source_format="openai", sources=[source]).write(folder)
    if card:
        write_model_card(folder, repo_id="me/jukebox-test")
    return folder


MIR_FILES = [
    "README.md",
    "config.json",
    "preprocessor_config.json",
    "conversion_audit.json",
    "configuration_fake.py",
    "feature_extraction_fake.py",
    "layers_fake.py",
    "model.safetensors",
    "modeling_fake.py",
    "pipeline_fake.py",
]


@pytest.fixture
def online(monkeypatch):
    """Let push_folder past its offline check; the HfApi is always a mock or an unreachable endpoint here."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vqvae", "prior", "mir", "probe", "chain"])
def test_complete_folder_has_no_problems(tmp_path, kind):
    folder = make_hub_folder(tmp_path, kind)
    assert validate_hub_folder(folder) == []
    assert check_hub_folder(folder) == hub_files(folder)


def test_hub_files_are_exactly_what_the_model_needs(tmp_path):
    folder = make_hub_folder(tmp_path, "mir")
    # clutter that must never be uploaded
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "scratch.py").write_text("print('not referenced')\n")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    assert hub_files(folder) == MIR_FILES
    (tmp_path / "s").mkdir()
    sharded = make_hub_folder(tmp_path / "s", "vqvae", sharded=True)
    assert hub_files(sharded) == [
        "README.md", "config.json", "conversion_audit.json", "configuration_fake.py", "layers_fake.py",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "modeling_fake.py",
    ]  # fmt: skip


def _break(folder: Path, how: str) -> None:
    if how == "no config":
        (folder / "config.json").unlink()
    elif how == "no weights":
        (folder / "model.safetensors").unlink()
    elif how == "pickled weights only":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"x")
    elif how == "truncated weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:-4])
    elif how == "no auto_map":
        config = json.loads((folder / "config.json").read_text())
        del config["auto_map"]
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "no modeling file":
        (folder / "modeling_fake.py").unlink()
    elif how == "no helper module":
        (folder / "layers_fake.py").unlink()
    elif how == "package import":
        (folder / "layers_fake.py").write_text("from hf_jukebox_mir.modeling_jukebox import X\n")
    elif how == "sibling import":
        (folder / "layers_fake.py").write_text("from . import configuration_fake\n")
    elif how == "no preprocessor config":
        (folder / "preprocessor_config.json").unlink()
    elif how == "no feature extractor module":
        (folder / "feature_extraction_fake.py").unlink()
    elif how == "no custom pipeline":
        config = json.loads((folder / "config.json").read_text())
        del config["custom_pipelines"]
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "no audit":
        (folder / "conversion_audit.json").unlink()
    elif how == "no card":
        (folder / "README.md").unlink()
    elif how == "card without front matter":
        (folder / "README.md").write_text("# Jukebox\n")
    elif how == "card with broken yaml":
        (folder / "README.md").write_text("---\nlicense: [other\n---\n# x\n")
    elif how == "card with wrong licence":
        text = (folder / "README.md").read_text().replace("license: other", "license: mit", 1)
        (folder / "README.md").write_text(text)
    elif how == "bad model_type":
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "jukebox"
        (folder / "config.json").write_text(json.dumps(config))
    else:  # pragma: no cover
        raise AssertionError(how)


BROKEN = {
    "no config": "config.json is missing",
    "no weights": "no weights: expected model.safetensors, or model.safetensors.index.json with its shards",
    "pickled weights only": r"Found pickled weights \(pytorch_model.bin\)",
    "truncated weights": "model.safetensors is .* bytes but its header describes .* bytes",
    "no auto_map": r"auto_map with AutoConfig and AutoModel \(or AutoModelFor...\) entries is missing",
    "no modeling file": r"module file modeling_fake.py is missing \(config.json auto_map needs it\)",
    "no helper module": r"module file layers_fake.py is missing \(modeling_fake.py needs it\)",
    "package import": "layers_fake.py imports hf_jukebox_mir",
    "sibling import": r"layers_fake.py: `from . import ...` cannot be loaded with trust_remote_code",
    "no preprocessor config": "preprocessor_config.json is missing: a MIR extraction folder needs",
    "no feature extractor module": r"feature_extraction_fake.py is missing \(preprocessor_config.json auto_map",
    "no custom pipeline": "custom_pipelines has no 'feature-extraction' entry",
    "no audit": "conversion_audit.json is missing",
    "no card": r"README.md \(the model card\) is missing: write it with `jukebox-mir card DIR`",
    "card without front matter": "README.md has no YAML front matter",
    "card with broken yaml": "README.md: the YAML front matter does not parse",
    "card with wrong licence": "README.md: license is 'mit'",
    "bad model_type": "model_type 'jukebox' is not a hf-jukebox-mir model type",
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_each_missing_piece_is_named(tmp_path, how):
    folder = make_hub_folder(tmp_path, "mir")
    _break(folder, how)
    problems = validate_hub_folder(folder)
    assert problems, how
    with pytest.raises(JukeboxCheckpointError, match=BROKEN[how]):
        check_hub_folder(folder)


def test_missing_shard_is_named(tmp_path):
    folder = make_hub_folder(tmp_path, "vqvae", sharded=True)
    (folder / "model-00002-of-00002.safetensors").unlink()
    (problem,) = validate_hub_folder(folder)
    assert problem == ("model.safetensors.index.json references 1 missing shard(s): model-00002-of-00002.safetensors.")


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


CHAIN_BROKEN = {
    "missing prior": (
        lambda c: c.pop("prior_level_1_config"),
        r"config.json: prior_level_1_config is missing; a sampling chain needs the VQ-VAE and the priors of levels",
    ),
    "priors out of order": (
        lambda c: c["prior_level_0_config"].update(level=1),
        r"config.json: prior_level_0_config has level 1, expected 0; the priors must be given as levels 0, 1, 2",
    ),
    "wrong part type": (
        lambda c: c["vqvae_config"].update(model_type="jukebox_mir_prior"),
        r"config.json: vqvae_config has model_type 'jukebox_mir_prior', expected 'jukebox_mir_vqvae'",
    ),
}


@pytest.mark.parametrize("how", list(CHAIN_BROKEN))
def test_chain_sub_config_problems_are_named(tmp_path, how):
    folder = make_hub_folder(tmp_path, "chain")
    edit, message = CHAIN_BROKEN[how]
    _edit_config(folder, edit)
    assert len(validate_hub_folder(folder)) == 1
    with pytest.raises(JukeboxCheckpointError, match=message):
        check_hub_folder(folder)


def test_chain_weights_must_hold_every_part(tmp_path):
    folder = make_hub_folder(tmp_path, "chain")
    save_file({f"{part}.weight": torch.zeros(2) for part in CHAIN_PARTS[:2]}, str(folder / "model.safetensors"))
    (problem,) = validate_hub_folder(folder)
    assert problem.startswith(
        "the weights hold no tensors for prior_level_1, prior_level_2 (names starting with 'prior_level_1.', "
        "'prior_level_2.'), so from_pretrained would leave those parts randomly initialised."
    )
    # sharded weights are read from the index
    (tmp_path / "s").mkdir()
    sharded = make_hub_folder(tmp_path / "s", "chain", sharded=True)
    assert validate_hub_folder(sharded) == []
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    del index["weight_map"]["vqvae.weight"]
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (problem,) = validate_hub_folder(sharded)
    assert "no tensors for vqvae (names starting with 'vqvae.'), so from_pretrained would leave that part" in problem


def test_chain_card_needs_the_text_to_audio_pipeline_tag(tmp_path):
    folder = make_hub_folder(tmp_path, "chain")
    text = (folder / "README.md").read_text()
    assert "pipeline_tag: text-to-audio" in text
    (folder / "README.md").write_text(text.replace("pipeline_tag: text-to-audio", "pipeline_tag: feature-extraction"))
    with pytest.raises(JukeboxCheckpointError, match="pipeline_tag is 'feature-extraction', expected 'text-to-audio'"):
        check_hub_folder(folder)


def test_all_problems_are_listed_at_once(tmp_path):
    folder = make_hub_folder(tmp_path, "mir", card=False)
    (folder / "model.safetensors").unlink()
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(JukeboxCheckpointError) as info:
        check_hub_folder(folder)
    message = str(info.value)
    assert "is not ready for the Hub (3 problems)" in message
    assert "preprocessor_config.json is missing" in message
    assert "no weights" in message
    assert "README.md (the model card) is missing" in message
    assert validate_hub_folder(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} is not a folder."]


# --- push ------------------------------------------------------------------------------------------------------------


def test_push_uploads_exact_files_in_one_commit(tmp_path, online):
    folder = make_hub_folder(tmp_path, "mir")
    (folder / "training_args.bin").write_bytes(b"pickle")
    api = mock.MagicMock()
    api.create_commit.return_value = mock.Mock(commit_url="https://huggingface.co/me/jukebox-test/commit/abc")
    result = push_folder(
        folder, "me/jukebox-test", private=True, revision="v1", api=api, commit_message="Add MIR model"
    )

    api.create_repo.assert_called_once_with(
        repo_id="me/jukebox-test", repo_type="model", private=True, exist_ok=True, token=None
    )
    api.create_branch.assert_called_once_with(
        repo_id="me/jukebox-test", branch="v1", repo_type="model", exist_ok=True, token=None
    )
    api.create_commit.assert_called_once()
    kwargs = api.create_commit.call_args.kwargs
    assert kwargs["repo_id"] == "me/jukebox-test"
    assert kwargs["repo_type"] == "model"
    assert kwargs["revision"] == "v1"
    assert kwargs["commit_message"] == "Add MIR model"
    uploaded = [op.path_in_repo for op in kwargs["operations"]]
    assert uploaded == MIR_FILES
    assert {Path(op.path_or_fileobj) for op in kwargs["operations"]} == {folder / name for name in MIR_FILES}
    api.upload_folder.assert_not_called()
    assert result.files == MIR_FILES
    assert result.skipped == ["training_args.bin"]
    assert result.commit_url == "https://huggingface.co/me/jukebox-test/commit/abc"


def test_push_default_branch_and_message(tmp_path, online):
    folder = make_hub_folder(tmp_path, "vqvae")
    api = mock.MagicMock()
    push_folder(folder, "me/jukebox-test", api=api, token="hf_x")
    api.create_repo.assert_called_once_with(
        repo_id="me/jukebox-test", repo_type="model", private=False, exist_ok=True, token="hf_x"
    )
    api.create_branch.assert_not_called()
    kwargs = api.create_commit.call_args.kwargs
    assert kwargs["revision"] is None and kwargs["token"] == "hf_x"
    assert kwargs["commit_message"].startswith("Upload Jukebox VQ-VAE with hf-jukebox-mir ")


def test_push_refuses_incomplete_folder_before_any_request(tmp_path, online):
    folder = make_hub_folder(tmp_path, "mir")
    (folder / "preprocessor_config.json").unlink()
    (folder / "modeling_fake.py").unlink()
    api = mock.MagicMock()
    with pytest.raises(JukeboxCheckpointError, match="preprocessor_config.json is missing") as info:
        push_folder(folder, "me/jukebox-test", api=api)
    assert "module file modeling_fake.py is missing" in str(info.value)
    assert api.mock_calls == []


def test_push_offline_gives_a_clear_error(tmp_path, monkeypatch):
    folder = make_hub_folder(tmp_path, "vqvae")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = mock.MagicMock()
    with pytest.raises(JukeboxHubConnectionError, match="HF_HUB_OFFLINE is set, so the Hub is not contacted") as info:
        push_folder(folder, "me/jukebox-test", api=api)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConnectionError)
    assert api.mock_calls == []


@pytest.mark.parametrize("error", ["offline", "connect"])
def test_push_connection_errors_are_translated(tmp_path, online, error):
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    folder = make_hub_folder(tmp_path, "vqvae")
    api = mock.MagicMock()
    api.create_repo.side_effect = (
        OfflineModeIsEnabled("offline") if error == "offline" else httpx2.ConnectError("[Errno 111] Connection refused")
    )
    with pytest.raises(JukeboxHubConnectionError, match="the Hugging Face Hub cannot be reached"):
        push_folder(folder, "me/jukebox-test", api=api)
    api.create_commit.assert_not_called()


def test_push_against_unreachable_endpoint_with_real_client(tmp_path, online):
    from huggingface_hub import HfApi

    folder = make_hub_folder(tmp_path, "probe")
    with pytest.raises(JukeboxHubConnectionError, match="cannot be reached"):
        push_folder(folder, "me/jukebox-test", api=HfApi(endpoint="http://127.0.0.1:9", token="hf_fake"))


def test_push_auth_error_is_explained(tmp_path, online):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    folder = make_hub_folder(tmp_path, "vqvae")
    api = mock.MagicMock()
    response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    api.create_repo.side_effect = HfHubHTTPError("401 Unauthorized", response=response)
    with pytest.raises(JukeboxInputError, match=r"refused the upload to me/jukebox-test \(HTTP 401\): log in"):
        push_folder(folder, "me/jukebox-test", api=api)


@pytest.mark.parametrize("repo_id", ["jukebox", "me/", "/x", "a/b/c", "me/bad name", None])
def test_push_rejects_bad_repo_ids(tmp_path, online, repo_id):
    folder = make_hub_folder(tmp_path, "vqvae")
    api = mock.MagicMock()
    with pytest.raises(JukeboxInputError, match="repo_id must be 'owner/name'"):
        push_folder(folder, repo_id, api=api)
    assert api.mock_calls == []


def test_push_warns_when_card_names_another_repo(tmp_path, online, caplog):
    folder = make_hub_folder(tmp_path, "vqvae")
    with caplog.at_level("WARNING", logger="hf_jukebox_mir.publishing.hub"):
        push_folder(folder, "someone/else", api=mock.MagicMock())
    assert "does not mention someone/else" in caplog.text


# --- CLI -------------------------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from hf_jukebox_mir.cli import push

    parser = argparse.ArgumentParser(prog="jukebox-mir")
    push.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_push_command_check_and_upload(tmp_path, online, capsys, monkeypatch):
    folder = make_hub_folder(tmp_path, "mir")
    assert _cli(["push", str(folder), "--repo-id", "me/jukebox-test", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"an upload to me/jukebox-test would contain {len(MIR_FILES)} files" in out
    assert "  model.safetensors\n" in out

    api = mock.MagicMock()
    api.create_commit.return_value = mock.Mock(commit_url="https://huggingface.co/me/jukebox-test/commit/1")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", mock.Mock(return_value=api))
    assert _cli(["push", str(folder), "--repo-id", "me/jukebox-test", "--private", "--revision", "dev"]) == 0
    out = capsys.readouterr().out
    assert "uploaded 10 files to https://huggingface.co/me/jukebox-test (me/jukebox-test@dev)" in out
    assert api.create_repo.call_args.kwargs["private"] is True
    assert api.create_commit.call_args.kwargs["revision"] == "dev"

    (folder / "README.md").unlink()
    with pytest.raises(JukeboxCheckpointError, match="README.md"):
        _cli(["push", str(folder), "--repo-id", "me/jukebox-test", "--check"])
    with pytest.raises(SystemExit):
        _cli(["push", str(folder)])  # --repo-id is required


# --- scripts/convert_all_to_hub.py: planning only (the converters are tested where they live) ----------------------


@pytest.fixture(scope="module")
def convert_all():
    path = REPO_ROOT / "scripts" / "convert_all_to_hub.py"
    spec = importlib.util.spec_from_file_location("convert_all_to_hub", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["convert_all_to_hub"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("convert_all_to_hub", None)


def _openai_tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


ALL_OPENAI = [
    "5b/vqvae.pth.tar", "5b/prior_level_0.pth.tar", "5b/prior_level_1.pth.tar", "5b/prior_level_2.pth.tar",
    "5b_lyrics/prior_level_2.pth.tar", "1b_lyrics/prior_level_2.pth.tar",
]  # fmt: skip


def test_plan_maps_every_openai_file_to_its_folder(tmp_path, convert_all):
    root = _openai_tree(tmp_path / "in", ALL_OPENAI)
    plan = convert_all.plan_conversions(root, tmp_path / "out", namespace="me")

    def relative(sources):
        return {role: str(path.relative_to(root)) for role, path in sources.items()}

    got = {job.key: (job.output_dir.name, job.kind, job.level, relative(job.sources)) for job in plan.jobs}
    assert got == {
        "vqvae": ("jukebox-vqvae", "vqvae", None, {"vqvae": "5b/vqvae.pth.tar"}),
        "upsampler_level_0": ("jukebox-upsampler-level-0", "prior", 0, {"prior": "5b/prior_level_0.pth.tar"}),
        "upsampler_level_1": ("jukebox-upsampler-level-1", "prior", 1, {"prior": "5b/prior_level_1.pth.tar"}),
        "prior_5b": ("jukebox-5b-top-prior", "prior", 2, {"prior": "5b/prior_level_2.pth.tar"}),
        "prior_5b_lyrics": ("jukebox-5b-lyrics-top-prior", "prior", 2, {"prior": "5b_lyrics/prior_level_2.pth.tar"}),
        "prior_1b_lyrics": ("jukebox-1b-lyrics-top-prior", "prior", 2, {"prior": "1b_lyrics/prior_level_2.pth.tar"}),
        "mir": ("jukebox-mir-5b-layer36", "mir", None,
                {"vqvae": "5b/vqvae.pth.tar", "prior": "5b/prior_level_2.pth.tar"}),
        **{
            f"chain_{variant}": (f"jukebox-{variant.replace('_', '-')}-chain", "chain", None,
                                 {"vqvae": "5b/vqvae.pth.tar", "prior_level_0": "5b/prior_level_0.pth.tar",
                                  "prior_level_1": "5b/prior_level_1.pth.tar",
                                  "prior_level_2": f"{variant}/prior_level_2.pth.tar"})
            for variant in ("5b", "5b_lyrics", "1b_lyrics")
        },
    }  # fmt: skip
    assert [job.key for job in plan.jobs][-4:] == ["mir", "chain_5b", "chain_5b_lyrics", "chain_1b_lyrics"]
    mir = plan.jobs[-4]
    assert (mir.num_layers, mir.dtype, mir.source_format) == (36, "bfloat16", "openai")
    assert mir.repo_id == "me/jukebox-mir-5b-layer36"
    assert all(job.output_dir.parent == tmp_path / "out" for job in plan.jobs)
    assert plan.skipped == []


def test_plan_subset_only_and_options(tmp_path, convert_all):
    root = _openai_tree(tmp_path / "in", ["5b/vqvae.pth.tar", "1b_lyrics/prior_level_2.pth.tar"])
    plan = convert_all.plan_conversions(root, tmp_path / "out")
    assert [job.key for job in plan.jobs] == ["vqvae", "prior_1b_lyrics"]  # no MIR / chain without the 5b files
    assert all(job.repo_id is None for job in plan.jobs)
    missing = r"Cannot make mir from .*: missing source files \(mir: 5b/vqvae.pth.tar \+ 5b/prior_level_2.pth.tar\)"
    with pytest.raises(convert_all.PlanError, match=missing):
        convert_all.plan_conversions(root, tmp_path / "out", only="vqvae,mir")
    missing = (
        r"Cannot make chain_1b_lyrics from .*: missing source files \(chain_1b_lyrics: 5b/vqvae.pth.tar \+ "
        r"5b/prior_level_0.pth.tar \+ 5b/prior_level_1.pth.tar \+ 1b_lyrics/prior_level_2.pth.tar\)"
    )
    with pytest.raises(convert_all.PlanError, match=missing):
        convert_all.plan_conversions(root, tmp_path / "out", only="chain_1b_lyrics")
    only = convert_all.plan_conversions(root, tmp_path / "out", only=["prior_1b_lyrics"])
    assert [job.key for job in only.jobs] == ["prior_1b_lyrics"]

    full = _openai_tree(tmp_path / "full", ALL_OPENAI)
    plan = convert_all.plan_conversions(full, tmp_path / "out", only="mir", num_layers=12, mir_dtype="float32")
    (job,) = plan.jobs
    assert (job.output_dir.name, job.num_layers, job.dtype) == ("jukebox-mir-5b-layer12", 12, "float32")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"only": "vqvae,tokenizer"}, r"--only: unknown job\(s\) \['tokenizer'\]; choose from vqvae, upsampler_"),
        ({"num_layers": 0}, "--num-layers must be an integer from 1 to 72, got 0"),
        ({"num_layers": 73}, "--num-layers must be an integer from 1 to 72, got 73"),
        ({"mir_dtype": "int8"}, "--mir-dtype must be one of bfloat16, float16, float32, got 'int8'"),
        ({"namespace": "me/repo"}, "--namespace must be a Hub user or organisation name"),
    ],
)
def test_plan_argument_validation(tmp_path, convert_all, kwargs, message):
    root = _openai_tree(tmp_path / "in", ALL_OPENAI)
    with pytest.raises(convert_all.PlanError, match=message):
        convert_all.plan_conversions(root, tmp_path / "out", **kwargs)
    assert issubclass(convert_all.PlanError, ValueError)


def test_plan_rejects_empty_or_missing_input(tmp_path, convert_all):
    with pytest.raises(convert_all.PlanError, match="Input directory not found"):
        convert_all.plan_conversions(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(convert_all.PlanError, match="Nothing to convert in .*expected OpenAI files such as 5b/vqvae"):
        convert_all.plan_conversions(tmp_path / "empty", tmp_path / "out")


def _hf4_copy(fixtures_dir: Path, dest: Path, name: str, with_weights: bool = True) -> Path:
    """Copy an hf4 fixture folder's config (+ index and empty shard stand-ins: planning reads no weights)."""
    src = fixtures_dir / "hf4_format" / name
    dest.mkdir(parents=True)
    shutil.copy(src / "config.json", dest / "config.json")
    if with_weights:
        for shard in src.glob("pytorch_model*.bin"):
            (dest / shard.name).write_bytes(b"")
        shutil.copy(src / "pytorch_model.bin.index.json", dest / "pytorch_model.bin.index.json")
    return dest


def test_plan_old_hub_format_folders(tmp_path, convert_all, fixtures_dir):
    root = tmp_path / "hf4"
    one_b = _hf4_copy(fixtures_dir, root / "a-jukebox-1b-lyrics", "jukebox_tiny_1b_lyrics")
    five_b = _hf4_copy(fixtures_dir, root / "b-jukebox-5b-lyrics", "jukebox_tiny_5b_lyrics")
    _hf4_copy(fixtures_dir, root / "c-config-only", "jukebox_tiny_5b_config_only", with_weights=False)
    plan = convert_all.plan_conversions(root, tmp_path / "out")
    got = {job.key: (job.kind, job.level, job.sources[job.kind if job.kind != "mir" else "prior"], job.source_format)
           for job in plan.jobs}  # fmt: skip
    assert got == {
        "vqvae": ("vqvae", None, five_b, "hf4"),  # shared parts from the 5b_lyrics folder, the preferred one
        "upsampler_level_0": ("prior", 0, five_b, "hf4"),
        "upsampler_level_1": ("prior", 1, five_b, "hf4"),
        "prior_5b_lyrics": ("prior", 2, five_b, "hf4"),
        "prior_1b_lyrics": ("prior", 2, one_b, "hf4"),
        "chain_5b_lyrics": ("chain", None, five_b, "hf4"),  # each hf4 folder is a whole chain
        "chain_1b_lyrics": ("chain", None, one_b, "hf4"),
    }
    assert "mir" not in got and "chain_5b" not in got  # the hf4 repos have no non-lyrics 5b top prior
    assert len(plan.skipped) == 1 and "c-config-only: Jukebox config.json without weights" in plan.skipped[0]

    # a single hf4 folder given directly works too, and original files take precedence where both exist
    _openai_tree(five_b, ["5b/vqvae.pth.tar"])
    direct = convert_all.plan_conversions(five_b, tmp_path / "out2")
    sources = {job.key: job.source_format for job in direct.jobs}
    assert sources == {
        "vqvae": "openai", "upsampler_level_0": "hf4", "upsampler_level_1": "hf4", "prior_5b_lyrics": "hf4",
        "chain_5b_lyrics": "hf4",
    }  # fmt: skip


def test_hf4_variant_detection(fixtures_dir, convert_all):
    def variant(name):
        return convert_all.hf4_variant(json.loads((fixtures_dir / "hf4_format" / name / "config.json").read_text()))

    assert variant("jukebox_tiny_1b_lyrics") == "1b_lyrics"
    assert variant("jukebox_tiny_5b_lyrics") == "5b_lyrics"
    assert variant("jukebox_tiny_5b_config_only") == "5b"
    with pytest.raises(convert_all.PlanError, match="neither prior_0 nor prior_config_list"):
        convert_all.hf4_variant({"model_type": "jukebox"})


def test_script_main_dry_run_and_output_checks(tmp_path, convert_all, capsys):
    root = _openai_tree(tmp_path / "in", ["5b/vqvae.pth.tar"])
    out = tmp_path / "out"
    assert convert_all.main([str(root), "--output-dir", str(out), "--dry-run"]) == 0
    assert "1 Hub folder(s) to write:" in capsys.readouterr().out
    assert not out.exists()
    assert convert_all.main([str(root), "--output-dir", str(out), "--push"]) == 2
    assert "--push needs --namespace" in capsys.readouterr().err
    (out / "jukebox-vqvae").mkdir(parents=True)
    (out / "jukebox-vqvae" / "old.txt").write_text("x")
    assert convert_all.main([str(root), "--output-dir", str(out)]) == 2
    assert "Output folder(s) not empty" in capsys.readouterr().err


def test_commands_plug_into_the_cli(tmp_path, capsys, monkeypatch):
    from hf_jukebox_mir import cli

    monkeypatch.setattr(cli, "COMMANDS", ["card", "push"])
    folder = make_hub_folder(tmp_path, "vqvae", card=False)
    assert cli.main(["push", str(folder), "--repo-id", "me/jukebox-test", "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jukebox-mir push: error: ") and "README.md (the model card) is missing" in err
    assert cli.main(["card", str(folder), "--repo-id", "me/jukebox-test"]) == 0
    assert cli.main(["push", str(folder), "--repo-id", "me/jukebox-test", "--check"]) == 0


FIXTURE_FILES = {  # OpenAI layout -> the small original-format parity fixtures
    "5b/vqvae.pth.tar": "vqvae/vqvae.pth.tar",
    "5b/prior_level_0.pth.tar": "upsampler_level_0/prior_level_0.pth.tar",
    "5b/prior_level_1.pth.tar": "upsampler_level_1/prior_level_1.pth.tar",
    "5b/prior_level_2.pth.tar": "prior_5b_top/prior_level_2.pth.tar",
}
EXPECTED_CARDS = {  # folder -> (title, base_model line or None)
    "jukebox-vqvae": ("# Jukebox VQ-VAE (OpenAI, 5b)", "base_model: openai/jukebox-5b-lyrics"),
    "jukebox-upsampler-level-1": ("# Jukebox upsampler prior, level 1 (OpenAI, 5b)", "base_model: openai/"),
    "jukebox-5b-top-prior": ("# Jukebox 5b top-level prior (OpenAI)", None),
    "jukebox-5b-chain": ("# Jukebox 5b sampling chain (OpenAI)", None),
}


def _run_convert_all(convert_all, fixtures_dir, tmp_path, only: str, capsys) -> tuple[Path, list[str]]:
    root = tmp_path / "openai"
    for rel, src in FIXTURE_FILES.items():
        if not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).symlink_to(fixtures_dir / src)
    out = tmp_path / "hub"
    argv = [str(root), "--output-dir", str(out), "--namespace", "me", "--only", only]
    assert convert_all.main(argv) == 0, capsys.readouterr().err
    jobs = only.split(",")
    assert f"done: {len(jobs)} of {len(jobs)} folder(s) ready" in capsys.readouterr().out
    return out, argv


def _check_converted(folder: Path) -> None:
    assert validate_hub_folder(folder) == []
    title, base_model = EXPECTED_CARDS[folder.name]
    card = (folder / "README.md").read_text()
    assert title in card and f'from_pretrained("me/{folder.name}", trust_remote_code=True)' in card
    assert (base_model in card) if base_model else ("base_model" not in card)
    for source in ConversionAudit.read(folder).sources:
        assert f"`{source.sha256}`" in card
    assert "| loaded_from | the written folder, with from_pretrained (float32 compute) |" in card


@pytest.mark.slow
def test_convert_all_vqvae_on_parity_fixture(tmp_path, convert_all, fixtures_dir, capsys):
    """The real 5b VQ-VAE structure (random weights): a few seconds of conversion and output check."""
    out, _ = _run_convert_all(convert_all, fixtures_dir, tmp_path, "vqvae", capsys)
    _check_converted(out / "jukebox-vqvae")


def test_convert_all_end_to_end_on_parity_fixtures(tmp_path, convert_all, fixtures_dir, online, capsys):
    """Real converters on the small original-format fixtures -> Hub folders with cards -> checks -> mocked push."""
    out, argv = _run_convert_all(convert_all, fixtures_dir, tmp_path, "upsampler_level_1,prior_5b", capsys)
    for name in ("jukebox-upsampler-level-1", "jukebox-5b-top-prior"):
        _check_converted(out / name)

    api = mock.MagicMock()
    result = push_folder(out / "jukebox-5b-top-prior", "me/jukebox-5b-top-prior", api=api)
    uploaded = [op.path_in_repo for op in api.create_commit.call_args.kwargs["operations"]]
    assert uploaded == result.files
    assert {"README.md", "config.json", "conversion_audit.json", "model.safetensors"} <= set(uploaded)
    assert any(name.startswith("modeling_") for name in uploaded)
    assert all(name.endswith((".py", ".json", ".md", ".safetensors")) for name in uploaded)

    # a second run refuses to overwrite, and converts again with --overwrite
    assert convert_all.main(argv) == 2
    assert convert_all.main([*argv, "--overwrite", "--only", "prior_5b"]) == 0


def test_convert_all_old_hub_format_upsampler(tmp_path, convert_all, fixtures_dir, capsys):
    out = tmp_path / "hub"
    folder = fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics"
    argv = [str(folder), "--output-dir", str(out), "--only", "upsampler_level_1"]
    assert convert_all.main(argv) == 0, capsys.readouterr().err
    converted = out / "jukebox-upsampler-level-1"
    assert validate_hub_folder(converted) == []
    assert json.loads((converted / "config.json").read_text())["level"] == 1  # priors.1 of the hf4 folder
    text = (converted / "README.md").read_text()
    assert "# Jukebox upsampler prior, level 1 (OpenAI, 5b)" in text
    assert "(format: transformers-4.x)" in text and "pytorch_model-0000" in text  # the hf4 shards it read


def test_probe_folder_with_task_specific_auto_class_is_accepted(tmp_path):
    folder = make_hub_folder(tmp_path, "probe", card=False)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_fake.FakeConfig",
        "AutoModelForAudioClassification": "modeling_fake.FakeModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    write_model_card(folder, repo_id="me/jukebox-test")
    assert validate_hub_folder(folder) == []
    assert "conversion_audit.json" not in hub_files(folder)  # probes are trained, not converted


def test_uploaded_files_are_enough_for_trust_remote_code(tmp_path, fixtures_dir):
    """Only `hub_files` are pushed: a copy of exactly those must load in a fresh process without the package."""
    import subprocess

    from hf_jukebox_mir.conversion.prior import convert_prior_checkpoint

    folder = tmp_path / "converted"
    convert_prior_checkpoint(fixtures_dir / "prior_5b_top" / "prior_level_2.pth.tar", folder)
    write_model_card(folder, repo_id="me/jukebox-5b-top-prior")
    upload = tmp_path / "upload"
    upload.mkdir()
    for name in check_hub_folder(folder):
        shutil.copy(folder / name, upload / name)
    code = (
        "import sys\n"
        "sys.path = [p for p in sys.path if not p.rstrip('/').endswith('src')]\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('hf_jukebox_mir') is None, 'package must not be importable here'\n"
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(upload)!r}, trust_remote_code=True)\n"
        "print(type(model).__module__.split('.')[0], type(model).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["transformers_modules", "JukeboxPrior"]


# --- a real sampling chain: `jukebox-mir convert --vqvae V --prior P0 P1 P2` on the parity fixtures ----------------

CHAIN_SOURCES = {  # part -> original-format parity fixture (the released structure at tiny widths)
    "vqvae": "vqvae/vqvae.pth.tar",
    "prior_level_0": "upsampler_level_0/prior_level_0.pth.tar",
    "prior_level_1": "upsampler_level_1/prior_level_1.pth.tar",
    "prior_level_2": "prior_5b_top/prior_level_2.pth.tar",
}


@pytest.fixture(scope="module")
def real_chain(tmp_path_factory, fixtures_dir):
    """One real conversion through the CLI for the whole module (about 10 s on 2 cores): (return code, folder)."""
    from hf_jukebox_mir import cli

    folder = tmp_path_factory.mktemp("chain") / "jukebox-5b-chain"
    vqvae, *priors = (str(fixtures_dir / rel) for rel in CHAIN_SOURCES.values())
    return cli.main(["convert", "--vqvae", vqvae, "--prior", *priors, "--output", str(folder)]), folder


def test_convert_command_writes_a_chain_folder_with_its_card(real_chain):
    returncode, folder = real_chain
    assert returncode == 0
    assert json.loads((folder / "config.json").read_text())["model_type"] == "jukebox_mir_chain"
    text = (folder / "README.md").read_text()
    assert text.startswith("---\nlicense: other\n") and CARD_MARKER in text
    assert "# Jukebox 5b sampling chain (OpenAI)" in text
    assert 'AutoModel.from_pretrained("<owner>/jukebox-5b-chain", trust_remote_code=True)' in text  # no repo id yet


def test_real_chain_card_renders_parses_and_validates(real_chain, fixtures_dir):
    _, folder = real_chain
    card = render_model_card(folder, repo_id="me/jukebox-5b-chain")
    metadata = yaml.safe_load(str(card).split("---\n")[1])
    assert validate_card_metadata(metadata, "chain") == []
    assert metadata["pipeline_tag"] == "text-to-audio" and "base_model" not in metadata  # the 5b top has no Hub copy
    reparsed = ModelCard(str(card))
    assert reparsed.data.license_name == "openai-jukebox-noncommercial" and "custom_code" in reparsed.data.tags
    text = reparsed.text

    config = json.loads((folder / "config.json").read_text())
    top = config["prior_level_2_config"]
    assert f"| top prior (level 2) | width {top['hidden_size']}, layers {top['num_hidden_layers']}, " in text
    assert "| lyrics | none (artist and genre only) |" in text and '    lyrics="' not in text
    assert 'model = AutoModel.from_pretrained("me/jukebox-5b-chain", trust_remote_code=True).eval()' in text
    assert "out = model.generate_audio(\n    seconds=10.0," in text and '    artist="Ella Fitzgerald",' in text
    assert "jukebox-mir sample --model jukebox-5b-chain --seconds 20" in text
    # provenance: every source file with its checksum, named by part, linked to OpenAI's file
    root = "https://openaipublic.azureedge.net/jukebox/models/5b"
    for part, rel in CHAIN_SOURCES.items():
        sha = hashlib.sha256((fixtures_dir / rel).read_bytes()).hexdigest()
        assert f"| {part} | [`{rel}`]({root}/{Path(rel).name}) | `{sha}` |" in text
    assert "Converted with `hf-jukebox-mir` " in text and "(format: openai)" in text
    assert (
        "| loaded_from | the written folder, with from_pretrained (float32 compute) |" in text
        and "| prior_level_2.logits | shape (1, 32, 2048) float32;" in text
    )


def test_real_chain_folder_passes_hub_checks_and_pushes(real_chain, online):
    _, folder = real_chain
    files = check_hub_folder(folder)
    assert files[:3] == ["README.md", "config.json", "conversion_audit.json"]
    assert {"model.safetensors", "configuration_jukebox_chain.py", "modeling_jukebox_chain.py",
            "modeling_jukebox_prior.py", "modeling_jukebox_vqvae.py", "generation_jukebox.py"} <= set(files)  # fmt: skip  # noqa: E501
    assert all(name.endswith((".py", ".json", ".md", ".safetensors")) and "/" not in name for name in files)

    api = mock.MagicMock()
    result = push_folder(folder, "me/jukebox-5b-chain", api=api)
    uploaded = [op.path_in_repo for op in api.create_commit.call_args.kwargs["operations"]]
    assert uploaded == result.files == files
    assert api.create_commit.call_args.kwargs["commit_message"].startswith("Upload Jukebox sampling chain with ")


def test_real_chain_with_a_part_missing_from_the_weights_is_refused(real_chain, tmp_path):
    _, folder = real_chain
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    tensors = load_file(str(folder / "model.safetensors"))
    kept = {name: tensor for name, tensor in tensors.items() if not name.startswith("prior_level_1.")}
    assert len(kept) < len(tensors)
    save_file(kept, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(JukeboxCheckpointError, match=r"no tensors for prior_level_1 \(names starting with"):
        check_hub_folder(broken)


@pytest.mark.slow
def test_convert_all_chain_on_parity_fixtures(tmp_path, convert_all, fixtures_dir, capsys):
    """The script's chain job on the original-format fixtures (one more real conversion, about 10 s)."""
    out, _ = _run_convert_all(convert_all, fixtures_dir, tmp_path, "chain_5b", capsys)
    _check_converted(out / "jukebox-5b-chain")


@pytest.mark.slow
def test_convert_all_old_hub_format_chain(tmp_path, convert_all, fixtures_dir, capsys):
    out = tmp_path / "hub"
    folder = fixtures_dir / "hf4_format" / "jukebox_tiny_1b_lyrics"
    argv = [str(folder), "--output-dir", str(out), "--only", "chain_1b_lyrics", "--namespace", "me"]
    assert convert_all.main(argv) == 0, capsys.readouterr().err
    converted = out / "jukebox-1b-lyrics-chain"
    assert validate_hub_folder(converted) == []
    text = (converted / "README.md").read_text()
    assert "# Jukebox 1b_lyrics sampling chain (OpenAI)" in text and "base_model: openai/jukebox-1b-lyrics" in text
    assert "(format: transformers-4.x)" in text and '    lyrics="' in text


def test_convert_all_mir_job_on_parity_fixtures(tmp_path, convert_all, fixtures_dir, capsys):
    """The JukeMIR extraction folder of the script (VQ-VAE encoder + truncated 5b prior, bf16) is Hub-ready and
    loads."""
    root = tmp_path / "openai"
    for rel, src in FIXTURE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(fixtures_dir / src)
    out = tmp_path / "hub"
    assert (
        convert_all.main(
            [str(root), "--output-dir", str(out), "--namespace", "me", "--only", "mir", "--num-layers", "4"]
        )
        == 0
    ), capsys.readouterr().err
    folder = out / "jukebox-mir-5b-layer4"
    assert validate_hub_folder(folder) == []
    config = json.loads((folder / "config.json").read_text())
    assert config["prior_config"]["num_hidden_layers"] == 4 and "feature-extraction" in config["custom_pipelines"]
    import torch
    from transformers import AutoModel

    import hf_jukebox_mir

    hf_jukebox_mir.register()  # the Auto classes

    model = AutoModel.from_pretrained(folder, dtype="auto")
    assert model.prior.embed_tokens.weight.dtype == torch.bfloat16 and len(model.prior.layers) == 4
    # the encoder is stored (and loaded) in float32: the codes stay exact
    assert {p.dtype for p in model.vqvae.parameters()} == {torch.float32}
    audit = json.loads((folder / "conversion_audit.json").read_text())
    assert audit["dtypes"] == {"vqvae": "float32", "prior": "bfloat16"}
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: feature-extraction" in card
