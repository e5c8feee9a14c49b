"""Memory of dataset-scale extraction (issue 17): 32 one-hour files against one, and the cost of a header bomb.

    PYTHONPATH=src python benchmarks/bench_extract_memory.py                 # 32 x 60 min vs 1 x 60 min
    PYTHONPATH=src python benchmarks/bench_extract_memory.py --files 4 --minutes 5   # a quick look

What is measured, each case in a fresh process (peak RSS = `ru_maxrss` of that process; "over start" subtracts the
RSS just before `extract_dataset` is called, after the imports):

* `extract_dataset` over 1 file and over `--files` hard links of the same synthetic `--minutes`-long 44.1 kHz
  16-bit WAV, with the default chunk size (32 inputs per chunk). The model is the converted parity fixture (the
  real VQ-VAE + prior structure at test size, 32,768-sample windows, 4,845 windows per hour) and its forward pass
  is replaced by a stub returning outputs of the real shapes: what is measured is the extraction engine
  (decoding, resampling, windowing, batching, chunks, merge), not the model, whose memory does not depend on the
  number of files (`--real-model` runs the tiny model itself: slow for long files).
  Acceptance (issue 17): 32 files within 1.5 GB of one.
* A header bomb: a 4 KB WAV and a 200 KB WAV whose headers claim 1 Hz (before issue 17: 2,692 windows and
  2.2 GB, and over 17 GB), read by the extraction's decoder (`extraction.guard.read_audio`) up to its error.
  Acceptance: < 100 MB and < 1 s before the clear error.

Results are printed as a table and appended to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import BENCH_DIR, REPO_ROOT, append_jsonl, git_commit, machine_info, rss_now_mb, rss_peak_mb

SR = 44100


def make_wav(path: Path, minutes: float) -> None:
    """A synthetic mono 16-bit WAV (tones + noise), written block by block."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = int(minutes * 60 * SR)
    block = 60 * SR
    t = np.arange(block) / SR
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            tone = 0.3 * np.sin(2 * np.pi * (220 + start // block % 7 * 30) * t[:n])
            f.write((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))


def bomb_wav(path: Path, size: int, rate: int = 1) -> Path:
    data = size - 44
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", data
    )
    path.write_bytes(header + bytes(data))
    return path


def build_model(folder: Path) -> Path:
    from hf_jukebox_mir.conversion.mir import convert_mir_model

    if not (folder / "config.json").is_file():
        fixtures = REPO_ROOT / "tests" / "fixtures"
        convert_mir_model(
            fixtures / "vqvae" / "vqvae.pth.tar", fixtures / "prior_5b_top" / "prior_level_2.pth.tar", folder
        )
    return folder


# ------------------------------------------------------------------------------------------------ children


def child_extract(work: Path, n_files: int, real_model: bool) -> dict:
    import torch

    from hf_jukebox_mir.extraction.engine import extract_dataset
    from hf_jukebox_mir.models.pipeline_jukebox import JukeboxFeatureExtractionPipeline

    torch.set_num_threads(1)
    if not real_model:

        def stub_forward(self, model_inputs, layers=None, pooling="mean"):
            config = self.model.config
            mask = model_inputs["attention_mask"]
            frames = mask.sum(-1) // config.hop_length
            n_layers = len(layers) if isinstance(layers, (list, tuple)) else 1
            return {
                "num_frames": frames,
                "pooled": torch.zeros(mask.shape[0], n_layers, config.hidden_size),
                "window_offset": model_inputs["window_offset"],
                "is_last": model_inputs["is_last"],
            }

        JukeboxFeatureExtractionPipeline._forward = stub_forward
    inputs = sorted((work / "audio").glob("*.wav"))[:n_files]
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"out-{n_files}-"))
    start_rss = rss_now_mb()
    start = time.perf_counter()
    result = extract_dataset(
        [str(p) for p in inputs], work / "model", out / "ds", progress=False, threads=1, max_duration=3 * 3600
    )
    wall = time.perf_counter() - start
    assert result.merged and result.num_done == n_files, result.failures
    return {
        "files": n_files,
        "peak_rss_mb": rss_peak_mb(),
        "start_rss_mb": start_rss,
        "peak_over_start_mb": rss_peak_mb() - start_rss,
        "wall_s": wall,
    }


def child_bomb(work: Path, size: int) -> dict:
    from hf_jukebox_mir.extraction.guard import Limits, read_audio
    from hf_jukebox_mir.models.errors import JukeboxInputError

    path = bomb_wav(work / f"bomb-{size}.wav", size)
    start_rss = rss_now_mb()
    start = time.perf_counter()
    try:
        read_audio(str(path), f"'{path.name}'", Limits())
        error = None
    except JukeboxInputError as err:
        error = str(err)
    wall = time.perf_counter() - start
    return {
        "bytes": size,
        "error": error,
        "wall_s": wall,
        "peak_over_start_mb": max(0.0, rss_peak_mb() - start_rss),
        "start_rss_mb": start_rss,
    }


def run_child(*args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=32, help="files in the large case (default 32)")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of each file (default 60)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--real-model", action="store_true", help="run the tiny model instead of the stub forward")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, work, value = args.child[0], Path(args.child[1]), int(args.child[2])
        result = (
            child_extract(work, value, "--real-model" in args.child) if kind == "extract" else child_bomb(work, value)
        )
        print(json.dumps(result))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_extract_memory-"))
    work.mkdir(parents=True, exist_ok=True)
    audio = work / "audio"
    audio.mkdir(exist_ok=True)
    first = audio / "f000.wav"
    if not first.is_file():
        print(f"writing a {args.minutes:g}-minute WAV in {audio} ...", flush=True)
        make_wav(first, args.minutes)
    for k in range(1, args.files):  # hard links: one file on disk, `files` inputs to the extraction
        link = audio / f"f{k:03d}.wav"
        if not link.exists():
            os.link(first, link)
    build_model(work / "model")
    extra = ["--real-model"] if args.real_model else []
    one = run_child("extract", str(work), "1", *extra)
    many = run_child("extract", str(work), str(args.files), *extra)
    bombs = [run_child("bomb", str(work), str(size)) for size in (4096, 200 * 1024)]

    diff = many["peak_rss_mb"] - one["peak_rss_mb"]
    print("\n| case | peak RSS MB | peak over start MB | wall s |\n|---|---|---|---|")
    for name, r in ((f"1 x {args.minutes:g} min", one), (f"{args.files} x {args.minutes:g} min", many)):
        print(f"| extract {name} | {r['peak_rss_mb']:.0f} | {r['peak_over_start_mb']:.0f} | {r['wall_s']:.1f} |")
    print(
        f"\n{args.files} files vs 1: +{diff:.0f} MB peak RSS (acceptance: within 1536 MB) -> "
        f"{'PASS' if diff <= 1536 else 'FAIL'}"
    )
    print("\n| header bomb (claims 1 Hz) | time to error ms | memory over start MB | error |\n|---|---|---|---|")
    for r in bombs:
        print(
            f"| {r['bytes'] // 1024} KB WAV | {1000 * r['wall_s']:.2f} | {r['peak_over_start_mb']:.1f} | "
            f"{(r['error'] or 'NO ERROR')[:70]}... |"
        )
    ok = all(r["error"] and r["wall_s"] < 1 and r["peak_over_start_mb"] < 100 for r in bombs)
    print(f"header bombs: < 100 MB and < 1 s before the error -> {'PASS' if ok else 'FAIL'}")
    if not args.no_record:
        append_jsonl(
            BENCH_DIR / "results.jsonl",
            {
                "benchmark": "bench_extract_memory",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "git_commit": git_commit(),
                "machine": machine_info(),
                "config": {
                    "files": args.files,
                    "minutes": args.minutes,
                    "real_model": args.real_model,
                    "chunk_size": 32,
                    "threads": 1,
                },
                "one": one,
                "many": many,
                "peak_rss_difference_mb": diff,
                "header_bombs": bombs,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
