#!/usr/bin/env python
"""Turn a directory of original OpenAI Jukebox files (or old Hub-format folders) into every Hub folder, with cards.

Input layouts (any subset of the files is fine; what is there is converted):

* OpenAI's (as downloaded from https://openaipublic.azureedge.net/jukebox/models/):
  `ROOT/5b/vqvae.pth.tar`, `ROOT/5b/prior_level_{0,1,2}.pth.tar`, `ROOT/5b_lyrics/prior_level_2.pth.tar`,
  `ROOT/1b_lyrics/prior_level_2.pth.tar`.
* The transformers-4.x Hub format (snapshots of `openai/jukebox-5b-lyrics`, `openai/jukebox-1b-lyrics`): ROOT is
  such a folder or contains several (`config.json` with `model_type: "jukebox"` + `pytorch_model*.bin`). The
  VQ-VAE and the upsamplers are taken from the first folder (5b_lyrics preferred), each folder gives its top
  prior and its whole sampling chain. These repos hold no non-lyrics 5b top prior, so neither the MIR model nor
  the 5b chain can be built from them alone.

Outputs, one Hub folder each under OUT (job key in brackets, for `--only`):

| folder | job | from |
|---|---|---|
| `jukebox-vqvae` | `vqvae` | `5b/vqvae.pth.tar` |
| `jukebox-upsampler-level-0` | `upsampler_level_0` | `5b/prior_level_0.pth.tar` |
| `jukebox-upsampler-level-1` | `upsampler_level_1` | `5b/prior_level_1.pth.tar` |
| `jukebox-5b-top-prior` | `prior_5b` | `5b/prior_level_2.pth.tar` |
| `jukebox-5b-lyrics-top-prior` | `prior_5b_lyrics` | `5b_lyrics/prior_level_2.pth.tar` |
| `jukebox-1b-lyrics-top-prior` | `prior_1b_lyrics` | `1b_lyrics/prior_level_2.pth.tar` |
| `jukebox-mir-5b-layer36` | `mir` | `5b/vqvae.pth.tar` + `5b/prior_level_2.pth.tar`, first 36 blocks, bfloat16 |
| `jukebox-5b-chain` | `chain_5b` | `5b/vqvae.pth.tar` + `5b/prior_level_{0,1,2}.pth.tar` |
| `jukebox-5b-lyrics-chain` | `chain_5b_lyrics` | `5b/vqvae.pth.tar` + `5b/prior_level_{0,1}` + `5b_lyrics/prior_level_2` |
| `jukebox-1b-lyrics-chain` | `chain_1b_lyrics` | `5b/vqvae.pth.tar` + `5b/prior_level_{0,1}` + `1b_lyrics/prior_level_2` |

A chain folder (`model_type` `jukebox_mir_chain`: VQ-VAE + the three priors, float32) is what
`jukebox-mir sample --model DIR` generates music with.

Each folder gets its README.md card (`hf_jukebox_mir.publishing.cards`) and is checked with
`hf_jukebox_mir.publishing.hub.validate_hub_folder`; `--push` uploads the complete ones to `NAMESPACE/<folder>`.

Examples:

    python scripts/convert_all_to_hub.py jukebox_models/ --output-dir hub/ --dry-run
    python scripts/convert_all_to_hub.py jukebox_models/ --output-dir hub/ --namespace me --only vqvae,mir
    python scripts/convert_all_to_hub.py jukebox_models/ --output-dir hub/ --namespace me --push --private

Converting the 5b priors needs tens of GB of RAM (about 5 billion parameters each; a 5b chain holds about 7
billion); jobs run one at a time.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_jukebox_mir.models.errors import JukeboxInputError

# job key -> (output folder, kind, original level, OpenAI relative source paths by role)
OPENAI_JOBS: dict[str, tuple[str, str, int | None, dict[str, str]]] = {
    "vqvae": ("jukebox-vqvae", "vqvae", None, {"vqvae": "5b/vqvae.pth.tar"}),
    "upsampler_level_0": ("jukebox-upsampler-level-0", "prior", 0, {"prior": "5b/prior_level_0.pth.tar"}),
    "upsampler_level_1": ("jukebox-upsampler-level-1", "prior", 1, {"prior": "5b/prior_level_1.pth.tar"}),
    "prior_5b": ("jukebox-5b-top-prior", "prior", 2, {"prior": "5b/prior_level_2.pth.tar"}),
    "prior_5b_lyrics": ("jukebox-5b-lyrics-top-prior", "prior", 2, {"prior": "5b_lyrics/prior_level_2.pth.tar"}),
    "prior_1b_lyrics": ("jukebox-1b-lyrics-top-prior", "prior", 2, {"prior": "1b_lyrics/prior_level_2.pth.tar"}),
    "mir": ("jukebox-mir-5b-layer{num_layers}", "mir", None,
            {"vqvae": "5b/vqvae.pth.tar", "prior": "5b/prior_level_2.pth.tar"}),
    **{
        f"chain_{variant}": (f"jukebox-{variant.replace('_', '-')}-chain", "chain", None,
                             {"vqvae": "5b/vqvae.pth.tar", "prior_level_0": "5b/prior_level_0.pth.tar",
                              "prior_level_1": "5b/prior_level_1.pth.tar",
                              "prior_level_2": f"{variant}/prior_level_2.pth.tar"})
        for variant in ("5b", "5b_lyrics", "1b_lyrics")
    },
}  # fmt: skip
JOB_KEYS = tuple(OPENAI_JOBS)
MIR_DTYPES = ("bfloat16", "float16", "float32")
MAX_PRIOR_LAYERS = 72
# preference order for taking the shared VQ-VAE / upsamplers out of hf4 folders
HF4_VARIANT_ORDER = ("5b_lyrics", "1b_lyrics", "5b")


class PlanError(JukeboxInputError):
    """Bad arguments or an input directory that cannot be converted (message says what was expected)."""


@dataclass
class ConversionJob:
    """One output Hub folder and how to make it.

    Args:
        key: job key (`vqvae`, `upsampler_level_0`, ..., `mir`, `chain_5b`, ...).
        kind: `vqvae`, `prior`, `mir` or `chain`.
        output_dir: the folder to write.
        sources: role (`vqvae`, `prior`; for chains `vqvae`, `prior_level_0`, `prior_level_1`, `prior_level_2`, or
            `chain` for an hf4 folder) -> input path (an original `.pth.tar` file or an hf4 folder).
        source_format: `openai` or `hf4`.
        level: original level of a prior (0 bottom ... 2 top); for hf4 sources it selects `priors.{2 - level}`.
        num_layers: prior blocks to keep (MIR model only).
        dtype: stored dtype (MIR model only).
    """

    key: str
    kind: str
    output_dir: Path
    sources: dict[str, Path]
    source_format: str
    level: int | None = None
    num_layers: int | None = None
    dtype: str | None = None
    repo_id: str | None = None
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        src = " + ".join(str(p) for p in self.sources.values())
        extra = []
        if self.level is not None and self.source_format == "hf4":
            extra.append(f"level {self.level}")
        if self.num_layers is not None:
            extra.append(f"{self.num_layers} layers")
        if self.dtype is not None:
            extra.append(self.dtype)
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"{self.key:18s} {self.output_dir}  <-  {src} [{self.source_format}]{tail}"


def _parse_only(only: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if only is None:
        return None
    items = only.split(",") if isinstance(only, str) else list(only)
    keys = [item.strip() for item in items if item.strip()]
    unknown = [k for k in keys if k not in JOB_KEYS]
    if unknown or not keys:
        raise PlanError(f"--only: unknown job(s) {unknown or only!r}; choose from {', '.join(JOB_KEYS)}.")
    return list(dict.fromkeys(keys))


def hf4_variant(config: dict) -> str:
    """Which released model an old-format `config.json` describes: `5b_lyrics`, `1b_lyrics` or `5b`."""
    top = config.get("prior_0")
    if top is None and isinstance(config.get("prior_config_list"), list) and config["prior_config_list"]:
        top = config["prior_config_list"][0]
    if not isinstance(top, dict):
        raise PlanError("config.json has neither prior_0 nor prior_config_list; it is not a Jukebox hf4 config.")
    if top.get("is_encoder_decoder"):
        return "1b_lyrics"
    if top.get("nb_relevant_lyric_tokens", 0) or top.get("encoder_config"):
        return "5b_lyrics"
    return "5b"


def _hf4_folders(root: Path, skipped: list[str]) -> list[tuple[str, Path]]:
    """(variant, folder) for ROOT or its sub-folders that hold a transformers-4.x Jukebox checkpoint.

    Folders with a Jukebox config but no weights are noted in `skipped`.
    """
    found: list[tuple[str, Path]] = []
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        config_path = candidate / "config.json"
        if not config_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict) or config.get("model_type") != "jukebox":
            continue
        has_weights = any(candidate.glob("pytorch_model*.bin")) or any(candidate.glob("model*.safetensors"))
        if not has_weights:
            skipped.append(f"{candidate}: Jukebox config.json without weights (pytorch_model*.bin); skipped")
            continue
        found.append((hf4_variant(config), candidate))
    found.sort(key=lambda item: HF4_VARIANT_ORDER.index(item[0]))
    return found


@dataclass
class ConversionPlan:
    """The jobs to run, and what was found but cannot be used (`skipped`, one line each)."""

    jobs: list[ConversionJob]
    skipped: list[str] = field(default_factory=list)


def plan_conversions(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    only: str | list[str] | None = None,
    num_layers: int = 36,
    mir_dtype: str = "bfloat16",
    namespace: str | None = None,
) -> ConversionPlan:
    """Map the files under `input_dir` to the Hub folders to write under `output_dir` (reads no weights).

    Raises:
        `PlanError`: bad options, nothing convertible found, or a job named in `only` lacks its source files.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise PlanError(f"Input directory not found: {root}.")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= MAX_PRIOR_LAYERS:
        raise PlanError(f"--num-layers must be an integer from 1 to {MAX_PRIOR_LAYERS}, got {num_layers!r}.")
    if mir_dtype not in MIR_DTYPES:
        raise PlanError(f"--mir-dtype must be one of {', '.join(MIR_DTYPES)}, got {mir_dtype!r}.")
    if namespace is not None and (not namespace or "/" in namespace or " " in namespace):
        raise PlanError(f"--namespace must be a Hub user or organisation name (no '/'), got {namespace!r}.")
    wanted = _parse_only(only)
    out = Path(output_dir)

    jobs: dict[str, ConversionJob] = {}
    for key, (folder, kind, level, rel_sources) in OPENAI_JOBS.items():
        sources = {role: root / rel for role, rel in rel_sources.items()}
        if all(path.is_file() for path in sources.values()):
            jobs[key] = ConversionJob(
                key=key,
                kind=kind,
                output_dir=out / folder.format(num_layers=num_layers),
                sources=sources,
                source_format="openai",
                level=level,
                num_layers=num_layers if kind == "mir" else None,
                dtype=mir_dtype if kind == "mir" else None,
            )

    skipped: list[str] = []
    hf4 = _hf4_folders(root, skipped)
    for variant, folder in hf4:
        candidates = {f"prior_{variant}": ("prior", 2), f"chain_{variant}": ("chain", None)}
        if folder == hf4[0][1]:  # the shared VQ-VAE and upsamplers come from the preferred folder
            candidates.update(
                {"vqvae": ("vqvae", None), "upsampler_level_0": ("prior", 0), "upsampler_level_1": ("prior", 1)}
            )
        if variant == "5b":
            candidates["mir"] = ("mir", None)
        for key, (kind, level) in candidates.items():
            if key in jobs:
                continue  # original files (or an earlier, preferred folder) win
            name = OPENAI_JOBS[key][0].format(num_layers=num_layers)
            jobs[key] = ConversionJob(
                key=key,
                kind=kind,
                output_dir=out / name,
                sources={"vqvae": folder, "prior": folder} if kind == "mir" else {kind: folder},
                source_format="hf4",
                level=level,
                num_layers=num_layers if kind == "mir" else None,
                dtype=mir_dtype if kind == "mir" else None,
            )

    if wanted is not None:
        missing = [k for k in wanted if k not in jobs]
        if missing:
            needs = "; ".join(f"{k}: {' + '.join(OPENAI_JOBS[k][3].values())}" for k in missing)
            raise PlanError(f"Cannot make {', '.join(missing)} from {root}: missing source files ({needs}).")
        selected = [jobs[k] for k in JOB_KEYS if k in wanted]
    else:
        selected = [jobs[k] for k in JOB_KEYS if k in jobs]
    if not selected:
        raise PlanError(
            f"Nothing to convert in {root}: expected OpenAI files such as 5b/vqvae.pth.tar, 5b/prior_level_2.pth.tar, "
            "5b_lyrics/prior_level_2.pth.tar, 1b_lyrics/prior_level_2.pth.tar, or transformers-4.x Jukebox folders "
            "(config.json + pytorch_model*.bin)." + "".join(f"\n  {note}" for note in skipped)
        )
    for job in selected:
        job.repo_id = f"{namespace}/{job.output_dir.name}" if namespace else None
    return ConversionPlan(jobs=selected, skipped=skipped)


def check_outputs(jobs: list[ConversionJob], *, overwrite: bool = False) -> None:
    """Refuse to write into non-empty output folders unless `overwrite`."""
    busy = [str(job.output_dir) for job in jobs if job.output_dir.is_dir() and any(job.output_dir.iterdir())]
    if busy and not overwrite:
        raise PlanError(
            f"Output folder(s) not empty: {', '.join(busy)}. Choose another --output-dir or pass --overwrite."
        )


def run_job(job: ConversionJob, *, results_json: str | None = None, overwrite: bool = False) -> list[str]:
    """Convert one job with the library converters, write its card, and return the folder's remaining problems."""
    import torch

    from hf_jukebox_mir.publishing.cards import write_model_card
    from hf_jukebox_mir.publishing.hub import validate_hub_folder

    hf4 = job.source_format == "hf4"
    out = job.output_dir
    if job.kind == "vqvae":
        from hf_jukebox_mir.conversion.vqvae import convert_hf4_vqvae, convert_vqvae_checkpoint

        convert = convert_hf4_vqvae if hf4 else convert_vqvae_checkpoint
        convert(job.sources["vqvae"], out, overwrite=overwrite)
    elif job.kind == "prior":
        from hf_jukebox_mir.conversion.prior import convert_hf4_prior, convert_prior_checkpoint

        if hf4:  # the transformers-4.x port stores the priors top first: priors.{2 - level}
            convert_hf4_prior(job.sources["prior"], 2 - job.level, out, overwrite=overwrite)
        else:
            convert_prior_checkpoint(job.sources["prior"], out, overwrite=overwrite)
    elif job.kind == "chain":
        from hf_jukebox_mir.conversion.chain import convert_chain_checkpoints, convert_hf4_chain

        if hf4:  # one transformers-4.x folder holds the whole chain
            convert_hf4_chain(job.sources["chain"], out, overwrite=overwrite)
        else:
            priors = [job.sources[f"prior_level_{level}"] for level in (0, 1, 2)]
            convert_chain_checkpoints(job.sources["vqvae"], priors, out, overwrite=overwrite)
    else:
        from hf_jukebox_mir.conversion.mir import convert_hf4_mir, convert_mir_model

        options = dict(num_layers=job.num_layers, dtype=getattr(torch, job.dtype), overwrite=overwrite)
        if hf4:
            convert_hf4_mir(job.sources["prior"], out, **options)
        else:
            convert_mir_model(job.sources["vqvae"], job.sources["prior"], out, **options)
    gc.collect()
    write_model_card(out, repo_id=job.repo_id, results_json=results_json if job.kind == "mir" else None)
    return validate_hub_folder(out)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert original OpenAI Jukebox files (or old Hub-format folders) into Hub folders with cards.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="jobs: " + ", ".join(JOB_KEYS),
    )
    parser.add_argument("input_dir", help="directory with 5b/, 5b_lyrics/, 1b_lyrics/ or transformers-4.x folders")
    parser.add_argument("--output-dir", required=True, help="where the Hub folders are written")
    parser.add_argument("--only", help="comma-separated jobs to run (default: every job whose sources exist)")
    parser.add_argument("--num-layers", type=int, default=36, help="prior blocks kept in the MIR model (default 36)")
    parser.add_argument("--mir-dtype", default="bfloat16", choices=MIR_DTYPES, help="stored dtype of the MIR model")
    parser.add_argument("--namespace", help="Hub user/organisation: cards name NAMESPACE/<folder> (needed for --push)")
    parser.add_argument("--mir-results", help="probing results JSON for the MIR model's card")
    parser.add_argument("--push", action="store_true", help="upload every complete folder (needs --namespace)")
    parser.add_argument("--private", action="store_true", help="create pushed repositories private")
    parser.add_argument("--overwrite", action="store_true", help="write into non-empty output folders")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if args.push and not args.namespace:
            raise PlanError("--push needs --namespace (the Hub user or organisation to upload to).")
        if args.mir_results and not Path(args.mir_results).is_file():
            raise PlanError(f"--mir-results file not found: {args.mir_results}.")
        plan = plan_conversions(
            args.input_dir,
            args.output_dir,
            only=args.only,
            num_layers=args.num_layers,
            mir_dtype=args.mir_dtype,
            namespace=args.namespace,
        )
        jobs = plan.jobs
        for note in plan.skipped:
            print(f"note: {note}", file=sys.stderr)
        print(f"{len(jobs)} Hub folder(s) to write:")
        for job in jobs:
            print("  " + job.describe())
        if args.dry_run:
            return 0
        check_outputs(jobs, overwrite=args.overwrite)
    except PlanError as err:
        print(f"convert_all_to_hub: error: {err}", file=sys.stderr)
        return 2

    failed = 0
    for job in jobs:
        print(f"[{job.key}] converting ...", flush=True)
        try:
            job.problems = run_job(job, results_json=args.mir_results, overwrite=args.overwrite)
        except ValueError as err:  # the library's errors (bad checkpoint, ...) are ValueErrors
            job.problems = [str(err)]
        if job.problems:
            failed += 1
            print(f"[{job.key}] NOT ready for the Hub:\n  - " + "\n  - ".join(job.problems), file=sys.stderr)
            continue
        print(f"[{job.key}] ready: {job.output_dir}")
        if args.push:
            from hf_jukebox_mir.publishing.hub import push_folder

            try:
                result = push_folder(job.output_dir, job.repo_id, private=args.private)
            except ValueError as err:  # offline, refused token, ...: report and go on with the next folder
                failed += 1
                print(f"[{job.key}] push failed: {err}", file=sys.stderr)
                continue
            print(f"[{job.key}] pushed {len(result.files)} files to {job.repo_id}")
    print(f"done: {len(jobs) - failed} of {len(jobs)} folder(s) ready")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
