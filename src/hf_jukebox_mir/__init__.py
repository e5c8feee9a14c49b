"""hf-jukebox-mir: OpenAI Jukebox for music information retrieval, in the Hugging Face stack.

Importing the package registers its configs, models, feature extractor and pipeline with the
transformers Auto classes, so `AutoModel.from_pretrained(folder)` works on converted folders.

Public names, in the order data flows through them: audio -> feature extractor -> VQ-VAE -> prior ->
MIR model (pooled representations) -> probes.
"""

from __future__ import annotations

from .models.errors import JukeboxCheckpointError, JukeboxConfigError, JukeboxInputError
from .models.feature_extraction_jukebox import JukeboxFeatureExtractor
from .models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
from .models.modeling_jukebox_vqvae import JukeboxVQVAE, JukeboxVQVAEEncoderModel
from .models.configuration_jukebox_prior import JukeboxPriorConfig
from .models.modeling_jukebox_prior import JukeboxPrior, JukeboxPriorCache
from .models.configuration_jukebox_mir import JukeboxMIRConfig
from .models.modeling_jukebox_mir import JukeboxMIRModel
from .models.configuration_jukebox_chain import JukeboxChainConfig
from .models.modeling_jukebox_chain import JukeboxChainModel
from .models.generation_jukebox import sample_prior
from .models.pipeline_jukebox import JukeboxFeatureExtractionPipeline, jukebox_feature_extraction_pipeline
from .models.tokenization_jukebox import JukeboxTokenizer
from ._registration import register

__version__ = "0.1.0"

register()

__all__ = [
    "JukeboxChainConfig",
    "JukeboxChainModel",
    "sample_prior",
    "JukeboxCheckpointError",
    "JukeboxConfigError",
    "JukeboxFeatureExtractionPipeline",
    "JukeboxFeatureExtractor",
    "JukeboxInputError",
    "JukeboxTokenizer",
    "JukeboxMIRConfig",
    "JukeboxMIRModel",
    "JukeboxPrior",
    "JukeboxPriorCache",
    "JukeboxPriorConfig",
    "JukeboxVQVAE",
    "JukeboxVQVAEConfig",
    "JukeboxVQVAEEncoderModel",
    "jukebox_feature_extraction_pipeline",
    "register",
    "__version__",
]
