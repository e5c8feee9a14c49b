"""hf-jukebox-mir: OpenAI Jukebox for music information retrieval, in the Hugging Face stack.

`import hf_jukebox_mir` is cheap (no torch, no transformers: the `jukebox-mir` CLI answers `--help` in a
fraction of a second). The first use of any public name below, or `hf_jukebox_mir.register()`, imports the
models and registers their configs, models and feature extractor with the transformers Auto classes, so that
`AutoModel.from_pretrained(folder)` works on converted folders without `trust_remote_code`. Registration only
adds our own `model_type`s; transformers' behaviour for every other model is unchanged.

Public names, in the order data flows through them: audio -> feature extractor -> VQ-VAE -> prior ->
MIR model (pooled representations) -> pipeline -> extraction -> probes; and the other way, conversion.
See ARCHITECTURE.md for the layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module defining it (relative to this package)
_PUBLIC: dict[str, str] = {
    "JukeboxCheckpointError": ".models.errors",
    "JukeboxConfigError": ".models.errors",
    "JukeboxInputError": ".models.errors",
    "JukeboxFeatureExtractor": ".models.feature_extraction_jukebox",
    "JukeboxVQVAEConfig": ".models.configuration_jukebox_vqvae",
    "JukeboxVQVAE": ".models.modeling_jukebox_vqvae",
    "JukeboxVQVAEEncoderModel": ".models.modeling_jukebox_vqvae",
    "JukeboxPriorConfig": ".models.configuration_jukebox_prior",
    "JukeboxPrior": ".models.modeling_jukebox_prior",
    "JukeboxPriorCache": ".models.modeling_jukebox_prior",
    "JukeboxMIRConfig": ".models.configuration_jukebox_mir",
    "JukeboxMIRModel": ".models.modeling_jukebox_mir",
    "JukeboxMIRClassifierConfig": ".models.configuration_jukebox_mir_classifier",
    "JukeboxMIRForAudioClassification": ".models.modeling_jukebox_mir_classifier",
    "JukeboxAudioClassificationPipeline": ".models.pipeline_jukebox_classification",
    "jukebox_audio_classification_pipeline": ".models.pipeline_jukebox_classification",
    "save_audio_classifier": ".probing.classifier",
    "JukeboxFeatureExtractionPipeline": ".models.pipeline_jukebox",
    "jukebox_feature_extraction_pipeline": ".models.pipeline_jukebox",
    "JukeboxProbeConfig": ".models.configuration_jukebox_probe",
    "JukeboxProbeForSequenceClassification": ".models.modeling_jukebox_probe",
    "JukeboxChainConfig": ".models.configuration_jukebox_chain",
    "JukeboxChainModel": ".models.modeling_jukebox_chain",
    "JukeboxTokenizer": ".models.tokenization_jukebox",
    "sample_prior": ".models.generation_jukebox",
    "extract_dataset": ".extraction",
    "make_embed_fn": ".extraction",
}

__all__ = [
    "JukeboxCheckpointError",
    "JukeboxConfigError",
    "JukeboxInputError",
    "JukeboxFeatureExtractor",
    "JukeboxVQVAEConfig",
    "JukeboxVQVAE",
    "JukeboxVQVAEEncoderModel",
    "JukeboxPriorConfig",
    "JukeboxPrior",
    "JukeboxPriorCache",
    "JukeboxMIRConfig",
    "JukeboxMIRModel",
    "JukeboxMIRClassifierConfig",
    "JukeboxMIRForAudioClassification",
    "JukeboxAudioClassificationPipeline",
    "jukebox_audio_classification_pipeline",
    "save_audio_classifier",
    "JukeboxFeatureExtractionPipeline",
    "jukebox_feature_extraction_pipeline",
    "JukeboxProbeConfig",
    "JukeboxProbeForSequenceClassification",
    "JukeboxChainConfig",
    "JukeboxChainModel",
    "JukeboxTokenizer",
    "sample_prior",
    "extract_dataset",
    "make_embed_fn",
    "register",
    "__version__",
]


def register() -> None:
    """Register our configs, models and feature extractor with the transformers Auto classes (idempotent)."""
    from ._registration import register as _register

    _register()


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    register()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # the names above, for type checkers and IDEs
    from .extraction import extract_dataset, make_embed_fn
    from .models.configuration_jukebox_chain import JukeboxChainConfig
    from .models.configuration_jukebox_mir import JukeboxMIRConfig
    from .models.configuration_jukebox_mir_classifier import JukeboxMIRClassifierConfig
    from .models.configuration_jukebox_prior import JukeboxPriorConfig
    from .models.configuration_jukebox_probe import JukeboxProbeConfig
    from .models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
    from .models.errors import JukeboxCheckpointError, JukeboxConfigError, JukeboxInputError
    from .models.feature_extraction_jukebox import JukeboxFeatureExtractor
    from .models.generation_jukebox import sample_prior
    from .models.modeling_jukebox_chain import JukeboxChainModel
    from .models.modeling_jukebox_mir import JukeboxMIRModel
    from .models.modeling_jukebox_mir_classifier import JukeboxMIRForAudioClassification
    from .models.modeling_jukebox_prior import JukeboxPrior, JukeboxPriorCache
    from .models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
    from .models.modeling_jukebox_vqvae import JukeboxVQVAE, JukeboxVQVAEEncoderModel
    from .models.pipeline_jukebox import JukeboxFeatureExtractionPipeline, jukebox_feature_extraction_pipeline
    from .models.pipeline_jukebox_classification import (
        JukeboxAudioClassificationPipeline,
        jukebox_audio_classification_pipeline,
    )
    from .models.tokenization_jukebox import JukeboxTokenizer
    from .probing.classifier import save_audio_classifier
