"""Convert tensor by tensor: a conversion plan, strict key accounting before any byte is written, size-capped
safetensors shards, an output check on the written folder, and an atomic move into place.

A `ConversionPlan` maps every key of the converted model to a `PlannedTensor`: where it comes from, its shape after
the key table's transform, and how to read it. Plans are built from lazily opened checkpoints
(`lazy_checkpoint.py`), so building one reads no tensor. Two consumers share them:

* `load_plan(model, plan)`: the in-memory path (small models, tests, composing parts);
* `write_plan(model, plan, output_dir, ...)`: the streaming path used by every `convert_*` function. `model` may
  live on the meta device: it only supplies the expected keys, shapes and dtypes, the config and the code files.
  Peak memory is one shard (`max_shard_size`, default 1 GB) plus the tensor being converted, whatever the size of
  the checkpoint; the output check loads the written folder with `from_pretrained`, or, when the model is large,
  runs its transformer blocks one at a time, each read from the written shards just before it runs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..models.errors import JukeboxCheckpointError
from .audit import ConversionAudit, WrittenFile
from .checkpoint_io import SourceSpec, sha256_file
from .export import account_keys, listing, summarize_tensor
from .lazy_checkpoint import LazyStateDict

OutputCheck = Callable[[nn.Module], Mapping[str, torch.Tensor]]

# weights (float32 bytes) above which the output check runs the transformer blocks one at a time from disk
OFFLOAD_THRESHOLD_BYTES = 1 << 30
DEFAULT_MAX_SHARD_SIZE = "1GB"
_BLOCK_CLASS = "JukeboxBlock"  # the transformer block of every prior: what the output check runs one at a time


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the converted model: its source (for messages and the audit), shape, and reader."""

    source: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # as stored in the source
    load: Callable[[], torch.Tensor]


ConversionPlan = dict[str, PlannedTensor]


def _transposed(load: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lambda: load().t()


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
        shape = tuple(header.shape)
        load = _loader(state, old)
        if transpose is not None and transpose(new):
            shape = shape[::-1]
            load = _transposed(load)
        plan[prefix + new] = PlannedTensor(f"{source}:{old}", shape, header.dtype, load)
    return plan


def _loader(state: LazyStateDict, key: str) -> Callable[[], torch.Tensor]:
    return lambda: state[key]


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
            _fsync(written)  # durable before the rename publishes the folder (shards were synced as written)
        _fsync(tmp_dir)
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            backup.rmdir()
            os.replace(output_dir, backup)
            os.replace(tmp_dir, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_dir, output_dir)
        _fsync(output_dir.parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _materialize(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor in `dtype`. Transposed views are reordered in the stored dtype first, then cast: for the
    float16 Conv1D weights that was ~2x faster than either casting first or one strided cast-copy."""
    return tensor.contiguous().to(dtype)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_shards(
    plan: ConversionPlan,
    dtypes: Mapping[str, torch.dtype],
    folder: Path,
    max_shard_size: int | str,
    on_written: Callable[[Path], Any] = lambda path: None,
) -> None:
    """Safetensors shards (+ index when more than one), as `save_pretrained` names them; one shard in memory."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    meta = {key: torch.empty(entry.shape, dtype=dtypes[key], device="meta") for key, entry in plan.items()}
    split = split_torch_state_dict_into_shards(
        meta, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    for filename, keys in split.filename_to_tensors.items():
        shard = {key: _materialize(plan[key].load(), dtypes[key]) for key in keys}
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
        del shard
        _fsync(folder / filename)
        on_written(folder / filename)
    if split.is_sharded:
        import json

        index = {
            "metadata": {**split.metadata, "total_parameters": sum(t.numel() for t in meta.values())},
            "weight_map": split.tensor_to_filename,
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _save_config_and_code(model: nn.Module, folder: Path) -> None:
    """What `save_pretrained` writes besides the weights: config.json (+ auto_map) and the model's code files."""
    from transformers.dynamic_module_utils import custom_object_save

    config = copy.deepcopy(model.config)  # the caller's config stays as it was
    config.architectures = [type(model).__name__]
    config.dtype = str(model.dtype).replace("torch.", "")
    if getattr(model, "_auto_class", None) is not None:
        custom_object_save(model, folder, config=config)
    config.save_pretrained(folder)


class _ShardReader:
    """Tensors of a written folder by name, read from its safetensors shards on demand.

    Each read opens (maps) the shard and closes it again: a mapping kept open would keep every page read so far
    in the process's resident memory, which for a 20 GB folder is most of the folder.
    """

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self._folder = folder
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            import json

            self._where = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
                self._where = {key: "model.safetensors" for key in handle.keys()}

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
            with safe_open(str(self._folder / name), framework="pt") as handle:
                for key in names:
                    tensor = handle.get_tensor(key)
                    keep = keep_half and tensor.dtype in (torch.float16, torch.bfloat16)
                    tensors[key] = tensor if keep or not tensor.is_floating_point() else tensor.float()
        return tensors


def _load_block_by_block(model_class: type[PreTrainedModel], config: Any, folder: Path, keep_half: bool) -> nn.Module:
    """The folder's model (float32, or half-precision weights kept with `keep_half`) with every transformer block
    left on the meta device; a block's weights are read from the shards when its forward starts and dropped when
    it ends (forward hooks)."""
    with torch.device("meta"):
        model = model_class(config)
    blocks = {name: module for name, module in model.named_modules() if type(module).__name__ == _BLOCK_CLASS}
    reader = _ShardReader(folder)

    def in_block(key: str) -> bool:
        return any(key.startswith(name + ".") for name in blocks)

    rest = reader.read([key for key in model.state_dict() if not in_block(key) and key in reader], keep_half)
    model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    still_meta = [key for key, value in model.state_dict().items() if value.is_meta and not in_block(key)]
    if still_meta:
        raise JukeboxCheckpointError(f"The written folder lacks {listing(still_meta)}.")

    def fetch(prefix: str):
        def hook(module: nn.Module, args: Any) -> None:
            state = reader.read([f"{prefix}.{key}" for key in module.state_dict()], keep_half)
            module.load_state_dict({key[len(prefix) + 1 :]: value for key, value in state.items()}, assign=True)

        return hook

    def drop(module: nn.Module, args: Any, output: Any) -> None:
        module.to("meta")

    for name, block in blocks.items():
        block.register_forward_pre_hook(fetch(name))
        block.register_forward_hook(drop)
    return model.eval()


def check_written_folder(
    model_class: type[PreTrainedModel], folder: Path, output_check: OutputCheck, *, offload: bool
) -> dict[str, Any]:
    """Load `folder` and run `output_check` on it; outputs must be finite.

    Without `offload` the folder is loaded as a user loads it (`from_pretrained`, float32 compute). With `offload`
    (large models) the same shards are read block by block: the transformer blocks run one at a time, each read
    from the written shards just before it runs, so memory stays at one block; half-precision weights are computed
    in their own dtype where this machine computes it fast (as `from_pretrained` of the MIR model chooses), else
    in float32. Returns the audit record.
    """
    compute = "float32"
    if offload:
        from ..models.modeling_jukebox_mir import has_fast_half_precision

        config = model_class.config_class.from_pretrained(folder)
        stored = str(getattr(config, "dtype", "float32")).replace("torch.", "")
        keep_half = stored in ("bfloat16", "float16") and has_fast_half_precision()
        loaded = _load_block_by_block(model_class, config, folder, keep_half)
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
    unique = list({spec.path.resolve(): spec for spec in sources}.values())
    # hashing (hashlib releases the GIL) runs beside the conversion: the sources at once, each shard right after it
    # is written, while it is still in the page cache
    with atomic_folder(output_dir, overwrite=overwrite) as tmp_dir, ThreadPoolExecutor(max_workers=1) as hasher:
        source_entries = [hasher.submit(spec.audit_entry) for spec in unique]
        shard_hashes: dict[str, Future[str]] = {}
        _write_shards(
            plan,
            dtypes,
            tmp_dir,
            max_shard_size,
            on_written=lambda path: shard_hashes.setdefault(path.name, hasher.submit(sha256_file, path)),
        )
        _save_config_and_code(model, tmp_dir)
        if add_files is not None:
            add_files(tmp_dir)
        audit.dtypes = {str(k): str(v).replace("torch.", "") for k, v in _dtypes_by_part(dtypes).items()}
        if output_check is not None:
            audit.output_check = check_written_folder(type(model), tmp_dir, output_check, offload=offload)
        audit.versions = _versions()
        audit.sources = [entry.result() for entry in source_entries]
        audit.files = {
            p.relative_to(tmp_dir).as_posix(): WrittenFile(
                sha256=shard_hashes[p.name].result() if p.name in shard_hashes else sha256_file(p),
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
        key: PlannedTensor("memory", tuple(t.shape), t.dtype, _constant(t.detach()))
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


def _constant(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: tensor


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
    "ConversionPlan",
    "OutputCheck",
    "PlannedTensor",
    "atomic_folder",
    "check_plan",
    "check_written_folder",
    "load_plan",
    "plan_from_mapping",
    "prefixed",
    "save_model",
    "saved_tensors",
    "write_plan",
]
