"""Fault injection (issue 17): kills, concurrent runs, full disks, header bombs, tampered folders, hostile files.

Each test names the point of issue 17 it covers. Fast cases run in the default suite (a "kill" there is an exception
raised at the N-th file rename, which is where a run's state changes); real `kill -9` at random points and two
real concurrent processes are `-m slow`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from hf_jukebox_mir.extraction import engine
from hf_jukebox_mir.extraction.engine import extract_dataset
from hf_jukebox_mir.extraction.guard import Limits, read_audio
from hf_jukebox_mir.extraction.locks import RunLock
from hf_jukebox_mir.models.errors import (
    JukeboxCheckpointError,
    JukeboxConfigError,
    JukeboxInputError,
    JukeboxRunError,
)
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from test_pipeline_jukebox import build_mir_folder

SR = 44100
WINDOW = 4096
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.4 * np.sin(2 * np.pi * (200 + 30 * seed) * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


#: the same command for the reference and every rerun (batch size and threads change the last bits of float sums)
RUN = {"chunk_size": 2, "batch_size": 3, "threads": 1, "progress": False}


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory, fixtures_dir) -> Path:
    """The converted parity MIR folder, untouched (its audit matches)."""
    return build_mir_folder(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, converted_dir) -> Path:
    """The MIR folder with 4096-sample windows (cheap forward passes)."""
    folder = tmp_path_factory.mktemp("faults") / "mir-small"
    shutil.copytree(converted_dir, folder)
    JukeboxFeatureExtractor(window_length=WINDOW).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults_music") / "music"
    folder.mkdir()
    for i in range(5):
        sf.write(folder / f"t{i}.wav", _signal(1200 + 700 * i, 70 + i), SR)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, music, model_dir) -> dict:
    """The dataset of an undisturbed run, as a dict of columns."""
    out = tmp_path_factory.mktemp("faults_ref") / "out"
    extract_dataset(music, model_dir, out, **RUN)
    return _columns(out)


def _columns(out: Path) -> dict:
    ds = datasets.load_from_disk(str(out)).with_format("numpy")
    return {name: np.asarray(ds[name]) for name in ds.column_names}


def _same(out: Path, reference: dict) -> None:
    got = _columns(out)
    assert sorted(got) == sorted(reference)
    for name, value in reference.items():
        if value.dtype.kind in "fc":
            np.testing.assert_array_equal(got[name], value)
        else:
            assert list(got[name]) == list(value), name


def _leftovers(out: Path) -> list[str]:
    """Partial files a run must never leave behind once it has finished."""
    names = [p.name for p in out.iterdir()] + [p.name for p in (out / "chunks").iterdir()]
    return sorted(n for n in names if n.startswith((".merge-", ".tmp-")) or (n.startswith(".") and ".json." in n))


class _Killed(BaseException):
    """Raised at an injected fault; a BaseException, so no `except Exception` in the code under test catches it."""


# ------------------------------------------------------------------------ 1. kills, above all during the merge


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5, 6, 7, 8])
def test_killed_at_any_rename_then_rerun_gives_the_identical_dataset(
    kill_at, music, model_dir, reference, tmp_path, monkeypatch
):
    """Point 1: a run is "killed" at its N-th rename (chunk commits, JSON files, the merge's data files and
    state.json); the same command run again completes the same dataset, with nothing partial left."""
    out = tmp_path / "out"
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(str(dst))
        if len(calls) == kill_at:
            raise _Killed(f"killed before renaming to {dst}")
        return real_replace(src, dst)

    monkeypatch.setattr(engine.os, "replace", replace)
    with pytest.raises(_Killed):
        extract_dataset(music, model_dir, out, **RUN)
    monkeypatch.setattr(engine.os, "replace", real_replace)
    again = extract_dataset(music, model_dir, out, **RUN)
    assert again.merged and again.num_done == 5 and not again.failures
    _same(out, reference)
    assert _leftovers(out) == []


def test_a_merge_lock_left_by_a_killed_run_does_not_block_the_next(music, model_dir, reference, tmp_path, monkeypatch):
    """Point 1: the old `.merge.lock` (an O_EXCL file with a PID) left by `kill -9` during the merge made every later
    run exit 0 with "0 inputs computed" and no dataset. Now the merge lock is an OS lock, released with the process."""
    out = tmp_path / "out"

    def killed_merge(*args, **kwargs):
        (out / ".merge.lock").write_text("4242")  # what the killed process left
        raise _Killed("killed during the merge")

    monkeypatch.setattr(engine, "_merge", killed_merge)
    with pytest.raises(_Killed):
        extract_dataset(music, model_dir, out, **RUN)
    monkeypatch.undo()
    assert (out / ".merge.lock").exists() and not (out / "state.json").exists()
    again = extract_dataset(music, model_dir, out, **RUN)
    assert again.merged and again.num_computed == 0
    _same(out, reference)


# ---------------------------------------------------------------------------------------- 2. concurrent runs


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(music, model_dir, tmp_path):
    """Point 2: while a run holds the output folder, another is refused before touching anything."""
    out = tmp_path / "out"
    out.mkdir()
    other = RunLock(out / ".lock-000", what="x").acquire()  # another run (another open file: a real OS conflict)
    try:
        with pytest.raises(JukeboxRunError, match=rf"is in use by another run \(PID {os.getpid()} on .*Wait for it"):
            extract_dataset(music, model_dir, out, progress=False)
        assert not (out / "chunks").exists() and not (out / "extraction.json").exists()
    finally:
        other.release()
    assert extract_dataset(music, model_dir, out, progress=False).merged  # free again


def test_overwrite_refuses_while_another_shard_runs(music, model_dir, tmp_path):
    out = tmp_path / "out"
    extract_dataset(music, model_dir, out, num_shards=2, shard_index=0, progress=False)
    other = RunLock(out / ".lock-001", what="shard 1").acquire()
    try:
        with pytest.raises(JukeboxRunError, match="is in use by another run"):
            extract_dataset(music, model_dir, out, overwrite=True, progress=False)
        assert (out / "chunks").is_dir()  # nothing was cleared
    finally:
        other.release()


def test_fallback_lock_files_take_over_stale_holders_only(tmp_path, monkeypatch):
    """Point 2: where the filesystem has no OS locks, a lock file whose holder is gone (same host, dead PID; other
    host, no heartbeat for `stale_after`) is taken over; a live holder is refused."""
    import socket

    path = tmp_path / ".lock-000"
    held = tmp_path / ".lock-000.held"
    info = tmp_path / ".lock-000.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    held.write_text("")
    info.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0, "command": "old"}))
    lock = RunLock(path, what="folder", soft=True).acquire()  # dead PID: stale
    assert json.loads(info.read_text())["pid"] == os.getpid()
    with pytest.raises(JukeboxRunError, match=rf"in use by another run \(PID {os.getpid()}"):
        RunLock(path, what="folder", soft=True).acquire()  # alive
    lock.release()
    assert not held.exists()
    held.write_text("")
    info.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0, "command": "remote"}))
    with pytest.raises(JukeboxRunError, match="elsewhere"):
        RunLock(path, what="folder", soft=True, stale_after=3600).acquire()  # fresh heartbeat
    os.utime(info, (time.time() - 7200, time.time() - 7200))
    RunLock(path, what="folder", soft=True, stale_after=3600).acquire().release()  # no heartbeat for 2 h: stale


# ----------------------------------------------------------------------------------------------- 3. disk full


def test_disk_full_during_the_merge_leaves_nothing_partial_and_a_rerun_succeeds(
    music, model_dir, reference, tmp_path, monkeypatch
):
    """Point 3: ENOSPC while writing the dataset (a write hook that writes part of a file, then fails)."""
    out = tmp_path / "out"
    real_save = datasets.Dataset.save_to_disk

    def full_disk(self, path, *args, **kwargs):
        if Path(path).name.startswith(".merge-"):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full_disk)
    for _ in range(2):  # retries while the disk is full add nothing
        with pytest.raises(JukeboxRunError, match=r"The disk filled up while writing the dataset .* nothing partial"):
            extract_dataset(music, model_dir, out, **RUN)
        assert _leftovers(out) == [] and not list(out.glob("data-*.arrow")) and not (out / "state.json").exists()
    monkeypatch.undo()  # space freed
    again = extract_dataset(music, model_dir, out, **RUN)
    assert again.merged and again.num_computed == 0
    _same(out, reference)


def test_free_space_is_checked_before_the_merge_writes(music, model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1024))
    with pytest.raises(JukeboxRunError, match=r"Not enough free disk space .* MB are free"):
        extract_dataset(music, model_dir, out, progress=False)
    assert _leftovers(out) == [] and not list(out.glob("data-*"))


def test_disk_full_while_saving_a_chunk(music, model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def full_disk(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full_disk)
    with pytest.raises(JukeboxRunError, match=r"The disk filled up while saving results .* run the same command"):
        extract_dataset(music, model_dir, out, progress=False)
    assert _leftovers(out) == []


# ------------------------------------------------------------------------------------ 4. header bombs, caps


def _wav_claiming(path: Path, rate: int, n_bytes: int = 4000) -> Path:
    """A small 16-bit mono WAV whose header claims `rate` Hz."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + n_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", n_bytes
    )
    path.write_bytes(header + bytes(n_bytes))
    return path


def test_a_header_claiming_1_hz_is_refused_before_decoding(tmp_path):
    """Point 4: the 4 KB WAV at "1 Hz" (2,692 windows, 2.2 GB before) fails at once, in bounded memory."""
    bomb = _wav_claiming(tmp_path / "bomb.wav", 1)
    start = time.perf_counter()
    with pytest.raises(JukeboxInputError, match=r"'bomb.wav' claims a sampling rate of 1 Hz; expected 1000..768000"):
        read_audio(str(bomb), "'bomb.wav'", Limits())
    assert time.perf_counter() - start < 1.0


def test_length_and_window_caps_give_clear_per_file_errors(music, model_dir, tmp_path):
    long = tmp_path / "in" / "long.wav"
    long.parent.mkdir()
    sf.write(long, _signal(3 * SR, 1), SR)
    sf.write(tmp_path / "in" / "short.wav", _signal(3000, 2), SR)
    result = extract_dataset(tmp_path / "in", model_dir, tmp_path / "out", max_duration=2.0, progress=False)
    assert [f["id"] for f in result.failures] == ["long.wav"] and result.num_done == 1
    assert "is 3.0 s long (by its header); inputs are limited to 2 s" in result.failures[0]["error"]
    result = extract_dataset(tmp_path / "in", model_dir, tmp_path / "out2", max_input_windows=3, progress=False)
    assert "needs 33 windows of 0.09 s; inputs are limited to 3 windows" in result.failures[0]["error"]
    with pytest.raises(JukeboxInputError, match="max_input_windows must be a positive integer"):
        extract_dataset(tmp_path / "in", model_dir, tmp_path / "out3", max_input_windows=0, progress=False)


# ---------------------------------------------------------------------------------------- 5. streamed windows


def test_windows_are_streamed_not_held_per_chunk(music, model_dir, tmp_path, monkeypatch):
    """Point 5: with a chunk of 32 inputs, at most the input being run and the one decoded ahead are in memory
    (before: every window of the whole chunk, plus the next chunk's)."""
    import weakref

    alive: weakref.WeakSet = weakref.WeakSet()
    most = []
    real_prepare = engine.JukeboxExtractor.prepare

    def prepare(self, source):
        prepared = real_prepare(self, source)
        alive.add(prepared)
        return prepared

    real_forward = engine.JukeboxExtractor._window

    def window(self, prepared, k):
        most.append(len(alive))  # freed by reference counting as soon as nothing holds them
        return real_forward(self, prepared, k)

    monkeypatch.setattr(engine.JukeboxExtractor, "prepare", prepare)
    monkeypatch.setattr(engine.JukeboxExtractor, "_window", window)
    folder = tmp_path / "long"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"l{i}.wav", _signal(3 * WINDOW - 100, i), SR)
    result = extract_dataset(folder, model_dir, tmp_path / "out", chunk_size=32, batch_size=1, progress=False)
    assert result.num_done == 6 and len(most) == 18 and max(most) <= 2


# ------------------------------------------------------------------------------- 6-7. fail loudly at load


def _copy(folder: Path, tmp_path: Path, name: str = "model") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_a_config_without_prior_config_is_an_error_not_the_5b_default(model_dir, tmp_path):
    """Point 6: before, the 5b default prior was built (~20 GB) and failed later."""
    from transformers import AutoConfig

    import hf_jukebox_mir  # noqa: F401 - registers the Auto classes

    folder = _copy(model_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["prior_config"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(JukeboxConfigError, match=r"config.json has no prior_config; a converted folder always has"):
        AutoConfig.from_pretrained(str(folder))
    with pytest.raises(JukeboxConfigError, match="has no prior_config"):
        engine._built_layers(folder)  # what extract_dataset reads first


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_a_missing_weight_is_an_error_at_load_not_a_random_init(model_dir, tmp_path):
    """Point 7."""
    from transformers import AutoModel

    folder = _copy(model_dir, tmp_path)
    _edit_weights(folder, lambda t: t.pop("prior.layers.0.attn.out_proj.weight"))
    with pytest.raises(JukeboxCheckpointError, match=r"1 weight\(s\) missing \(prior.layers.0.attn.out_proj.weight\)"):
        AutoModel.from_pretrained(str(folder))
    with pytest.raises(JukeboxCheckpointError, match="refusing to initialise the rest at random"):
        engine.make_embed_fn(folder, device="cpu")


def test_nan_weights_give_per_file_errors_never_rows(music, model_dir, tmp_path):
    """Point 7: NaN (or bit-flipped) weights gave NaN embeddings written to the dataset with exit 0."""
    folder = _copy(model_dir, tmp_path)
    _edit_weights(folder, lambda t: t["prior.layers.1.mlp.fc_in.weight"].fill_(float("nan")))
    result = extract_dataset(music, folder, tmp_path / "out", layers=[2], progress=False)
    assert result.num_done == 0 and len(result.failures) == 5 and not result.merged
    assert "gave NaN or infinite values for this input, so no row was written" in result.failures[0]["error"]
    assert not (tmp_path / "out" / "state.json").exists()  # no unloadable empty dataset


def test_a_feature_extractor_at_another_rate_is_refused(model_dir, tmp_path):
    """Point 7: an edited preprocessor_config.json sampling_rate went unnoticed."""
    folder = _copy(model_dir, tmp_path)
    JukeboxFeatureExtractor(window_length=WINDOW, sampling_rate=22050).save_pretrained(folder)
    with pytest.raises(JukeboxInputError, match=r"resamples audio to 22050 Hz but the model was trained at 44100 Hz"):
        engine.make_embed_fn(folder, device="cpu")


def test_verify_recomputes_the_audit_sums(converted_dir, tmp_path, capsys):
    """Point 7: `jukebox-mir verify` and `extract --verify`."""
    from hf_jukebox_mir import cli

    folder = _copy(converted_dir, tmp_path)
    assert cli.main(["verify", str(folder)]) == 0
    assert "all 13 files match" in capsys.readouterr().out
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0x01  # one flipped bit in the weights
    (folder / "model.safetensors").write_bytes(bytes(data))
    (folder / "preprocessor_config.json").unlink()
    assert cli.main(["verify", str(folder)]) == 4
    out = capsys.readouterr().out
    assert "2 of 13 file(s) differ" in out and "model.safetensors: SHA-256" in out and "(changed)" in out
    assert "preprocessor_config.json: missing" in out
    with pytest.raises(JukeboxCheckpointError, match="does not match its conversion_audit.json"):
        from hf_jukebox_mir.conversion.audit import check_folder

        check_folder(folder)


# -------------------------------------------------------------------------- 8. clear errors and odd inputs


def _cli(argv, capsys):
    from hf_jukebox_mir import cli

    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("damage", ["truncated_safetensors", "size_mismatch", "hostile_pickle"])
def test_load_errors_are_one_paragraph_with_the_fix(damage, music, model_dir, tmp_path, capsys):
    """Point 8: broken safetensors, a size mismatch and a refused pickle printed raw tracebacks."""
    import torch

    folder = _copy(model_dir, tmp_path)
    if damage == "truncated_safetensors":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "size_mismatch":
        _edit_weights(folder, lambda t: t.__setitem__("prior.layers.0.attn.out_proj.weight", torch.zeros(3, 3)))
    else:  # a pickle that would run code: never executed
        marker = tmp_path / "pwned"

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        (folder / "model.safetensors").unlink()
        torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    argv = ["extract", str(music / "t0.wav"), "--model", str(folder), "--output", str(tmp_path / "out"), "--quiet"]
    status, out, err = _cli(argv, capsys)
    assert status == 1 and "Traceback" not in err
    assert "jukebox-mir extract: error: " in err and "(run with --debug for the traceback)" in err
    assert ("jukebox-mir verify" in err) or ("convert it again" in err)
    if damage == "hostile_pickle":
        assert not (tmp_path / "pwned").exists()
    status, out, err = _cli([*argv[:-1], "--debug", "--quiet"], capsys)
    assert status == 1 and "Traceback" in err


def test_odd_inputs_are_reported_not_hung_or_lost(model_dir, tmp_path, capsys):
    """Point 8: a non-UTF-8 name, a named pipe, a broken link, a truncated file, audio near float32 max."""
    folder = tmp_path / "odd"
    folder.mkdir()
    sf.write(os.path.join(os.fsencode(folder), b"caf\xe9.wav"), _signal(3000, 1), SR)
    os.mkfifo(folder / "pipe.wav")
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    sf.write(folder / "full.wav", _signal(20000, 2), SR, subtype="PCM_16")
    data = (folder / "full.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 2])
    loud = (np.sign(_signal(3000, 3)) * np.float32(3.0e38)).astype(np.float32)
    sf.write(folder / "loud.wav", np.stack([loud, loud[::-1]], axis=1), 22050, subtype="FLOAT")
    signal.alarm(120)  # a hang on the pipe fails the test instead of the suite
    try:
        status, out, err = _cli(
            ["extract", str(folder), "--model", str(model_dir), "--output", str(tmp_path / "out"), "--quiet"], capsys
        )
    finally:
        signal.alarm(0)
    assert status == 3, err
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds["id"] == ["caf\\xe9.wav", "cut.wav", "full.wav", "loud.wav"]
    assert np.isfinite(np.asarray(ds.with_format("numpy")["layer_6"])).all()
    failures = {f["id"]: f["error"] for f in json.loads((tmp_path / "out" / "failures.json").read_text())}
    assert "is a broken symbolic link" in failures["gone.wav"]
    assert "is a named pipe (FIFO), not an audio file" in failures["pipe.wav"]
    assert "warning: cut.wav:" in out and "is truncated: its header declares 0.45 s but only 0.23 s" in out


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("WAV", r"'x' is truncated: its header declares 3.00 s but only 1.50 s could be decoded"),
        ("FLAC", r"'x' is damaged or truncated: decoding stopped after 1.\d\d s \(.*lost sync"),
        ("OGG", r"'x' is truncated \(its last Ogg page is not marked end-of-stream\); only 0.\d\d s were decoded"),
    ],
)
def test_truncated_files_decode_what_is_there_with_a_warning(fmt, message, tmp_path):
    """Point 8: truncated Ogg/WAV decoded partially with no warning (and a cut FLAC failed as a whole)."""
    sf.write(tmp_path / "whole", _signal(3 * SR, 5), SR, format=fmt)
    data = (tmp_path / "whole").read_bytes()
    for source in (data[: len(data) // 2], str(_write(tmp_path / "cut", data[: len(data) // 2]))):
        waveform, rate, warning = read_audio(source, "'x'", Limits())
        assert rate == SR and 0.5 * SR < len(waveform) <= 1.5 * SR
        assert warning is not None and __import__("re").search(message, warning), warning
    assert read_audio(data, "'x'", Limits())[2] is None


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_exotic_tensors_are_read_or_refused_clearly():
    """Point 8: sparse, float8, meta, quantized and nested tensors raised raw TypeError/NotImplementedError/..."""
    import torch

    from hf_jukebox_mir.models.audio_jukebox import validate_waveform

    x = torch.linspace(-0.5, 0.5, 3000)
    np.testing.assert_allclose(validate_waveform(x.to_sparse()), x.numpy())
    assert validate_waveform(x.to(torch.float8_e4m3fn)).dtype == np.float32
    for tensor, kind in (
        (torch.empty(3000, device="meta"), "meta"),
        (torch.quantize_per_tensor(x, 0.1, 0, torch.qint8), "quantized"),
        (torch.nested.nested_tensor([x, x[:10]]), "nested"),
    ):
        with pytest.raises(JukeboxInputError, match=f"Expected audio data, got a {kind} tensor"):
            validate_waveform(tensor)


def test_a_run_where_every_input_fails_writes_no_dataset_and_says_so(model_dir, tmp_path, capsys):
    """Point 8: the dataset written for an all-failed run could not be loaded."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"RIFF....WAVEnot audio")
    (folder / "b.wav").write_bytes(b"")
    status, out, err = _cli(
        [
            "extract",
            str(folder),
            "--model",
            str(model_dir),
            "--output",
            str(tmp_path / "out"),
            "--pool",
            "none",
            "--quiet",
        ],
        capsys,
    )
    assert status == 4 and "All 2 input(s) failed; no dataset was written" in out
    assert not (tmp_path / "out" / "state.json").exists()
    assert len(json.loads((tmp_path / "out" / "failures.json").read_text())) == 2


# ------------------------------------------------------------------------------ 11. scale-out, threads, umask


def test_threads_are_set_and_recorded(music, model_dir, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        extract_dataset(music / "t0.wav", model_dir, tmp_path / "out", threads=1, progress=False)
        assert json.loads((tmp_path / "out" / "extraction.json").read_text())["threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(JukeboxInputError, match="threads must be a positive integer"):
        extract_dataset(music, model_dir, tmp_path / "o2", threads=0, progress=False)


def test_ctrl_c_says_run_again_to_resume_without_a_traceback(music, model_dir, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "extract_dataset", interrupted)
    status, out, err = _cli(["extract", str(music), "--model", str(model_dir), "--output", str(tmp_path / "o")], capsys)
    assert status == 130 and "Traceback" not in err
    assert "interrupted. Finished work is kept: run the same command again to resume." in err


def test_sampled_wav_gets_the_users_umask(tmp_path):
    from hf_jukebox_mir.cli.sample import write_wav_atomic

    old = os.umask(0o022)
    try:
        path = write_wav_atomic(tmp_path / "out.wav", np.zeros(100, dtype=np.float32), SR)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # was 0o600 (mkstemp)


@pytest.mark.slow
def test_accelerate_launch_with_one_process_per_cpu_is_refused_with_the_command_that_works(music, model_dir, tmp_path):
    """Point 11: `accelerate launch --num_processes 2 --cpu` started ONE process that silently did all the work."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "--cpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "hf_jukebox_mir.cli",
            "extract",
            str(music),
            "--model",
            str(model_dir),
            "--output",
            str(tmp_path / "out"),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode != 0
    assert (
        "started only ONE process here" in run.stderr
        and "torchrun --nproc_per_node 2 -m hf_jukebox_mir.cli" in run.stderr
    ), run.stderr[-2000:]
    assert not (tmp_path / "out" / "chunks").exists() or not any((tmp_path / "out" / "chunks").glob("chunk-*"))


# ----------------------------------------------------------------------------------------------- slow: real


_KILL_AT = textwrap.dedent(
    """
    import os, sys
    from hf_jukebox_mir.extraction import engine

    kill_at, calls = int(sys.argv[4]), []
    real = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            os._exit(137)  # as kill -9: no cleanup, no finally
        return real(src, dst)

    engine.os.replace = replace
    engine.extract_dataset(sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=2, batch_size=3, threads=1,
                           progress=False, device="cpu")
    """
)


@pytest.mark.slow
def test_real_kills_at_random_renames_then_rerun(music, model_dir, reference, tmp_path):
    """Points 1 and 3: `os._exit` (no cleanup at all) at random points of extraction and merge, several times in a
    row on the same folder, then one clean run: the identical dataset."""
    script = tmp_path / "kill.py"
    script.write_text(_KILL_AT)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC)
    rng = np.random.default_rng(17)
    for kill_at in rng.integers(1, 12, size=4):
        subprocess.run(
            [sys.executable, str(script), str(music), str(model_dir), str(out), str(kill_at)],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
    again = extract_dataset(music, model_dir, out, **RUN)
    assert again.merged and again.num_done == 5
    _same(out, reference)
    assert _leftovers(out) == []


_SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    from hf_jukebox_mir.extraction.engine import extract_dataset

    def slow(info):
        print("CHUNK", flush=True)
        time.sleep(30)

    extract_dataset(sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=1, progress=False, device="cpu", callback=slow)
    """
)


@pytest.mark.slow
def test_two_real_processes_on_one_folder(music, model_dir, reference, tmp_path):
    """Point 2: a second process is refused while the first runs; after the first is killed, a run completes."""
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_RUN)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC)
    first = subprocess.Popen(
        [sys.executable, str(script), str(music), str(model_dir), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout.readline().startswith("CHUNK")
        with pytest.raises(JukeboxRunError, match=rf"in use by another run \(PID {first.pid} on "):
            extract_dataset(music, model_dir, out, progress=False)
    finally:
        first.kill()
        first.wait(timeout=60)
    done = extract_dataset(music, model_dir, out, chunk_size=2, batch_size=3, progress=False)
    assert done.merged and done.num_done == 5
