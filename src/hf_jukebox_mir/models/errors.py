"""Error types of hf_jukebox_mir.

Every error a user can trigger with bad input subclasses :class:`ValueError`, so Hugging Face style
callers that catch ``ValueError`` keep working. Messages say what was expected, what came, and how to
fix it; tests pin them.
"""

from __future__ import annotations


class JukeboxInputError(ValueError):
    """Bad audio, codes, metadata or options given to a model, feature extractor or pipeline."""


class JukeboxCheckpointError(ValueError):
    """A checkpoint file or folder that cannot be loaded or converted safely."""


class JukeboxConfigError(ValueError):
    """An invalid configuration value."""


class JukeboxRunError(ValueError):
    """A run that cannot go on for a reason outside its inputs: its output folder is used by another run, the disk
    is full, it was interrupted. The message names the cause and what to do (usually: fix it and run again)."""


__all__ = ["JukeboxInputError", "JukeboxCheckpointError", "JukeboxConfigError", "JukeboxRunError"]
