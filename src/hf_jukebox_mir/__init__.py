"""hf-jukebox-mir: OpenAI Jukebox for music information retrieval, in the Hugging Face stack.

Importing the package registers its configs, models, feature extractor and pipeline with the
transformers Auto classes, so `AutoModel.from_pretrained(folder)` works on converted folders.
"""

from __future__ import annotations

from .errors import JukeboxCheckpointError, JukeboxConfigError, JukeboxInputError
from ._registration import register

__version__ = "0.1.0"

register()

__all__ = [
    "JukeboxCheckpointError",
    "JukeboxConfigError",
    "JukeboxInputError",
    "register",
    "__version__",
]
