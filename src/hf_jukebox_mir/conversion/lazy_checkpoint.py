"""Read torch checkpoint files tensor by tensor, without unpickling anything outside an allow-list.

A torch file is a pickle that describes the objects (dicts, hyperparameters, tensor headers) plus the raw bytes of
every tensor storage. `LazyTorchFile` unpickles only the description, with a restricted unpickler that rebuilds
tensors as `TensorRef` headers (storage, dtype, shape, stride, offset) instead of reading their bytes; the bytes of a
tensor are read from the file when `read(ref)` is called, one tensor at a time. A 10 GB checkpoint therefore costs
a few megabytes to open, and a conversion that needs half of its tensors reads only that half.

Both serialisations are supported:

* the LEGACY format (torch < 1.6, the 2020 Jukebox release): magic number, protocol version and system-info
  pickles, the object pickle, the sorted list of storage keys, then every storage as an 8-byte element count
  followed by its bytes, in key order. Offsets follow from the headers, so a truncated file is detected before any
  tensor is read.
* the ZIP format (torch >= 1.6): `<archive>/data.pkl` plus one stored entry per storage, `<archive>/data/<key>`.
  Entries are read whole through `zipfile`, which checks their CRC-32, so a bit-flipped storage is refused.

Allowed globals (`ALLOWED_GLOBALS`): tensor rebuild functions, storage types, `collections.OrderedDict`,
`torch.Size` and OpenAI's `jukebox.hparams.Hyperparams` (read as a plain dict). Any other global is refused with
`JukeboxCheckpointError` naming it, and nothing from the file is ever called.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from ..models.errors import JukeboxCheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# storage class name in the pickle -> dtype of its elements
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}

ALLOWED_GLOBALS: tuple[str, ...] = (
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.Size",
    "collections.OrderedDict",
    "jukebox.hparams.Hyperparams",
    *(f"torch.{name}" for name in STORAGE_DTYPES),
)


@dataclass(frozen=True)
class StorageRef:
    """Where the bytes of one storage live: a zip entry, or a byte offset in a legacy file."""

    key: str
    dtype: torch.dtype
    numel: int
    entry: str | None = None  # zip: the archive member
    offset: int | None = None  # legacy: byte offset of the first element (after the 8-byte count)
    base_element: int = 0  # legacy views: first element of this view inside the root storage


@dataclass(frozen=True)
class _PendingStorage:
    """A legacy storage before the storage list (and so its offset) is known."""

    root_key: str
    dtype: torch.dtype
    numel: int
    base_element: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor described by the file's pickle but not read yet."""

    storage: StorageRef  # a _PendingStorage only while a legacy file is being opened
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


class _Refused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, *_: Any) -> TensorRef:
    if not isinstance(storage, (StorageRef, _PendingStorage)):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not a storage")
    return TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


_SAFE_OBJECTS: dict[str, Any] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch.Size": tuple,
    "collections.OrderedDict": collections.OrderedDict,
    # OpenAI's dict subclass of hyperparameters: the pickle fills it with SETITEMS; a plain dict holds the same
    "jukebox.hparams.Hyperparams": dict,
    **{f"torch.{name}": _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only allow-listed globals; storages become `StorageRef`s through `make_storage`."""

    def __init__(self, handle: IO[bytes], make_storage=None):
        super().__init__(handle)
        self._make_storage = make_storage

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in _SAFE_OBJECTS:
            return _SAFE_OBJECTS[qualified]
        raise _Refused(qualified)

    def persistent_load(self, pid: Any) -> Any:
        if self._make_storage is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise _Refused(f"persistent object {kind!r}")
        return self._make_storage(pid)


def _refusal(path: Path, name: str) -> JukeboxCheckpointError:
    return JukeboxCheckpointError(
        f"Refusing to load {path}: it references the Python global(s) {name}, which are not on the allow-list of "
        "Jukebox checkpoints. hf-jukebox-mir never unpickles arbitrary code (only tensors, plain containers and "
        "the allow-listed names). If you trust the file, re-save its tensors as a plain dict "
        "({'hps': dict, 'model': state_dict}) or as safetensors."
    )


def _corrupt(path: Path, detail: str) -> JukeboxCheckpointError:
    return JukeboxCheckpointError(
        f"Could not read {path}: the file is truncated or corrupt, or not a torch checkpoint ({detail}). "
        "Download it again and compare its SHA-256."
    )


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return storage_type.dtype


# `scratch(nbytes)`: a 1-D uint8 buffer of at least `nbytes` bytes that a reader may fill and return a view of
Scratch = Callable[[int], torch.Tensor]
# `loader(scratch)`: one tensor, read on call; `scratch` may be None (then the tensor owns its memory) or ignored
TensorLoader = Callable[[Scratch | None], torch.Tensor]


class LazyTorchFile:
    """A torch checkpoint opened for reading tensor by tensor (see the module docstring).

    Attributes:
        path: the file.
        root: the unpickled object, with every tensor replaced by a `TensorRef`.
        format: `"legacy"` or `"zip"`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise JukeboxCheckpointError(f"Checkpoint file not found: {self.path}.")
        self._size = self.path.stat().st_size
        self._zip: zipfile.ZipFile | None = None
        self._handle: io.BufferedReader | None = None
        try:
            if zipfile.is_zipfile(self.path):
                self.format = "zip"
                self.root = self._open_zip()
            else:
                self.format = "legacy"
                self.root = self._open_legacy()
        except _Refused as refused:
            self.close()
            raise _refusal(self.path, refused.name) from None
        except JukeboxCheckpointError:
            self.close()
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            OSError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            struct.error,
            zipfile.BadZipFile,
            RecursionError,
            MemoryError,
        ) as err:
            self.close()
            raise _corrupt(self.path, f"{type(err).__name__}: {str(err)[:200]}") from None

    # ------------------------------------------------------------------------------------------- opening
    def _open_zip(self) -> Any:
        self._zip = zipfile.ZipFile(self.path)
        names = self._zip.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _corrupt(self.path, f"a zip file without exactly one data.pkl (found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and self._zip.read(byteorder).strip() not in (b"little", b""):
            raise JukeboxCheckpointError(f"{self.path} was saved on a big-endian machine; re-save it little-endian.")
        members = set(names)

        def make_storage(pid: tuple) -> StorageRef:
            _, storage_type, key, _location, numel = pid[:5]
            entry = f"{prefix}data/{key}"
            if entry not in members:
                raise pickle.UnpicklingError(f"storage {key} has no entry {entry}")
            return StorageRef(str(key), _storage_dtype(storage_type), int(numel), entry=entry)

        with self._zip.open(pickles[0]) as handle:
            return _RestrictedUnpickler(handle, make_storage).load()

    def _open_legacy(self) -> Any:
        handle = self._handle = open(self.path, "rb")  # kept open for reads; closed by close()
        if _RestrictedUnpickler(handle).load() != _LEGACY_MAGIC:
            raise _corrupt(self.path, "no torch magic number")
        protocol = _RestrictedUnpickler(handle).load()
        if protocol != _LEGACY_PROTOCOL:
            raise _corrupt(self.path, f"unsupported legacy protocol {protocol!r}")
        sys_info = _RestrictedUnpickler(handle).load()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise JukeboxCheckpointError(f"{self.path} was saved on a big-endian machine; re-save it little-endian.")
        roots: dict[str, tuple[torch.dtype, int]] = {}
        views: list[tuple[str, str, int, int]] = []

        def make_storage(pid: tuple) -> StorageRef:
            _, storage_type, root_key, _location, numel = pid[:5]
            view = pid[5] if len(pid) > 5 else None
            dtype = _storage_dtype(storage_type)
            roots.setdefault(str(root_key), (dtype, int(numel)))
            if view is not None:
                view_key, view_offset, view_numel = view
                views.append((str(view_key), str(root_key), int(view_offset), int(view_numel)))
                return _PendingStorage(str(root_key), dtype, int(view_numel), int(view_offset))
            return _PendingStorage(str(root_key), dtype, int(numel), 0)

        root = _RestrictedUnpickler(handle, make_storage).load()
        keys = _RestrictedUnpickler(handle).load()
        if not isinstance(keys, list) or set(map(str, keys)) != set(roots):
            raise _corrupt(self.path, "the storage list does not match the tensors")
        offsets: dict[str, int] = {}
        position = handle.tell()
        for key in map(str, keys):
            dtype, numel = roots[key]
            offsets[key] = position + 8
            position += 8 + numel * dtype.itemsize
        if position > self._size:
            raise _corrupt(self.path, f"the tensors need {position:,} bytes, the file has {self._size:,}")
        self._legacy_offsets = offsets
        return _resolve_pending(root, offsets)

    # ------------------------------------------------------------------------------------------- reading
    def read(self, ref: TensorRef, scratch: Scratch | None = None) -> torch.Tensor:
        """The tensor `ref` describes, read from the file: a new CPU tensor that owns its memory, or, with
        `scratch`, a view on the buffer `scratch(nbytes)` returns (reused by the caller: no page faults per read)."""
        storage = ref.storage
        try:
            flat = self._read_storage(storage, scratch)
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
            raise _corrupt(self.path, f"reading tensor storage {storage.key}: {type(err).__name__}: {err}") from None
        if ref.numel == 0:
            return torch.empty(ref.shape, dtype=ref.dtype)
        extent = 1 + sum((size - 1) * step for size, step in zip(ref.shape, ref.stride))
        if ref.storage_offset + extent > flat.numel():
            raise _corrupt(self.path, f"a tensor reaches past the end of its storage {storage.key}")
        return flat.as_strided(ref.shape, ref.stride, ref.storage_offset)

    def _read_storage(self, storage: StorageRef, scratch: Scratch | None = None) -> torch.Tensor:
        nbytes = storage.numel * storage.dtype.itemsize
        if scratch is None:
            flat = torch.empty(storage.numel, dtype=storage.dtype)
        else:
            flat = scratch(nbytes)[:nbytes].view(storage.dtype)
        buffer = memoryview(flat.view(torch.uint8).numpy()) if storage.numel else memoryview(bytearray())
        if self._zip is not None:
            assert storage.entry is not None
            with cast(zipfile.ZipExtFile, self._zip.open(storage.entry)) as handle:
                skip = storage.base_element * storage.dtype.itemsize
                if skip:
                    handle.seek(skip)
                got = handle.readinto(buffer)
                if got != len(buffer):
                    raise EOFError(f"entry {storage.entry} holds {got} of {len(buffer)} bytes")
                if not skip:
                    handle.read()  # reach the end of the entry: zipfile checks its CRC-32 there
            return flat
        assert self._handle is not None and storage.offset is not None
        handle = self._handle
        handle.seek(storage.offset - 8)
        (count,) = struct.unpack("<q", handle.read(8))
        if count < storage.base_element + storage.numel:
            raise ValueError(f"storage {storage.key} holds {count} elements, its tensors need more")
        handle.seek(storage.offset + storage.base_element * storage.dtype.itemsize)
        got = handle.readinto(buffer)
        if got != len(buffer):
            raise EOFError(f"storage {storage.key}: read {got} of {len(buffer)} bytes")
        return flat

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> LazyTorchFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve_pending(obj: Any, offsets: Mapping[str, int]) -> Any:
    """Replace the legacy `_PendingStorage`s inside `TensorRef`s by `StorageRef`s with offsets (iteratively)."""
    cache: dict[int, Any] = {}

    def fix(value: Any) -> Any:
        if isinstance(value, TensorRef) and isinstance(value.storage, _PendingStorage):
            pending = value.storage
            storage = StorageRef(
                pending.root_key,
                pending.dtype,
                pending.numel,
                offset=offsets[pending.root_key],
                base_element=pending.base_element,
            )
            return TensorRef(storage, value.storage_offset, value.shape, value.stride)
        if isinstance(value, dict):
            if id(value) not in cache:
                cache[id(value)] = value
                for key in list(value):
                    value[key] = fix(value[key])
            return value
        if isinstance(value, list):
            if id(value) not in cache:
                cache[id(value)] = value
                value[:] = [fix(v) for v in value]
            return value
        if isinstance(value, tuple):
            return tuple(fix(v) for v in value)
        return value

    return fix(obj)


@dataclass(frozen=True)
class TensorHeader:
    """Shape and dtype of a tensor that has not been read."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class LazyStateDict(Mapping[str, torch.Tensor]):
    """A state_dict whose tensors are read from their files only when looked up.

    `headers[name]` gives the shape and dtype without reading; `self[name]` reads the tensor (each lookup reads
    again: keep the result if you need it twice).
    """

    def __init__(self, headers: Mapping[str, TensorHeader | TensorRef], loaders: Mapping[str, TensorLoader]):
        if set(headers) != set(loaders):
            raise ValueError("headers and loaders must have the same keys")
        self.headers = dict(headers)
        self._loaders = dict(loaders)

    @classmethod
    def from_refs(cls, reader: LazyTorchFile, refs: Mapping[str, TensorRef]) -> LazyStateDict:
        return cls(refs, {key: functools.partial(reader.read, ref) for key, ref in refs.items()})

    @classmethod
    def merge(cls, parts: Iterable[LazyStateDict]) -> LazyStateDict:
        headers: dict[str, TensorHeader | TensorRef] = {}
        loaders: dict[str, TensorLoader] = {}
        for part in parts:
            headers.update(part.headers)
            loaders.update(part._loaders)
        return cls(headers, loaders)

    def select(self, keep: Callable[[str], bool]) -> LazyStateDict:
        """The entries whose name satisfies `keep`."""
        names = [key for key in self.headers if keep(key)]
        return LazyStateDict({k: self.headers[k] for k in names}, {k: self._loaders[k] for k in names})

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._loaders[key](None)

    def read(self, key: str, scratch: Scratch | None = None) -> torch.Tensor:
        """`self[key]`, read into the caller's reusable buffer where the file allows (see `LazyTorchFile.read`)."""
        return self._loaders[key](scratch)

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)


__all__ = [
    "ALLOWED_GLOBALS",
    "STORAGE_DTYPES",
    "LazyStateDict",
    "Scratch",
    "LazyTorchFile",
    "StorageRef",
    "TensorHeader",
    "TensorLoader",
    "TensorRef",
]
