"""Jukebox audio classifier: audio -> Jukebox MIR hidden states -> pooled layer(s) -> probe head -> logits.

[`JukeboxMIRForAudioClassification`] is what `jukebox-mir probe --model ...` writes next to its results: the
MIR model (only the blocks up to the probed layer), the trained head with its feature standardisation, the
feature extractor (with the windowing used in training) and the audio-classification pipeline, in one folder
that loads with `AutoModelForAudioClassification` and runs in `pipeline("audio-classification")`.

Its numbers equal the training-time path: per window, the probed layer is averaged over the window's real
frames; the windows of one input (`window_index` from the feature extractor) are averaged with weights
proportional to their real frames; the head maps that vector to logits.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_jukebox_mir_classifier import JukeboxMIRClassifierConfig
from .configuration_jukebox_probe import JukeboxProbeConfig
from .errors import JukeboxInputError
from .modeling_jukebox_mir import JukeboxMIRModel, pool_float32
from .modeling_jukebox_probe import JukeboxProbeHead, JukeboxProbePreTrainedModel


def head_config(config: JukeboxMIRClassifierConfig) -> JukeboxProbeConfig:
    """The probe-head configuration described by a classifier config."""
    return JukeboxProbeConfig(
        input_dim=config.hidden_size,
        hidden_size=config.probe_hidden_size,
        dropout=config.probe_dropout,
        standardize=config.probe_standardize,
        problem_type=config.problem_type,
        id2label=dict(config.id2label),
    )


class JukeboxMIRForAudioClassification(JukeboxMIRModel):
    r"""
    A Jukebox MIR model with a probe head: audio windows in, one row of logits per input out.

    Example:

    ```python
    >>> from transformers import AutoModelForAudioClassification, pipeline
    >>> classifier = pipeline("audio-classification", model="runs/gtzan/model", trust_remote_code=True)
    >>> classifier("song.wav")  # doctest: +SKIP
    [{'score': 0.91, 'label': 'jazz'}, ...]
    ```
    """

    config_class = JukeboxMIRClassifierConfig
    config: JukeboxMIRClassifierConfig

    def __init__(self, config: JukeboxMIRClassifierConfig):
        super().__init__(config)
        self.head = JukeboxProbeHead(head_config(config))
        if len(config.probe_layers) > 1:
            weights = config.probe_layer_weights or [0.0] * len(config.probe_layers)
            self.layer_weights = nn.Parameter(torch.tensor(weights, dtype=torch.float32))
        else:
            self.layer_weights = None
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, JukeboxProbeHead):
            JukeboxProbePreTrainedModel._init_weights(self, module)
            return
        if module is self and self.layer_weights is not None:
            weights = self.config.probe_layer_weights or [0.0] * len(self.config.probe_layers)
            init.copy_(self.layer_weights, torch.tensor(weights, dtype=self.layer_weights.dtype))
            return
        super()._init_weights(module)

    def pooled_features(self, input_values, attention_mask=None, window_index=None) -> torch.Tensor:
        """`(inputs, hidden_size)` float32: the features the head reads (one row per input, or per window)."""
        config = self.config
        layers = list(config.probe_layers)
        only_last = layers == [config.num_hidden_layers]
        out = JukeboxMIRModel.forward(
            self, input_values, attention_mask=attention_mask, output_hidden_states=not only_last, return_dict=True
        )
        states = {config.num_hidden_layers: out.last_hidden_state} if only_last else dict(enumerate(out.hidden_states))
        pooled = torch.stack([pool_float32(states[i], out.frame_mask, "mean") for i in layers], 1)  # (W, L, D)
        if self.layer_weights is not None:
            weights = torch.softmax(self.layer_weights.float(), 0).to(pooled.device)
            features = (pooled * weights[None, :, None]).sum(1)  # (W, D)
        else:
            features = pooled[:, 0]
        if window_index is None:
            return features
        index = torch.as_tensor(window_index, device=features.device).long().reshape(-1)
        if index.shape[0] != features.shape[0]:
            raise JukeboxInputError(
                f"window_index has {index.shape[0]} entries for {features.shape[0]} windows; pass the feature "
                "extractor's window_index unchanged."
            )
        frames = out.frame_mask.sum(-1).to(torch.float64)  # (W,) real frames per window
        count = int(index.max()) + 1
        sums = torch.zeros(count, features.shape[1], dtype=torch.float64, device=features.device)
        sums.index_add_(0, index, features.double() * frames[:, None])
        totals = torch.zeros(count, dtype=torch.float64, device=features.device).index_add_(0, index, frames)
        return (sums / totals.clamp(min=1)[:, None]).float()

    def forward(  # type: ignore[override]
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        window_index: torch.Tensor | None = None,
        window_offset: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(windows, window_length)`): windows from the feature
                extractor (`JukeboxFeatureExtractor`), 44.1 kHz mono.
            attention_mask (`torch.LongTensor`, *optional*): 1 on real samples, 0 on padding.
            window_index (`torch.LongTensor` of shape `(windows,)`, *optional*): the input each window belongs to
                (as returned by the feature extractor); windows of one input are averaged (frame-weighted).
                Without it every window is classified on its own.
            window_offset: accepted (and unused) so that `model(**feature_extractor(...))` works.
            labels (`torch.Tensor`, *optional*): as for `JukeboxProbeForSequenceClassification`.
        """
        features = self.pooled_features(input_values, attention_mask, window_index)
        logits = self.head(features.to(self.head.classifier.weight.dtype))
        loss = JukeboxProbePreTrainedModel.compute_loss(self, logits, labels) if labels is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)


JukeboxMIRForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["JukeboxMIRForAudioClassification", "head_config"]
