"""The output check of a conversion, run on the folder it wrote.

Small models are loaded with `from_pretrained`, as a user loads them. Large ones (the 5B prior is 20 GB in float32)
run their transformer blocks one at a time, each read from the written shards just before it runs and dropped
after it, so memory stays at about one block; this check can start while the shards are still being written
(`ShardGate`): each read waits for its shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..models.errors import JukeboxCheckpointError
from .export import listing, summarize_tensor
from .shard_writer import ShardGate

OutputCheck = Callable[[nn.Module], Mapping[str, torch.Tensor]]
BLOCK_CLASS = "JukeboxBlock"  # the transformer block of every prior: what the check runs one at a time


def transformer_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's transformer blocks by module name, in module order."""
    return {name: module for name, module in model.named_modules() if type(module).__name__ == BLOCK_CLASS}


def block_numbers(model: nn.Module) -> dict[str, int]:
    """Every state_dict key inside a transformer block -> the block's number (in module order)."""
    numbers = {}
    for number, (name, block) in enumerate(transformer_blocks(model).items()):
        for key in block.state_dict():
            numbers[f"{name}.{key}"] = number
    return numbers


class ShardReader:
    """Tensors of a written folder by name, read from its safetensors shards on demand.

    Each read opens (maps) the shard and closes it again: a mapping kept open would keep every page read so far
    in the process's resident memory, which for a 20 GB folder is most of the folder.
    """

    def __init__(self, folder: Path, weight_map: Mapping[str, str] | None = None, gate: ShardGate | None = None):
        from safetensors import safe_open

        self._folder = folder
        self._gate = gate
        index = folder / "model.safetensors.index.json"
        self._pending: dict[str, set[str]] = {}  # shard -> keys not yet done with (see `done`)
        if weight_map is not None:
            self._where = dict(weight_map)
        elif index.is_file():
            import json

            self._where = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
                self._where = {key: "model.safetensors" for key in handle.keys()}
        for key, name in self._where.items():
            self._pending.setdefault(name, set()).add(key)

    def done(self, keys: Iterable[str]) -> None:
        """The caller no longer uses the tensors `keys`: a shard whose every tensor is done with is released to the
        gate (which drops it from the page cache once it is synced)."""
        if self._gate is None:
            return
        for key in keys:
            name = self._where.get(key)
            if name is not None and name in self._pending:
                self._pending[name].discard(key)
                if not self._pending[name]:
                    del self._pending[name]
                    self._gate.release(name)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def read(self, keys: Sequence[str], keep_half: bool = False) -> dict[str, torch.Tensor]:
        """The tensors `keys`, in float32 (or in their stored half precision with `keep_half`)."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self._where[key], []).append(key)
        tensors = {}
        for name, names in by_file.items():
            if self._gate is not None:
                self._gate.wait(name)  # the shard is still being written
            with safe_open(str(self._folder / name), framework="pt") as handle:
                for key in names:
                    tensor = handle.get_tensor(key)
                    keep = keep_half and tensor.dtype in (torch.float16, torch.bfloat16)
                    tensors[key] = tensor if keep or not tensor.is_floating_point() else tensor.float()
        return tensors


def load_block_by_block(
    model_class: type[PreTrainedModel], config: Any, reader: ShardReader, keep_half: bool
) -> nn.Module:
    """The folder's model (float32, or half-precision weights kept with `keep_half`) with every transformer block
    left on the meta device; a block's weights are read from the shards when its forward starts and dropped when
    it ends (forward hooks)."""
    with torch.device("meta"):
        model = model_class(config)
    blocks = transformer_blocks(model)
    in_blocks = block_numbers(model)

    rest = reader.read([key for key in model.state_dict() if key not in in_blocks and key in reader], keep_half)
    model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    still_meta = [key for key, value in model.state_dict().items() if value.is_meta and key not in in_blocks]
    if still_meta:
        raise JukeboxCheckpointError(f"The written folder lacks {listing(still_meta)}.")

    def fetch(prefix: str):
        def hook(module: nn.Module, args: Any) -> None:
            state = reader.read([f"{prefix}.{key}" for key in module.state_dict()], keep_half)
            module.load_state_dict({key[len(prefix) + 1 :]: value for key, value in state.items()}, assign=True)

        return hook

    def drop(prefix: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            keys = [f"{prefix}.{key}" for key in module.state_dict()]
            module.to("meta")
            reader.done(keys)

        return hook

    for name, block in blocks.items():
        block.register_forward_pre_hook(fetch(name))
        block.register_forward_hook(drop(name))
    return model.eval()


def check_written_folder(
    model_class: type[PreTrainedModel],
    folder: Path,
    output_check: OutputCheck,
    *,
    offload: bool,
    weight_map: Mapping[str, str] | None = None,
    gate: ShardGate | None = None,
) -> dict[str, Any]:
    """Load `folder` and run `output_check` on it; outputs must be finite.

    Without `offload` the folder is loaded as a user loads it (`from_pretrained`, float32 compute). With `offload`
    (large models) the same shards are read block by block: the transformer blocks run one at a time, each read
    from the written shards just before it runs, so memory stays at one block; half-precision weights are computed
    in their own dtype where this machine computes it fast (as `from_pretrained` of the MIR model chooses), else
    in float32. Returns the audit record.

    With `gate` (offload only) the check may start while the shards are still being written (`weight_map` says
    which shard holds each tensor): each read waits until its shard is complete.
    """
    compute = "float32"
    if offload:
        from ..models.modeling_jukebox_mir import has_fast_half_precision

        config = model_class.config_class.from_pretrained(folder)
        stored = str(getattr(config, "dtype", "float32")).replace("torch.", "")
        keep_half = stored in ("bfloat16", "float16") and has_fast_half_precision()
        reader = ShardReader(folder, weight_map, gate)
        loaded = load_block_by_block(model_class, config, reader, keep_half)
        compute = stored if keep_half else compute
    else:
        loaded = model_class.from_pretrained(folder, dtype=torch.float32).eval()
    try:
        with torch.no_grad():
            outputs = {
                name: value.detach().float() if value.is_floating_point() else value.detach()
                for name, value in output_check(loaded).items()
            }
    finally:
        del loaded
    not_finite = [n for n, v in outputs.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise JukeboxCheckpointError(
            f"Output check failed: the converted model gives NaN or infinite values in {not_finite} on the fixed "
            "check input; the checkpoint may be corrupt or converted with a wrong configuration."
        )
    how = (
        f"the written shards, transformer blocks read one at a time ({compute} compute)"
        if offload
        else "the written folder, with from_pretrained (float32 compute)"
    )
    return {"loaded_from": how, "outputs": {name: summarize_tensor(value) for name, value in outputs.items()}}


__all__ = ["BLOCK_CLASS", "OutputCheck", "ShardReader", "block_numbers", "check_written_folder", "load_block_by_block"]
