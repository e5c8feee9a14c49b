"""Streaming conversion (issue 15): lazy legacy/zip reading, strict accounting before writing, shards, atomicity."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hf_jukebox_mir.conversion import lazy_checkpoint, plan, streaming
from hf_jukebox_mir.conversion.checkpoint_io import load_hf4_folder
from hf_jukebox_mir.conversion.mir import convert_mir_model
from hf_jukebox_mir.conversion.prior import convert_prior_checkpoint, load_prior_checkpoint
from hf_jukebox_mir.models.errors import JukeboxCheckpointError

PRIOR = "prior_5b_top/prior_level_2.pth.tar"


@pytest.fixture(scope="module")
def raw_prior(fixtures_dir):
    return torch.load(fixtures_dir / PRIOR, weights_only=True)


@pytest.fixture(scope="module")
def both_formats(raw_prior, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    torch.save(raw_prior, folder / "legacy.pth.tar", _use_new_zipfile_serialization=False)
    torch.save(raw_prior, folder / "zip.pth.tar")
    return folder / "legacy.pth.tar", folder / "zip.pth.tar"


@pytest.mark.parametrize("fmt", [0, 1], ids=["legacy", "zip"])
def test_streaming_writes_the_same_bytes_as_the_in_memory_path(both_formats, tmp_path, fmt):
    source = both_formats[fmt]
    out = convert_prior_checkpoint(source, tmp_path / "streamed", num_layers=4, dtype=torch.bfloat16)
    reference = load_prior_checkpoint(source, num_layers=4, dtype=torch.bfloat16)
    reference.save_pretrained(tmp_path / "in_memory")
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "in_memory" / "model.safetensors").read_bytes()
    streamed_config = json.loads((out / "config.json").read_text())
    memory_config = json.loads((tmp_path / "in_memory" / "config.json").read_text())
    ignore = {"transformers_version"}
    assert {k: v for k, v in streamed_config.items() if k not in ignore} == {
        k: v for k, v in memory_config.items() if k not in ignore
    }


def test_legacy_file_opens_without_reading_tensors(both_formats, monkeypatch):
    reads = []
    original = lazy_checkpoint.LazyTorchFile.read
    monkeypatch.setattr(
        lazy_checkpoint.LazyTorchFile, "read", lambda self, ref: reads.append(ref) or original(self, ref)
    )
    from hf_jukebox_mir.conversion.prior import open_prior_checkpoint

    source = open_prior_checkpoint(both_formats[0], num_layers=2)
    assert reads == []  # headers only
    assert source.config.num_hidden_layers == 2 and source.checkpoint_depth == 6
    assert all(f"_attn_mods.{i}." not in entry.source for entry in source.plan.values() for i in range(2, 6))


def test_blocks_above_num_layers_and_decoders_are_never_read(fixtures_dir, both_formats, tmp_path, monkeypatch):
    read_keys = set()
    original = plan.plan_from_mapping

    def spy(state, mapping, **kwargs):
        plan = original(state, mapping, **kwargs)
        for entry in plan.values():
            read = entry.read
            object.__setattr__(
                entry, "read", lambda *args, read=read, name=entry.source: read_keys.add(name) or read(*args)
            )
        return plan

    monkeypatch.setattr("hf_jukebox_mir.conversion.prior.plan_from_mapping", spy)
    monkeypatch.setattr("hf_jukebox_mir.conversion.vqvae.plan_from_mapping", spy)
    convert_mir_model(fixtures_dir / "vqvae" / "vqvae.pth.tar", both_formats[0], tmp_path / "mir", num_layers=2)
    assert read_keys, "nothing was read"
    assert not [k for k in read_keys if any(f"_attn_mods.{i}." in k for i in range(2, 6))]
    assert not [k for k in read_keys if ":decoders." in k or ":encoders.0." in k or ":encoders.1." in k]


def test_hostile_legacy_pickle_is_refused_and_nothing_written(raw_prior, tmp_path, capfd):
    class RunsCode:
        def __reduce__(self):
            import os

            return (os.system, ("echo this-must-never-run",))

    torch.save({**raw_prior, "payload": RunsCode()}, tmp_path / "evil.pth.tar", _use_new_zipfile_serialization=False)
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Refusing to load .*evil\.pth\.tar: it references the Python "
        r"global\(s\) posix\.system",
    ):
        convert_prior_checkpoint(tmp_path / "evil.pth.tar", tmp_path / "out")
    assert "this-must-never-run" not in capfd.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth.tar"]


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_legacy_file_is_refused_before_writing(both_formats, tmp_path, fraction):
    data = both_formats[0].read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Could not read .*cut\.pth\.tar: the file is truncated or "
        r"corrupt.*Download it again and compare its SHA-256",
    ):
        convert_prior_checkpoint(tmp_path / "cut.pth.tar", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pth.tar"]


def test_bit_flipped_zip_storage_is_refused(both_formats, tmp_path):
    import zipfile

    data = bytearray(both_formats[1].read_bytes())
    with zipfile.ZipFile(both_formats[1]) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 1000)
    # the entry's data starts after its local header (30 bytes + name + extra)
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 100] ^= 0x10
    (tmp_path / "flip.pth.tar").write_bytes(bytes(data))
    with pytest.raises(JukeboxCheckpointError, match=r"Could not read .*flip\.pth\.tar.*(CRC|crc)"):
        convert_prior_checkpoint(tmp_path / "flip.pth.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_non_float_weights_are_refused(raw_prior, tmp_path, dtype):
    model = dict(raw_prior["model"])
    key = "prior.transformer._attn_mods.0.mlp.c_fc.b"
    model[key] = model[key].to(dtype)
    torch.save({**raw_prior, "model": model}, tmp_path / "odd.pth.tar")
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"1 weight\(s\) are not real floating-point tensors, which no "
        r"Jukebox checkpoint has: layers\.0\.mlp\.fc_in\.bias",
    ):
        convert_prior_checkpoint(tmp_path / "odd.pth.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_check_can_run_blocks_one_at_a_time_from_disk(both_formats, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "OFFLOAD_THRESHOLD_BYTES", 0)
    out = convert_prior_checkpoint(both_formats[0], tmp_path / "offloaded", max_shard_size="200KB")
    audit = json.loads((out / "conversion_audit.json").read_text())
    assert audit["output_check"]["loaded_from"] == (
        "the written shards, transformer blocks read one at a time (float32 compute)"
    )
    assert len(list(out.glob("model-*.safetensors"))) > 2 and (out / "model.safetensors.index.json").is_file()
    plain = convert_prior_checkpoint(both_formats[0], tmp_path / "plain")
    same = json.loads((plain / "conversion_audit.json").read_text())["output_check"]["outputs"]
    assert audit["output_check"]["outputs"] == same


def test_hf4_index_may_not_point_outside_its_folder(fixtures_dir, tmp_path):
    folder = tmp_path / "hf4"
    shutil.copytree(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics", folder)
    index_path = folder / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../../etc/passwd"
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        JukeboxCheckpointError, match=r"names the weight file '\.\./\.\./etc/passwd', which lies outside"
    ):
        load_hf4_folder(folder)


# ------------------------------------------------------------------------------------------- Hub sources


def _hub_cache(tmp_path, fixtures_dir, drop: str | None = None):
    """A huggingface_hub cache holding the tiny transformers-4.x folder as `openai/jukebox-tiny` (no network)."""
    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--openai--jukebox-tiny" / "snapshots" / revision
    shutil.copytree(fixtures_dir / "hf4_format" / "jukebox_tiny_5b_lyrics", snapshot)
    (cache / "models--openai--jukebox-tiny" / "refs").mkdir()
    (cache / "models--openai--jukebox-tiny" / "refs" / "main").write_text(revision)
    if drop:
        (snapshot / drop).unlink()
    return cache, snapshot


def test_hub_repo_id_from_the_cache_fetches_only_needed_shards(fixtures_dir, tmp_path):
    from hf_jukebox_mir.conversion.hub_source import fetch_hf4_repo
    from hf_jukebox_mir.conversion.vqvae import convert_hf4_vqvae

    cache, snapshot = _hub_cache(tmp_path, fixtures_dir)
    index = json.loads((snapshot / "pytorch_model.bin.index.json").read_text())["weight_map"]
    vqvae_shards = {f for k, f in index.items() if k.startswith("vqvae.")}
    other = sorted(set(index.values()) - vqvae_shards)
    assert other, "the fixture keeps the VQ-VAE and the priors in different shards"
    for name in other:  # a partial cache: only what the VQ-VAE needs
        (snapshot / name).unlink()
    folder = fetch_hf4_repo("openai/jukebox-tiny", ("vqvae.",), cache_dir=cache, offline=True)
    assert folder == snapshot
    out = convert_hf4_vqvae(folder, tmp_path / "vqvae")
    assert (out / "model.safetensors").is_file()


def test_hub_repo_id_offline_lists_the_files_to_fetch(fixtures_dir, tmp_path):
    from hf_jukebox_mir.conversion.hub_source import fetch_hf4_repo

    cache, snapshot = _hub_cache(tmp_path, fixtures_dir)
    index = json.loads((snapshot / "pytorch_model.bin.index.json").read_text())["weight_map"]
    top_shards = sorted({f for k, f in index.items() if k.startswith("priors.0.")})
    for name in top_shards:
        (snapshot / name).unlink()
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"openai/jukebox-tiny is not in the local Hugging Face cache and "
        r"the Hub cannot be reached \(offline\)\. Files still to fetch: "
        + ", ".join(top_shards)
        + r"\. On a machine with network access run `hf download openai/jukebox-tiny",
    ):
        fetch_hf4_repo("openai/jukebox-tiny", ("vqvae.", "priors.0."), cache_dir=cache, offline=True)
    empty = tmp_path / "empty"
    with pytest.raises(JukeboxCheckpointError, match=r"Files still to fetch: config\.json"):
        fetch_hf4_repo("openai/jukebox-tiny", None, cache_dir=empty, offline=True)


# -------------------------------------------------------------------------------------- compute dtype on CPU


@pytest.mark.parametrize("fast", [True, False])
def test_compute_dtype_fits_the_cpu(fixtures_dir, both_formats, tmp_path, monkeypatch, fast):
    import hf_jukebox_mir.models.modeling_jukebox_mir as mir_module
    from hf_jukebox_mir import JukeboxMIRModel

    out = convert_mir_model(
        fixtures_dir / "vqvae" / "vqvae.pth.tar", both_formats[0], tmp_path / "mir", num_layers=2, dtype=torch.bfloat16
    )
    monkeypatch.setattr(mir_module, "has_fast_half_precision", lambda: fast)
    chosen = JukeboxMIRModel.from_pretrained(out)
    assert chosen.prior.dtype == (torch.bfloat16 if fast else torch.float32)
    assert JukeboxMIRModel.from_pretrained(out, dtype="auto").prior.dtype == chosen.prior.dtype
    assert JukeboxMIRModel.from_pretrained(out, dtype=torch.bfloat16).prior.dtype == torch.bfloat16  # asked: kept
    assert chosen.vqvae.dtype == torch.float32
