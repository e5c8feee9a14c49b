"""MIR benchmarks as `datasets.DatasetDict`s built from LOCAL copies in their official layouts.

Nothing is downloaded. The official JukeMIR splits ship with the package (`hf_jukebox_mir/probing/data/`, see its
README for provenance): GTZAN fault-filtered file lists, MagnaTagATune clip ids per split and the top-50
tags, GiantSteps song ids with split and clip count, Emomusic song ids with split. Labels are read from the
local copy's own annotation files.

Every loader returns `train`, `validation` and `test` splits with the columns

| column | type | meaning |
|---|---|---|
| `clip_id` | string | clip identifier (`jazz.00024`, MTT clip id, `<song>-<clip index>`, ...) |
| `song_id` | string | song identifier (song-level scoring groups clips by it) |
| `audio` | string | absolute path of the audio file (decoded with soundfile by [`load_audio_clip`]) |
| `offset` | float64 | clip start in the file, seconds |
| `duration` | float64 or null | clip length in seconds (null: to the end of the file) |
| `label` / `labels` | ClassLabel / list of float32 | class id (single-label) or multi-hot / regression targets |

Audio stays a path column (no `datasets.Audio`, so no torchcodec/ffmpeg is needed); MP3 files are read by
libsndfile >= 1.1 through soundfile.

With `allow_missing=True` only the clips present locally are loaded (a warning says how many are
missing); by default a missing file raises a `JukeboxInputError` naming it and the expected layout.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..models.errors import JukeboxInputError
from .keys import KEY_LABELS, key_to_index
from .tasks import MAGNATAGATUNE_TOP50, SYNTHETIC_INSTRUMENTS, MirTask, get_task

SPLIT_ALIASES = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}
OUTPUT_SPLITS = ("train", "validation", "test")

#: Mean and population std of the 619 Emomusic development clips' static annotations (JukeMIR's z-scoring).
EMOMUSIC_DEV_STATS = {
    "arousal": (4.756063166397415, 1.3860096547884184),
    "valence": (4.973864620355412, 1.2546183995244047),
}

#: Clip length JukeMIR cuts from the GiantSteps previews (seconds).
GIANTSTEPS_CLIP_SECONDS = 30.0


# ----------------------------------------------------------------------------------------------- audio


def load_audio_clip(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    *,
    sampling_rate: int = 44100,
) -> np.ndarray:
    """Mono float32 samples of `path` from `offset` for `duration` seconds, resampled to `sampling_rate`.

    Channels are averaged; resampling uses soxr. `duration=None` (or NaN) reads to the end of the file.
    """
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise JukeboxInputError(f"Audio file not found: {path}.")
    try:
        native_rate = sf.info(str(path)).samplerate
        start = int(round(float(offset or 0.0) * native_rate))
        stop = None
        if duration is not None and not (isinstance(duration, float) and math.isnan(duration)):
            stop = start + int(round(float(duration) * native_rate))
        data, native_rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise JukeboxInputError(f"Cannot decode audio file {path}: {err}.") from err
    mono = data.mean(axis=1)  # (frames, channels) -> (frames,)
    if native_rate != sampling_rate and mono.size:
        mono = soxr.resample(mono, native_rate, sampling_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- helpers


def _data_file(*parts: str) -> str:
    """Text of a packaged split file under `hf_jukebox_mir/probing/data/`."""
    return resources.files(__package__).joinpath("data", *parts).read_text(encoding="utf-8")


def _check_root(root: str | Path, task: MirTask) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise JukeboxInputError(f"{task.name}: data folder {root} does not exist. Expected layout: {task.layout}.")
    return root.resolve()


def _features(task: MirTask, extra: dict | None = None):
    import datasets

    features = {
        "clip_id": datasets.Value("string"),
        "song_id": datasets.Value("string"),
        "audio": datasets.Value("string"),
        "offset": datasets.Value("float64"),
        "duration": datasets.Value("float64"),
    }
    if task.problem_type == "single_label_classification":
        features["label"] = datasets.ClassLabel(names=list(task.label_names))
    else:
        features["labels"] = datasets.List(datasets.Value("float32"), length=task.num_labels)
    features.update(extra or {})
    return datasets.Features(features)


def _report_missing(task: MirTask, root: Path, missing: list[str], total: int, allow_missing: bool) -> None:
    if not missing:
        return
    examples = ", ".join(missing[:3])
    if not allow_missing or len(missing) == total:
        hint = (
            " Pass allow_missing=True (CLI: --allow-missing) to load only the clips present."
            if not allow_missing
            else ""
        )
        raise JukeboxInputError(
            f"{task.name}: {len(missing)} of {total} files of the official split are missing under {root} "
            f"(e.g. {examples}). Expected layout: {task.layout}.{hint}"
        )
    warnings.warn(
        f"{task.name}: {len(missing)} of {total} files of the official split are missing under {root} "
        f"(e.g. {examples}); loading the {total - len(missing)} present.",
        stacklevel=3,
    )


def _build(task: MirTask, rows: list[dict], extra_features: dict | None = None):
    import datasets

    features = _features(task, extra_features)
    out = {}
    for split in OUTPUT_SPLITS:
        split_rows = [r for r in rows if r["split"] == split]
        if not split_rows:
            raise JukeboxInputError(
                f"{task.name}: no clips of the {split!r} split were found; every split needs at least one clip. "
                f"Expected layout: {task.layout}."
            )
        columns = {name: [r[name] for r in split_rows] for name in features}
        out[split] = datasets.Dataset.from_dict(columns, features=features, split=split)
    return datasets.DatasetDict(out)


def _find_audio(candidates: list[Path]) -> Path | None:
    for path in candidates:
        if path.is_file():
            return path
    return None


def _multi_hot(names: list[str], vocabulary: tuple[str, ...]) -> list[float]:
    index = {name: i for i, name in enumerate(vocabulary)}
    hot = [0.0] * len(vocabulary)
    for name in names:
        hot[index[name]] = 1.0
    return hot


# ----------------------------------------------------------------------------------------------- GTZAN


def gtzan_official_split() -> dict[str, list[str]]:
    """The fault-filtered GTZAN split: split name -> entries like `blues/blues.00029.wav`."""
    return {
        split: _data_file("gtzan_ff", f"{name}_filtered.txt").split()
        for split, name in (("train", "train"), ("validation", "valid"), ("test", "test"))
    }


def load_gtzan(root: str | Path, *, allow_missing: bool = False):
    """GTZAN genre with the fault-filtered split (443 / 197 / 290 of the 1,000 tracks).

    `root` holds `genres/<genre>/<genre>.000NN.wav` (the unpacked `genres.tar.gz`); it may also be the
    `genres` folder itself. `.au` files (the original distribution) are read too.
    """
    task = get_task("gtzan")
    root = _check_root(root, task)
    base = root / "genres" if (root / "genres").is_dir() else root
    rows, missing = [], []
    total = 0
    for split, entries in gtzan_official_split().items():
        for entry in entries:
            total += 1
            genre, name = entry.split("/")
            stem = Path(name).stem
            path = _find_audio([base / genre / f"{stem}.wav", base / genre / f"{stem}.au"])
            if path is None:
                missing.append(str(Path("genres") / genre / name))
                continue
            rows.append(
                {
                    "clip_id": stem,
                    "song_id": stem,
                    "audio": str(path),
                    "offset": 0.0,
                    "duration": None,
                    "label": task.label_names.index(genre),
                    "split": split,
                }
            )
    _report_missing(task, root, missing, total, allow_missing)
    return _build(task, rows)


# ----------------------------------------------------------------------------------------------- MagnaTagATune


def magnatagatune_official_split() -> dict[str, list[int]]:
    """MagnaTagATune clip ids per split (JukeMIR: mp3 folders 0-b / c / d-f, 3 corrupt clips dropped)."""
    return {
        split: [int(x) for x in _data_file("magnatagatune", f"{name}.txt").split()]
        for split, name in (("train", "train"), ("validation", "valid"), ("test", "test"))
    }


def _mtt_folder_split(mp3_path: str) -> str | None:
    folder = mp3_path.split("/")[0]
    if len(folder) != 1 or folder not in "0123456789abcdef":
        return None
    return "train" if folder in "0123456789ab" else ("validation" if folder == "c" else "test")


def load_magnatagatune(root: str | Path, *, allow_missing: bool = False):
    """MagnaTagATune top-50 tagging: 18,706 / 1,825 / 5,329 clips, multi-hot `labels` over the top-50 tags.

    `root` holds `annotations_final.csv` (tab-separated, `clip_id`, 188 tag columns, `mp3_path`) and the
    mp3 folders `0` .. `f` (directly or under `mp3/`). Clips without any top-50 tag are kept, as in JukeMIR.
    """
    task = get_task("magnatagatune")
    root = _check_root(root, task)
    annotations = root / "annotations_final.csv"
    if not annotations.is_file():
        raise JukeboxInputError(f"magnatagatune: {annotations} not found. Expected layout: {task.layout}.")
    audio_dir = root / "mp3" if (root / "mp3").is_dir() else root
    with open(annotations, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = [h.strip() for h in (reader.fieldnames or [])]
        absent = [t for t in ("clip_id", "mp3_path", *MAGNATAGATUNE_TOP50) if t not in header]
        if absent:
            raise JukeboxInputError(
                f"magnatagatune: {annotations} lacks the columns {absent[:5]} (found {len(header)} columns); "
                "expected the official tab-separated annotations_final.csv."
            )
        by_id = {}
        for raw in reader:
            row = {k.strip(): (v or "").strip() for k, v in raw.items()}
            by_id[int(row["clip_id"])] = row
    split_of = {cid: split for split, ids in magnatagatune_official_split().items() for cid in ids}
    rows, missing = [], []
    for cid, split in split_of.items():
        row = by_id.get(cid)
        if row is None:
            missing.append(f"annotations_final.csv row clip_id={cid}")
            continue
        mp3_path = row["mp3_path"]
        if _mtt_folder_split(mp3_path) != split:
            raise JukeboxInputError(
                f"magnatagatune: clip {cid} is in the official {split!r} split but its mp3_path {mp3_path!r} is in "
                "another folder (0-b train, c valid, d-f test); is this the official annotations_final.csv?"
            )
        path = _find_audio([audio_dir / mp3_path, (audio_dir / mp3_path).with_suffix(".wav")])
        if path is None:
            missing.append(mp3_path)
            continue
        tags = [t for t in MAGNATAGATUNE_TOP50 if row[t] == "1"]
        rows.append(
            {
                "clip_id": str(cid),
                "song_id": str(cid),
                "audio": str(path),
                "offset": 0.0,
                "duration": None,
                "labels": _multi_hot(tags, MAGNATAGATUNE_TOP50),
                "tags": tags,
                "split": split,
            }
        )
    _report_missing(task, root, missing, len(split_of), allow_missing)
    import datasets

    return _build(task, rows, {"tags": datasets.List(datasets.Value("string"))})


# ----------------------------------------------------------------------------------------------- GiantSteps


def giantsteps_official_split() -> list[dict[str, Any]]:
    """GiantSteps songs of JukeMIR's key task: `song_id`, `split`, `num_clips_30s` (923 / 236 / 604 songs)."""
    rows = list(csv.DictReader(_data_file("giantsteps", "splits.csv").splitlines()))
    return [
        {"song_id": r["song_id"], "split": SPLIT_ALIASES[r["split"]], "num_clips_30s": int(r["num_clips_30s"])}
        for r in rows
    ]


def _giantsteps_mtg_keys(path: Path, task: MirTask) -> dict[str, str]:
    if not path.is_file():
        raise JukeboxInputError(f"giantsteps: {path} not found. Expected layout: {task.layout}.")
    keys = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if "ID" not in row or "MANUAL KEY" not in row:
                raise JukeboxInputError(
                    f"giantsteps: {path} must be the tab-separated MTG annotations.txt with columns ID, MANUAL KEY, C."
                )
            keys[row["ID"]] = row["MANUAL KEY"]
    return keys


def load_giantsteps(root: str | Path, *, clip_seconds: float = GIANTSTEPS_CLIP_SECONDS, allow_missing: bool = False):
    """GiantSteps key as JukeMIR: non-overlapping `clip_seconds` clips (a trailing partial clip is dropped).

    Train/validation songs come from the GiantSteps MTG key dataset (labels from
    `annotations/annotations.txt`, sharps spelled as flats), test songs from the GiantSteps key dataset
    (`annotations/key/<id>.LOFI.key`). With the default 30 s the clip count of each song is the official
    one (3,687 / 942 / 2,406 clips); other lengths count clips from the audio duration.
    """
    import soundfile as sf

    task = get_task("giantsteps")
    root = _check_root(root, task)
    if clip_seconds <= 0:
        raise JukeboxInputError(f"giantsteps: clip_seconds must be > 0, got {clip_seconds}.")
    mtg = root / "giantsteps-mtg-key-dataset"
    test = root / "giantsteps-key-dataset"
    for folder in (mtg, test):
        if not folder.is_dir():
            raise JukeboxInputError(f"giantsteps: folder {folder} not found. Expected layout: {task.layout}.")
    mtg_keys = _giantsteps_mtg_keys(mtg / "annotations" / "annotations.txt", task)
    official = abs(clip_seconds - GIANTSTEPS_CLIP_SECONDS) < 1e-9
    rows, missing = [], []
    songs = giantsteps_official_split()
    for song in songs:
        sid, split = song["song_id"], song["split"]
        base = test if split == "test" else mtg
        path = _find_audio([base / "audio" / f"{sid}.LOFI.mp3", base / "audio" / f"{sid}.LOFI.wav"])
        if path is None:
            missing.append(str(Path(base.name) / "audio" / f"{sid}.LOFI.mp3"))
            continue
        if split == "test":
            key_file = test / "annotations" / "key" / f"{sid}.LOFI.key"
            if not key_file.is_file():
                missing.append(str(Path(test.name) / "annotations" / "key" / key_file.name))
                continue
            key_text = key_file.read_text(encoding="utf-8").strip()
        else:
            if sid not in mtg_keys:
                missing.append(f"{mtg.name}/annotations/annotations.txt row ID={sid}")
                continue
            key_text = mtg_keys[sid]
        label = key_to_index(key_text)
        if official:
            num_clips = song["num_clips_30s"]
        else:
            info = sf.info(str(path))
            num_clips = int(math.floor(info.frames / info.samplerate / clip_seconds + 1e-9))
        for k in range(num_clips):
            rows.append(
                {
                    "clip_id": f"{sid}-{k}",
                    "song_id": sid,
                    "audio": str(path),
                    "offset": k * clip_seconds,
                    "duration": clip_seconds,
                    "label": label,
                    "split": split,
                }
            )
    _report_missing(task, root, missing, len(songs), allow_missing)
    return _build(task, rows)


# ----------------------------------------------------------------------------------------------- Emomusic


def emomusic_official_split() -> dict[str, str]:
    """Emomusic song id -> split (504 / 115 / 125; test = the MediaEval 2013 evaluation set)."""
    rows = csv.DictReader(_data_file("emomusic", "splits.csv").splitlines())
    return {r["song_id"]: SPLIT_ALIASES[r["split"]] for r in rows}


def load_emomusic(root: str | Path, *, normalization: str = "official", allow_missing: bool = False):
    """Emomusic static arousal/valence regression (`labels` = [arousal, valence]).

    Args:
        root: holds `clips_45seconds/<song_id>.mp3` and `static_annotations.csv` (also accepted under
            `annotations/`).
        normalization: `"official"` z-scores with JukeMIR's development-set statistics
            ([`EMOMUSIC_DEV_STATS`]), `"local"` with the statistics of the local train + validation clips,
            `"none"` keeps the raw 1-9 ratings.
    """
    task = get_task("emomusic")
    if normalization not in ("official", "local", "none"):
        raise JukeboxInputError(
            f"emomusic: normalization must be 'official', 'local' or 'none', got {normalization!r}."
        )
    root = _check_root(root, task)
    annotations = _find_audio([root / "static_annotations.csv", root / "annotations" / "static_annotations.csv"])
    if annotations is None:
        raise JukeboxInputError(
            f"emomusic: static_annotations.csv not found under {root}. Expected layout: {task.layout}."
        )
    ratings = {}
    with open(annotations, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not {"song_id", "mean_arousal", "mean_valence"} <= set(row):
                raise JukeboxInputError(
                    f"emomusic: {annotations} must have columns song_id, mean_arousal, mean_valence; got {sorted(row)}."
                )
            ratings[str(int(row["song_id"]))] = (float(row["mean_arousal"]), float(row["mean_valence"]))
    split_of = emomusic_official_split()
    rows, missing = [], []
    for sid, split in split_of.items():
        path = _find_audio([root / "clips_45seconds" / f"{sid}.mp3", root / "clips_45seconds" / f"{sid}.wav"])
        if path is None:
            missing.append(f"clips_45seconds/{sid}.mp3")
            continue
        if sid not in ratings:
            missing.append(f"{annotations.name} row song_id={sid}")
            continue
        rows.append(
            {
                "clip_id": sid,
                "song_id": sid,
                "audio": str(path),
                "offset": 0.0,
                "duration": None,
                "raw": ratings[sid],
                "split": split,
            }
        )
    _report_missing(task, root, missing, len(split_of), allow_missing)
    if normalization == "official":
        stats = [EMOMUSIC_DEV_STATS["arousal"], EMOMUSIC_DEV_STATS["valence"]]
    elif normalization == "local":
        dev = np.array([r["raw"] for r in rows if r["split"] != "test"], dtype=np.float64)
        if len(dev) < 2:
            raise JukeboxInputError("emomusic: normalization='local' needs at least 2 train/validation clips.")
        stats = [(dev[:, i].mean(), dev[:, i].std()) for i in range(2)]
    else:
        stats = [(0.0, 1.0), (0.0, 1.0)]
    for r in rows:
        r["labels"] = [(r["raw"][i] - stats[i][0]) / stats[i][1] for i in range(2)]
    return _build(task, rows)


# ----------------------------------------------------------------------------------------------- synthetic


def load_synthetic(root: str | Path, *, task: str = "synthetic_key"):
    """The generated benchmark written by `synthetic_mir.generate_synthetic_mir` (`metadata.csv` + WAVs).

    `task` picks the labels: `synthetic_key` (ClassLabel over the 24 keys) or `synthetic_instruments`
    (multi-hot over the five timbres).
    """
    spec = get_task(task)
    if spec.name not in ("synthetic_key", "synthetic_instruments"):
        raise JukeboxInputError(f"load_synthetic serves synthetic_key and synthetic_instruments, not {spec.name!r}.")
    root = _check_root(root, spec)
    meta_path, info_path = root / "metadata.csv", root / "synthetic_mir.json"
    if not meta_path.is_file() or not info_path.is_file():
        raise JukeboxInputError(
            f"{spec.name}: {root} holds no generated benchmark (metadata.csv / synthetic_mir.json missing). "
            "Create one with hf_jukebox_mir.probing.synthetic_mir.generate_synthetic_mir(ROOT) or "
            f"`jukebox-mir probe --task {spec.name} --data ROOT ...` (which generates it). "
            f"Expected layout: {spec.layout}."
        )
    info = json.loads(info_path.read_text())
    if list(info.get("instrument_labels", [])) != list(SYNTHETIC_INSTRUMENTS):
        raise JukeboxInputError(f"{spec.name}: {info_path} lists other instruments than {SYNTHETIC_INSTRUMENTS}.")
    rows, missing = [], []
    with open(meta_path, newline="", encoding="utf-8") as f:
        entries = list(csv.DictReader(f))
    for entry in entries:
        path = root / entry["audio"]
        if not path.is_file():
            missing.append(entry["audio"])
            continue
        row = {
            "clip_id": entry["clip_id"],
            "song_id": entry["song_id"],
            "audio": str(path),
            "offset": float(entry["offset"]),
            "duration": float(entry["duration"]),
            "split": SPLIT_ALIASES[entry["split"]],
        }
        if spec.name == "synthetic_key":
            row["label"] = KEY_LABELS.index(entry["key"])
        else:
            row["labels"] = _multi_hot([i for i in entry["instruments"].split(";") if i], SYNTHETIC_INSTRUMENTS)
        rows.append(row)
    _report_missing(spec, root, sorted(set(missing)), len(entries), allow_missing=False)
    return _build(spec, rows)


# ----------------------------------------------------------------------------------------------- dispatch

LOADERS: dict[str, Callable[..., Any]] = {
    "load_gtzan": load_gtzan,
    "load_magnatagatune": load_magnatagatune,
    "load_giantsteps": load_giantsteps,
    "load_emomusic": load_emomusic,
    "load_synthetic": load_synthetic,
}


def expected_split_sizes(task: str | MirTask) -> dict[str, int] | None:
    """Clips per split of the official benchmark (from the packaged split files), or None when not fixed.

    GTZAN 443 / 197 / 290; MagnaTagATune 18,706 / 1,825 / 5,329; GiantSteps clips 3,687 / 942 / 2,406 (from
    the songs' 30 s clip counts); Emomusic 504 / 115 / 125. Generated benchmarks have no fixed size (None).
    """
    spec = get_task(task)
    if spec.loader == "load_gtzan":
        return {k: len(v) for k, v in gtzan_official_split().items()}
    if spec.loader == "load_magnatagatune":
        return {k: len(v) for k, v in magnatagatune_official_split().items()}
    if spec.loader == "load_giantsteps":
        sizes = dict.fromkeys(OUTPUT_SPLITS, 0)
        for row in giantsteps_official_split():
            sizes[row["split"]] += row["num_clips_30s"]
        return sizes
    if spec.loader == "load_emomusic":
        sizes = dict.fromkeys(OUTPUT_SPLITS, 0)
        for split in emomusic_official_split().values():
            sizes[split] += 1
        return sizes
    return None


def dataset_coverage(task: str | MirTask, dataset) -> dict[str, Any]:
    """Files found / expected per split of a loaded benchmark, and whether the run is complete.

    Returns `{"splits": {split: {"found": n, "expected": m or None}}, "complete": bool}`; a split with
    fewer clips than the official split makes the run incomplete (results, reports and cards say so).
    """
    expected = expected_split_sizes(task)
    splits = {}
    for name in OUTPUT_SPLITS:
        if name not in dataset:
            continue
        found = len(dataset[name])
        splits[name] = {"found": found, "expected": found if expected is None else int(expected.get(name, found))}
    complete = all(v["found"] >= v["expected"] for v in splits.values())
    return {"splits": splits, "complete": complete}


def load_benchmark(task: str | MirTask, root: str | Path, **kwargs):
    """Build the `DatasetDict` of `task` from the local copy at `root` (keyword arguments go to its loader)."""
    spec = get_task(task)
    loader = LOADERS[spec.loader]
    if spec.loader == "load_synthetic":
        kwargs.pop("allow_missing", None)
        return loader(root, task=spec.name, **kwargs)
    return loader(root, **kwargs)


__all__ = [
    "EMOMUSIC_DEV_STATS",
    "GIANTSTEPS_CLIP_SECONDS",
    "LOADERS",
    "dataset_coverage",
    "expected_split_sizes",
    "emomusic_official_split",
    "giantsteps_official_split",
    "gtzan_official_split",
    "load_audio_clip",
    "load_benchmark",
    "load_emomusic",
    "load_giantsteps",
    "load_gtzan",
    "load_magnatagatune",
    "load_synthetic",
    "magnatagatune_official_split",
]
