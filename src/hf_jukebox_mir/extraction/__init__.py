"""Extraction: audio files -> pooled Jukebox features on disk (resumable, sharded across processes)."""

from __future__ import annotations

from .engine import ExtractionResult, extract_dataset, list_inputs, make_embed_fn

__all__ = ["ExtractionResult", "extract_dataset", "list_inputs", "make_embed_fn"]
