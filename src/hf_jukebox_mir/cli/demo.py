"""`jukebox-mir demo`: the main job end to end, offline, in minutes on a laptop CPU.

    jukebox-mir demo --output demo_out

1. generates the offline benchmark (synthetic 24-key task, rendered with a numpy synthesiser);
2. builds a tiny Jukebox MIR model folder (real Jukebox structure: the 5b VQ-VAE and a 6-block top prior of
   width 64 with RANDOM weights: the real weights are tens of GB and not downloadable here; convert them with
   `jukebox-mir convert` to get real features). Its top-level codebook is initialised from encoder outputs of
   the training audio, as Jukebox initialises its codebooks; a purely random codebook maps all audio to one code;
3. extracts Jukebox representations through the same path as `pipeline("feature-extraction")` and
   `jukebox-mir extract`, and a chroma baseline;
4. probes both with the JukeMIR protocol (small grid), and prints the comparison;
5. a frame-level task next to it: beat and downbeat tracking on rendered click tracks (varied tempi, accented
   downbeats, over chord progressions), frame probes on onset features and on the tiny model's frames at
   50 Hz, scored with `mir_eval.beat.f_measure`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models.errors import JukeboxInputError


def build_tiny_mir_model(output_dir: Path, *, seed: int = 0, calibration_audio: list | None = None) -> Path:
    """A small random-weight Jukebox MIR folder with the real structure (VQ-VAE 5b, prior_5b-style prior).

    `calibration_audio` (mono 44.1 kHz arrays): the top-level codebook is set to encoder outputs at random frames
    of this audio (the data-dependent initialisation Jukebox's VQ-VAE training starts from).
    """
    import torch

    from ..conversion.audit import ConversionAudit
    from ..conversion.mir import save_mir_folder
    from ..models.configuration_jukebox_mir import JukeboxMIRConfig
    from ..models.configuration_jukebox_prior import JukeboxPriorConfig
    from ..models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
    from ..models.modeling_jukebox_mir import JukeboxMIRModel

    torch.manual_seed(seed)
    prior = JukeboxPriorConfig.from_preset(
        "prior_5b", hidden_size=64, num_hidden_layers=6, num_attention_heads=2, n_ctx=256, blocks=16
    )
    vqvae = JukeboxVQVAEConfig.from_preset("5b", encoder_levels=[2])  # features need only the top-level encoder
    config = JukeboxMIRConfig(vqvae_config=vqvae, prior_config=prior)
    model = JukeboxMIRModel(config).eval()
    if calibration_audio:
        _init_codebook_from_audio(model, calibration_audio, seed=seed)
    audit = ConversionAudit(
        model_class="JukeboxMIRModel",
        source_format="random-init",
        details={"note": "demo model with random weights (not Jukebox's)", "seed": seed},
    )
    return save_mir_folder(model, output_dir, audit=audit, overwrite=True)


def _init_codebook_from_audio(model, audio: list, *, seed: int) -> None:
    import torch

    top = model.config.vqvae_config.levels - 1
    encoder, codebook = model.vqvae.encoders[top], model.vqvae.quantizers[top].codebook
    with torch.no_grad():
        frames = torch.cat([encoder(torch.as_tensor(a, dtype=torch.float32)[None, None]).squeeze(0).t() for a in audio])
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, frames.shape[0], (codebook.shape[0],), generator=generator)  # (codebook_size,)
        codebook.copy_(frames[pick])


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job offline on generated data (tiny model, synthetic key benchmark)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", default="demo_out", help="folder for data, model, embeddings and results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the probes (1 is fastest)")
    parser.add_argument("--force", action="store_true", help="redo everything in an existing --output")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import shutil

    import torch

    output = Path(args.output).expanduser()
    if output.exists() and not output.is_dir():
        raise JukeboxInputError(f"--output {output} exists and is not a folder.")
    if args.force and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    data_dir = output / "data"
    if not (data_dir / "synthetic_mir.json").is_file():
        from ..probing.synthetic_mir import generate_synthetic_mir

        print(f"[0/3] generating the synthetic benchmark into {data_dir}")
        generate_synthetic_mir(data_dir, task="synthetic_key", seed=args.seed)
    model_dir = output / "tiny-jukebox-mir"
    if not (model_dir / "config.json").is_file():
        from ..models.audio_jukebox import load_audio, peak_normalize

        print(f"[1/3] building a tiny random-weight Jukebox MIR model in {model_dir}")
        train = sorted((data_dir / "audio" / "train").glob("*.wav"))[:16]
        audio = [peak_normalize(load_audio(str(path))[0]) for path in train]
        build_tiny_mir_model(model_dir, seed=args.seed, calibration_audio=audio)
    from ..probing.recipe import run_probe_task
    from ..probing.reports import ProbeResults

    torch.set_num_threads(max(1, args.threads))
    results = {}
    for name, model in (("chroma", None), ("jukebox-tiny", model_dir)):
        run_dir = output / f"probe-{name}"
        print(f"[{2 if name == 'chroma' else 3}/3] probing the synthetic key task with {name} features -> {run_dir}")
        if not (run_dir / "results.json").is_file():
            run_probe_task("synthetic_key", data_dir, run_dir, model=model, seed=args.seed)
        results[name] = ProbeResults.read(run_dir)
    from . import probe

    frame_data = output / "frames"
    frame_results = {}
    for name, extra in (("onset", ["--features", "onset"]), ("jukebox-tiny", ["--model", str(model_dir)])):
        run_dir = output / f"beats-{name}"
        print(f"[frame level] beat tracking on synthetic click tracks with {name} features -> {run_dir}")
        if not (run_dir / "results.json").is_file():
            probe_args = probe.add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
                [
                    "--task",
                    "synthetic_beats",
                    "--data",
                    str(frame_data),
                    "--output",
                    str(run_dir),
                    "--seed",
                    str(args.seed),
                    *extra,
                ]
            )
            probe.run(probe_args)
        frame_results[name] = json.loads((run_dir / "results.json").read_text())
    print("\nSynthetic 24-key task (MIREX weighted score, song level; chance is about 0.08):")
    print("| features | test score | validation score |")
    print("|---|---|---|")
    for name, res in results.items():
        best = res.best
        print(f"| {name} | {best['test']['primary']:.3f} | {best['validation']['primary']:.3f} |")
    print("\nFrame level: beat / downbeat tracking on synthetic click tracks (mir_eval F-measure, test split):")
    print("| features | beat F | downbeat F |")
    print("|---|---|---|")
    for name, res in frame_results.items():
        print(f"| {name} | {res['test']['beat_f_measure']:.3f} | {res['test']['downbeat_f_measure']:.3f} |")
    print(
        "\nThe tiny Jukebox model has random weights (codebook initialised from the audio): its score shows the "
        "pipeline runs end to end, not what Jukebox learns. Convert the released weights (`jukebox-mir convert`) "
        "for real features."
    )
    return 0


__all__ = ["add_parser", "build_tiny_mir_model", "run"]
