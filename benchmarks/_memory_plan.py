"""Peak memory of a forward pass without running it: live tensor bytes, counted op by op.

`LiveTensorBytes` is a `TorchDispatchMode` that sees every aten op of a forward pass, records the storage
of each output (views share their base's storage and count once) and drops it as soon as Python frees it.
The peak of the running sum is what a caching allocator must hold at once for the activations, which
is what `torch.cuda.max_memory_allocated` reports on a GPU minus the weights (plus allocator rounding and
kernel workspaces, a few MB). Run on the ``meta`` device, a real-width model costs no memory and no
compute, so the GPU peak of layer-36 extraction can be planned on any machine:

    python benchmarks/bench_gpu.py --plan-memory             # real width, bf16, 36 layers, batch 1/2/4/8

Two conservative choices: on ``meta`` (and on CPU) SDPA may take a path that materialises attention
weights, which CUDA's flash kernels never do; and inputs created before the mode are not counted.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of op outputs alive at once; `peak_bytes` after the run."""

    def __init__(self, *exclude: torch.nn.Module) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        # weights (and views of them, e.g. a slice of a positional embedding) are not activations
        self._excluded = {
            StorageWeakRef(t.untyped_storage()).cdata
            for module in exclude
            for t in list(module.parameters()) + list(module.buffers())
        }
        self.current_bytes = 0
        self.peak_bytes = 0

    def _drop_freed(self) -> None:
        freed = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in freed:
            self.current_bytes -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._drop_freed()  # storages freed since the previous op do not count towards this one
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            ref = StorageWeakRef(storage)
            if ref.cdata not in self._live and ref.cdata not in self._excluded:
                nbytes = storage.nbytes()
                self._live[ref.cdata] = (ref, nbytes)
                self.current_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return out


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        key = StorageWeakRef(tensor.untyped_storage()).cdata
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def plan_forward_peak(forward, model: torch.nn.Module) -> tuple[int, object]:
    """(peak live activation bytes of `forward()`, its output); `model`'s weights are not counted."""
    tracker = LiveTensorBytes(model)
    with tracker:
        out = forward()
    return tracker.peak_bytes, out
