"""Strict loading of converted state_dicts and output checks on a fixed input."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..models.errors import JukeboxCheckpointError

OutputCheck = Callable[[nn.Module], Mapping[str, torch.Tensor]]


_MAX_LISTED = 50


def listing(items: list[str]) -> str:
    """At most 50 items, comma-separated, with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def account_keys(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    given: Mapping[str, tuple[int, ...]],
    *,
    model_name: str,
    source: str,
) -> None:
    """Raise `JukeboxCheckpointError` naming EVERY missing, unexpected and mis-shaped key (none: return)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(given[key])} vs model {tuple(expected[key])}"
        for key in set(expected) & set(given)
        if tuple(given[key]) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (in the model, not in {source}): {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (in {source}, not in the model): {listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {listing(mismatched)}")
    if problems:
        raise JukeboxCheckpointError(
            f"Cannot load {source} into {model_name}: "
            + "; ".join(problems)
            + ". Check that the configuration matches the checkpoint."
        )


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
    account_keys(
        {k: v.shape for k, v in expected.items()},
        {k: tuple(v.shape) for k, v in state_dict.items()},
        model_name=type(model).__name__,
        source=source,
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


def run_output_check(model: nn.Module, output_check: OutputCheck, reloaded: nn.Module | None = None) -> dict[str, Any]:
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


__all__ = [
    "account_keys",
    "listing",
    "OutputCheck",
    "run_output_check",
    "strict_load_state_dict",
    "summarize_tensor",
]
