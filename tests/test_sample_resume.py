"""`jukebox-mir sample`: the codes of every finished window saved next to the output, `--resume` after an
interruption at a random point gives the codes and audio of an uninterrupted run, Ctrl-C explains how to resume."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hf_jukebox_mir import JukeboxInputError
from hf_jukebox_mir.cli import sample
from hf_jukebox_mir.conversion.chain import convert_hf4_chain

SR = 44100
N_TOP = 40  # 40 top codes: 1 top window, 1 middle window (160 codes), 4 bottom windows (640 codes, n_ctx 256)
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def chain_folder(tmp_path_factory, fixtures_dir):
    folder = tmp_path_factory.mktemp("chain") / "jukebox-tiny-1b-lyrics"
    convert_hf4_chain(fixtures_dir / "hf4_format" / "jukebox_tiny_1b_lyrics", folder)
    return folder


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the command sets its own (--threads, default 1)


def _argv(chain_folder, output, *extra):
    return [
        "sample",
        "--model",
        str(chain_folder),
        "--seconds",
        str(N_TOP * 128 / SR),
        "--artist",
        "Alan Jackson",
        "--lyrics",
        "Hello hello, where are you",
        "--temperature",
        "0.98",
        "--seed",
        "7",
        "--n-samples",
        "2",
        "--output",
        str(output),
        "--codes-output",
        str(Path(output).with_suffix(".codes.pt")),
        "--no-progress",
        *extra,
    ]


def _run(argv):
    parser = argparse.ArgumentParser()
    sample.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _result(output):
    output = Path(output)
    codes = torch.load(output.with_suffix(".codes.pt"))
    return codes, [output.with_name(f"{output.stem}-{i}.wav").read_bytes() for i in range(2)]


@pytest.fixture(scope="module")
def uninterrupted(chain_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("whole") / "song.wav"
    assert _run(_argv(chain_folder, output)) == 0
    assert not sample.SampleRun.path_for(output).exists()  # removed once the WAV is written
    return _result(output)


def test_interrupted_run_resumes_to_the_same_codes_and_audio(
    chain_folder, uninterrupted, tmp_path, capsys, monkeypatch
):
    rng = random.Random()
    stop_at = rng.randrange(2, 8)  # saves: 1 before sampling + 6 windows; interrupt in one of them
    output = tmp_path / "song.wav"
    saves = {"n": 0}
    real_save = sample.SampleRun.save

    def save(self, path):
        saves["n"] += 1
        if saves["n"] == stop_at:
            raise KeyboardInterrupt  # Ctrl-C while window `stop_at - 1` finishes: its codes are lost, not the others
        return real_save(self, path)

    monkeypatch.setattr(sample.SampleRun, "save", save)
    assert _run(_argv(chain_folder, output)) == 130, stop_at
    err = capsys.readouterr().err
    assert f"continue with: jukebox-mir sample --output {output} --resume" in err
    assert "Traceback" not in err
    state = sample.SampleRun.read(sample.SampleRun.path_for(output))
    assert state.settings.seed == 7 and state.settings.n_samples == 2 and state.settings.threads == 1
    assert state.settings.lyrics == "Hello hello, where are you"
    assert not list(tmp_path.glob("*.wav"))
    monkeypatch.undo()

    assert (
        _run(
            [
                "sample",
                "--output",
                str(output),
                "--resume",
                "--no-progress",
                "--codes-output",
                str(output.with_suffix(".codes.pt")),
            ]
        )
        == 0
    ), stop_at
    codes, wavs = _result(output)
    whole_codes, whole_wavs = uninterrupted
    for level in (0, 1, 2):
        assert torch.equal(codes[f"level_{level}"], whole_codes[f"level_{level}"]), (stop_at, level)
    assert wavs == whole_wavs, stop_at
    assert not sample.SampleRun.path_for(output).exists()


def test_resume_refuses_changed_settings_and_missing_runs(chain_folder, tmp_path):
    output = tmp_path / "song.wav"
    with pytest.raises(JukeboxInputError, match="--resume: no saved run at .*song.sampling.pt"):
        _run(["sample", "--output", str(output), "--resume"])
    settings = sample.SampleSettings(model=str(chain_folder), seconds=1.0, seed=3)
    sample.SampleRun(settings=settings, codes=[None, None, torch.zeros(1, 4, dtype=torch.long)]).save(
        sample.SampleRun.path_for(output)
    )
    with pytest.raises(JukeboxInputError, match="--seconds, --seed differ"):
        _run(["sample", "--output", str(output), "--resume", "--seconds", "2", "--seed", "4"])
    with pytest.raises(JukeboxInputError, match="--model and --seconds are required"):
        _run(["sample", "--output", str(output)])
    torch.save({"schema": "other"}, sample.SampleRun.path_for(output))
    with pytest.raises(JukeboxInputError, match="is not a saved sampling run of this version"):
        _run(["sample", "--output", str(output), "--resume"])


def test_window_seeds_make_levels_resumable(chain_folder):
    # the library side: a level continued from the codes of its finished windows = the uninterrupted level
    from hf_jukebox_mir.models.modeling_jukebox_chain import JukeboxChainModel

    model = JukeboxChainModel.from_pretrained(chain_folder).eval()
    torch.set_num_threads(1)
    seen = []
    whole = model.generate_codes(N_TOP * 128 / SR, seed=11, on_codes=lambda codes: seen.append(codes))
    assert len(seen) == 1 + 1 + 1 + 4  # before sampling, then every window (top 1, middle 1, bottom 4)
    partial = seen[4]  # top and middle done, bottom after its 2nd window
    assert partial[0].shape[1] == 384 and partial[2].shape[1] == N_TOP
    resumed = model.generate_codes(N_TOP * 128 / SR, seed=11, prime_codes=partial)
    assert all(torch.equal(a, b) for a, b in zip(resumed.audio_codes, whole.audio_codes))
    with pytest.raises(JukeboxInputError, match="Pass seed .* or generator, not both"):
        model.generate_codes(1.0, seed=1, generator=torch.Generator())


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_codes_and_audio(chain_folder, uninterrupted, tmp_path):
    output = tmp_path / "song.wav"
    state_path = sample.SampleRun.path_for(output)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "hf_jukebox_mir.cli", *_argv(chain_folder, output)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wanted = random.Random().randrange(1, 6)  # SIGKILL once the state holds this many saves or more
    deadline = time.monotonic() + 300
    last = None
    saves = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state_path.is_file() and state_path.stat().st_mtime_ns != last:
            last = state_path.stat().st_mtime_ns
            saves += 1
            if saves >= wanted:
                break
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if state_path.is_file():  # killed mid-run (a fast machine may have finished: then nothing to resume)
        resume = ["sample", "--output", str(output), "--resume", "--no-progress"]
        resume += ["--codes-output", str(output.with_suffix(".codes.pt"))]
        done = subprocess.run([sys.executable, "-m", "hf_jukebox_mir.cli", *resume], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    codes, wavs = _result(output)
    whole_codes, whole_wavs = uninterrupted
    assert all(torch.equal(codes[k], whole_codes[k]) for k in whole_codes)
    assert wavs == whole_wavs


@pytest.mark.slow
def test_compiled_chain_equals_eager_chain(chain_folder):
    # three priors share the compiled step's code (one cache entry per prior and window length): the compiled chain
    # samples the eager chain's codes, every level, with per-window seeds
    from hf_jukebox_mir.models.modeling_jukebox_chain import JukeboxChainModel

    model = JukeboxChainModel.from_pretrained(chain_folder).eval()
    torch.set_num_threads(1)
    eager = model.generate_codes(N_TOP * 128 / SR, seed=3, n_samples=2)
    compiled = model.generate_codes(N_TOP * 128 / SR, seed=3, n_samples=2, compile=True)
    assert all(torch.equal(a, b) for a, b in zip(compiled.audio_codes, eager.audio_codes))


@pytest.mark.slow
def test_ctrl_c_saves_and_says_how_to_resume(chain_folder, uninterrupted, tmp_path):
    output = tmp_path / "song.wav"
    state_path = sample.SampleRun.path_for(output)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "hf_jukebox_mir.cli", *_argv(chain_folder, output)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not state_path.is_file():
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # finished before the signal arrived: nothing to check
        pytest.skip("the run finished before Ctrl-C")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert f"continue with: jukebox-mir sample --output {output} --resume" in err
    resume = ["sample", "--output", str(output), "--resume", "--no-progress"]
    resume += ["--codes-output", str(output.with_suffix(".codes.pt"))]
    done = subprocess.run([sys.executable, "-m", "hf_jukebox_mir.cli", *resume], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    codes, wavs = _result(output)
    whole_codes, whole_wavs = uninterrupted
    assert all(torch.equal(codes[k], whole_codes[k]) for k in whole_codes)
    assert wavs == whole_wavs
