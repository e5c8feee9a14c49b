"""Bounded decoding for dataset-scale extraction: whatever a file claims, memory and time stay bounded.

A 4 KB WAV whose header claims 1 Hz would become hours of audio once resampled to 44.1 kHz; a header can
also claim gigabytes of frames. Before anything is decoded, `read_audio` reads the header only
(`soundfile.info`) and refuses absurd rates, channel counts and durations with a per-file error; it then
reads at most `max_duration` seconds (one frame more, to tell a longer file from one of exactly that length),
so a lying header cannot make it read more. Files cut short (a WAV whose data chunk claims more bytes than
the file holds, a FLAC with fewer samples than its STREAMINFO says, an Ogg without its end-of-stream page)
decode what is there, with a warning that states the decoded duration.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile

from ..models.audio_jukebox import MAX_CHANNELS
from ..models.errors import JukeboxInputError

#: Sampling rates accepted from a file header (Hz)
MIN_RATE, MAX_RATE = 1000, 768000


@dataclass(frozen=True)
class Limits:
    """Per-input bounds of an extraction run.

    Attributes:
        max_duration: seconds of audio decoded per input (default 2 hours); longer inputs fail with a clear error.
        max_input_windows: model windows per input (default None: as many as `max_duration` of audio needs, e.g.
            303 windows of 23.78 s for 2 hours); an input needing more fails. Not `max_windows`, which (in the
            feature extractor, pipeline, `extract` and `probe`) keeps only the first N windows.
    """

    max_duration: float = 7200.0
    max_input_windows: int | None = None

    def __post_init__(self):
        if isinstance(self.max_duration, bool) or not (
            isinstance(self.max_duration, (int, float)) and self.max_duration > 0
        ):
            raise JukeboxInputError(f"max_duration must be a positive number of seconds, got {self.max_duration!r}.")
        if self.max_input_windows is None:
            return
        if (
            isinstance(self.max_input_windows, bool)
            or not isinstance(self.max_input_windows, int)
            or self.max_input_windows < 1
        ):
            raise JukeboxInputError(f"max_input_windows must be a positive integer, got {self.max_input_windows!r}.")


def printable(name: str) -> str:
    """A file name as text that can be stored and printed: undecodable bytes become `\\xNN` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_regular_file(path: str) -> None:
    """Refuse what is not a regular file before opening it: a named pipe would block forever."""
    shown = printable(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise JukeboxInputError(
                f"'{shown}' is a broken symbolic link (to '{printable(os.readlink(path))}'); fix or remove the link."
            ) from None
        raise JukeboxInputError(f"Audio file '{shown}' does not exist; pass the path of a local audio file.") from None
    if stat.S_ISREG(mode):
        return
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a folder"
        if stat.S_ISDIR(mode)
        else "not a regular file"
    )
    raise JukeboxInputError(
        f"'{shown}' is {kind}, not an audio file; only regular files are read (copy the audio to a file first)."
    )


def read_audio(source: str | bytes, name: str, limits: Limits) -> tuple[np.ndarray, int, str | None]:
    """Decode a file path or encoded bytes within `limits`.

    Returns:
        `(waveform, rate, warning)`: float32 `(samples,)` or `(channels, samples)`, the rate, and a warning for a
        truncated file (else None).
    """
    if isinstance(source, str):
        check_regular_file(source)
        opened: Any = os.fsencode(source)  # bytes: soundfile cannot encode a name that is not valid UTF-8
    else:
        opened = io.BytesIO(source)
    try:
        with soundfile.SoundFile(opened) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise JukeboxInputError(
                    f"{name} claims a sampling rate of {rate} Hz; expected {MIN_RATE}..{MAX_RATE} Hz. The header is "
                    "corrupt or the file was written wrongly; re-encode it with the right rate."
                )
            if not 1 <= channels <= MAX_CHANNELS:
                raise JukeboxInputError(
                    f"{name} claims {channels} channels; at most {MAX_CHANNELS} are read. Downmix it first, e.g. "
                    "`ffmpeg -i in.wav -ac 2 out.wav`."
                )
            cap = int(limits.max_duration * rate)
            if frames > cap:
                raise JukeboxInputError(
                    f"{name} is {frames / rate:.1f} s long (by its header); inputs are limited to "
                    f"{limits.max_duration:g} s. Cut it into parts, or raise the limit (max_duration=, CLI: "
                    "--max-duration) if you have the memory (about 0.7 GB per hour of 44.1 kHz audio)."
                )
            try:
                data = f.read(frames=cap + 1, dtype="float32", always_2d=True)  # (frames, channels), bounded
                stopped = None
            except (soundfile.SoundFileError, RuntimeError) as err:  # e.g. a cut FLAC: "decoder lost sync"
                reopened = io.BytesIO(source) if isinstance(source, bytes) else opened
                data, stopped = _read_until_error(reopened, cap), err
                if not len(data):
                    raise
    except JukeboxInputError:
        raise
    except (soundfile.SoundFileError, RuntimeError, TypeError, EOFError, ValueError) as err:
        raise JukeboxInputError(
            f"Could not read audio file {name}: {str(err).rstrip('.')}. The file is corrupt or not in a format "
            "soundfile can decode; convert it first, e.g. `ffmpeg -i song.m4a song.wav`."
        ) from err
    if data.shape[0] > cap:
        raise JukeboxInputError(
            f"{name} decodes to more than {limits.max_duration:g} s (its header said {frames / rate:.1f} s); inputs "
            "are limited to that length. Cut it into parts or raise max_duration (CLI: --max-duration)."
        )
    warning = _truncation(source, name, data.shape[0], rate, channels)
    if stopped is not None:
        warning = (
            f"{name} is damaged or truncated: decoding stopped after {data.shape[0] / rate:.2f} s "
            f"({str(stopped).strip()}); the decoded part was used."
        )
    waveform = data[:, 0] if data.shape[1] == 1 else np.ascontiguousarray(data.T)
    return waveform, rate, warning


def _read_until_error(source: Any, cap: int, block: int = 4096) -> np.ndarray:
    """Decode block by block up to the first decoding error (or `cap + 1` frames): the readable part of a damaged
    file."""
    parts, total = [], 0
    with soundfile.SoundFile(source) as f:
        while total <= cap:
            try:
                part = f.read(frames=min(block, cap + 1 - total), dtype="float32", always_2d=True)
            except (soundfile.SoundFileError, RuntimeError):
                break
            if not len(part):
                break
            parts.append(part)
            total += len(part)
        channels = f.channels
    return np.concatenate(parts) if parts else np.zeros((0, channels), dtype=np.float32)


def _head_and_tail(source: str | bytes, size: int = 1 << 16) -> tuple[bytes, bytes, int]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:size]), bytes(source[-size:]), len(source)
    with open(source, "rb") as f:
        head = f.read(size)
        total = os.fstat(f.fileno()).st_size
        f.seek(max(0, total - size))
        return head, f.read(), total


def _truncation(source: str | bytes, name: str, decoded: int, rate: int, channels: int) -> str | None:
    """A warning when the container says more audio than was decoded (WAV, FLAC) or ends early (Ogg)."""
    try:
        head, tail, total = _head_and_tail(source)
    except OSError:
        return None
    declared = None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        declared = _wav_declared_frames(head, total)
    elif head[:4] == b"fLaC" and len(head) >= 26:
        # STREAMINFO: 36-bit total samples at bits 108..143 of the block (after the 4-byte block header)
        packed = int.from_bytes(head[8 + 10 : 8 + 18], "big")
        declared = packed & ((1 << 36) - 1) or None
    elif head[:4] == b"OggS":
        last = tail.rfind(b"OggS")
        if last < 0 or len(tail) < last + 6 or not tail[last + 5] & 0x04:
            return (
                f"{name} is truncated (its last Ogg page is not marked end-of-stream); only {decoded / rate:.2f} "
                "s were decoded."
            )
        return None
    if declared is not None and decoded < declared:
        return (
            f"{name} is truncated: its header declares {declared / rate:.2f} s but only {decoded / rate:.2f} s "
            "could be decoded; the decoded part was used."
        )
    return None


def _wav_declared_frames(head: bytes, total: int) -> int | None:
    """Frames declared by a WAV's `data` chunk (None when it cannot be told from the first bytes)."""
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 8 + 14 <= len(head):
            block_align = struct.unpack_from("<H", head, pos + 8 + 12)[0]
        if chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


__all__ = ["Limits", "MAX_RATE", "MIN_RATE", "check_regular_file", "printable", "read_audio"]
