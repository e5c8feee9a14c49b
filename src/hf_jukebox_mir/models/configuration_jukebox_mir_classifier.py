"""Configuration of the Jukebox audio classifier: a Jukebox MIR model and a probe head in ONE folder.

The MIR part is [`JukeboxMIRConfig`] (VQ-VAE top-level encoder + the prior blocks up to the deepest probed
layer); the probe part records which layer(s) the head reads, how they are pooled and combined, and the
head's shape. The head's weights and its feature standardisation sit in the same `model.safetensors`.
"""

from __future__ import annotations

from .configuration_jukebox_mir import JukeboxMIRConfig
from .errors import JukeboxConfigError

_PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


class JukeboxMIRClassifierConfig(JukeboxMIRConfig):
    r"""Configuration of [`JukeboxMIRForAudioClassification`].

    Args (besides those of [`JukeboxMIRConfig`] and the usual `num_labels` / `id2label` / `problem_type`):
        probe_layers (`list[int]`, defaults to the last built block): 1-indexed prior blocks the head reads
            (`[36]` for JukeMIR). With several layers the head reads their softmax-weighted sum.
        probe_layer_weights (`list[float]`, *optional*): one learned logit per probed layer (softmax-normalised
            in `forward`); `None` with a single layer.
        probe_hidden_size (`int`, *optional*): width of the head's hidden layer (`None`: linear probe).
        probe_dropout (`float`, defaults to 0.5): the head's dropout (inactive in eval mode).
        probe_standardize (`bool`, defaults to True): standardise features with the stored training statistics.
        probe_pooling (`str`, defaults to `"mean"`): time pooling of each window; the windows of one input are
            averaged with weights proportional to their real frames (as the extraction pipeline does).
    """

    model_type = "jukebox_mir_classifier"

    def __init__(
        self,
        probe_layers: list[int] | None = None,
        probe_layer_weights: list[float] | None = None,
        probe_hidden_size: int | None = None,
        probe_dropout: float = 0.5,
        probe_standardize: bool = True,
        probe_pooling: str = "mean",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.problem_type is None:
            self.problem_type = "single_label_classification"
        if self.problem_type not in _PROBLEM_TYPES:
            raise JukeboxConfigError(f"problem_type must be one of {_PROBLEM_TYPES}, got {self.problem_type!r}.")
        layers = [self.num_hidden_layers] if probe_layers is None else [int(i) for i in probe_layers]
        if not layers or any(not 0 <= i <= self.num_hidden_layers for i in layers):
            raise JukeboxConfigError(
                f"probe_layers={layers} must be blocks in 0..{self.num_hidden_layers} (the blocks this folder builds)."
            )
        if probe_layer_weights is not None and len(probe_layer_weights) != len(layers):
            raise JukeboxConfigError(
                f"probe_layer_weights has {len(probe_layer_weights)} values for {len(layers)} probed layers."
            )
        if probe_pooling != "mean":
            raise JukeboxConfigError(f"probe_pooling={probe_pooling!r}: only 'mean' is supported.")
        self.probe_layers = layers
        self.probe_layer_weights = None if probe_layer_weights is None else [float(w) for w in probe_layer_weights]
        self.probe_hidden_size = probe_hidden_size
        self.probe_dropout = float(probe_dropout)
        self.probe_standardize = bool(probe_standardize)
        self.probe_pooling = probe_pooling


JukeboxMIRClassifierConfig.register_for_auto_class()

__all__ = ["JukeboxMIRClassifierConfig"]
