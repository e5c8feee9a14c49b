"""Write one safetensors file tensor by tensor, from reusable buffers.

`safetensors.torch.save_file` needs every tensor of a file in memory at once and copies each into a new `bytes`
object before writing; for a 1 GB shard that is 1 GB of resident memory and two extra passes over it (measured:
its serialize call was the largest single cost of converting the real-size checkpoints). This writer lays out the
file from shapes and dtypes alone (the header is known before any tensor is read), then takes the tensors one at a
time and writes their bytes straight from the caller's memory.

The bytes are exactly those `save_file` writes for the same tensors and metadata (a test compares them): tensors
ordered by descending dtype (safetensors' own dtype order) then by name, a compact JSON header with
`__metadata__` first, padded with spaces to a multiple of 8 bytes, preceded by its length as a little-endian u64.
Reading stays with the safetensors library (`safe_open`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.errors import JukeboxCheckpointError

# torch dtype -> safetensors dtype name, in safetensors' dtype order (its `Dtype` enum; files sort by it, descending)
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.float32: "F32",
    torch.complex64: "C64",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.uint64: "U64",
}
_RANK = {dtype: rank for rank, dtype in enumerate(DTYPE_NAMES)}


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor's bytes go in the file: name, dtype, shape and byte range of the data section."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsLayout:
    """The layout of a safetensors file: its header bytes (length prefix included) and the tensors in file order."""

    header: bytes
    slots: tuple[TensorSlot, ...]

    @property
    def size(self) -> int:
        return len(self.header) + (self.slots[-1].end if self.slots else 0)


def plan_layout(
    tensors: Mapping[str, tuple[torch.dtype, Sequence[int]]], metadata: Mapping[str, str] | None = None
) -> SafetensorsLayout:
    """The layout of a file holding `tensors` (name -> (dtype, shape)), in the order safetensors writes them."""
    unknown = sorted({str(dtype) for dtype, _ in tensors.values() if dtype not in DTYPE_NAMES})
    if unknown:
        raise JukeboxCheckpointError(f"Cannot write tensors of dtype {', '.join(unknown)} to safetensors.")
    order = sorted(tensors, key=lambda name: (-_RANK[tensors[name][0]], name))
    slots, offset = [], 0
    for name in order:
        dtype, shape = tensors[name]
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        slots.append(TensorSlot(name, dtype, tuple(int(n) for n in shape), offset, offset + nbytes))
        offset += nbytes
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = dict(metadata)
    for slot in slots:
        entries[slot.name] = {
            "dtype": DTYPE_NAMES[slot.dtype],
            "shape": list(slot.shape),
            "data_offsets": [slot.begin, slot.end],
        }
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return SafetensorsLayout(struct.pack("<Q", len(text)) + text, tuple(slots))


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying them."""
    if not tensor.is_contiguous() or tensor.device.type != "cpu":
        raise ValueError("tensor_bytes needs a contiguous CPU tensor")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """Writes the file `layout` describes at `path`: the header at once, then each tensor's bytes, in file order.

    `write(tensor)` takes the next slot's tensor. `close()` fails if a slot was left unwritten; `abort()` closes
    without that check (the caller removes the file).
    """

    def __init__(self, path: str | os.PathLike, layout: SafetensorsLayout):
        self.path = Path(path)
        self.layout = layout
        self._next = 0
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed by close() or abort()
        try:
            self._write(memoryview(layout.header))
        except BaseException:
            self._file.close()
            raise

    @property
    def next_slot(self) -> TensorSlot | None:
        return self.layout.slots[self._next] if self._next < len(self.layout.slots) else None

    def write(self, tensor: torch.Tensor) -> None:
        slot = self.next_slot
        if slot is None:
            raise ValueError(f"{self.path.name}: every tensor is already written")
        if tensor.dtype != slot.dtype or tuple(tensor.shape) != slot.shape:
            raise ValueError(
                f"{self.path.name}: {slot.name} must be {slot.dtype} {list(slot.shape)}, "
                f"got {tensor.dtype} {list(tensor.shape)}"
            )
        self._write(tensor_bytes(tensor))
        self._next += 1

    def _write(self, data: memoryview) -> None:
        done = 0
        while done < len(data):  # a raw write may take fewer bytes than asked
            done += self._file.write(data[done:]) or 0

    def close(self) -> None:
        """Close the file; an error if any slot is still unwritten."""
        self._file.close()
        if self._next != len(self.layout.slots):
            raise ValueError(f"{self.path.name}: {len(self.layout.slots) - self._next} tensor(s) were not written")

    def abort(self) -> None:
        self._file.close()


__all__ = ["DTYPE_NAMES", "SafetensorsLayout", "SafetensorsStreamWriter", "TensorSlot", "plan_layout", "tensor_bytes"]
