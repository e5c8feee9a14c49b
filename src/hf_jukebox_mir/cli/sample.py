"""`jukebox-mir sample`: generate music with a converted Jukebox chain (VQ-VAE + top prior + upsamplers).

Examples:

    jukebox-mir sample --model converted/jukebox-1b-lyrics-chain --seconds 8 --artist "Alan Jackson" \\
        --genre country --lyrics-file lyrics.txt --seed 0 --output song.wav
    jukebox-mir sample --model converted/jukebox-5b-lyrics-chain --seconds 20 --prime intro.wav --output more.wav

    jukebox-mir sample --output song.wav --resume      # continue an interrupted run (Ctrl-C, crash, kill)

`--model` is a folder written by `convert_chain_checkpoints` / `convert_hf4_chain` (`model_type
"jukebox_mir_chain"`), or a transformers-4.x Jukebox folder (`openai/jukebox-*-lyrics` layout), which is then
converted in memory. One progress bar per level (top, middle, bottom) with tokens/s, the time left and the window
being sampled; the WAV is written atomically.

Resuming: while sampling, the codes of every finished window are saved atomically next to the output
(`OUT.sampling.pt`, a [`SampleRun`]: the settings, the seed and the codes of every level so far; removed once the
WAV is written). Every window draws from its own generator seeded from the run seed and the window's position,
so `--resume` continues from the saved codes and gives the codes (and audio) of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
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
        metavar="DIR",
        help="chain folder (jukebox_mir_chain) or a transformers-4.x Jukebox folder (required unless --resume)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="S",
        help="length of the result in seconds, prime included (required unless --resume)",
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
    parser.add_argument("--seed", type=int, help="random seed (reproducible output; default: a random one, printed)")
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
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="weights/activations dtype of the priors (float32 on CPU)",
    )
    parser.add_argument("--codes-output", metavar="CODES.pt", help="also save the codes of every level (torch.save)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default 1 on a CPU device: the fastest for the small per-token steps of sampling; "
        "recorded with the run)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample through the compiled decode step (torch.compile: one compilation per prior and window length, "
        "then 3-4x faster per token where the step is overhead-bound: small models, GPUs)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run of --output from its saved codes (OUT.sampling.pt), with its settings",
    )
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


# ---------------------------------------------------------------------------------------------- resumable runs
SAMPLE_RUN_SCHEMA = "jukebox-mir-sample-run/1"
#: the arguments that decide the codes: fixed for a run, taken from its saved settings by --resume
CODE_SETTINGS = (
    "model",
    "seconds",
    "prime",
    "artist",
    "genre",
    "lyrics",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "n_samples",
    "total_seconds",
    "chunk_size",
    "device",
    "dtype",
)


@dataclasses.dataclass
class SampleSettings:
    """Everything `jukebox-mir sample` needs to redo a run (the lyrics text itself, not the file it came from)."""

    model: str
    seconds: float
    seed: int
    prime: str | None = None
    artist: str | None = None
    genre: str | None = None
    lyrics: str | None = None
    temperature: list[float] | None = None
    top_k: int = 0
    top_p: float = 0.0
    n_samples: int = 1
    total_seconds: float | None = None
    chunk_size: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    compile: bool = False


@dataclasses.dataclass
class SampleRun:
    """The file next to the output of a running `sample` (`OUT.sampling.pt`): settings, seed and the codes so far.

    `codes[level]` holds the codes of level 0, 1, 2 known so far (`(batch, n)` long tensors, None for a level not
    started): the prime's codes, then those of every finished window. Written atomically (temporary file, fsync,
    rename) after every window; read with `torch.load(weights_only=True)`."""

    settings: SampleSettings
    codes: list
    schema: str = SAMPLE_RUN_SCHEMA

    @staticmethod
    def path_for(output: str | os.PathLike) -> Path:
        output = Path(output)
        return output.with_name(f"{output.stem}.sampling.pt")

    def windows_done(self) -> str:
        return (
            ", ".join(f"level {lv}: {c.shape[1]} codes" for lv, c in enumerate(self.codes) if c is not None) or "none"
        )

    def save(self, path: str | os.PathLike) -> Path:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "schema": self.schema,
            "settings": dataclasses.asdict(self.settings),
            "codes": [None if c is None else c.detach().cpu() for c in self.codes],
        }
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "SampleRun":
        import torch

        path = Path(path)
        if not path.is_file():
            raise JukeboxInputError(
                f"--resume: no saved run at {path} (it is written next to --output once sampling starts, and "
                "removed when the WAV is written); start the run without --resume."
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same answer
            raise JukeboxInputError(f"--resume: cannot read {path}: {err}.") from None
        schema = payload.get("schema") if isinstance(payload, dict) else None
        if schema != SAMPLE_RUN_SCHEMA:
            raise JukeboxInputError(
                f"--resume: {path} is not a saved sampling run of this version (schema {schema!r}, expected "
                f"{SAMPLE_RUN_SCHEMA!r}); start the run again without --resume."
            )
        fields = {f.name for f in dataclasses.fields(SampleSettings)}
        settings = payload["settings"]
        if set(settings) != fields:
            raise JukeboxInputError(f"--resume: {path} has settings {sorted(settings)}, expected {sorted(fields)}.")
        return cls(settings=SampleSettings(**settings), codes=list(payload["codes"]), schema=schema)


#: parser defaults of the code settings (an argument left at its default is not a change on --resume)
_DEFAULTS = {"top_k": 0, "top_p": 0.0, "n_samples": 1, "device": "cpu", "dtype": "float32"}


def new_settings(args: argparse.Namespace) -> SampleSettings:
    """The settings of a new run from the command line (a random seed, printed, when none is given)."""
    if args.model is None or args.seconds is None:
        raise JukeboxInputError("--model and --seconds are required (or --resume to continue a run).")
    lyrics = args.lyrics
    if args.lyrics_file:
        try:
            lyrics = Path(args.lyrics_file).read_text(encoding="utf-8")
        except OSError as err:
            raise JukeboxInputError(f"--lyrics-file: cannot read {args.lyrics_file}: {err}.") from None
    values = {name: getattr(args, name) for name in CODE_SETTINGS if name not in ("lyrics", "seed")}
    seed = args.seed if args.seed is not None else secrets.randbelow(2**63)
    threads = args.threads if args.threads is not None else (1 if str(args.device).startswith("cpu") else None)
    return SampleSettings(**values, lyrics=lyrics, seed=seed, threads=threads, compile=bool(args.compile))


def resumed_settings(args: argparse.Namespace, saved: SampleSettings) -> SampleSettings:
    """The saved settings of the run; arguments that decide the codes may only repeat them. --threads and
    --compile may change (they decide the speed)."""
    changed = [
        name
        for name in CODE_SETTINGS
        if getattr(args, name) != _DEFAULTS.get(name) and getattr(args, name) != getattr(saved, name)
    ]
    if args.lyrics_file:
        changed.append("lyrics_file")
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise JukeboxInputError(
            f"--resume continues a run with its saved settings, and {flags} differ(s) from them: drop {flags}, or "
            "start a new run without --resume."
        )
    if args.threads is not None:
        saved.threads = args.threads
    if args.compile is not None:
        saved.compile = args.compile
    return saved


def run(args: argparse.Namespace) -> int:
    """Load the chain, sample every level (saving the codes of every window), decode, write the WAV file(s)."""
    if args.n_samples < 1:
        raise JukeboxInputError(f"--n-samples must be >= 1, got {args.n_samples}.")
    if not str(args.output).lower().endswith(".wav"):
        raise JukeboxInputError(f"--output must be a .wav file, got {args.output!r}.")
    if args.temperature is not None and len(args.temperature) not in (1, 3):
        raise JukeboxInputError(f"--temperature takes 1 or 3 values (levels 0 1 2), got {len(args.temperature)}.")
    if args.threads is not None and args.threads < 1:
        raise JukeboxInputError(f"--threads must be >= 1, got {args.threads}.")
    state_path = SampleRun.path_for(args.output)
    if args.resume:
        run_state = SampleRun.read(state_path)
        run_state.settings = resumed_settings(args, run_state.settings)
    else:
        run_state = SampleRun(settings=new_settings(args), codes=[None, None, None])
    try:
        return _sample(args, run_state, state_path)
    except KeyboardInterrupt:
        if state_path.is_file():
            print(
                f"\ninterrupted: the codes of the finished windows are saved in {state_path} "
                f"({run_state.windows_done()}).\ncontinue with: jukebox-mir sample --output {args.output} --resume",
                file=sys.stderr,
            )
        else:
            print("\ninterrupted before sampling began: nothing to resume.", file=sys.stderr)
        return 130


def _sample(args: argparse.Namespace, run_state: SampleRun, state_path: Path) -> int:
    import torch

    from ..extraction.threads import set_threads

    settings = run_state.settings
    threads = set_threads(settings.threads)
    model = load_chain(settings.model, settings.device, settings.dtype)
    sampling_rate = model.sampling_rate
    temperature = settings.temperature
    if temperature is not None:
        temperature = temperature[0] if len(temperature) == 1 else list(temperature)
    prime = prime_codes = None
    if args.resume:
        prime_codes = [None if c is None else c.to(model.device) for c in run_state.codes]
        print(f"resuming {state_path} ({run_state.windows_done()}), seed {settings.seed}", file=sys.stderr)
    elif settings.prime:
        prime = load_prime(settings.prime, sampling_rate)
    if not args.resume:
        print(
            f"seed {settings.seed}; the codes of every finished window go to {state_path} (continue an interrupted "
            f"run with: jukebox-mir sample --output {args.output} --resume)",
            file=sys.stderr,
        )

    def save(codes) -> None:
        run_state.codes = list(codes)
        run_state.save(state_path)

    total_length = None if settings.total_seconds is None else int(settings.total_seconds * sampling_rate)
    out = model.generate_audio(
        settings.seconds,
        prime_audio=prime,
        prime_codes=prime_codes,
        n_samples=settings.n_samples,
        artist=settings.artist,
        genre=settings.genre,
        lyrics=settings.lyrics,
        total_length=total_length,
        temperature=temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        seed=settings.seed,
        chunk_size=settings.chunk_size,
        progress=not args.no_progress,
        compile=settings.compile,
        on_codes=save,
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
    state_path.unlink(missing_ok=True)  # the run is complete: its WAV and codes are written
    return 0
