"""Registration of our configs, models and feature extractor with the transformers Auto API.

Only our own `model_type`s are added: nothing of transformers' behaviour for other models changes (no task is
re-routed; the pipeline is chosen with `pipeline_class=` or `trust_remote_code=True`, see
`models/pipeline_jukebox.py`). `register()` is idempotent; `hf_jukebox_mir.register()` and the first use of a
public name of the package call it.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_DONE = False


def register() -> None:
    """Register every model family with `AutoConfig`/`AutoModel`/... (safe to call many times)."""
    global _DONE
    with _LOCK:
        if _DONE:
            return
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

        from .models.configuration_jukebox_chain import JukeboxChainConfig
        from .models.configuration_jukebox_mir import JukeboxMIRConfig
        from .models.configuration_jukebox_mir_classifier import JukeboxMIRClassifierConfig
        from .models.configuration_jukebox_prior import JukeboxPriorConfig
        from .models.configuration_jukebox_probe import JukeboxProbeConfig
        from .models.configuration_jukebox_vqvae import JukeboxVQVAEConfig
        from .models.feature_extraction_jukebox import JukeboxFeatureExtractor
        from .models.modeling_jukebox_chain import JukeboxChainModel
        from .models.modeling_jukebox_mir import JukeboxMIRModel
        from .models.modeling_jukebox_mir_classifier import JukeboxMIRForAudioClassification
        from .models.modeling_jukebox_prior import JukeboxPrior
        from .models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification
        from .models.modeling_jukebox_vqvae import JukeboxVQVAE

        models: list[tuple[Any, Any, Any]] = [
            (JukeboxProbeConfig, AutoModel, JukeboxProbeForSequenceClassification),
            (JukeboxProbeConfig, AutoModelForAudioClassification, JukeboxProbeForSequenceClassification),
            (JukeboxPriorConfig, AutoModel, JukeboxPrior),
            (JukeboxChainConfig, AutoModel, JukeboxChainModel),
            (JukeboxMIRConfig, AutoModel, JukeboxMIRModel),
            (JukeboxMIRConfig, AutoFeatureExtractor, JukeboxFeatureExtractor),
            (JukeboxMIRClassifierConfig, AutoModelForAudioClassification, JukeboxMIRForAudioClassification),
            (JukeboxMIRClassifierConfig, AutoFeatureExtractor, JukeboxFeatureExtractor),
            (JukeboxVQVAEConfig, AutoModel, JukeboxVQVAE),
        ]
        for config_cls, auto_cls, model_cls in models:
            AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
            auto_cls.register(config_cls, model_cls, exist_ok=True)
        _DONE = True
