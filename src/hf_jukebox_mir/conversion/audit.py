"""`conversion_audit.json`: what a converted folder was made from and how, as one dataclass.

Written by every conversion (`conversion/streaming.py`) and read back by the same code (`ConversionAudit.read`),
so the card, the CLI summary and `verify` see one schema. Version 1 of the file is this dataclass as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..models.errors import JukeboxCheckpointError

AUDIT_FILE = "conversion_audit.json"
SCHEMA_VERSION = 1


@dataclass
class SourceFile:
    """One input file of a conversion."""

    file: str
    sha256: str
    bytes: int
    role: str | None = None  # "vqvae", "prior", "prior_level_N", "shard", "config"


@dataclass
class WrittenFile:
    """One file of the converted folder."""

    sha256: str
    bytes: int


@dataclass
class ConversionAudit:
    """Provenance of a converted folder.

    Attributes:
        model_class: the class the folder loads as (e.g. `JukeboxMIRModel`).
        source_format: `"openai"` (original `*.pth.tar`), `"transformers-4.x"` (old Hub folders) or
            `"random-init"` (demo models).
        sources: the input files with their SHA-256.
        key_map: source key -> converted key (`None`: deliberately dropped, e.g. blocks above `num_hidden_layers`).
        transposed: converted keys whose tensor was transposed (Conv1D (in, out) -> Linear (out, in)).
        dtypes: converted key prefix -> stored dtype (e.g. `{"prior": "bfloat16", "vqvae": "float32"}`).
        num_hidden_layers / checkpoint_depth: blocks kept / blocks in the source (priors and MIR models).
        output_check: the fixed-input check run on the written folder (output summaries, how it was loaded).
        files: every file of the folder (except this one) with SHA-256 and size.
        versions: package, torch and transformers versions that wrote the folder.
        details: anything specific to one conversion kind (e.g. `hf4_prior_index`, a demo's seed).
    """

    model_class: str
    source_format: str
    sources: list[SourceFile] = field(default_factory=list)
    key_map: dict[str, str | None] = field(default_factory=dict)
    transposed: list[str] = field(default_factory=list)
    dtypes: dict[str, str] = field(default_factory=dict)
    num_hidden_layers: int | None = None
    checkpoint_depth: int | None = None
    output_check: dict[str, Any] = field(default_factory=dict)
    files: dict[str, WrittenFile] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = AUDIT_FILE) -> ConversionAudit:
        """Parse version 1 of the file; any other layout is refused with a message naming what differs."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
            raise JukeboxCheckpointError(
                f"{where} is not a version-{SCHEMA_VERSION} conversion audit (schema_version: {found!r}). It was "
                "written by an older hf-jukebox-mir; convert the folder again to get a current audit."
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("model_class", "source_format") if n not in data)
        if unknown or missing:
            raise JukeboxCheckpointError(
                f"{where}: unexpected field(s) {unknown} / missing field(s) {missing} in the conversion audit."
            )
        values = dict(data)
        try:
            values["sources"] = [SourceFile(**s) for s in data.get("sources", [])]
            values["files"] = {name: WrittenFile(**info) for name, info in data.get("files", {}).items()}
        except TypeError as err:
            raise JukeboxCheckpointError(f"{where}: malformed source or file entry ({err}).") from None
        return cls(**values)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> ConversionAudit:
        path = Path(folder) / AUDIT_FILE
        if not path.is_file():
            raise JukeboxCheckpointError(f"{folder} has no {AUDIT_FILE}; it was not made by `jukebox-mir convert`.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise JukeboxCheckpointError(f"{path} is not valid JSON: {err}.") from None
        return cls.from_dict(data, where=str(path))

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / AUDIT_FILE
        path.write_text(self.to_json())
        return path


@dataclass
class VerifyReport:
    """What `verify_folder` found: `problems` (a file missing, resized or changed: the folder is not what was
    converted) and `notes` (files the audit does not list, e.g. a README.md written later by `jukebox-mir card`)."""

    folder: str
    checked: int
    problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_folder(folder: str | os.PathLike) -> VerifyReport:
    """Recompute the SHA-256 and size of every file listed in the folder's `conversion_audit.json`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JukeboxCheckpointError(f"'{folder}' is not a folder; pass a folder made by `jukebox-mir convert`.")
    audit = ConversionAudit.read(folder)
    if not audit.files:
        raise JukeboxCheckpointError(
            f"{folder / AUDIT_FILE} lists no files (written before checksums were recorded); nothing can be verified. "
            "Convert the folder again to get them."
        )
    problems: list[str] = []
    for name, expected in sorted(audit.files.items()):
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{name}: the audit names a file outside the folder")
            continue
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != expected.bytes:
            problems.append(f"{name}: {size} bytes, the audit says {expected.bytes}")
            continue
        digest = _sha256(path)
        if digest != expected.sha256:
            problems.append(f"{name}: SHA-256 {digest[:16]}..., the audit says {expected.sha256[:16]}... (changed)")
    listed = set(audit.files) | {AUDIT_FILE}
    notes = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.relative_to(folder).as_posix() not in listed
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return VerifyReport(folder=str(folder), checked=len(audit.files), problems=problems, notes=notes)


def check_folder(folder: str | os.PathLike) -> None:
    """`verify_folder`, raising `JukeboxCheckpointError` (one paragraph, with the fix) on any problem."""
    report = verify_folder(folder)
    if report.problems:
        raise JukeboxCheckpointError(
            f"'{folder}' does not match its conversion_audit.json: {'; '.join(report.problems[:5])}"
            f"{f' and {len(report.problems) - 5} more' if len(report.problems) > 5 else ''}. The files were changed "
            "or damaged after conversion (a bad copy or download, or an edit); copy or convert the folder again."
        )


__all__ = [
    "AUDIT_FILE",
    "SCHEMA_VERSION",
    "ConversionAudit",
    "SourceFile",
    "VerifyReport",
    "WrittenFile",
    "check_folder",
    "verify_folder",
]
