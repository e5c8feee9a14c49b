"""Frame-level MIR: beat / downbeat tracking and chord recognition probes, scored by `mir_eval`.

Flow (the same for every feature source):

1. A corpus: tracks with audio and annotations (`.beats`: `time [beat position]` per line, as GTZAN-Rhythm
   and the Ballroom annotations of Krebs et al.; `.lab`: `start end label` chord intervals, as the Isophonics
   and Billboard corpora), split into train / validation / test ([`load_frame_corpus`], [`load_ballroom`]),
   or the offline synthetic benchmark ([`generate_synthetic_frames`]: click tracks at varied tempi with an
   accented downbeat, over a rendered chord progression, one chord per bar).
2. Frame features on a uniform grid of `frame_rate` Hz with a timestamp per frame: the baselines
   [`onset_features`] (log spectral flux in 8 bands) and [`chroma_features`], or Jukebox frames
   (`pipeline(..., pooling="none", frame_rate=F)`, timestamps at the bin centres, [`jukebox_frame_fn`]).
3. A frame-wise probe: features of +-`context` neighbouring frames stacked, standardised, and a multinomial
   logistic regression (scikit-learn, class-balanced) per task: beats {none, beat, downbeat} (the annotated
   frame and its two neighbours are positive: "target widening"), chords {N, 12 major, 12 minor}.
4. Documented simple post-processing (no maintained DBN library installs on current Python; madmom does
   not build): beats are the local maxima of P(beat) + P(downbeat) above a threshold, at least 60/240 s
   apart; downbeats likewise from P(downbeat), at least 0.8 s apart; both thresholds are chosen on the
   validation split. Chords: the class probabilities are averaged over a 0.2 s moving window, the arg-max
   per frame, runs of equal labels merged into intervals.
5. `mir_eval`: `mir_eval.beat.f_measure` (70 ms window; the first 5 s are NOT trimmed, the clips are short)
   for beats and downbeats, and `mir_eval.chord.evaluate` (duration-weighted `majmin` and `root`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models.errors import JukeboxInputError

FRAME_TASKS = ("beats", "chords")
SPLITS = ("train", "validation", "test")
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHORD_LABELS = ("N", *[f"{p}:maj" for p in PITCH_NAMES], *[f"{p}:min" for p in PITCH_NAMES])
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".au")

FrameFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (audio, sr) -> (features (T, D), times (T,))


# ------------------------------------------------------------------------------------------------ annotations


def read_beats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Beat times (s) and beat positions in the bar (1 = downbeat; 0 when the file gives times only)."""
    times, positions = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        times.append(float(parts[0]))
        positions.append(int(float(parts[1])) if len(parts) > 1 else 0)
    return np.asarray(times, dtype=np.float64), np.asarray(positions, dtype=np.int64)


def read_chords(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Chord intervals `(n, 2)` (s) and labels of a `.lab` file (read by `mir_eval.io`)."""
    import mir_eval

    intervals, labels = mir_eval.io.load_labeled_intervals(str(path))
    return np.asarray(intervals, dtype=np.float64), list(labels)


def majmin_index(label: str) -> int:
    """Index in [`CHORD_LABELS`] of a Harte label reduced to major / minor triads (0 = N: no chord or other)."""
    import mir_eval

    try:
        root, bitmap, _ = mir_eval.chord.encode(label)
    except mir_eval.chord.InvalidChordException:
        return 0
    if root < 0:
        return 0
    if bitmap[3] and bitmap[7]:
        return 1 + 12 + int(root)
    if bitmap[4]:
        return 1 + int(root)
    return 0


@dataclass
class FrameTrack:
    """One annotated track: audio file (or array), beats / positions and chord intervals (either may be absent)."""

    track_id: str
    audio: str | np.ndarray
    split: str
    beats: np.ndarray | None = None
    beat_positions: np.ndarray | None = None
    chord_intervals: np.ndarray | None = None
    chord_labels: list[str] | None = None


@dataclass
class FrameCorpus:
    """Tracks per split and the corpus' coverage (audio files with annotations found / listed)."""

    name: str
    tracks: dict[str, list[FrameTrack]]
    coverage: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[FrameTrack]:
        return self.tracks.get(name, [])


def _stable_split(name: str, fractions=(0.8, 0.1)) -> str:
    bucket = (zlib.crc32(name.encode("utf-8")) % 1000) / 1000.0
    return "train" if bucket < fractions[0] else ("validation" if bucket < fractions[0] + fractions[1] else "test")


def _track(track_id: str, audio: Path, split: str, beats: Path | None, chords: Path | None) -> FrameTrack:
    track = FrameTrack(track_id, str(audio), split)
    if beats is not None and beats.is_file():
        track.beats, track.beat_positions = read_beats(beats)
    if chords is not None and chords.is_file():
        track.chord_intervals, track.chord_labels = read_chords(chords)
    return track


def load_frame_corpus(root: str | Path, *, name: str | None = None) -> FrameCorpus:
    """A corpus laid out as `ROOT/<split>/<track>.<audio>` with `<track>.beats` and/or `<track>.lab` beside each
    audio file (splits `train`, `validation` (or `valid`), `test`); the synthetic benchmark is written so."""
    root = Path(root)
    if not root.is_dir():
        raise JukeboxInputError(
            f"Frame-level corpus {root} does not exist (expected ROOT/<split>/<track>.wav + .beats / .lab)."
        )
    tracks: dict[str, list[FrameTrack]] = {}
    coverage = {}
    for split in SPLITS:
        folder = root / split if (root / split).is_dir() else root / ("valid" if split == "validation" else split)
        audio = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []
        listed = (
            {p.stem for p in folder.glob("*.beats")} | {p.stem for p in folder.glob("*.lab")}
            if folder.is_dir()
            else set()
        )
        tracks[split] = [_track(p.stem, p, split, p.with_suffix(".beats"), p.with_suffix(".lab")) for p in audio]
        found = len({p.stem for p in audio} & listed)
        coverage[split] = {"found": found, "expected": len(listed)}
    if not any(tracks.values()):
        raise JukeboxInputError(f"No audio found under {root}/<split>/ (splits {', '.join(SPLITS)}).")
    return FrameCorpus(
        name or root.name,
        tracks,
        {"splits": coverage, "complete": all(v["found"] >= v["expected"] for v in coverage.values())},
    )


def load_ballroom(root: str | Path, annotations: str | Path | None = None) -> FrameCorpus:
    """The Ballroom dataset (`ROOT/BallroomData/<style>/<track>.wav`) with the beat and downbeat annotations of
    Krebs et al. 2013 (`ROOT/BallroomAnnotations/<track>.beats`, or `annotations=`).

    Split: the literature uses 8-fold cross-validation; here a fixed 80/10/10 split by a hash of the track name
    (stable across machines), stated in the results.
    """
    root = Path(root)
    audio_dir = root / "BallroomData" if (root / "BallroomData").is_dir() else root
    ann_dir = Path(annotations) if annotations else root / "BallroomAnnotations"
    if not ann_dir.is_dir():
        raise JukeboxInputError(
            f"Ballroom beat annotations not found at {ann_dir} (the .beats files of Krebs et "
            "al. 2013, github.com/CPJKU/BallroomAnnotations)."
        )
    listed = {p.stem: p for p in ann_dir.glob("*.beats")}
    tracks: dict[str, list[FrameTrack]] = {s: [] for s in SPLITS}
    for path in sorted(audio_dir.rglob("*.wav")):
        if path.stem in listed:
            split = _stable_split(path.stem)
            tracks[split].append(_track(path.stem, path, split, listed[path.stem], None))
    coverage = {}
    for split in SPLITS:
        expected = sum(1 for stem in listed if _stable_split(stem) == split)
        coverage[split] = {"found": len(tracks[split]), "expected": expected}
    return FrameCorpus(
        "ballroom",
        tracks,
        {
            "splits": coverage,
            "complete": all(v["found"] >= v["expected"] for v in coverage.values()),
            "split_rule": "crc32(track) 80/10/10",
        },
    )


# ------------------------------------------------------------------------------------------------ synthetic


def _click(sr: int, frequency: float, gain: float, seconds: float = 0.03) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return gain * np.sin(2 * np.pi * frequency * t) * np.exp(-t * 120.0)


def render_frame_track(rng: np.random.Generator, seconds: float, sr: int) -> tuple[np.ndarray, dict[str, Any]]:
    """One synthetic track: a 4/4 click track (accented, higher downbeat click) over triads, one chord per bar."""
    from .synthetic_mir import render_note

    tempo = float(rng.uniform(70.0, 150.0))
    period = 60.0 / tempo
    start = float(rng.uniform(0.1, period))
    first_position = int(rng.integers(1, 5))
    n = int(seconds * sr)
    audio = np.zeros(n, dtype=np.float64)
    beats, positions = [], []
    time, position = start, first_position
    while time < seconds - 0.05:
        beats.append(time)
        positions.append(position)
        time += period
        position = position % 4 + 1
    intervals, labels = [], []
    bar_starts = [b for b, p in zip(beats, positions) if p == 1]
    bounds = [0.0, *bar_starts, seconds]
    for begin, end in zip(bounds[:-1], bounds[1:]):
        if end - begin < 0.05:
            continue
        root = int(rng.integers(0, 12))
        minor = bool(rng.integers(0, 2))
        notes = [48 + root, 48 + root + (3 if minor else 4), 48 + root + 7]
        a, b = int(begin * sr), int(end * sr)
        for midi in notes:
            audio[a:b] += 0.25 * render_note("organ", midi, (b - a) / sr, sr)[: b - a]
        intervals.append((begin, end))
        labels.append(f"{PITCH_NAMES[root]}:{'min' if minor else 'maj'}")
    for beat, pos in zip(beats, positions):
        click = _click(sr, 2000.0 if pos == 1 else 1000.0, 1.0 if pos == 1 else 0.6)
        a = int(beat * sr)
        audio[a : a + len(click)] += click[: n - a]
    audio += 1e-3 * rng.standard_normal(n)
    audio /= np.abs(audio).max()
    info = {
        "tempo": tempo,
        "beats": np.asarray(beats),
        "positions": np.asarray(positions),
        "intervals": np.asarray(intervals),
        "labels": labels,
    }
    return audio.astype(np.float32), info


def generate_synthetic_frames(
    root: str | Path,
    *,
    tracks_per_split: Sequence[int] = (16, 6, 6),
    seconds: float = 6.0,
    seed: int = 0,
    sampling_rate: int = 44100,
) -> FrameCorpus:
    """Write the synthetic frame-level benchmark (`ROOT/<split>/<id>.wav`, `.beats`, `.lab`) and load it.

    Deterministic for a given `seed` and size; an existing benchmark with the same parameters is reused.
    """
    import soundfile as sf

    root = Path(root)
    params = {
        "tracks_per_split": list(tracks_per_split),
        "seconds": seconds,
        "seed": seed,
        "sampling_rate": sampling_rate,
        "format": "hf_jukebox_mir synthetic frame-level benchmark v1",
    }
    marker = root / "synthetic_frames.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return load_frame_corpus(root, name="synthetic_frames")
    rng = np.random.default_rng(seed)
    for split, count in zip(SPLITS, tracks_per_split):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            audio, info = render_frame_track(rng, seconds, sampling_rate)
            stem = root / split / f"{split}-{i:03d}"
            sf.write(stem.with_suffix(".wav"), audio, sampling_rate, subtype="FLOAT")
            stem.with_suffix(".beats").write_text(
                "".join(f"{t:.6f}\t{p}\n" for t, p in zip(info["beats"], info["positions"])), encoding="utf-8"
            )
            stem.with_suffix(".lab").write_text(
                "".join(f"{a:.6f}\t{b:.6f}\t{label}\n" for (a, b), label in zip(info["intervals"], info["labels"])),
                encoding="utf-8",
            )
    marker.write_text(json.dumps(params, indent=1))
    return load_frame_corpus(root, name="synthetic_frames")


# ------------------------------------------------------------------------------------------------ features


def _load(track: FrameTrack, sr: int) -> np.ndarray:
    if isinstance(track.audio, np.ndarray):
        return track.audio.astype(np.float32)
    from .mir_datasets import load_audio_clip

    return load_audio_clip(track.audio, 0.0, None, sampling_rate=sr)


def _stft_frames(audio: np.ndarray, sr: int, frame_rate: float, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra `(T, n_fft // 2 + 1)` centred at `k / frame_rate` s, and those times."""
    hop = sr / frame_rate
    count = int(np.floor(len(audio) / hop)) + 1
    padded = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2 + int(hop) + 1))
    starts = np.round(np.arange(count) * hop).astype(np.int64)
    window = np.hanning(n_fft)
    frames = np.stack([padded[s : s + n_fft] for s in starts]) * window
    return np.abs(np.fft.rfft(frames, axis=1)), np.arange(count) / frame_rate


def onset_features(audio: np.ndarray, sr: int, frame_rate: float, bands: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: half-wave rectified log-magnitude spectral flux in `bands` log-spaced bands, `(T, bands)`."""
    spec, times = _stft_frames(audio, sr, frame_rate, 2048)
    freqs = np.fft.rfftfreq(2048, 1.0 / sr)
    edges = np.geomspace(60.0, 0.45 * sr, bands + 1)
    log_spec = np.log1p(100.0 * spec)
    flux = np.maximum(np.diff(log_spec, axis=0, prepend=log_spec[:1]), 0.0)
    out = np.stack([flux[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    return out.astype(np.float32), times


def chroma_features(audio: np.ndarray, sr: int, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: 12-bin chroma frames (STFT, 8192 points, max-normalised per frame), `(T, 12)`."""
    from .chroma import _chroma_bins

    spec, times = _stft_frames(audio, sr, frame_rate, 8192)
    bins, pitch_class, weight = _chroma_bins(8192, int(sr), 55.0, 5000.0)
    weighted = spec[:, bins] * weight
    chroma = np.stack([weighted[:, pitch_class == pc].sum(1) for pc in range(12)], 1)
    return (chroma / np.maximum(chroma.max(1, keepdims=True), 1e-10)).astype(np.float32), times


def baseline_frame_fn(name: str, frame_rate: float) -> FrameFn:
    """`"onset"`, `"chroma"` or `"onset+chroma"` baseline features as a frame function."""

    def fn(audio: np.ndarray, sr: int):
        parts = []
        for part in name.split("+"):
            if part == "onset":
                parts.append(onset_features(audio, sr, frame_rate))
            elif part == "chroma":
                parts.append(chroma_features(audio, sr, frame_rate))
            else:
                raise JukeboxInputError(f"Unknown baseline feature {part!r}: expected onset, chroma or onset+chroma.")
        return np.concatenate([p[0] for p in parts], 1), parts[0][1]

    fn.name = name  # type: ignore[attr-defined]
    return fn


def jukebox_frame_fn(
    model_dir: str | Path, frame_rate: float, *, layer: int | None = None, device: str | None = None
) -> FrameFn:
    """Jukebox frames of one layer averaged into `1 / frame_rate` s bins; timestamps at the bin centres."""
    from ..extraction.engine import JukeboxExtractor, frame_times

    extractor = JukeboxExtractor(
        model_dir,
        layers=None if layer is None else [int(layer)],
        pooling="none",
        frame_rate=float(frame_rate),
        device=device,
    )
    chosen = extractor.layer_ids[0]

    def fn(audio: np.ndarray, sr: int):
        frames = extractor.pipeline(
            {"array": np.asarray(audio, np.float32), "sampling_rate": sr},
            layers=chosen,
            pooling="none",
            frame_rate=float(frame_rate),
        )
        return np.asarray(frames), frame_times(len(frames), frame_rate).astype(np.float64)

    fn.name = f"jukebox layer {chosen}"  # type: ignore[attr-defined]
    fn.layer = chosen  # type: ignore[attr-defined]
    return fn


# ------------------------------------------------------------------------------------------------ targets + probe


def beat_targets(times: np.ndarray, beats: np.ndarray, positions: np.ndarray, widen: int = 1) -> np.ndarray:
    """Frame classes: 0 none, 1 beat, 2 downbeat (position 1), on the nearest frame and `widen` neighbours."""
    target = np.zeros(len(times), dtype=np.int64)
    for beat, pos in zip(beats, positions):
        k = int(np.argmin(np.abs(times - beat)))
        for j in range(max(0, k - widen), min(len(times), k + widen + 1)):
            target[j] = max(target[j], 2 if pos == 1 else 1)
    return target


def chord_targets(times: np.ndarray, intervals: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Frame classes in [`CHORD_LABELS`] (0 = N) of the chord sounding at each frame time."""
    target = np.zeros(len(times), dtype=np.int64)
    for (a, b), label in zip(intervals, labels):
        target[(times >= a) & (times < b)] = majmin_index(label)
    return target


def stack_context(features: np.ndarray, context: int) -> np.ndarray:
    """`(T, D)` -> `(T, (2 * context + 1) * D)`: each frame with its neighbours (edges repeated)."""
    if context == 0:
        return features
    padded = np.pad(features, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + len(features)] for i in range(2 * context + 1)], 1)


def _peaks(activation: np.ndarray, times: np.ndarray, threshold: float, min_gap: float) -> np.ndarray:
    """Times of local maxima above `threshold`, greedily kept from the strongest, at least `min_gap` s apart."""
    left = np.concatenate([[-np.inf], activation[:-1]])
    right = np.concatenate([activation[1:], [-np.inf]])
    candidates = np.flatnonzero((activation >= left) & (activation > right) & (activation >= threshold))
    kept: list[int] = []
    for k in candidates[np.argsort(-activation[candidates])]:
        if all(abs(times[k] - times[j]) >= min_gap for j in kept):
            kept.append(int(k))
    return np.sort(times[kept]) if kept else np.zeros(0)


def _chord_segments(probs: np.ndarray, times: np.ndarray, frame_rate: float, end: float):
    width = max(1, int(round(0.2 * frame_rate)))
    kernel = np.ones(width) / width
    smooth = np.stack([np.convolve(probs[:, c], kernel, mode="same") for c in range(probs.shape[1])], 1)
    best = smooth.argmax(1)
    bounds = np.concatenate([[0.0], (times[1:] + times[:-1]) / 2, [max(end, times[-1])]])
    intervals, labels = [], []
    start = 0
    for k in range(1, len(best) + 1):
        if k == len(best) or best[k] != best[start]:
            intervals.append((bounds[start], bounds[k]))
            labels.append(CHORD_LABELS[int(best[start])])
            start = k
    return np.asarray(intervals), labels


@dataclass
class _Prepared:
    features: list[np.ndarray]
    times: list[np.ndarray]
    tracks: list[FrameTrack]
    durations: list[float]


def _prepare(tracks: list[FrameTrack], frame_fn: FrameFn, sr: int, context: int) -> _Prepared:
    feats, times, durations = [], [], []
    for track in tracks:
        audio = _load(track, sr)
        f, t = frame_fn(audio, sr)
        feats.append(stack_context(np.asarray(f, np.float32), context))
        times.append(np.asarray(t, np.float64))
        durations.append(len(audio) / sr)
    return _Prepared(feats, times, tracks, durations)


def _fit(features: list[np.ndarray], targets: list[np.ndarray], seed: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.concatenate(features), np.concatenate(targets)
    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=300, class_weight="balanced", random_state=seed)
    )
    with warnings.catch_warnings():  # 300 L-BFGS iterations; the validation scores judge the fit
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _probabilities(model, features: np.ndarray, n_classes: int) -> np.ndarray:
    probs = np.zeros((len(features), n_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


def _beat_scores(model, data: _Prepared, threshold: float, down_threshold: float) -> dict[str, float]:
    import mir_eval

    beat_f, down_f = [], []
    for f, t, track in zip(data.features, data.times, data.tracks):
        p = _probabilities(model, f, 3)
        est = _peaks(p[:, 1] + p[:, 2], t, threshold, 60.0 / 240.0)
        est_down = _peaks(p[:, 2], t, down_threshold, 0.8)
        beat_f.append(mir_eval.beat.f_measure(track.beats, est))
        down = track.beats[track.beat_positions == 1]
        down_f.append(mir_eval.beat.f_measure(down, est_down))
    return {"beat_f_measure": float(np.mean(beat_f)), "downbeat_f_measure": float(np.mean(down_f))}


def _chord_scores(model, data: _Prepared, frame_rate: float) -> dict[str, float]:
    import mir_eval

    total, sums = 0.0, {"majmin": 0.0, "root": 0.0}
    for f, t, track, duration in zip(data.features, data.times, data.tracks, data.durations):
        p = _probabilities(model, f, len(CHORD_LABELS))
        est_intervals, est_labels = _chord_segments(p, t, frame_rate, duration)
        scores = mir_eval.chord.evaluate(track.chord_intervals, track.chord_labels, est_intervals, est_labels)
        weight = float(track.chord_intervals[-1, 1] - track.chord_intervals[0, 0])
        for key in sums:
            sums[key] += weight * float(scores[key])
        total += weight
    return {f"chord_{k}": v / max(total, 1e-9) for k, v in sums.items()}


def run_frame_task(
    corpus: FrameCorpus,
    task: str,
    frame_fn: FrameFn,
    *,
    frame_rate: float,
    context: int = 2,
    sampling_rate: int = 44100,
    seed: int = 0,
    output_dir: str | Path | None = None,
    feature_name: str | None = None,
) -> dict[str, Any]:
    """Train the frame probe of `task` ("beats" or "chords") on train, choose post-processing on validation,
    score test with `mir_eval`; writes `results.json` / `results.md` to `output_dir` when given."""
    if task not in FRAME_TASKS:
        raise JukeboxInputError(f"Unknown frame-level task {task!r}: expected one of {FRAME_TASKS}.")
    needs = "beats" if task == "beats" else "chord_intervals"
    splits = {}
    for split in SPLITS:
        tracks = [t for t in corpus.split(split) if getattr(t, needs) is not None]
        if not tracks:
            raise JukeboxInputError(f"{corpus.name}: no {split} track has {task} annotations.")
        splits[split] = _prepare(tracks, frame_fn, sampling_rate, context)
    if task == "beats":
        targets = [
            beat_targets(t, tr.beats, tr.beat_positions) for t, tr in zip(splits["train"].times, splits["train"].tracks)
        ]
    else:
        targets = [
            chord_targets(t, tr.chord_intervals, tr.chord_labels)
            for t, tr in zip(splits["train"].times, splits["train"].tracks)
        ]
    model = _fit(splits["train"].features, targets, seed)
    settings: dict[str, Any] = {}
    if task == "beats":
        grid = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        best = max(
            ((a, b) for a in grid for b in grid),
            key=lambda ab: sum(_beat_scores(model, splits["validation"], *ab).values()),
        )
        settings = {"beat_threshold": best[0], "downbeat_threshold": best[1]}
        validation = _beat_scores(model, splits["validation"], *best)
        test = _beat_scores(model, splits["test"], *best)
        primary = "beat_f_measure"
    else:
        validation = _chord_scores(model, splits["validation"], frame_rate)
        test = _chord_scores(model, splits["test"], frame_rate)
        primary = "chord_majmin"
    results = {
        "task": task,
        "corpus": corpus.name,
        "features": feature_name or getattr(frame_fn, "name", "features"),
        "frame_rate": frame_rate,
        "context_frames": context,
        "primary_metric": primary,
        "validation": validation,
        "test": test,
        "post_processing": settings,
        "split_sizes": {s: len(d.tracks) for s, d in splits.items()},
        "coverage": corpus.coverage,
        "metric_source": "mir_eval " + __import__("mir_eval").__version__,
    }
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(frame_results_markdown([results]))
    return results


def frame_results_markdown(results: Sequence[dict[str, Any]]) -> str:
    """A table of frame-level results (one row per task and feature source)."""
    incomplete = any(not (r.get("coverage") or {}).get("complete", True) for r in results)
    lines = [
        "# Frame-level results" + (" (INCOMPLETE dataset)" if incomplete else ""),
        "",
        "| corpus | task | features | test | validation |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        test = ", ".join(f"{k} {v:.3f}" for k, v in r["test"].items())
        val = ", ".join(f"{k} {v:.3f}" for k, v in r["validation"].items())
        lines.append(f"| {r['corpus']} | {r['task']} | {r['features']} | {test} | {val} |")
    lines += [
        "",
        "Beat / downbeat: mir_eval.beat.f_measure (70 ms, no trimming) after peak picking with thresholds "
        "chosen on validation; chords: mir_eval.chord.evaluate, duration-weighted majmin / root.",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "CHORD_LABELS",
    "FRAME_TASKS",
    "FrameCorpus",
    "FrameTrack",
    "baseline_frame_fn",
    "beat_targets",
    "chord_targets",
    "chroma_features",
    "frame_results_markdown",
    "generate_synthetic_frames",
    "jukebox_frame_fn",
    "load_ballroom",
    "load_frame_corpus",
    "majmin_index",
    "onset_features",
    "read_beats",
    "read_chords",
    "render_frame_track",
    "run_frame_task",
    "stack_context",
]
