"""Pure key-renaming engine for checkpoint conversion, and the VQ-VAE tables.

A table is an ordered list of `(pattern, replacement)` rules. Each source key is matched against the patterns in
order with `re.fullmatch` (the whole key must match); the FIRST matching rule decides its fate:

* `replacement` is a `str`: the new key is `match.expand(replacement)` (use `\\1`, `\\g<name>` for groups);
* `replacement` is a callable: the new key is `replacement(match)` (for index arithmetic, e.g. `2 * i + j`);
* `replacement` is `None`: the key is deliberately dropped (e.g. the priors of a full transformers-4.x folder
  when converting its VQ-VAE).

`convert_keys` renames a whole set of keys at once and fails, naming every offending key, when a key matches no
rule or when two keys would get the same new name. Nothing here touches tensors; shape checks happen when the
renamed state_dict is loaded (`export.strict_load_state_dict`).

Other tables (e.g. the priors in `prior_keys.py`) are built the same way and passed to the same functions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from ..models.errors import JukeboxCheckpointError

Replacement = str | Callable[[re.Match], str] | None
KeyMappingTable = Sequence[tuple[str, Replacement]]

T = TypeVar("T")

_MAX_LISTED = 50


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def compile_table(table: KeyMappingTable) -> list[tuple[re.Pattern, Replacement]]:
    """Compile the patterns of a table (raises `re.error` for an invalid pattern)."""
    return [(re.compile(pattern), replacement) for pattern, replacement in table]


def map_key(key: str, table: KeyMappingTable | list[tuple[re.Pattern, Replacement]]) -> tuple[bool, str | None]:
    """Rename one key: `(True, new_key_or_None)` if a rule matched, `(False, None)` otherwise."""
    for pattern, replacement in table:
        match = pattern.fullmatch(key) if isinstance(pattern, re.Pattern) else re.fullmatch(pattern, key)
        if match is None:
            continue
        if replacement is None:
            return True, None
        if callable(replacement):
            return True, replacement(match)
        return True, match.expand(replacement)
    return False, None


def convert_keys(keys: Iterable[str], table: KeyMappingTable, *, source: str = "checkpoint") -> dict[str, str | None]:
    """Rename every key with `table`; returns `{old_key: new_key}` with `None` for dropped keys.

    Raises:
        JukeboxCheckpointError: listing every key that no rule matches, and every group of keys that would
            receive the same new name.
    """
    compiled = compile_table(table)
    mapping: dict[str, str | None] = {}
    unmapped: list[str] = []
    for key in keys:
        matched, new_key = map_key(key, compiled)
        if matched:
            mapping[key] = new_key
        else:
            unmapped.append(key)
    targets: dict[str, list[str]] = defaultdict(list)
    for old, new in mapping.items():
        if new is not None:
            targets[new].append(old)
    collisions = {new: olds for new, olds in targets.items() if len(olds) > 1}
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} key(s) match no conversion rule: {_listing(unmapped)}")
    if collisions:
        listed = [f"{' and '.join(olds)} -> {new}" for new, olds in collisions.items()]
        problems.append(f"{len(collisions)} new name(s) would be produced by several keys: {_listing(listed)}")
    if problems:
        raise JukeboxCheckpointError(
            f"Cannot convert the keys of {source}: "
            + "; ".join(problems)
            + ". The file does not have the expected layout (wrong model kind or a modified checkpoint?)."
        )
    return mapping


def rename_state_dict(
    state_dict: Mapping[str, T], table: KeyMappingTable, *, source: str = "checkpoint"
) -> tuple[dict[str, T], dict[str, str | None]]:
    """Apply `convert_keys` to a state_dict: returns `(renamed_state_dict, {old: new or None})`."""
    mapping = convert_keys(state_dict.keys(), table, source=source)
    renamed = {new: state_dict[old] for old, new in mapping.items() if new is not None}
    return renamed, mapping


# ------------------------------------------------------------------------------------------------ VQ-VAE tables

_WB = r"(weight|bias)"


def _conv_index(name: str) -> str:
    return {"1": "conv1", "3": "conv2"}[name]


def _hf4_conv_index(name: str) -> str:
    return {"1": "conv1", "2": "conv2"}[name]


# fmt: off
# Original OpenAI names (`jukebox/vqvae/*.py`) -> JukeboxVQVAE names. In the original, encoder level block j of
# encoder L is `encoders.L.level_blocks.j.model` = [downs_t[j] x (strided conv, Resnet1D), output conv]; decoder
# block j is `decoders.L.level_blocks.j.model` = [input conv, downs_t[j] x (Resnet1D, ConvTranspose1d)], and a
# residual unit is `.model.{0: relu, 1: conv, 2: relu, 3: conv}`.
VQVAE_KEY_MAPPING: list[tuple[str, Replacement]] = [
    (r"encoders\.(\d+)\.level_blocks\.(\d+)\.model\.(\d+)\.0\." + _WB,
     r"encoders.\1.blocks.\2.downsample.\3.conv.\4"),
    (r"encoders\.(\d+)\.level_blocks\.(\d+)\.model\.(\d+)\.1\.model\.(\d+)\.model\.([13])\." + _WB,
     lambda m: f"encoders.{m[1]}.blocks.{m[2]}.downsample.{m[3]}.residual.layers.{m[4]}.{_conv_index(m[5])}.{m[6]}"),
    # the last entry of the level block (index downs_t[j]) is the output projection
    (r"encoders\.(\d+)\.level_blocks\.(\d+)\.model\.(\d+)\." + _WB,
     r"encoders.\1.blocks.\2.proj_out.\4"),
    (r"decoders\.(\d+)\.level_blocks\.(\d+)\.model\.0\." + _WB,
     r"decoders.\1.blocks.\2.proj_in.\3"),
    # original stage i + 1 (1-based after the input conv) -> our upsample stage i
    (r"decoders\.(\d+)\.level_blocks\.(\d+)\.model\.([1-9]\d*)\.0\.model\.(\d+)\.model\.([13])\." + _WB,
     lambda m: f"decoders.{m[1]}.blocks.{m[2]}.upsample.{int(m[3]) - 1}.residual.layers.{m[4]}."
               f"{_conv_index(m[5])}.{m[6]}"),
    (r"decoders\.(\d+)\.level_blocks\.(\d+)\.model\.([1-9]\d*)\.1\." + _WB,
     lambda m: f"decoders.{m[1]}.blocks.{m[2]}.upsample.{int(m[3]) - 1}.conv.{m[4]}"),
    (r"decoders\.(\d+)\.out\." + _WB,
     r"decoders.\1.proj_out.\2"),
    (r"bottleneck\.level_blocks\.(\d+)\.k",
     r"quantizers.\1.codebook"),
]

# transformers-4.x `JukeboxModel` names (`vqvae.*` of the openai/jukebox-* Hub folders) -> JukeboxVQVAE names.
# The port flattens each (conv, resnet) pair of a stage into one list: encoder stage i -> `downsample_block.{2i}`
# (conv) and `.{2i+1}` (resnet); decoder stage i -> `upsample_block.{2i}` (resnet) and `.{2i+1}` (transposed conv).
# Prior keys (`priors.N.*`) are dropped.
_EVEN = r"(\d*[02468])"
_ODD = r"(\d*[13579])"
HF4_VQVAE_KEY_MAPPING: list[tuple[str, Replacement]] = [
    (r"vqvae\.encoders\.(\d+)\.level_blocks\.(\d+)\.downsample_block\." + _EVEN + r"\." + _WB,
     lambda m: f"encoders.{m[1]}.blocks.{m[2]}.downsample.{int(m[3]) // 2}.conv.{m[4]}"),
    (r"vqvae\.encoders\.(\d+)\.level_blocks\.(\d+)\.downsample_block\." + _ODD
     + r"\.resnet_block\.(\d+)\.conv1d_([12])\." + _WB,
     lambda m: f"encoders.{m[1]}.blocks.{m[2]}.downsample.{int(m[3]) // 2}.residual.layers.{m[4]}."
               f"{_hf4_conv_index(m[5])}.{m[6]}"),
    (r"vqvae\.encoders\.(\d+)\.level_blocks\.(\d+)\.proj_out\." + _WB,
     r"encoders.\1.blocks.\2.proj_out.\3"),
    (r"vqvae\.decoders\.(\d+)\.level_blocks\.(\d+)\.proj_in\." + _WB,
     r"decoders.\1.blocks.\2.proj_in.\3"),
    (r"vqvae\.decoders\.(\d+)\.level_blocks\.(\d+)\.upsample_block\." + _EVEN
     + r"\.resnet_block\.(\d+)\.conv1d_([12])\." + _WB,
     lambda m: f"decoders.{m[1]}.blocks.{m[2]}.upsample.{int(m[3]) // 2}.residual.layers.{m[4]}."
               f"{_hf4_conv_index(m[5])}.{m[6]}"),
    (r"vqvae\.decoders\.(\d+)\.level_blocks\.(\d+)\.upsample_block\." + _ODD + r"\." + _WB,
     lambda m: f"decoders.{m[1]}.blocks.{m[2]}.upsample.{int(m[3]) // 2}.conv.{m[4]}"),
    (r"vqvae\.decoders\.(\d+)\.out\." + _WB,
     r"decoders.\1.proj_out.\2"),
    (r"vqvae\.bottleneck\.level_blocks\.(\d+)\.codebook",
     r"quantizers.\1.codebook"),
    (r"priors\..*", None),
]
# fmt: on

__all__ = [
    "HF4_VQVAE_KEY_MAPPING",
    "KeyMappingTable",
    "Replacement",
    "VQVAE_KEY_MAPPING",
    "compile_table",
    "convert_keys",
    "map_key",
    "rename_state_dict",
]
