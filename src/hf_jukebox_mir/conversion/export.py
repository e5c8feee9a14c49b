"""Strict loading of converted state_dicts, output checks, and atomic saving with an audit file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.errors import JukeboxCheckpointError
from .checkpoint_io import sha256_file

AUDIT_FILE = "conversion_audit.json"
_MAX_LISTED = 50

OutputCheck = Callable[[nn.Module], Mapping[str, torch.Tensor]]


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def strict_load_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "the checkpoint"
) -> None:
    """Load `state_dict` into `model`, requiring exactly the model's keys with exactly its shapes.

    Every tensor is cast to the dtype of the model tensor it replaces (e.g. float16-stored weights -> float32).
    If the model lives on the meta device (built with `with torch.device("meta"):`), the tensors are assigned
    instead of copied.

    Raises:
        JukeboxCheckpointError: naming every missing, unexpected and mis-shaped key (not only the first).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (in the model, not in {source}): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (in {source}, not in the model): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if problems:
        raise JukeboxCheckpointError(
            f"Cannot load {source} into {type(model).__name__}: " + "; ".join(problems)
            + ". Check that the configuration matches the checkpoint."
        )
    on_meta = any(t.is_meta for t in expected.values())
    converted = {}
    for key, target in expected.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise JukeboxCheckpointError(f"{source}: entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        if tensor.dtype != target.dtype:
            tensor = tensor.to(target.dtype)
        converted[key] = tensor
    model.load_state_dict(converted, strict=True, assign=on_meta)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("hf-jukebox-mir")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "unknown"


def summarize_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """Shape, dtype and summary numbers of a tensor, for the audit file."""
    data = tensor.detach().cpu()
    summary: dict[str, Any] = {"shape": list(data.shape), "dtype": str(data.dtype).replace("torch.", "")}
    if data.numel() == 0:
        return summary
    if data.is_floating_point():
        values = data.double()
        summary.update(
            finite=bool(torch.isfinite(values).all()),
            mean=float(values.mean()),
            std=float(values.std()) if values.numel() > 1 else 0.0,
            max_abs=float(values.abs().max()),
            first=[float(v) for v in values.flatten()[:8]],
        )
    else:
        summary.update(min=int(data.min()), max=int(data.max()), first=[int(v) for v in data.flatten()[:8]])
    return summary


def run_output_check(
    model: nn.Module, output_check: OutputCheck, reloaded: nn.Module | None = None
) -> dict[str, Any]:
    """Run `output_check(model)` (a fixed, deterministic input), require finite outputs, and, if `reloaded` is
    given, require that the reloaded copy reproduces every output exactly. Returns the audit record."""
    with torch.no_grad():
        outputs = {name: value.detach().clone() for name, value in output_check(model).items()}
    record: dict[str, Any] = {"outputs": {name: summarize_tensor(value) for name, value in outputs.items()}}
    not_finite = [n for n, v in outputs.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise JukeboxCheckpointError(
            f"Output check failed: the converted model gives NaN or infinite values in {not_finite} on the fixed "
            "check input; the checkpoint may be corrupt or converted with a wrong configuration."
        )
    if reloaded is not None:
        with torch.no_grad():
            again = dict(output_check(reloaded))
        differ = [
            name
            for name, value in outputs.items()
            if name not in again or again[name].shape != value.shape or not torch.equal(again[name], value)
        ]
        if differ:
            raise JukeboxCheckpointError(
                f"Output check failed: the saved and reloaded model differs from the converted one in {differ}."
            )
        record["reload_identical"] = True
    return record


def save_converted(
    model: nn.Module,
    output_dir: str | os.PathLike,
    *,
    audit: Mapping[str, Any],
    output_check: OutputCheck | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
    reload_check: bool = True,
    add_files: Callable[[Path], None] | None = None,
) -> Path:
    """Save a converted model as safetensors with its config and a `conversion_audit.json`, atomically.

    Steps: `model.save_pretrained` into a temporary folder beside `output_dir` (sharded above `max_shard_size`),
    reload it with `type(model).from_pretrained`, run `output_check` on both (finite outputs, reloaded outputs
    identical), write the audit (the given `audit` dict + package version, output check record and the SHA-256 of
    every written file), then move the folder into place. Nothing is left at `output_dir` if a step fails.

    Args:
        model: a `PreTrainedModel`.
        output_dir: destination folder; must not exist or be empty unless `overwrite=True`.
        audit: JSON-serialisable facts about the conversion (source files and hashes, key map, ...).
        output_check: callable running the model on a fixed input and returning named tensors.
        max_shard_size: passed to `save_pretrained`.
        overwrite: replace a non-empty `output_dir`.
        reload_check: reload the saved copy and compare its outputs (needs memory for a second copy).
        add_files: called with the temporary folder after `save_pretrained`, to write companion files (feature
            extractor, pipeline code) that then get hashed into the audit like the rest.
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
    os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp creates 0700; give the result the usual permissions
    try:
        model.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
        if add_files is not None:
            add_files(tmp_dir)
        record = dict(audit)
        record.setdefault("package", "hf-jukebox-mir")
        record["package_version"] = _package_version()
        record["torch_version"] = torch.__version__
        if output_check is not None:
            reloaded = type(model).from_pretrained(tmp_dir).eval() if reload_check else None
            record["output_check"] = run_output_check(model.eval(), output_check, reloaded)
            del reloaded
        for written in tmp_dir.iterdir():
            if written.is_file():
                os.chmod(written, 0o666 & ~umask)
        record["files"] = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp_dir.iterdir())
            if p.is_file()
        }
        (tmp_dir / AUDIT_FILE).write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            backup.rmdir()
            os.replace(output_dir, backup)
            os.replace(tmp_dir, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return output_dir


__all__ = [
    "AUDIT_FILE",
    "OutputCheck",
    "run_output_check",
    "save_converted",
    "strict_load_state_dict",
    "summarize_tensor",
]
