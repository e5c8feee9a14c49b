"""Registration of our configs, models and feature extractor with the transformers Auto API.

Only our own `model_type`s are added: nothing of transformers' behaviour for other models changes (no task is
re-routed; the pipeline is chosen with `pipeline_class=` or `trust_remote_code=True`, see
`models/pipeline_jukebox.py`).

`register()` is idempotent and called once by `hf_jukebox_mir/__init__.py`. Each entry names a
module of this package (the flat, Hub-facing modules) and the classes to register from it.
"""

from __future__ import annotations

import importlib
import threading

_LOCK = threading.Lock()
_DONE = False

# (module, config class, {auto class name: model class name})
_MODELS: list[tuple[str, str, dict[str, str]]] = [
    (
        "configuration_jukebox_probe",
        "JukeboxProbeConfig",
        {
            "AutoModel": "modeling_jukebox_probe:JukeboxProbeForSequenceClassification",
            "AutoModelForAudioClassification": "modeling_jukebox_probe:JukeboxProbeForSequenceClassification",
        },
    ),
    ("configuration_jukebox_prior", "JukeboxPriorConfig", {"AutoModel": "modeling_jukebox_prior:JukeboxPrior"}),
    ("configuration_jukebox_chain", "JukeboxChainConfig", {"AutoModel": "modeling_jukebox_chain:JukeboxChainModel"}),
    (
        "configuration_jukebox_mir",
        "JukeboxMIRConfig",
        {
            "AutoModel": "modeling_jukebox_mir:JukeboxMIRModel",
            "AutoFeatureExtractor": "feature_extraction_jukebox:JukeboxFeatureExtractor",
        },
    ),
    ("configuration_jukebox_vqvae", "JukeboxVQVAEConfig", {"AutoModel": "modeling_jukebox_vqvae:JukeboxVQVAE"}),
]


def register() -> None:
    """Register every model family with `AutoConfig`/`AutoModel`/... (safe to call many times)."""
    global _DONE
    with _LOCK:
        if _DONE:
            return
        import transformers

        for module_name, config_name, models in _MODELS:
            module = importlib.import_module(f"hf_jukebox_mir.models.{module_name}")
            config_cls = getattr(module, config_name)
            transformers.AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
            for auto_name, model_name in models.items():
                auto_cls = getattr(transformers, auto_name)
                model_module = importlib.import_module(f"hf_jukebox_mir.models.{model_name.split(':')[0]}")
                model_cls = getattr(model_module, model_name.split(":")[1])
                auto_cls.register(config_cls, model_cls, exist_ok=True)
        _DONE = True

