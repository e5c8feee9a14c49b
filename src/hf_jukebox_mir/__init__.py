"""hf-jukebox-mir: OpenAI Jukebox for music information retrieval, in the Hugging Face stack.

Importing the package registers its configs, models, feature extractor and pipeline with the
transformers Auto classes, so `AutoModel.from_pretrained(folder)` works on converted folders.

Public names, in the order data flows through them: audio -> feature extractor -> VQ-VAE -> prior ->
MIR model (pooled representations) -> probes.
"""

from __future__ import annotations

from .errors import JukeboxCheckpointError, JukeboxConfigError, JukeboxInputError
from .feature_extraction_jukebox import JukeboxFeatureExtractor
from .configuration_jukebox_vqvae import JukeboxVQVAEConfig
from .modeling_jukebox_vqvae import JukeboxVQVAE, JukeboxVQVAEEncoderModel
from .configuration_jukebox_prior import JukeboxPriorConfig
from .modeling_jukebox_prior import JukeboxPrior, JukeboxPriorCache
from .configuration_jukebox_mir import JukeboxMIRConfig
from .modeling_jukebox_mir import JukeboxMIRModel
from .configuration_jukebox_chain import JukeboxChainConfig
from .modeling_jukebox_chain import JukeboxChainModel
from .generation_jukebox import sample_prior
from .labels import JukeboxLabeller
from ._registration import register

__version__ = "0.1.0"

register()

__all__ = [
    "JukeboxChainConfig",
    "JukeboxChainModel",
    "sample_prior",
    "JukeboxCheckpointError",
    "JukeboxConfigError",
    "JukeboxFeatureExtractor",
    "JukeboxInputError",
    "JukeboxLabeller",
    "JukeboxMIRConfig",
    "JukeboxMIRModel",
    "JukeboxPrior",
    "JukeboxPriorCache",
    "JukeboxPriorConfig",
    "JukeboxVQVAE",
    "JukeboxVQVAEConfig",
    "JukeboxVQVAEEncoderModel",
    "register",
    "__version__",
]
