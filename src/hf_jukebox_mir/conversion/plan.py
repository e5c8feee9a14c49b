"""A conversion plan: every tensor of the converted model, where it comes from, and how to read it.

A `ConversionPlan` maps every key of the converted model to a `PlannedTensor`: its source, its shape after the key
table's transform, and its reader. Plans are built from lazily opened checkpoints (`lazy_checkpoint.py`), so
building one reads no tensor; `check_plan` does the strict key accounting from headers alone. Two consumers:
`load_plan` (in memory) here, and `streaming.write_plan` (tensor by tensor into a folder).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..models.errors import JukeboxCheckpointError
from .export import account_keys, listing
from .lazy_checkpoint import LazyStateDict, Scratch, TensorLoader


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the converted model: its source (for messages and the audit), shape, and reader."""

    source: str
    shape: tuple[int, ...]  # after the transform
    dtype: torch.dtype  # as stored in the source
    read: TensorLoader  # the source tensor as stored
    transpose: bool = False  # the converted tensor is the transpose of the source's (2-D)

    def load(self, scratch: Scratch | None = None) -> torch.Tensor:
        """The converted tensor before its cast (a transposed view where `transpose`); see `LazyTorchFile.read`
        for `scratch`."""
        tensor = self.read(scratch)
        return tensor.t() if self.transpose else tensor


ConversionPlan = dict[str, PlannedTensor]


def plan_from_mapping(
    state: LazyStateDict,
    mapping: Mapping[str, str | None],
    *,
    source: str,
    prefix: str = "",
    transpose: Callable[[str], bool] | None = None,
) -> ConversionPlan:
    """Plan the tensors of `state` renamed by `mapping` (`None`: dropped, never read), under `prefix`.

    `transpose(new_key)` says which converted tensors are the transpose of their source (2-D only).
    """
    plan: ConversionPlan = {}
    for old, new in mapping.items():
        if new is None:
            continue
        header = state.headers[old]
        flip = transpose is not None and transpose(new)
        shape = tuple(header.shape)[::-1] if flip else tuple(header.shape)
        read = functools.partial(state.read, old)
        plan[prefix + new] = PlannedTensor(f"{source}:{old}", shape, header.dtype, read, transpose=flip)
    return plan


def prefixed(plan: ConversionPlan, prefix: str, keep: Callable[[str], bool] | None = None) -> ConversionPlan:
    """The plan with `prefix` before every key (only the keys `keep` accepts, before prefixing)."""
    return {prefix + key: entry for key, entry in plan.items() if keep is None or keep(key)}


def saved_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors `save_pretrained` would write: the state_dict without the targets of tied weights."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    return {key: value for key, value in model.state_dict().items() if key not in tied}


def check_plan(model: nn.Module, plan: ConversionPlan, *, source: str) -> dict[str, torch.dtype]:
    """Strict accounting of `plan` against `model` (keys, shapes, convertible dtypes), from headers only.

    Returns the dtype each converted tensor is stored in (the model's).
    """
    expected = model.state_dict()
    account_keys(
        {k: v.shape for k, v in expected.items()},
        {k: v.shape for k, v in plan.items()},
        model_name=type(model).__name__,
        source=source,
    )
    bad = sorted(
        f"{key} ({entry.source}: {str(entry.dtype).replace('torch.', '')})"
        for key, entry in plan.items()
        if expected[key].is_floating_point() and (not entry.dtype.is_floating_point or entry.dtype.is_complex)
    )
    if bad:
        raise JukeboxCheckpointError(
            f"Cannot convert {source}: {len(bad)} weight(s) are not real floating-point tensors, which no Jukebox "
            f"checkpoint has: {listing(bad)}. The file is not a Jukebox checkpoint or has been altered."
        )
    return {key: expected[key].dtype for key in plan}


def load_plan(model: nn.Module, plan: ConversionPlan, *, source: str) -> nn.Module:
    """Read every planned tensor into `model` (cast to the model's dtypes); tied targets follow their source."""
    dtypes = check_plan(model, plan, source=source)
    state = {key: entry.load().to(dtypes[key]) for key, entry in plan.items()}
    model.load_state_dict(state, strict=False, assign=any(t.is_meta for t in model.state_dict().values()))
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


__all__ = [
    "ConversionPlan",
    "PlannedTensor",
    "check_plan",
    "load_plan",
    "plan_from_mapping",
    "prefixed",
    "saved_tensors",
]
