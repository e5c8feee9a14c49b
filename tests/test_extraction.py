"""Tests of dataset-scale extraction: folders with corrupt files, resumption after a kill, datasets in, CLI, sharding.

Uses the converted parity MIR folder (built once per session, see test_pipeline_jukebox.py) with its feature
extractor re-saved at 4096-sample windows so that every forward pass is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from hf_jukebox_mir.extraction.engine import extract_dataset, list_inputs, make_embed_fn
from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.models.feature_extraction_jukebox import JukeboxFeatureExtractor
from test_pipeline_jukebox import build_mir_folder

SR = 44100
WINDOW = 4096


def _signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.4 * np.sin(2 * np.pi * (200 + 30 * seed) * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fixtures_dir) -> Path:
    """The MIR folder with a 4096-sample-window feature extractor."""
    source = build_mir_folder(tmp_path_factory, fixtures_dir)
    folder = tmp_path_factory.mktemp("extraction") / "mir-small"
    shutil.copytree(source, folder)
    JukeboxFeatureExtractor(window_length=WINDOW).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    from hf_jukebox_mir.models.pipeline_jukebox import jukebox_feature_extraction_pipeline

    return jukebox_feature_extraction_pipeline(str(model_dir), device="cpu")


@pytest.fixture()
def audio_folder(tmp_path) -> Path:
    """4 readable files (one 2.5 windows long, one stereo, one at 22.05 kHz), a corrupt one, and files to skip."""
    root = tmp_path / "music"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", _signal(3000, 0), SR)
    sf.write(root / "sub" / "b.flac", _signal(int(2.5 * WINDOW), 1), SR)
    sf.write(root / "c.wav", np.stack([_signal(5000, 2), _signal(5000, 3)], axis=1), SR)  # stereo
    sf.write(root / "d.wav", _signal(3000, 4), 22050)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk, not audio")
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden.wav").write_bytes(b"skipped")
    return root


def _rows(output: Path) -> datasets.Dataset:
    return datasets.load_from_disk(str(output))


def test_folder_with_a_corrupt_file(audio_folder, model_dir, pipe, tmp_path):
    out = tmp_path / "out"
    result = extract_dataset([audio_folder], model_dir, out, layers=[2, 6], batch_size=4, chunk_size=2, progress=False)
    assert result.merged and result.num_inputs == 5 and result.num_done == 4 and result.num_computed == 4
    assert [f["id"] for f in result.failures] == ["broken.wav"]
    assert "Could not read audio file" in result.failures[0]["error"]
    assert json.loads((out / "failures.json").read_text()) == result.failures

    ds = _rows(out)
    assert ds.column_names == ["id", "path", "duration", "n_windows", "layer_2", "layer_6"]
    assert ds["id"] == ["a.wav", "c.wav", "d.wav", "sub/b.flac"]
    assert ds["path"][0] == str((audio_folder / "a.wav").resolve())
    assert ds["n_windows"] == [1, 2, 2, 3]  # 3000; 5000; 6000 after resampling; 10240 samples
    np.testing.assert_allclose(ds["duration"], [3000 / SR, 5000 / SR, 6000 / SR, int(2.5 * WINDOW) / SR])
    assert ds.features["layer_6"] == datasets.List(datasets.Value("float32"), length=64)
    # the same numbers as the pipeline (the mono 44.1 kHz file and the 22.05 kHz one)
    expected = pipe([str(audio_folder / "a.wav"), str(audio_folder / "d.wav")], layers=[2, 6], batch_size=4)
    got = ds.with_format("numpy")
    for j, layer in enumerate((2, 6)):
        np.testing.assert_allclose(
            np.asarray(got[f"layer_{layer}"])[[0, 2]], np.stack([e[j] for e in expected]), atol=1e-5
        )


class _Killed(RuntimeError):
    pass


def test_killed_then_resumed_gives_one_row_per_input(tmp_path, model_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"clip{i}.wav", _signal(1500 + 400 * i, 10 + i), SR)
    out = tmp_path / "out"
    calls = []

    def kill_after_two_chunks(info):
        calls.append(info)
        if len(calls) == 2:
            raise _Killed("simulated kill")

    with pytest.raises(_Killed):
        extract_dataset(
            folder, model_dir, out, layers=6, batch_size=4, chunk_size=2, progress=False, callback=kill_after_two_chunks
        )
    chunk_dirs = sorted(p.name for p in (out / "chunks").iterdir() if p.name.startswith("chunk-"))
    assert len(chunk_dirs) == 2 and calls[-1]["done"] == 4
    assert not (out / "state.json").exists()  # nothing merged yet
    (out / "chunks" / ".tmp-000-deadbeef").mkdir()  # a chunk the kill interrupted mid-write
    (out / "chunks" / ".tmp-000-deadbeef" / "junk.arrow").write_bytes(b"partial")

    resumed = extract_dataset(folder, model_dir, out, layers=6, batch_size=4, chunk_size=2, progress=False)
    assert resumed.num_computed == 2 and resumed.num_done == 6 and resumed.merged and not resumed.failures
    assert not (out / "chunks" / ".tmp-000-deadbeef").exists()
    chunk_ids = [i for p in sorted((out / "chunks").glob("chunk-*")) for i in json.loads((p / "ids.json").read_text())]
    assert sorted(chunk_ids) == [f"clip{i}.wav" for i in range(6)]  # each input computed exactly once
    assert set(chunk_dirs) <= {p.name for p in (out / "chunks").glob("chunk-*")}  # earlier chunks untouched
    ds = _rows(out)
    assert ds["id"] == [f"clip{i}.wav" for i in range(6)]

    # a third run has nothing to do; other settings, or resume=False, are refused
    again = extract_dataset(folder, model_dir, out, layers=6, progress=False)
    assert again.num_computed == 0 and again.num_done == 6 and len(_rows(out)) == 6
    with pytest.raises(JukeboxInputError, match=r"was made with other settings \(layers: \[6\] -> \[2\]\)"):
        extract_dataset(folder, model_dir, out, layers=2, progress=False)
    with pytest.raises(JukeboxInputError, match=r"already holds extraction results; resume them"):
        extract_dataset(folder, model_dir, out, layers=6, resume=False, progress=False)
    fresh = extract_dataset(folder / "clip0.wav", model_dir, out, layers=6, overwrite=True, progress=False)
    assert fresh.num_computed == 1 and _rows(out)["id"] == [(folder / "clip0.wav").as_posix()]


def test_saved_datasets_as_input(tmp_path, model_dir, pipe):
    a, b = _signal(2000, 20), _signal(3500, 21)
    wav = tmp_path / "b.wav"
    sf.write(wav, b, SR, subtype="FLOAT")
    files = datasets.Dataset.from_dict(
        {
            "id": ["first", "second"],
            "audio": [{"bytes": wav.read_bytes(), "path": "b.wav"}, {"bytes": None, "path": str(wav)}],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    files.save_to_disk(str(tmp_path / "files_ds"))
    arrays = datasets.Dataset.from_dict({"audio": [{"array": a, "sampling_rate": SR}]})
    arrays.save_to_disk(str(tmp_path / "arrays_ds"))
    items = list_inputs([tmp_path / "files_ds", tmp_path / "arrays_ds"])
    assert [i.id for i in items] == [
        f"{(tmp_path / 'files_ds').as_posix()}/first",
        f"{(tmp_path / 'files_ds').as_posix()}/second",
        f"{(tmp_path / 'arrays_ds').as_posix()}/0",
    ]

    out = tmp_path / "out"
    result = extract_dataset(
        [tmp_path / "files_ds", tmp_path / "arrays_ds"], model_dir, out, batch_size=3, progress=False
    )
    assert result.num_done == 3 and not result.failures
    ds = _rows(out).with_format("numpy")
    emb = np.asarray(ds["layer_6"])  # default: the last stored block
    expected = pipe([{"array": b, "sampling_rate": SR}, {"array": a, "sampling_rate": SR}], batch_size=2)
    np.testing.assert_allclose(emb[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(emb[1], expected[0], atol=1e-5)
    np.testing.assert_allclose(emb[2], expected[1], atol=1e-5)
    assert list(ds["path"]) == ["b.wav", "b.wav", ""]  # save_to_disk embeds the second file's bytes

    splits = datasets.DatasetDict({"train": arrays, "test": arrays})
    splits.save_to_disk(str(tmp_path / "splits"))
    # every split in one run (issue 18), or one with split=
    assert [i.id for i in list_inputs(tmp_path / "splits")] == ["train/0", "test/0"]
    assert len(list_inputs(tmp_path / "splits", split="test")) == 1


def test_make_embed_fn_matches_the_pipeline_and_loads_only_needed_blocks(model_dir, pipe):
    waves = [_signal(2500, 30), _signal(WINDOW + 900, 31)]
    embed_fn = make_embed_fn(model_dir, layers=[2], device="cpu")
    assert embed_fn.layer_names == ("2",) and embed_fn.output_shape == (1, 64)
    assert embed_fn.extractor.model.config.num_hidden_layers == 2  # blocks 3..6 never built
    assert len(embed_fn.extractor.model.prior.layers) == 2
    emb = embed_fn(waves)
    assert emb.shape == (2, 1, 64) and emb.dtype == np.float32
    expected = pipe(waves, sampling_rate=SR, layers=[2], batch_size=3)
    np.testing.assert_allclose(emb, np.stack(expected), atol=1e-5)


@pytest.mark.slow
def test_compiled_extraction_matches_eager(model_dir, pipe):
    """`compile=True` (torch.compile of the prior; needs a C++ compiler on CPU) gives the same features."""
    waves = [_signal(2500, 32), _signal(WINDOW + 900, 33)]
    eager = make_embed_fn(model_dir, layers=[2], device="cpu")
    fast = make_embed_fn(model_dir, layers=[2], device="cpu", compile=True)
    assert fast.extractor.compiled and not eager.extractor.compiled
    np.testing.assert_allclose(fast(waves), eager(waves), atol=1e-5)


def test_explicit_shards_merge_when_the_last_one_finishes(tmp_path, model_dir):
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"s{i}.wav", _signal(1200 + 100 * i, 40 + i), SR)
    out = tmp_path / "out"
    first = extract_dataset(folder, model_dir, out, num_shards=2, shard_index=1, progress=False)
    assert first.num_computed == 1 and not first.merged and not (out / "state.json").exists()
    second = extract_dataset(folder, model_dir, out, num_shards=2, shard_index=0, progress=False)
    assert second.num_computed == 2 and second.merged
    assert _rows(out)["id"] == ["s0.wav", "s1.wav", "s2.wav"]


# ------------------------------------------------------------------------------------------------------ CLI


def _cli(argv: list[str]) -> int:
    """`jukebox-mir` with the extract command (through cli.main once the command is wired there)."""
    from hf_jukebox_mir import cli
    from hf_jukebox_mir.cli import extract as extract_command

    if "extract" in cli.COMMANDS:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="jukebox-mir")
    extract_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"jukebox-mir {args.command}: error: {err}", file=sys.stderr)
        return 1


def test_cli_extract_frame_level(audio_folder, model_dir, tmp_path, capsys, pipe):
    out = tmp_path / "frames"
    status = _cli(
        [
            "extract",
            str(audio_folder / "a.wav"),
            str(audio_folder / "sub"),
            "--model",
            str(model_dir),
            "--output",
            str(out),
            "--layers",
            "2",
            "6",
            "--frame-rate",
            "50",
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Extracted 2 of 2 inputs" in printed and "load_from_disk" in printed
    ds = _rows(out).with_format("numpy")
    assert ds.features["layer_6"] == datasets.Array2D(shape=(None, 64), dtype="float32")
    frames = np.asarray(ds[0]["layer_6"])  # a.wav: 3000 samples -> 23 frames -> 4 bins at 50 Hz
    assert frames.shape == (4, 64)
    expected = pipe(str(audio_folder / "a.wav"), layers=6, frame_rate=50.0)
    np.testing.assert_allclose(frames, expected, atol=1e-5)
    assert json.loads((out / "extraction.json").read_text())["pooling"] == "none"

    status = _cli(
        [
            "extract",
            str(audio_folder / "a.wav"),
            str(audio_folder / "broken.wav"),
            "--model",
            str(model_dir),
            "--output",
            str(tmp_path / "pooled"),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert status == 3
    assert "1 input(s) failed" in captured.out and "broken.wav: JukeboxInputError" in captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing_dir", "--model", "{model}", "--output", "{out}"], r"Input 'missing_dir' does not exist"),
        (["{audio}", "--model", "{audio}", "--output", "{out}"], r"lacks config.json, preprocessor_config.json"),
        (
            ["{audio}", "--model", "{model}", "--output", "{out}", "--layers", "9"],
            r"Layer 9 is not available: the model has 6 blocks",
        ),
        (["{audio}", "--model", "{model}", "--output", "{out}", "--layers", "last"], r"--layers expects block numbers"),
        (
            ["{audio}", "--model", "{model}", "--output", "{out}", "--frame-rate", "15", "--pool", "max"],
            r"--frame-rate gives frame-level features; it needs --pool none",
        ),
        (
            ["{audio}", "--model", "{model}", "--output", "{out}", "--frame-rate", "500"],
            r"frame_rate=500.0 is not supported",
        ),
        (
            ["{audio}", "--model", "{model}", "--output", "{out}", "--batch-size", "0"],
            r"batch_size must be a positive integer, got 0",
        ),
        (["{audio}", "--model", "{model}", "--output", "{audio}"], r"is not empty and was not written by"),
        (
            ["{audio}", "--model", "{model}", "--output", "{out}", "--num-shards", "2"],
            r"--num-shards and --shard-index go together",
        ),
    ],
)
def test_cli_checks_everything_before_loading_the_model(
    argv, message, audio_folder, model_dir, tmp_path, capsys, monkeypatch
):
    import transformers

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    from hf_jukebox_mir.models.modeling_jukebox_mir import JukeboxMIRModel

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_model)
    monkeypatch.setattr(JukeboxMIRModel, "from_pretrained", no_model)
    monkeypatch.chdir(tmp_path)
    fill = {"model": str(model_dir), "out": str(tmp_path / "out"), "audio": str(audio_folder)}
    status = _cli(["extract", *[a.format(**fill) for a in argv]])
    assert status == 1
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "chunks").exists() or not any((tmp_path / "out" / "chunks").iterdir())


# ---------------------------------------------------------------------------------------- multi-process (slow)


_LAUNCHED = textwrap.dedent(
    """
    import sys
    from hf_jukebox_mir.extraction.engine import extract_dataset

    result = extract_dataset(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=2, chunk_size=1, progress=False,
                             device="cpu")
    print("RESULT", result.num_computed, result.merged, flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_share_the_work(tmp_path, model_dir):
    """Two processes (torchrun here; `accelerate launch --num_processes N` on GPUs sets up the same environment):
    `accelerate.PartialState` gives each process every other input and the main one merges."""
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(5):
        sf.write(folder / f"m{i}.wav", _signal(1000 + 300 * i, 50 + i), SR)
    script = tmp_path / "launched.py"
    script.write_text(_LAUNCHED)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(script),
            str(folder),
            str(model_dir),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = sorted(line.split()[1:] for line in run.stdout.splitlines() if line.startswith("RESULT"))
    assert results == [["2", "False"], ["3", "True"]]
    assert _rows(out)["id"] == [f"m{i}.wav" for i in range(5)]
    chunk_names = [p.name for p in (out / "chunks").glob("chunk-*")]
    assert sorted(n.split("-")[2] for n in chunk_names) == ["000"] * 3 + ["001"] * 2


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    from hf_jukebox_mir.extraction.engine import extract_dataset

    def report(info):
        print("CHUNK", info["done"], flush=True)
        time.sleep(0.3)

    extract_dataset(sys.argv[1], sys.argv[2], sys.argv[3], chunk_size=1, progress=False, device="cpu",
                    callback=report)
    print("FINISHED", flush=True)
    """
)


@pytest.mark.slow
def test_sigkilled_run_resumes_without_recomputing(tmp_path, model_dir):
    """A real `kill -9` of an extraction process, then the same call again."""
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(8):
        sf.write(folder / f"k{i}.wav", _signal(1000 + 200 * i, 60 + i), SR)
    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(model_dir), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("CHUNK 3"):
                proc.kill()
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    done_before = len(list((out / "chunks").glob("chunk-*")))
    assert 3 <= done_before < 8
    resumed = extract_dataset(folder, model_dir, out, chunk_size=1, progress=False)
    assert resumed.num_computed == 8 - done_before and resumed.merged
    assert _rows(out)["id"] == [f"k{i}.wav" for i in range(8)]
