"""Extraction: audio files -> pooled Jukebox features on disk (resumable, sharded across processes).

The engine (and with it transformers' pipelines) is imported on first use of a name below, so that
`extraction.threads` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import ExtractionResult, extract_dataset, list_inputs, make_embed_fn

__all__ = ["ExtractionResult", "extract_dataset", "list_inputs", "make_embed_fn"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".engine", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
