"""An offline MIR benchmark generated from note events with a pure-numpy synthesiser.

Each *song* is in one of the 24 keys and is played by a random non-empty subset of five synthetic
timbres ("instruments"). A song is `clips_per_song` consecutive clips; every clip is a diatonic cadence
ending on the tonic (e.g. I-IV-V-I, or i-iv-V-i in harmonic minor) with a bass line and a melody drawn
from the key's scale, so the key is audible in every clip. Two tasks read the same audio:

* `synthetic_key`: 24-class key/mode of each clip, scored per song (like GiantSteps);
* `synthetic_instruments`: which timbres play (multi-label).

Everything is deterministic given `seed` (and the size parameters). The generator writes

```
ROOT/synthetic_mir.json                 generation parameters and label names
ROOT/metadata.csv                       one row per clip: clip_id, song_id, split, audio, offset, duration,
                                        key, instruments (';'-separated)
ROOT/audio/<split>/<song_id>.wav        16-bit mono songs at `sampling_rate`
```

which is the layout `hf_jukebox_mir.probing.mir_datasets.load_synthetic` reads.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..models.errors import JukeboxInputError
from .keys import KEY_LABELS
from .tasks import SYNTHETIC_INSTRUMENTS

FORMAT_NAME = "hf_jukebox_mir synthetic MIR benchmark"
FORMAT_VERSION = 1
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)
# Cadences as 0-based scale degrees of the chord roots; all end on the tonic.
CADENCES = ((0, 3, 4, 0), (0, 1, 4, 0), (0, 5, 3, 0), (0, 5, 4, 0))
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class SyntheticMirConfig:
    """Parameters of a generated benchmark (saved in `synthetic_mir.json`)."""

    seed: int = 0
    songs_per_split: tuple[int, int, int] = (48, 24, 24)
    clips_per_song: int = 2
    clip_seconds: float = 2.0
    sampling_rate: int = 44100
    max_instruments: int = 3
    noise_db: float = -50.0

    def validate(self) -> None:
        sizes = tuple(self.songs_per_split)
        if len(sizes) != 3 or not all(isinstance(n, int) and n >= 1 for n in sizes):
            raise JukeboxInputError(
                f"songs_per_split must be three positive integers (train, validation, test), got {sizes!r}."
            )
        if not isinstance(self.clips_per_song, int) or self.clips_per_song < 1:
            raise JukeboxInputError(f"clips_per_song must be a positive integer, got {self.clips_per_song!r}.")
        if not 0.5 <= float(self.clip_seconds) <= 60.0:
            raise JukeboxInputError(f"clip_seconds must be between 0.5 and 60, got {self.clip_seconds!r}.")
        if not isinstance(self.sampling_rate, int) or self.sampling_rate < 8000:
            raise JukeboxInputError(f"sampling_rate must be an integer >= 8000, got {self.sampling_rate!r}.")
        if not 1 <= self.max_instruments <= len(SYNTHETIC_INSTRUMENTS):
            raise JukeboxInputError(
                f"max_instruments must be in 1..{len(SYNTHETIC_INSTRUMENTS)}, got {self.max_instruments!r}."
            )

    def to_json(self) -> dict:
        data = asdict(self)
        data["songs_per_split"] = list(self.songs_per_split)
        return data


# ----------------------------------------------------------------------------------------------- synthesis


def _envelope(num: int, sr: int, attack: float, release: float, decay: float = 0.0) -> np.ndarray:
    """Attack-(exponential decay)-release amplitude envelope of `num` samples."""
    t = np.arange(num) / sr
    env = np.minimum(1.0, t / max(attack, 1e-4))
    if decay > 0:
        env *= np.exp(-decay * t)
    tail = min(num, int(release * sr))
    if tail > 0:
        env[-tail:] *= np.linspace(1.0, 0.0, tail)
    return env


def render_note(instrument: str, midi: int, duration: float, sr: int) -> np.ndarray:
    """One note of `instrument` (a name from `SYNTHETIC_INSTRUMENTS`) at MIDI pitch `midi`, float64 samples.

    Deterministic (fixed partial phases), hence cached: a benchmark reuses a few hundred distinct notes.
    """
    if instrument not in SYNTHETIC_INSTRUMENTS:
        raise JukeboxInputError(f"Unknown instrument {instrument!r}; choose one of {', '.join(SYNTHETIC_INSTRUMENTS)}.")
    note = _render_note_cached(instrument, int(midi), max(1, int(round(duration * sr))), int(sr))
    return note


@functools.lru_cache(maxsize=4096)
def _render_note_cached(instrument: str, midi: int, num: int, sr: int) -> np.ndarray:
    frequency = _midi_to_hz(midi)
    t = np.arange(num) / sr  # (num,)
    if instrument == "organ":
        ratios, amps = np.arange(1, 7), np.array([1.0, 0.6, 0.45, 0.3, 0.2, 0.12])
        env, decays = _envelope(num, sr, 0.02, 0.05), np.zeros(6)
    elif instrument == "flute":
        ratios, amps = np.arange(1, 4), np.array([1.0, 0.18, 0.07])
        env, decays = _envelope(num, sr, 0.07, 0.06), np.zeros(3)
    elif instrument == "brass":
        ratios = np.arange(1, 11)
        amps = 1.0 / ratios**0.7
        env, decays = _envelope(num, sr, 0.05, 0.05, decay=0.4), np.zeros(10)
    elif instrument == "pluck":
        ratios = np.arange(1, 9)
        amps = 1.0 / ratios
        env, decays = _envelope(num, sr, 0.004, 0.03), 2.0 + 1.5 * ratios
    else:  # bell: inharmonic partials
        ratios, amps = np.array([1.0, 2.0, 2.76, 5.4, 8.93]), np.array([1.0, 0.6, 0.5, 0.3, 0.2])
        env, decays = _envelope(num, sr, 0.003, 0.03), 2.5 + 0.8 * np.arange(5)
    keep = ratios * frequency < 0.45 * sr
    ratios, amps, decays = ratios[keep], amps[keep], decays[keep]
    phase = 2 * np.pi * frequency * t
    if instrument == "flute":  # gentle vibrato
        phase = phase + 0.004 * frequency / 5.0 * np.sin(2 * np.pi * 5.0 * t)
    offsets = np.linspace(0.0, np.pi, len(ratios))[:, None]  # fixed partial phases
    partials = np.sin(ratios[:, None] * phase[None, :] + offsets)  # (H, num)
    partials *= amps[:, None] * np.exp(-decays[:, None] * t[None, :])
    note = partials.sum(axis=0) * env
    if instrument == "flute":  # breath noise, seeded by the pitch
        note += 0.02 * np.random.default_rng(midi).standard_normal(num) * env
    note.setflags(write=False)
    return note


def _midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _triad(scale: Sequence[int], degree: int) -> list[int]:
    """Semitones above the tonic of the diatonic triad on `degree` (0-based)."""
    return [scale[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4)]


def render_clip(
    key_index: int,
    parts: dict[str, list[str]],
    seconds: float,
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A cadence in key `key_index` (JukeMIR order): `parts` maps instrument -> roles (chords/melody/bass)."""
    tonic, minor = key_index % 12, key_index >= 12
    scale = HARMONIC_MINOR_SCALE if minor else MAJOR_SCALE
    cadence = CADENCES[rng.integers(len(CADENCES))]
    num = int(round(seconds * sr))
    out = np.zeros(num)
    chord_len = seconds / len(cadence)
    base = 48 + tonic  # tonic in octave 3 (C3..B3)
    for c, degree in enumerate(cadence):
        start = int(round(c * chord_len * sr))
        chord = [base + s for s in _triad(scale, degree)]
        root = chord[0]
        inversion = int(rng.integers(3))
        chord = sorted(n + (12 if i < inversion else 0) for i, n in enumerate(chord))
        for instrument, roles in parts.items():
            for role in roles:
                if role == "chords":
                    notes = [(n, 0.0, chord_len) for n in chord]
                elif role == "bass":
                    notes = [(root - 12, 0.0, chord_len)]
                else:  # melody: two scale notes per chord, biased towards chord tones
                    pool = [n + 12 for n in chord] + [base + 12 + s for s in scale]
                    notes = [(pool[rng.integers(len(pool))], h * chord_len / 2, chord_len / 2) for h in range(2)]
                for midi, onset, length in notes:
                    note = render_note(instrument, midi, length, sr)
                    begin = start + int(round(onset * sr))
                    end = min(num, begin + len(note))
                    gain = 0.6 if role == "chords" else 0.8
                    out[begin:end] += gain * note[: end - begin]
    return out


def _assign_parts(instruments: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    roles = ["chords", "melody", "bass"]
    order = list(instruments)
    rng.shuffle(order)
    if len(order) == 1:
        return {order[0]: ["chords", "melody"]}
    if len(order) == 2:
        return {order[0]: ["chords", "bass"], order[1]: ["melody"]}
    return {inst: [roles[i % 3]] for i, inst in enumerate(order)}


def render_song(
    key_index: int, instruments: list[str], config: SyntheticMirConfig, rng: np.random.Generator
) -> np.ndarray:
    """`config.clips_per_song` cadences in one key by the given instruments, peak-normalised float32."""
    parts = _assign_parts(instruments, rng)
    clips = [
        render_clip(key_index, parts, config.clip_seconds, config.sampling_rate, rng)
        for _ in range(config.clips_per_song)
    ]
    song = np.concatenate(clips)
    song /= max(np.abs(song).max(), 1e-9)
    song *= rng.uniform(0.5, 0.9)
    song += 10 ** (config.noise_db / 20) * rng.standard_normal(len(song))
    return np.clip(song, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------- benchmark


def _song_plan(config: SyntheticMirConfig) -> list[dict]:
    """Key, instruments and ids of every song, deterministic in `config.seed`."""
    plan = []
    for split_index, (split, count) in enumerate(zip(SPLIT_NAMES, config.songs_per_split)):
        rng = np.random.default_rng([config.seed, split_index, 0])
        shift = int(rng.integers(24))
        keys = [(i + shift) % 24 for i in range(count)]  # balanced over the 24 keys
        rng.shuffle(keys)
        for i, key in enumerate(keys):
            n_inst = int(rng.integers(1, config.max_instruments + 1))
            chosen = sorted(rng.choice(len(SYNTHETIC_INSTRUMENTS), size=n_inst, replace=False).tolist())
            plan.append(
                {
                    "split": split,
                    "song_id": f"{split[:2]}{i:04d}",
                    "key": key,
                    "instruments": [SYNTHETIC_INSTRUMENTS[j] for j in chosen],
                    "seed": [config.seed, split_index, 1, i],
                }
            )
    return plan


def generate_synthetic_mir(
    output_dir: str | Path,
    *,
    task: str = "synthetic_key",
    seed: int = 0,
    songs_per_split: Sequence[int] = (48, 24, 24),
    clips_per_song: int = 2,
    clip_seconds: float = 2.0,
    sampling_rate: int = 44100,
    max_instruments: int = 3,
    overwrite: bool = False,
):
    """Write the generated benchmark to `output_dir` (if not already there) and load `task` from it.

    Args:
        output_dir: folder to write (created). If it already holds a benchmark generated with the same
            parameters it is reused; with other parameters a `JukeboxInputError` is raised unless
            `overwrite=True`.
        task: `synthetic_key` or `synthetic_instruments` (which labels the returned dataset carries).
        seed: generation seed; the same seed and sizes give identical audio and labels.
        songs_per_split: songs in train, validation, test (keys are balanced within each split).
        clips_per_song: clips cut from each song (song-level scoring aggregates them).
        clip_seconds: clip length in seconds.
        sampling_rate: audio rate in Hz (44100 for Jukebox).
        max_instruments: at most this many timbres play in one song.

    Returns:
        `datasets.DatasetDict` with `train`, `validation` and `test` (see `mir_datasets.load_synthetic`).
    """
    import soundfile as sf

    from .mir_datasets import load_synthetic

    config = SyntheticMirConfig(
        seed=int(seed),
        songs_per_split=tuple(int(n) for n in songs_per_split),
        clips_per_song=int(clips_per_song),
        clip_seconds=float(clip_seconds),
        sampling_rate=int(sampling_rate),
        max_instruments=int(max_instruments),
    )
    config.validate()
    root = Path(output_dir)
    info_path = root / "synthetic_mir.json"
    info = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config.to_json(),
        "key_labels": list(KEY_LABELS),
        "instrument_labels": list(SYNTHETIC_INSTRUMENTS),
    }
    if info_path.is_file() and not overwrite:
        existing = json.loads(info_path.read_text())
        if existing.get("config") != info["config"] or existing.get("version") != FORMAT_VERSION:
            raise JukeboxInputError(
                f"{root} already holds a synthetic benchmark generated with {existing.get('config')}, not "
                f"{info['config']}. Use another folder or overwrite=True."
            )
        return load_synthetic(root, task=task)
    if root.exists() and any(root.iterdir()) and not info_path.is_file() and not overwrite:
        raise JukeboxInputError(
            f"{root} is not empty and holds no synthetic benchmark; refusing to write into it. Use an empty folder."
        )
    if overwrite and (root / "audio").is_dir():
        shutil.rmtree(root / "audio")
    rows = []
    for song in _song_plan(config):
        rng = np.random.default_rng(song["seed"])
        audio = render_song(song["key"], song["instruments"], config, rng)
        rel = Path("audio") / song["split"] / f"{song['song_id']}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, audio, config.sampling_rate, subtype="PCM_16")
        for c in range(config.clips_per_song):
            rows.append(
                {
                    "clip_id": f"{song['song_id']}-{c}",
                    "song_id": song["song_id"],
                    "split": song["split"],
                    "audio": rel.as_posix(),
                    "offset": f"{c * config.clip_seconds:.6f}",
                    "duration": f"{config.clip_seconds:.6f}",
                    "key": KEY_LABELS[song["key"]],
                    "instruments": ";".join(song["instruments"]),
                }
            )
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return load_synthetic(root, task=task)


__all__ = [
    "SyntheticMirConfig",
    "generate_synthetic_mir",
    "render_clip",
    "render_note",
    "render_song",
]
