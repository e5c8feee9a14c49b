"""Loaders on miniature copies of each benchmark's official layout (a handful of generated clips each)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hf_jukebox_mir.models.errors import JukeboxInputError
from hf_jukebox_mir.probing.mir_datasets import (
    EMOMUSIC_DEV_STATS,
    emomusic_official_split,
    giantsteps_official_split,
    gtzan_official_split,
    load_audio_clip,
    load_benchmark,
    load_emomusic,
    load_giantsteps,
    load_gtzan,
    load_magnatagatune,
    magnatagatune_official_split,
)
from hf_jukebox_mir.probing.tasks import GTZAN_GENRES, MAGNATAGATUNE_TOP50


def _tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _pick(split_lists: dict, per_split: int = 2) -> dict:
    return {split: entries[:per_split] for split, entries in split_lists.items()}


# ------------------------------------------------------------------------------------------------ audio


def test_load_audio_clip_offsets_resamples_and_mixes(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, _tone(2.0, 22050, channels=2), 22050)
    full = load_audio_clip(path)
    assert full.dtype == np.float32 and full.ndim == 1 and len(full) == 88200
    part = load_audio_clip(path, offset=0.5, duration=1.0)
    assert len(part) == 44100
    native = load_audio_clip(path, offset=0.5, duration=1.0, sampling_rate=22050)
    assert len(native) == 22050 and np.abs(native).max() == pytest.approx(0.3, abs=1e-3)
    with pytest.raises(JukeboxInputError, match="Audio file not found"):
        load_audio_clip(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(JukeboxInputError, match="Cannot decode"):
        load_audio_clip(tmp_path / "bad.wav")


# ------------------------------------------------------------------------------------------------ GTZAN


@pytest.fixture()
def gtzan_root(tmp_path) -> tuple[Path, dict]:
    chosen = _pick(gtzan_official_split())
    for entries in chosen.values():
        for entry in entries:
            path = tmp_path / "genres" / entry
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _tone(0.5, 22050), 22050)
    return tmp_path, chosen


def test_gtzan_miniature(gtzan_root):
    root, chosen = gtzan_root
    with pytest.warns(UserWarning, match="924 of 930 files"):
        ds = load_gtzan(root, allow_missing=True)
    assert {k: len(v) for k, v in ds.items()} == {"train": 2, "validation": 2, "test": 2}
    assert ds["train"].features["label"].names == list(GTZAN_GENRES)
    for split, entries in chosen.items():
        rows = ds[split]
        assert rows["clip_id"] == [Path(e).stem for e in entries]
        genres = [e.split("/")[0] for e in entries]
        assert [rows.features["label"].int2str(i) for i in rows["label"]] == genres
    audio = load_audio_clip(ds["test"][0]["audio"], ds["test"][0]["offset"], ds["test"][0]["duration"])
    assert len(audio) == 22050  # 0.5 s at 44.1 kHz
    # the "genres" folder itself is accepted as root
    with pytest.warns(UserWarning):
        assert len(load_gtzan(root / "genres", allow_missing=True)["train"]) == 2


def test_gtzan_missing_files_error(gtzan_root):
    root, _ = gtzan_root
    with pytest.raises(
        JukeboxInputError, match=r"gtzan: 924 of 930 files .* missing .*genres/<genre>/<genre>\.000NN\.wav"
    ):
        load_gtzan(root)
    with pytest.raises(JukeboxInputError, match="data folder .* does not exist"):
        load_gtzan(root / "nope")


# ------------------------------------------------------------------------------------------------ MagnaTagATune


def _write_mtt(root: Path, rows: list[dict], extra_tags=("baroque", "jazz")) -> None:
    tags = list(MAGNATAGATUNE_TOP50) + list(extra_tags)
    with open(root / "annotations_final.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)  # the official file quotes every field
        writer.writerow(["clip_id", *tags, "mp3_path"])
        for row in rows:
            writer.writerow([row["clip_id"], *["1" if t in row["tags"] else "0" for t in tags], row["mp3_path"]])
            path = root / "mp3" / row["mp3_path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _tone(0.5, 16000), 16000, format="MP3")


@pytest.fixture()
def mtt_rows() -> list[dict]:
    chosen = _pick(magnatagatune_official_split())
    folders = {"train": "0", "validation": "c", "test": "f"}
    tag_sets = [["guitar", "rock"], [], ["classical", "strings", "baroque"], ["female vocal"], ["choral"], ["techno"]]
    rows = []
    for split, ids in chosen.items():
        for cid in ids:
            rows.append(
                {
                    "clip_id": cid,
                    "split": split,
                    "mp3_path": f"{folders[split]}/artist-album-{cid}.mp3",
                    "tags": tag_sets[len(rows)],
                }
            )
    return rows


def test_magnatagatune_miniature(tmp_path, mtt_rows):
    _write_mtt(tmp_path, mtt_rows)
    with pytest.warns(UserWarning, match="of 25860 files"):
        ds = load_magnatagatune(tmp_path, allow_missing=True)
    assert {k: len(v) for k, v in ds.items()} == {"train": 2, "validation": 2, "test": 2}
    by_id = {r["clip_id"]: r for split in ds.values() for r in split}
    for row in mtt_rows:
        got = by_id[str(row["clip_id"])]
        top = [t for t in MAGNATAGATUNE_TOP50 if t in row["tags"]]  # "baroque" is not a top-50 tag
        assert got["tags"] == top
        assert np.flatnonzero(got["labels"]).tolist() == [MAGNATAGATUNE_TOP50.index(t) for t in top]
        assert len(got["labels"]) == 50
    assert ds["train"][1]["labels"] == [0.0] * 50  # clips without top-50 tags are kept
    assert len(load_audio_clip(ds["validation"][0]["audio"])) >= 22050


def test_magnatagatune_errors(tmp_path, mtt_rows):
    with pytest.raises(JukeboxInputError, match="annotations_final.csv not found"):
        load_magnatagatune(tmp_path)
    bad = [dict(r) for r in mtt_rows]
    bad[0]["mp3_path"] = "c/moved-to-valid.mp3"  # a train clip in the validation folder
    _write_mtt(tmp_path, bad)
    with pytest.raises(JukeboxInputError, match="official 'train' split but its mp3_path 'c/moved"):
        load_magnatagatune(tmp_path, allow_missing=True)


def test_magnatagatune_wrong_annotation_file(tmp_path):
    (tmp_path / "annotations_final.csv").write_text("clip_id\tmp3_path\n1\t0/a.mp3\n")
    with pytest.raises(JukeboxInputError, match="lacks the columns"):
        load_magnatagatune(tmp_path)


# ------------------------------------------------------------------------------------------------ GiantSteps


@pytest.fixture()
def giantsteps_root(tmp_path) -> tuple[Path, list[dict]]:
    songs = giantsteps_official_split()
    chosen = [s for split in ("train", "validation", "test") for s in [x for x in songs if x["split"] == split][:2]]
    mtg, gs = tmp_path / "giantsteps-mtg-key-dataset", tmp_path / "giantsteps-key-dataset"
    (mtg / "annotations").mkdir(parents=True)
    (gs / "annotations" / "key").mkdir(parents=True)
    (mtg / "audio").mkdir()
    (gs / "audio").mkdir()
    mtg_keys = ["D# minor", "A major ", "F# major", "C minor"]  # MTG spells sharps; one trailing space as upstream
    lines = ["ID\tMANUAL KEY\tC"]
    for i, song in enumerate(chosen):
        base = gs if song["split"] == "test" else mtg
        sf.write(base / "audio" / f"{song['song_id']}.LOFI.mp3", _tone(2.6, 44100), 44100, format="MP3")
        if song["split"] == "test":
            (gs / "annotations" / "key" / f"{song['song_id']}.LOFI.key").write_text(["Eb major", "B minor"][i - 4])
        else:
            lines.append(f"{song['song_id']}\t{mtg_keys[i]}\t2")
    (mtg / "annotations" / "annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, chosen


def test_giantsteps_miniature_short_clips(giantsteps_root):
    root, chosen = giantsteps_root
    with pytest.warns(UserWarning, match="1757 of 1763 files"):
        ds = load_giantsteps(root, clip_seconds=1.0, allow_missing=True)
    # 2.6 s songs -> 2 full 1 s clips each (the partial third is dropped)
    assert {k: len(v) for k, v in ds.items()} == {"train": 4, "validation": 4, "test": 4}
    names = ds["train"].features["label"].names
    expected = [
        "Eb minor",
        "Eb minor",
        "A major",
        "A major",
        "Gb major",
        "Gb major",
        "C minor",
        "C minor",
        "Eb major",
        "Eb major",
        "B minor",
        "B minor",
    ]
    got = [names[r["label"]] for split in ("train", "validation", "test") for r in ds[split]]
    assert got == expected
    first = ds["train"]
    assert first["clip_id"][:2] == [f"{chosen[0]['song_id']}-0", f"{chosen[0]['song_id']}-1"]
    assert first["offset"][:2] == [0.0, 1.0] and first["duration"][:2] == [1.0, 1.0]
    assert len(set(first["song_id"])) == 2
    clip = load_audio_clip(first[1]["audio"], first[1]["offset"], first[1]["duration"])
    assert len(clip) == 44100


def test_giantsteps_official_clip_counts(giantsteps_root):
    root, chosen = giantsteps_root
    with pytest.warns(UserWarning):
        ds = load_giantsteps(root, allow_missing=True)
    expected = sum(s["num_clips_30s"] for s in chosen)
    assert sum(len(v) for v in ds.values()) == expected
    offsets = [r["offset"] for r in ds["test"] if r["song_id"] == chosen[-1]["song_id"]]
    assert offsets == [30.0 * k for k in range(chosen[-1]["num_clips_30s"])]


def test_giantsteps_layout_errors(tmp_path):
    with pytest.raises(JukeboxInputError, match="giantsteps-mtg-key-dataset not found"):
        load_giantsteps(tmp_path)
    (tmp_path / "giantsteps-mtg-key-dataset").mkdir()
    (tmp_path / "giantsteps-key-dataset").mkdir()
    with pytest.raises(JukeboxInputError, match="annotations.txt not found"):
        load_giantsteps(tmp_path)


# ------------------------------------------------------------------------------------------------ Emomusic


@pytest.fixture()
def emomusic_root(tmp_path) -> tuple[Path, dict]:
    split_of = emomusic_official_split()
    chosen = {}
    for split in ("train", "validation", "test"):
        for sid in [s for s, sp in split_of.items() if sp == split][:2]:
            chosen[sid] = split
    (tmp_path / "clips_45seconds").mkdir()
    ratings = {}
    lines = ["song_id, mean_arousal, std_arousal, mean_valence, std_valence"]
    for i, sid in enumerate(chosen):
        sf.write(tmp_path / "clips_45seconds" / f"{sid}.mp3", _tone(0.5, 44100), 44100, format="MP3")
        ratings[sid] = (3.0 + i, 6.5 - i / 2)
        lines.append(f"{sid}, {ratings[sid][0]}, 0.9, {ratings[sid][1]}, 1.1")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "static_annotations.csv").write_text("\n".join(lines) + "\n")
    return tmp_path, {"split": chosen, "ratings": ratings}


def test_emomusic_miniature(emomusic_root):
    root, info = emomusic_root
    with pytest.warns(UserWarning, match="738 of 744 files"):
        ds = load_emomusic(root, allow_missing=True)
    assert {k: len(v) for k, v in ds.items()} == {"train": 2, "validation": 2, "test": 2}
    (am, asd), (vm, vsd) = EMOMUSIC_DEV_STATS["arousal"], EMOMUSIC_DEV_STATS["valence"]
    for split, rows in ds.items():
        for row in rows:
            assert info["split"][row["song_id"]] == split
            a, v = info["ratings"][row["song_id"]]
            assert row["labels"] == pytest.approx([(a - am) / asd, (v - vm) / vsd], abs=1e-6)
    with pytest.warns(UserWarning):
        raw = load_emomusic(root, normalization="none", allow_missing=True)
    assert raw["train"][0]["labels"] == pytest.approx(list(info["ratings"][raw["train"][0]["song_id"]]))
    with pytest.warns(UserWarning):
        local = load_emomusic(root, normalization="local", allow_missing=True)
    dev = np.array([r["labels"] for s in ("train", "validation") for r in local[s]])
    assert dev.mean(0) == pytest.approx([0.0, 0.0], abs=1e-6) and dev.std(0) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_emomusic_errors(emomusic_root, tmp_path_factory):
    root, _ = emomusic_root
    with pytest.raises(JukeboxInputError, match="normalization must be"):
        load_emomusic(root, normalization="minmax")
    with pytest.raises(JukeboxInputError, match="738 of 744 files .* clips_45seconds"):
        load_emomusic(root)
    empty = tmp_path_factory.mktemp("emo_empty")
    with pytest.raises(JukeboxInputError, match="static_annotations.csv not found"):
        load_emomusic(empty)


# ------------------------------------------------------------------------------------------------ dispatch


def test_load_benchmark_dispatch(gtzan_root):
    root, _ = gtzan_root
    with pytest.warns(UserWarning):
        ds = load_benchmark("gtzan_ff", root, allow_missing=True)
    assert list(ds) == ["train", "validation", "test"]
    assert {"clip_id", "song_id", "audio", "offset", "duration", "label"} == set(ds["train"].column_names)
    with pytest.raises(JukeboxInputError, match="holds no generated benchmark"):
        load_benchmark("synthetic_key", root)
