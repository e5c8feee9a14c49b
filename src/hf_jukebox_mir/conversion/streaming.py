"""Write a conversion plan into a model folder: strict accounting first, then shards, the output check, the audit,
and an atomic move into place.

`write_plan(model, plan, output_dir, ...)` is the path every `convert_*` function takes. `model` may live on the
meta device: it supplies the expected keys, shapes and dtypes, the config and the code files. The plan
(`plan.py`) is checked against it from headers alone before any byte is written; the shards are then written
tensor by tensor from reusable buffers (`shard_writer.py`), so memory stays at a few tensors whatever the size of
the checkpoint. Beside the writing, a thread hashes the sources for the audit, and for large models the output
check (`folder_check.py`) runs the transformer blocks one at a time, each read from the written shards as soon as
the shard holding it is complete. Everything is written in a temporary folder that replaces `output_dir` only once
the check passed (`atomic_folder`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from ..models.errors import JukeboxCheckpointError
from .audit import ConversionAudit, WrittenFile
from .checkpoint_io import SourceSpec, sha256_file
from .folder_check import OutputCheck, block_numbers, check_written_folder
from .lazy_checkpoint import Scratch
from .plan import ConversionPlan, PlannedTensor, check_plan, saved_tensors
from .shard_writer import ShardGate, fsync_path, split_shards, write_order, write_shards

# weights (float32 bytes) above which the output check runs the transformer blocks one at a time from disk
OFFLOAD_THRESHOLD_BYTES = 1 << 30
DEFAULT_MAX_SHARD_SIZE = "1GB"


# ------------------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def atomic_folder(output_dir: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside `output_dir` that replaces it on success and disappears on any failure.

    Refuses a non-empty `output_dir` unless `overwrite`. The result gets the permissions the user's umask gives.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise JukeboxCheckpointError(f"Output path {output_dir} exists and is not a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise JukeboxCheckpointError(
            f"Output folder {output_dir} is not empty; choose another folder or pass overwrite=True "
            "(--overwrite on the command line) to replace it."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_dir
        os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp creates 0700
        for written in sorted(tmp_dir.rglob("*"), reverse=True):  # files before the folders that hold them
            os.chmod(written, (0o666 if written.is_file() else 0o777) & ~umask)
            fsync_path(written)  # durable before the rename publishes the folder (shards were synced as written)
        fsync_path(tmp_dir)
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            backup.rmdir()
            os.replace(output_dir, backup)
            os.replace(tmp_dir, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_dir, output_dir)
        fsync_path(output_dir.parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _save_config_and_code(model: nn.Module, folder: Path) -> None:
    """What `save_pretrained` writes besides the weights: config.json (+ auto_map) and the model's code files."""
    from transformers.dynamic_module_utils import custom_object_save

    config = copy.deepcopy(model.config)  # the caller's config stays as it was
    config.architectures = [type(model).__name__]
    config.dtype = str(model.dtype).replace("torch.", "")
    if getattr(model, "_auto_class", None) is not None:
        custom_object_save(model, folder, config=config)
    config.save_pretrained(folder)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("hf-jukebox-mir", "torch", "transformers", "safetensors"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # e.g. run from a source tree
            found[name] = "unknown"
    return found


def write_plan(
    model: nn.Module,
    plan: ConversionPlan,
    output_dir: str | os.PathLike,
    *,
    audit: ConversionAudit,
    source: str,
    output_check: OutputCheck | None,
    sources: Sequence[SourceSpec] = (),
    add_files: Callable[[Path], None] | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    offload: bool | None = None,
) -> Path:
    """Write the converted folder for `plan`, streaming, atomically (see the module docstring).

    Args:
        model: the converted model's skeleton (meta device is fine) with the target dtypes.
        audit: filled in here with sources, dtypes, output check, written files and versions, then written.
        source: how error messages name the source.
        sources: the input files; their SHA-256 is computed in the background while the tensors are converted
            (a second reader of the same files, mostly from the page cache).
        offload: run the output check block by block from disk (default: when the float32 weights exceed
            `OFFLOAD_THRESHOLD_BYTES`).
    """
    dtypes = check_plan(model, plan, source=source)  # before anything is written
    kept = saved_tensors(model)  # tied copies are stored once, as save_pretrained does
    plan = {key: entry for key, entry in plan.items() if key in kept}
    if offload is None:
        offload = sum(4 * torch.Size(entry.shape).numel() for entry in plan.values()) > OFFLOAD_THRESHOLD_BYTES
    blocks = block_numbers(model)
    split = split_shards(
        {key: (dtypes[key], entry.shape) for key, entry in plan.items()},
        max_shard_size,
        order=write_order(plan, blocks.get) if offload else plan,
    )
    unique = list({spec.path.resolve(): spec for spec in sources}.values())
    audit.dtypes = {str(k): str(v).replace("torch.", "") for k, v in _dtypes_by_part(dtypes).items()}
    # beside the conversion (hashlib and torch release the GIL): the sources are hashed, and the block-by-block
    # output check of a large model runs each block as soon as the shard holding it is written
    with (
        atomic_folder(output_dir, overwrite=overwrite) as tmp_dir,
        ThreadPoolExecutor(1, thread_name_prefix="source-hash") as hasher,
        ThreadPoolExecutor(1, thread_name_prefix="output-check") as checker,
    ):
        source_entries = [hasher.submit(spec.audit_entry) for spec in unique]
        _save_config_and_code(model, tmp_dir)
        gate = ShardGate(split.files, tmp_dir)
        check = None
        if output_check is not None and offload:
            check = checker.submit(
                check_written_folder,
                type(model),
                tmp_dir,
                output_check,
                offload=True,
                weight_map=split.weight_map,
                gate=gate,
            )
        shard_hashes = write_shards(plan, dtypes, tmp_dir, split, gate)  # fails the gate if it fails
        if add_files is not None:
            add_files(tmp_dir)
        if output_check is not None:
            if check is None:
                audit.output_check = check_written_folder(type(model), tmp_dir, output_check, offload=False)
            else:
                audit.output_check = check.result()
        audit.versions = _versions()
        audit.sources = [entry.result() for entry in source_entries]
        audit.files = {
            p.relative_to(tmp_dir).as_posix(): WrittenFile(
                sha256=shard_hashes[p.name] if p.name in shard_hashes else sha256_file(p),
                bytes=p.stat().st_size,
            )
            for p in sorted(tmp_dir.rglob("*"))
            if p.is_file()
        }
        audit.write(tmp_dir)
    return Path(output_dir)


def save_model(
    model: nn.Module,
    output_dir: str | os.PathLike,
    *,
    audit: ConversionAudit,
    output_check: OutputCheck | None = None,
    add_files: Callable[[Path], None] | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Save a model that is already in memory (e.g. the demo's) exactly as conversions save theirs."""
    plan = {
        key: PlannedTensor("memory", tuple(t.shape), t.dtype, functools.partial(_constant, t.detach()))
        for key, t in saved_tensors(model).items()
    }
    return write_plan(
        model,
        plan,
        output_dir,
        audit=audit,
        source="the in-memory model",
        output_check=output_check,
        add_files=add_files,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
    )


def _constant(tensor: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    return tensor


def _dtypes_by_part(dtypes: Mapping[str, torch.dtype]) -> dict[str, torch.dtype]:
    """`{"prior": bfloat16, "vqvae": float32}`: the dtype of each top-level part (floating tensors only)."""
    parts: dict[str, torch.dtype] = {}
    for key, dtype in dtypes.items():
        if dtype.is_floating_point:
            parts.setdefault(key.split(".", 1)[0], dtype)
    return parts


__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "OFFLOAD_THRESHOLD_BYTES",
    "atomic_folder",
    "save_model",
    "write_plan",
]
