"""`jukebox-mir sample`: generate music with a converted Jukebox chain (VQ-VAE + top prior + upsamplers).

Examples:

    jukebox-mir sample --model converted/jukebox-1b-lyrics-chain --seconds 8 --artist "Alan Jackson" \\
        --genre country --lyrics-file lyrics.txt --seed 0 --output song.wav
    jukebox-mir sample --model converted/jukebox-5b-lyrics-chain --seconds 20 --prime intro.wav --output more.wav

`--model` is a folder written by `convert_chain_checkpoints` / `convert_hf4_chain` (`model_type
"jukebox_mir_chain"`), or a transformers-4.x Jukebox folder (`openai/jukebox-*-lyrics` layout), which is then
converted in memory. One progress bar per level (top, middle, bottom); the WAV is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ..models.errors import JukeboxInputError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `sample` sub-command."""
    parser = subparsers.add_parser(
        "sample",
        help="generate audio with a Jukebox chain (top prior, upsamplers, VQ-VAE decoder)",
        description=(
            "Sample top-level codes (from scratch, or continuing --prime), upsample them to the middle and bottom "
            "levels and decode them to a 44.1 kHz mono WAV."
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="chain folder (jukebox_mir_chain) or a transformers-4.x Jukebox folder",
    )
    parser.add_argument(
        "--seconds", required=True, type=float, metavar="S", help="length of the result in seconds, prime included"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT.wav",
        help="WAV file to write (with --n-samples > 1: OUT-0.wav, OUT-1.wav, ...)",
    )
    parser.add_argument("--prime", metavar="AUDIO", help="audio file to continue (any rate, downmixed to mono)")
    parser.add_argument("--artist", help="artist name (unknown names fall back to id 0 with a warning)")
    parser.add_argument("--genre", help="genre name(s)")
    lyrics = parser.add_mutually_exclusive_group()
    lyrics.add_argument("--lyrics", help="lyrics text (lyrics models)")
    lyrics.add_argument("--lyrics-file", metavar="FILE", help="read the lyrics from a UTF-8 text file")
    parser.add_argument(
        "--temperature",
        type=float,
        nargs="+",
        metavar="T",
        help="sampling temperature, one value or three for levels 0 1 2 (default 0.99)",
    )
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely codes (0 = off)")
    parser.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling threshold (0 = off)")
    parser.add_argument("--seed", type=int, help="random seed (reproducible output)")
    parser.add_argument("--n-samples", type=int, default=1, help="number of samples drawn in one batch")
    parser.add_argument(
        "--total-seconds",
        type=float,
        help="length of the whole piece for the timing embedding (default: --seconds, raised to "
        "the top prior's minimum duration)",
    )
    parser.add_argument("--chunk-size", type=int, help="positions per prefill chunk (default: the model's, 32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: OMP_NUM_THREADS, else at most 4; on a shared machine 1 is often fastest)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="weights/activations dtype of the priors (float32 on CPU)",
    )
    parser.add_argument("--codes-output", metavar="CODES.pt", help="also save the codes of every level (torch.save)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def load_chain(path: str | os.PathLike, device: str = "cpu", dtype: str = "float32"):
    """A `JukeboxChainModel` from a chain folder, or converted in memory from a transformers-4.x folder."""
    import torch

    from ..models.modeling_jukebox_chain import JukeboxChainModel

    folder = Path(path)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise JukeboxInputError(f"--model {folder}: no config.json there; expected a converted chain folder.")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type == "jukebox":
        from ..conversion.chain import load_hf4_chain

        model = load_hf4_chain(folder)
    elif model_type == "jukebox_mir_chain":
        model = JukeboxChainModel.from_pretrained(folder)
    else:
        raise JukeboxInputError(
            f"--model {folder} holds model_type {model_type!r}; expected 'jukebox_mir_chain' (a chain folder from "
            "convert_chain_checkpoints / convert_hf4_chain) or 'jukebox' (a transformers-4.x folder)."
        )
    model = model.to(device).eval()
    if dtype != "float32":
        for level in (0, 1, 2):  # the VQ-VAE stays float32
            model.prior(level).to(getattr(torch, dtype))
    return model


def load_prime(path: str, sampling_rate: int):
    """Mono float32 tensor (1, samples) at `sampling_rate` from an audio file."""
    import torch

    from ..models.audio_jukebox import load_audio, resample, to_mono

    waveform, rate = load_audio(path)
    waveform = resample(to_mono(waveform), rate, sampling_rate)
    return torch.from_numpy(waveform).unsqueeze(0)


def write_wav_atomic(path: str | os.PathLike, audio, sampling_rate: int) -> Path:
    """Write mono float audio as 16-bit PCM via a temporary file in the same folder, then rename it."""
    import numpy as np
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".wav.tmp", dir=path.parent)
    os.close(handle)
    try:
        soundfile.write(tmp, data, sampling_rate, subtype="PCM_16", format="WAV")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600: the WAV gets the user's umask like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run(args: argparse.Namespace) -> int:
    """Load the chain, sample every level, decode, write the WAV file(s)."""
    import torch

    if args.n_samples < 1:
        raise JukeboxInputError(f"--n-samples must be >= 1, got {args.n_samples}.")
    if not str(args.output).lower().endswith(".wav"):
        raise JukeboxInputError(f"--output must be a .wav file, got {args.output!r}.")
    temperature = None
    if args.temperature is not None:
        if len(args.temperature) not in (1, 3):
            raise JukeboxInputError(f"--temperature takes 1 or 3 values (levels 0 1 2), got {len(args.temperature)}.")
        temperature = args.temperature[0] if len(args.temperature) == 1 else args.temperature
    lyrics = args.lyrics
    if args.lyrics_file:
        try:
            lyrics = Path(args.lyrics_file).read_text(encoding="utf-8")
        except OSError as err:
            raise JukeboxInputError(f"--lyrics-file: cannot read {args.lyrics_file}: {err}.") from None

    from ..extraction.engine import default_threads, set_threads

    threads = set_threads(args.threads if args.threads is not None else default_threads())
    model = load_chain(args.model, args.device, args.dtype)
    sampling_rate = model.sampling_rate
    prime = load_prime(args.prime, sampling_rate) if args.prime else None
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    total_length = None if args.total_seconds is None else int(args.total_seconds * sampling_rate)
    out = model.generate_audio(
        args.seconds,
        prime_audio=prime,
        n_samples=args.n_samples,
        artist=args.artist,
        genre=args.genre,
        lyrics=lyrics,
        total_length=total_length,
        temperature=temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=generator,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
    )
    audio = out.audio_values.float().cpu().numpy()
    output = Path(args.output)
    paths = (
        [output]
        if audio.shape[0] == 1
        else [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(audio.shape[0])]
    )
    for path, samples in zip(paths, audio):
        write_wav_atomic(path, samples, sampling_rate)
        print(
            f"wrote {path} ({samples.shape[0] / sampling_rate:.2f} s at {sampling_rate} Hz, {threads} CPU "
            f"thread{'s' if threads > 1 else ''})"
        )
    if args.codes_output:
        codes_path = Path(args.codes_output)
        tmp = codes_path.with_name(f".{codes_path.name}.tmp")
        torch.save({f"level_{level}": c.cpu() for level, c in enumerate(out.audio_codes)}, tmp)
        os.replace(tmp, codes_path)
        print(f"wrote {codes_path}")
    return 0
