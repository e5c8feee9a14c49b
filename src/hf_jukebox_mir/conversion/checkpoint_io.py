"""Safe reading of Jukebox checkpoints: the original OpenAI `*.pth.tar` files and transformers-4.x Hub folders.

Nothing here runs pickled code. Torch files (original `.pth.tar` in the legacy or zip format, transformers-4.x
`.bin` shards) are opened with the restricted reader of `lazy_checkpoint.py`: it unpickles only tensor headers,
plain containers and its allow-list (`lazy_checkpoint.ALLOWED_GLOBALS`), refuses any other Python global with a
`JukeboxCheckpointError` naming it, and reads tensors one at a time when they are looked up.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.errors import JukeboxCheckpointError
from .audit import SourceFile
from .hashing import sha256_file
from .lazy_checkpoint import LazyStateDict, LazyTorchFile, Scratch, TensorHeader, TensorRef

# Key prefixes that identify what a state_dict holds.
_VQVAE_PREFIXES = ("encoders.", "decoders.", "bottleneck.")
_PRIOR_PREFIXES = ("prior.", "y_emb.", "conditioner_blocks.", "prime_prior.", "prime_state_proj.", "prime_x_out.")


@dataclass(frozen=True)
class SourceSpec:
    """An input file of a conversion, before its SHA-256 is known (hashing a 10 GB file is a full read: the
    streaming writer does it in the background while converting)."""

    path: Path
    role: str | None = None
    name: str | None = None  # how the audit names it (default: the file name)

    def audit_entry(self) -> SourceFile:
        """The audit's `SourceFile` (reads the file once for its SHA-256)."""
        return SourceFile(
            file=self.name or self.path.name,
            sha256=sha256_file(self.path),
            bytes=self.path.stat().st_size,
            role=self.role,
        )


def source_file(path: str | os.PathLike, *, role: str | None = None, name: str | None = None) -> SourceSpec:
    """The input file `path` as a conversion source (hashed later, see `SourceSpec`)."""
    return SourceSpec(Path(path), role, name)


def checkpoint_kind(state_dict: Mapping[str, Any]) -> str:
    """What an original state_dict holds: `"vqvae"`, `"prior"` or `"unknown"` (decided from its key names)."""
    keys = list(state_dict)
    if keys and all(k.startswith(_VQVAE_PREFIXES) for k in keys):
        return "vqvae"
    if any(k.startswith(_PRIOR_PREFIXES) for k in keys):
        return "prior"
    return "unknown"


_KIND_HINTS = {
    "vqvae": "a Jukebox VQ-VAE (e.g. 5b/vqvae.pth.tar; convert it with --vqvae)",
    "prior": "a Jukebox prior (e.g. prior_level_2.pth.tar; convert it with --prior)",
    "unknown": "neither a Jukebox VQ-VAE nor a Jukebox prior",
}


@dataclass
class OriginalCheckpoint:
    """An original OpenAI Jukebox checkpoint (`{"hps": ..., "model": state_dict, ...}`), opened safely.

    Tensors are read from the file only when looked up (`state_dict[name]`); `state_dict.refs[name]` gives a
    tensor's shape and dtype without reading it.

    Attributes:
        hps: the hyperparameters as a plain dict.
        state_dict: the model tensors (lazy), with any leading `module.` stripped from the names.
        path: the file.
        kind: `"vqvae"`, `"prior"` or `"unknown"`, from the key names.
    """

    hps: dict[str, Any]
    state_dict: LazyStateDict
    path: Path
    kind: str = "unknown"

    @property
    def level(self) -> int | None:
        """The `level` hyperparameter (meaningful for priors), if present."""
        level = self.hps.get("level")
        return int(level) if isinstance(level, int) else None

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the file (computed on first use: a full read of the file)."""
        return sha256_file(self.path)


def load_original_checkpoint(path: str | os.PathLike, *, expected_kind: str | None = None) -> OriginalCheckpoint:
    """Open an original OpenAI Jukebox checkpoint without executing pickled code and without reading its tensors.

    Args:
        path: a `torch.save`d dict with `"hps"` and `"model"` (other entries such as `"opt"`, `"step"` and
            metrics are ignored and never read), in the legacy (2020 release) or zip serialisation.
        expected_kind: `"vqvae"` or `"prior"` to refuse a checkpoint of the other kind.

    Raises:
        JukeboxCheckpointError: missing/truncated/corrupt file, forbidden pickled globals, not a dict, no
            `model`/`hps` entry, non-tensor weights, or a checkpoint of the wrong kind.
    """
    path = Path(path)
    if expected_kind not in (None, "vqvae", "prior"):
        raise JukeboxCheckpointError(f"expected_kind must be None, 'vqvae' or 'prior', got {expected_kind!r}.")
    reader = LazyTorchFile(path)
    data = reader.root
    if not isinstance(data, dict):
        raise JukeboxCheckpointError(
            f"{path} is not an original Jukebox checkpoint: expected a dict with 'hps' and 'model' entries, got "
            f"{type(data).__name__}."
        )
    missing = [name for name in ("model", "hps") if name not in data]
    if missing:
        raise JukeboxCheckpointError(
            f"{path} is not an original Jukebox checkpoint: the dict has no {' or '.join(repr(m) for m in missing)} "
            f"entry (found {sorted(map(str, data))}). Expected {{'hps': dict, 'model': state_dict, ...}}; a "
            "transformers-4.x Hub folder is converted with --hf4 instead."
        )
    model, hps = data["model"], data["hps"]
    if not isinstance(hps, dict):
        raise JukeboxCheckpointError(f"{path}: 'hps' must be a dict of hyperparameters, got {type(hps).__name__}.")
    if not isinstance(model, dict) or not model:
        raise JukeboxCheckpointError(
            f"{path}: 'model' must be a non-empty state_dict (name -> tensor), got {type(model).__name__}"
            f"{' (empty)' if isinstance(model, dict) else ''}."
        )
    refs: dict[str, TensorRef] = {}
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, TensorRef):
            kind_name = "tensor" if isinstance(value, TensorRef) else type(value).__name__
            raise JukeboxCheckpointError(
                f"{path}: 'model' must map names to tensors, but entry {key!r} is a {kind_name}."
            )
        # the original loader strips the DistributedDataParallel prefix the same way
        refs[key[len("module.") :] if key.startswith("module.") else key] = value
    kind = checkpoint_kind(refs)
    if expected_kind is not None and kind != expected_kind:
        level = hps.get("level")
        level_note = f" (hps level={level})" if kind == "prior" and level is not None else ""
        raise JukeboxCheckpointError(
            f"Wrong kind of checkpoint: expected {_KIND_HINTS[expected_kind]}, but {path.name} looks like "
            f"{_KIND_HINTS[kind]}{level_note}; its first keys are {list(refs)[:3]}."
        )
    return OriginalCheckpoint(hps=dict(hps), state_dict=LazyStateDict.from_refs(reader, refs), path=path, kind=kind)


# ------------------------------------------------------------------------------------------ transformers 4.x


@dataclass
class Hf4Checkpoint:
    """A transformers-4.x Jukebox folder (`model_type: "jukebox"`), loaded safely.

    Attributes:
        config: the parsed `config.json`.
        state_dict: the tensors (all of them, or those under the requested prefixes), read on lookup.
        weight_files: the weight files that were opened (those holding the requested keys).
        path: the folder.
    """

    config: dict[str, Any]
    state_dict: LazyStateDict
    weight_files: list[str]
    path: Path

    @functools.cached_property
    def shard_sha256(self) -> dict[str, str]:
        """File name -> hex SHA-256 of every weight file that was opened (computed on first use)."""
        return {name: sha256_file(self.path / name) for name in self.weight_files}

    @property
    def vqvae_config(self) -> dict[str, Any]:
        """The `vqvae_config` entry (transformers-4.x `JukeboxVQVAEConfig` fields; `{}` if absent, which the port
        reads as its defaults, the released values)."""
        value = self.config.get("vqvae_config") or {}
        if not isinstance(value, dict):
            raise JukeboxCheckpointError(f"{self.path / 'config.json'}: 'vqvae_config' must be a dict.")
        return dict(value)

    @property
    def prior_configs(self) -> list[dict[str, Any]]:
        """The prior configs in hf4 order (index 0 = top prior), from either layout: `prior_0..prior_{n-1}`
        (the Hub files) or `prior_config_list` (what transformers-4.x `save_pretrained` writes)."""
        return hf4_prior_configs(self.config, where=self.path / "config.json")


def hf4_prior_configs(config: Mapping[str, Any], where: Any = "config.json") -> list[dict[str, Any]]:
    """Prior configs of a transformers-4.x `JukeboxConfig` dict, top prior first, from either layout."""
    if isinstance(config.get("prior_config_list"), list):
        priors = config["prior_config_list"]
    else:
        count = config.get("nb_priors", 3)
        priors = [config.get(f"prior_{i}") for i in range(int(count))]
        if any(p is None for p in priors):
            raise JukeboxCheckpointError(
                f"{where} has neither 'prior_config_list' nor all of "
                f"{[f'prior_{i}' for i in range(int(count))]}; cannot read the prior configurations."
            )
    if not all(isinstance(p, dict) for p in priors):
        raise JukeboxCheckpointError(f"{where}: every prior configuration must be a dict.")
    return [dict(p) for p in priors]


# (index file, single file, loader kind), in order of preference
_HF4_WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors", "safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin", "torch"),
)


def _hf4_weight_files(folder: Path) -> tuple[str, dict[str, str] | None]:
    """(loader kind, weight_map or None for a single file); raises if the folder has no weights."""
    for index_name, single_name, kind in _HF4_WEIGHT_LAYOUTS:
        index_path = folder / index_name
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text())
                weight_map = index["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise JukeboxCheckpointError(
                    f"{index_path} is not a valid weight index (needs a 'weight_map'): {err}."
                ) from None
            if not isinstance(weight_map, dict) or not weight_map:
                raise JukeboxCheckpointError(f"{index_path}: 'weight_map' must be a non-empty dict.")
            return kind, {str(k): str(v) for k, v in weight_map.items()}
        if (folder / single_name).is_file():
            return kind, None
    raise JukeboxCheckpointError(
        f"No weights in {folder}: expected pytorch_model.bin, pytorch_model.bin.index.json with "
        "pytorch_model-*.bin shards, model.safetensors or model.safetensors.index.json."
    )


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _inside(folder: Path, name: str, where: Path) -> Path:
    """`folder / name`, refusing names that leave the folder (absolute paths, `..`, links pointing out)."""
    candidate = (folder / name).resolve()
    if Path(name).is_absolute() or folder.resolve() not in candidate.parents:
        raise JukeboxCheckpointError(
            f"{where} names the weight file {name!r}, which lies outside {folder}; a weight index may only name files "
            "inside its own folder."
        )
    return folder / name


def _get_safetensor(handle: Any, key: str, scratch: Scratch | None = None) -> torch.Tensor:
    """One tensor of an open safetensors file, as the library gives it (`scratch` is not used)."""
    return handle.get_tensor(key)


def _open_weight_file(path: Path, kind: str) -> LazyStateDict:
    """The tensors of one weight file, read on lookup."""
    if not path.is_file():
        raise JukeboxCheckpointError(f"Weight file listed in the index is missing: {path}.")
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            handle = safe_open(str(path), framework="pt")
            headers = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                headers[key] = TensorHeader(tuple(piece.get_shape()), _SAFETENSORS_DTYPES[piece.get_dtype()])
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise JukeboxCheckpointError(f"Could not read {path}: truncated or corrupt safetensors ({err}).") from None
        return LazyStateDict(headers, {key: functools.partial(_get_safetensor, handle, key) for key in headers})
    reader = LazyTorchFile(path)
    root = reader.root
    if not isinstance(root, dict) or not all(isinstance(v, TensorRef) for v in root.values()):
        raise JukeboxCheckpointError(f"{path} is not a state_dict shard (a dict of name -> tensor).")
    return LazyStateDict.from_refs(reader, {str(k): v for k, v in root.items()})


def load_hf4_folder(path: str | os.PathLike, *, prefixes: Iterable[str] | None = None) -> Hf4Checkpoint:
    """Load a transformers-4.x Jukebox folder (the format of the `openai/jukebox-*` Hub repositories).

    Reads `config.json` and the headers of the weight files: sharded `pytorch_model-*.bin` +
    `pytorch_model.bin.index.json`, a single `pytorch_model.bin`, or the `.safetensors` variants. Torch shards are
    opened with the restricted reader of `lazy_checkpoint.py`; tensors are read one at a time on lookup.

    Args:
        path: the folder.
        prefixes: if given, only the shards holding keys with one of these prefixes are read, and only those keys
            are kept (e.g. `("vqvae.",)` reads the VQ-VAE without loading the 10 GB prior shards where possible).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise JukeboxCheckpointError(f"transformers-4.x checkpoint folder not found: {folder}.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise JukeboxCheckpointError(f"{folder} has no config.json; expected a transformers-4.x Jukebox folder.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise JukeboxCheckpointError(f"{config_path} is not valid JSON: {err}.") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "jukebox":
        hint = (
            " It is already in this package's format: load it with from_pretrained."
            if isinstance(model_type, str) and model_type.startswith("jukebox_mir")
            else ""
        )
        raise JukeboxCheckpointError(
            f"{config_path} has model_type {model_type!r}; expected 'jukebox' (a transformers-4.x JukeboxModel "
            f"folder such as openai/jukebox-5b-lyrics).{hint}"
        )
    kind, weight_map = _hf4_weight_files(folder)
    prefix_tuple = tuple(prefixes) if prefixes is not None else None
    if weight_map is None:
        files = [_HF4_WEIGHT_LAYOUTS[0][1] if kind == "safetensors" else _HF4_WEIGHT_LAYOUTS[1][1]]
    else:
        wanted = [k for k in weight_map if prefix_tuple is None or k.startswith(prefix_tuple)]
        if not wanted:
            raise JukeboxCheckpointError(
                f"{folder}: the weight index has no key starting with {list(prefix_tuple or [])}."
            )
        files = sorted({weight_map[k] for k in wanted})
    where = folder / (_HF4_WEIGHT_LAYOUTS[0][0] if kind == "safetensors" else _HF4_WEIGHT_LAYOUTS[1][0])
    parts = [_open_weight_file(_inside(folder, name, where), kind) for name in files]
    state_dict = LazyStateDict.merge(parts).select(lambda key: prefix_tuple is None or key.startswith(prefix_tuple))
    if weight_map is not None:
        expected = {k for k in weight_map if prefix_tuple is None or k.startswith(prefix_tuple)}
        absent = sorted(expected - set(state_dict))
        if absent:
            raise JukeboxCheckpointError(
                f"{folder}: {len(absent)} key(s) listed in the index are missing from their shards: "
                f"{absent[:10]}{' ...' if len(absent) > 10 else ''}."
            )
    if not state_dict:
        raise JukeboxCheckpointError(f"{folder}: no weights with prefix {list(prefix_tuple or [])} were found.")
    return Hf4Checkpoint(config=config, state_dict=state_dict, weight_files=list(files), path=folder)


def hf4_sources(checkpoint: Hf4Checkpoint) -> list[SourceSpec]:
    """The sources of a conversion from a transformers-4.x folder: its config and the weight files opened."""
    folder = checkpoint.path
    return [SourceSpec(folder / "config.json", "config")] + [
        SourceSpec(folder / name, "shard", name) for name in sorted(checkpoint.weight_files)
    ]


__all__ = [
    "Hf4Checkpoint",
    "OriginalCheckpoint",
    "checkpoint_kind",
    "hf4_prior_configs",
    "hf4_sources",
    "load_hf4_folder",
    "load_original_checkpoint",
    "sha256_file",
    "source_file",
    "SourceSpec",
]
