"""`pipeline("audio-classification")` for Jukebox audio classifiers (`JukeboxMIRForAudioClassification`).

transformers' own audio-classification pipeline reads files with the `ffmpeg` program and resamples with
torchaudio; this one hands every input to the folder's feature extractor instead (soundfile + soxr: paths,
bytes, arrays with `sampling_rate=`, `datasets` audio dicts, decoders), which also windows long audio exactly
as during training. The model averages the windows of one input before the head.

```python
>>> from transformers import pipeline
>>> classifier = pipeline("audio-classification", model="runs/gtzan/model", trust_remote_code=True)
>>> classifier("song.wav", top_k=3)  # doctest: +SKIP
```

Flat, Hub-facing module: copied beside the weights; imports only installed packages and sibling modules.
"""

from __future__ import annotations

from transformers.pipelines.audio_classification import AudioClassificationPipeline

#: The `custom_pipelines` entry written into a classifier folder's `config.json`.
CLASSIFICATION_PIPELINE_ENTRY = {
    "audio-classification": {
        "impl": "pipeline_jukebox_classification.JukeboxAudioClassificationPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "type": "audio",
    }
}


class JukeboxAudioClassificationPipeline(AudioClassificationPipeline):
    """Audio classification with a Jukebox classifier folder; options `top_k`, `function_to_apply`,
    `sampling_rate` (for raw arrays)."""

    def check_model_type(self, supported_models):  # registered in-process only (or remote code): nothing to check
        return

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, sampling_rate=None, **kwargs):
        _, forward_params, postprocess_params = super()._sanitize_parameters(
            top_k=top_k, function_to_apply=function_to_apply, **kwargs
        )
        preprocess_params = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, sampling_rate=None):
        processed = self.feature_extractor(inputs, sampling_rate=sampling_rate, return_tensors="pt")
        if self.dtype is not None:
            processed = processed.to(dtype=self.dtype)
        return processed

    def _forward(self, model_inputs):
        return self.model(**model_inputs)


def jukebox_audio_classification_pipeline(model, **kwargs) -> JukeboxAudioClassificationPipeline:
    """`pipeline("audio-classification", model=model, pipeline_class=JukeboxAudioClassificationPipeline, **kwargs)`:
    the package's route (no remote code runs; the classes must be registered, as `import hf_jukebox_mir` does
    on first use). transformers refuses a folder's own pipeline without `trust_remote_code=True` or this."""
    from transformers import pipeline

    return pipeline("audio-classification", model=model, pipeline_class=JukeboxAudioClassificationPipeline, **kwargs)


__all__ = [
    "CLASSIFICATION_PIPELINE_ENTRY",
    "JukeboxAudioClassificationPipeline",
    "jukebox_audio_classification_pipeline",
]
