"""Shard writing (issue 15's speed work): the streaming safetensors writer, reusable buffers, the overlapped
write/hash/sync pipeline, the output check running while shards are written, and full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import threading

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hf_jukebox_mir.conversion import shard_writer, streaming
from hf_jukebox_mir.conversion.plan import PlannedTensor
from hf_jukebox_mir.conversion.prior import convert_prior_checkpoint
from hf_jukebox_mir.conversion.safetensors_stream import SafetensorsStreamWriter, plan_layout
from hf_jukebox_mir.models.errors import JukeboxCheckpointError

PRIOR = "prior_5b_top/prior_level_2.pth.tar"


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "layers.10.w": torch.randn(3, 4, generator=generator),
        "layers.2.w": torch.randn(5, generator=generator).bfloat16(),
        "a.index": torch.arange(7),
        "half": torch.randn(2, 2, generator=generator).half(),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 3),
        "mask": torch.tensor([True, False]),
        "ünïcode": torch.ones(1, dtype=torch.float64),
    }


def test_stream_writer_writes_the_bytes_save_file_writes(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "library.safetensors"), metadata={"format": "pt"})
    layout = plan_layout({k: (v.dtype, v.shape) for k, v in tensors.items()}, {"format": "pt"})
    writer = SafetensorsStreamWriter(tmp_path / "streamed.safetensors", layout)
    for slot in layout.slots:
        writer.write(tensors[slot.name])
    writer.close()
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "library.safetensors").read_bytes()
    assert layout.size == (tmp_path / "streamed.safetensors").stat().st_size


def test_stream_writer_refuses_a_wrong_tensor_and_a_missing_one(tmp_path):
    tensors = _tensors()
    layout = plan_layout({k: (v.dtype, v.shape) for k, v in tensors.items()})
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", layout)
    first = layout.slots[0]
    expected = f"x.safetensors: {first.name} must be {first.dtype} {list(first.shape)}, got torch.int8"
    with pytest.raises(ValueError, match=re.escape(expected)):
        writer.write(torch.zeros(first.shape, dtype=torch.int8))
    writer.write(tensors[first.name])
    with pytest.raises(ValueError, match=rf"x\.safetensors: {len(layout.slots) - 1} tensor\(s\) were not written"):
        writer.close()


def _planned(tensor: torch.Tensor, transpose: bool = False) -> PlannedTensor:
    def read(scratch=None):
        if scratch is None:
            return tensor.clone()
        flat = scratch(tensor.numel() * tensor.element_size())
        view = flat.view(tensor.dtype).view(tensor.shape)
        return view.copy_(tensor)

    shape = tuple(tensor.shape)[::-1] if transpose else tuple(tensor.shape)
    return PlannedTensor("test", shape, tensor.dtype, read, transpose=transpose)


@pytest.mark.parametrize(
    ("source", "target", "transpose"),
    [
        (torch.float16, torch.bfloat16, True),  # the 5B prior's Conv1D weights into a bfloat16 MIR folder
        (torch.float16, torch.float32, True),
        (torch.float32, torch.float32, True),
        (torch.bfloat16, torch.float16, False),
        (torch.float32, torch.bfloat16, False),
    ],
)
def test_materialize_equals_transpose_then_cast_exactly(source, target, transpose):
    tensor = (torch.randn(48, 80, generator=torch.Generator().manual_seed(1)) * 300).to(source)
    expected = (tensor.t() if transpose else tensor).contiguous().to(target)
    buffers = shard_writer._Buffers()
    got = shard_writer.materialize(_planned(tensor, transpose), target, buffers)
    assert got.dtype == target and got.is_contiguous()
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))  # bit for bit, NaN-safe


def test_materialize_reuses_its_buffers_and_passes_plain_tensors_through():
    buffers = shard_writer._Buffers()
    first = shard_writer.materialize(_planned(torch.randn(64, 32), transpose=True), torch.float32, buffers)
    second = shard_writer.materialize(_planned(torch.randn(64, 32), transpose=True), torch.float32, buffers)
    assert first.data_ptr() == second.data_ptr()  # the same output buffer: no allocation per tensor
    plain = torch.randn(10, 10)
    passed = shard_writer.materialize(_planned(plain), torch.float32, buffers)
    assert torch.equal(passed, plain) and passed.data_ptr() == buffers.get("source", 1).data_ptr()


def test_write_shards_splits_hashes_and_opens_the_gate_in_order(tmp_path):
    generator = torch.Generator().manual_seed(2)
    tensors = {f"layers.{i}.w": torch.randn(64, 64, generator=generator) for i in range(6)}
    tensors["head"] = torch.randn(16, generator=generator)
    plan = {key: _planned(value) for key, value in tensors.items()}
    dtypes = {key: torch.float32 for key in plan}
    order = shard_writer.write_order(plan, lambda key: int(key.split(".")[1]) if key.startswith("layers.") else None)
    assert order[0] == "head" and order[1:] == [f"layers.{i}.w" for i in range(6)]
    split = shard_writer.split_shards({k: (torch.float32, v.shape) for k, v in tensors.items()}, "40KB", order)
    assert len(split.files) > 2 and split.index is not None
    opened: list[str] = []

    class Gate(shard_writer.ShardGate):
        def open(self, name):
            opened.append(name)
            super().open(name)

    digests = shard_writer.write_shards(plan, dtypes, tmp_path, split, Gate(split.files))
    assert opened == list(split.files)
    assert digests == {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in split.files}
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == split.weight_map
    for key, value in tensors.items():
        with safe_open(str(tmp_path / split.weight_map[key]), framework="pt") as handle:
            assert torch.equal(handle.get_tensor(key), value)


@pytest.fixture
def prior_file(fixtures_dir):
    return fixtures_dir / PRIOR


@pytest.mark.parametrize("failing_write", [5, -1], ids=["early", "last"])
def test_a_full_disk_while_writing_says_so_and_leaves_no_folder(prior_file, tmp_path, monkeypatch, failing_write):
    calls = []
    original = SafetensorsStreamWriter.write
    if failing_write < 0:  # the very last tensor: its error must not be hidden behind the unfinished shard
        from hf_jukebox_mir.conversion.prior import open_prior_checkpoint

        failing_write = len(open_prior_checkpoint(prior_file).plan)

    def fill_up(self, tensor):
        calls.append(1)
        if len(calls) == failing_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor)

    monkeypatch.setattr(SafetensorsStreamWriter, "write", fill_up)
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"The disk is full: writing the converted weights into .* failed \(No space left on device\)\. "
        r"Nothing was published; free some space",
    ):
        convert_prior_checkpoint(prior_file, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(prior_file, tmp_path, monkeypatch):
    real = shard_writer.shutil.disk_usage
    monkeypatch.setattr(shard_writer.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(
        JukeboxCheckpointError,
        match=r"Not enough disk space for the converted weights: they need 0\.\d\d GB and .* has 0\.00 GB free\.",
    ):
        convert_prior_checkpoint(prior_file, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_output_check_runs_while_shards_are_written(prior_file, tmp_path, monkeypatch):
    """The block-by-block check starts before the last shard is written (it waits shard by shard)."""
    monkeypatch.setattr(streaming, "OFFLOAD_THRESHOLD_BYTES", 0)
    events: list[str] = []
    lock = threading.Lock()
    real_wait = shard_writer.ShardGate.wait
    real_open = shard_writer.ShardGate.open

    def wait(self, name):
        real_wait(self, name)
        with lock:
            events.append(f"read {name}")

    def open_(self, name):
        with lock:
            events.append(f"written {name}")
        real_open(self, name)

    monkeypatch.setattr(shard_writer.ShardGate, "wait", wait)
    monkeypatch.setattr(shard_writer.ShardGate, "open", open_)
    out = convert_prior_checkpoint(prior_file, tmp_path / "out", max_shard_size="100KB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 3
    assert events.index(f"read {shards[0]}") < events.index(f"written {shards[-1]}")
    for name in shards:  # never read before it is complete
        if f"read {name}" in events:
            assert events.index(f"written {name}") < events.index(f"read {name}")


def _convert_offloaded_in_a_thread(source, output) -> list[BaseException] | None:
    """Convert with 100 KB shards in a thread; the errors raised, or None if it still runs after 120 s (a hang)."""
    outcome: list[BaseException] = []

    def run():
        try:
            convert_prior_checkpoint(source, output, max_shard_size="100KB")
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    return None if worker.is_alive() else outcome


def test_a_write_error_stops_the_waiting_output_check(prior_file, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "OFFLOAD_THRESHOLD_BYTES", 0)
    calls = []
    original = SafetensorsStreamWriter.write

    def fail_late(self, tensor):
        calls.append(1)
        if len(calls) == 40:
            raise OSError(errno.EIO, "Input/output error")
        return original(self, tensor)

    monkeypatch.setattr(SafetensorsStreamWriter, "write", fail_late)
    outcome = _convert_offloaded_in_a_thread(prior_file, tmp_path / "out")
    assert outcome is not None, "the conversion hung after a write error"
    assert len(outcome) == 1 and isinstance(outcome[0], OSError) and "Input/output error" in str(outcome[0])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_scratch_reads_land_in_the_callers_buffer(prior_file):
    from hf_jukebox_mir.conversion.lazy_checkpoint import LazyTorchFile, TensorRef

    with LazyTorchFile(prior_file) as reader:
        refs = {k: v for k, v in reader.root["model"].items() if isinstance(v, TensorRef)}
        key, ref = next((k, r) for k, r in refs.items() if r.numel > 100)
        buffer = torch.empty(ref.storage.numel * ref.dtype.itemsize + 64, dtype=torch.uint8)
        tensor = reader.read(ref, lambda n: buffer[:n])
        assert tensor.untyped_storage().data_ptr() == buffer.data_ptr()
        assert torch.equal(tensor, reader.read(ref))


def test_a_shard_leaves_the_page_cache_once_synced_and_done_with(tmp_path, monkeypatch):
    dropped: list[str] = []
    monkeypatch.setattr(shard_writer, "drop_from_page_cache", lambda path: dropped.append(path.name))
    gate = shard_writer.ShardGate(["a", "b"], tmp_path)
    gate.release("a")
    assert dropped == []  # still being synced
    gate.synced("a")
    gate.synced("b")
    assert dropped == ["a"]  # b: the reader still needs it
    from hf_jukebox_mir.conversion.folder_check import ShardReader

    reader = ShardReader(tmp_path, {"x.w": "b", "x.b": "b", "y.w": "a"}, gate)
    reader.done(["x.w"])
    assert dropped == ["a"]
    reader.done(["x.b"])
    assert dropped == ["a", "b"]
    reader.done(["x.w", "x.b", "y.w"])  # done twice, or released twice: nothing more happens
    gate.synced("b")
    assert dropped == ["a", "b"]


def test_converted_shards_are_dropped_from_the_page_cache(prior_file, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "OFFLOAD_THRESHOLD_BYTES", 0)
    dropped: list[str] = []
    real = shard_writer.drop_from_page_cache
    monkeypatch.setattr(shard_writer, "drop_from_page_cache", lambda path: dropped.append(path.name) or real(path))
    out = convert_prior_checkpoint(prior_file, tmp_path / "out", max_shard_size="100KB")
    from hf_jukebox_mir.conversion.folder_check import block_numbers
    from hf_jukebox_mir.models.modeling_jukebox_prior import JukeboxPrior

    with torch.device("meta"):
        blocks = block_numbers(JukeboxPrior(JukeboxPrior.config_class.from_pretrained(out)))
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    in_use = {name for key, name in weight_map.items() if key not in blocks}  # embeddings etc.: the whole check
    expected = sorted(set(weight_map.values()) - in_use)
    assert len(expected) > 2 and sorted(dropped) == expected


def test_too_little_free_space_also_stops_the_waiting_output_check(prior_file, tmp_path, monkeypatch):
    """The block-by-block check waits on the shards from the start: a refusal before the first byte must stop it."""
    monkeypatch.setattr(streaming, "OFFLOAD_THRESHOLD_BYTES", 0)
    real = shard_writer.shutil.disk_usage
    monkeypatch.setattr(shard_writer.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    outcome = _convert_offloaded_in_a_thread(prior_file, tmp_path / "out")
    assert outcome is not None, "the conversion hung on its waiting output check"
    assert len(outcome) == 1 and "Not enough disk space for the converted weights" in str(outcome[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
