"""Probing heads on Jukebox (or any) clip embeddings, as `PreTrainedModel`s that `Trainer` can train.

* [`JukeboxProbeForSequenceClassification`] takes pre-computed clip embeddings `features` of shape
  `(batch_size, input_dim)`: the JukeMIR setting (embeddings extracted once and cached).
* [`JukeboxProbeForAudioClassification`] wraps any frozen (or trainable) `nn.Module` backbone plus a
  callable that turns its output into pooled clip features, and puts the same head on top: the end-to-end
  variant on audio.

Both share [`JukeboxProbeHead`] (standardise -> dropout -> [Linear -> ReLU -> dropout] -> Linear), so a
head trained on cached features loads into the end-to-end model and back (the state-dict keys `head.*`
are identical). The loss follows `config.problem_type` as in transformers' sequence classifiers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_jukebox_probe import JukeboxProbeConfig
from .errors import JukeboxConfigError, JukeboxInputError


class JukeboxProbeHead(nn.Module):
    """Standardisation buffers, input dropout, optional hidden layer and the output layer.

    `feature_mean` / `feature_std` are persistent buffers (saved with the weights): identity (0 / 1) until
    [`JukeboxProbeForSequenceClassification.fit_standardization`] sets them.
    """

    def __init__(self, config: JukeboxProbeConfig):
        super().__init__()
        self.standardize = config.standardize
        self.register_buffer("feature_mean", torch.zeros(config.input_dim), persistent=True)
        self.register_buffer("feature_std", torch.ones(config.input_dim), persistent=True)
        self.input_dropout = nn.Dropout(config.dropout)
        width = config.input_dim
        if config.hidden_size is not None:
            self.dense = nn.Linear(config.input_dim, config.hidden_size)
            self.activation = nn.ReLU()
            self.hidden_dropout = nn.Dropout(config.dropout)
            width = config.hidden_size
        else:
            self.dense = None
        self.classifier = nn.Linear(width, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            features = (features - self.feature_mean) / self.feature_std
        hidden = self.input_dropout(features)  # (B, input_dim)
        if self.dense is not None:
            hidden = self.hidden_dropout(self.activation(self.dense(hidden)))  # (B, hidden_size)
        return self.classifier(hidden)  # (B, num_labels)


class JukeboxProbePreTrainedModel(PreTrainedModel):
    """Weight initialisation and loss dispatch shared by the probe models."""

    config_class = JukeboxProbeConfig
    config: JukeboxProbeConfig
    base_model_prefix = "jukebox_probe"
    input_modalities = "audio"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head (and the layer weights) are ours to initialise; a user's backbone keeps its weights.
        if module is self and getattr(self, "layer_weights", None) is not None:
            init.zeros_(self.layer_weights)  # uniform softmax weights to start
            return
        if not isinstance(module, JukeboxProbeHead):
            return
        init.zeros_(module.feature_mean)
        init.ones_(module.feature_std)
        for linear in (module.dense, module.classifier):
            if linear is None:
                continue
            # PyTorch's default `nn.Linear` initialisation, as in the JukeMIR probe.
            init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(linear.in_features)
            init.uniform_(linear.bias, -bound, bound)

    # ------------------------------------------------------------------ helpers

    @property
    def layer_weight_probabilities(self) -> list[float] | None:
        """The softmax of the learned layer weights (one per layer), or None for a single-layer probe."""
        weights = getattr(self, "layer_weights", None)
        return None if weights is None else torch.softmax(weights.detach().float(), 0).tolist()

    def _combine_layers(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, num_layers, D)` -> `(B, D)`: the softmax-weighted sum of the layers."""
        layers = self.config.num_layers
        if features.dim() != 3 or features.shape[1] != layers or features.shape[-1] != self.config.input_dim:
            raise JukeboxInputError(
                f"{type(self).__name__}: this probe reads a weighted sum of {layers} layers; expected features of "
                f"shape (batch_size, {layers}, {self.config.input_dim}), got {tuple(features.shape)}."
            )
        weights = torch.softmax(self.layer_weights.float(), 0).to(features.dtype)
        return (features * weights[None, :, None]).sum(1)

    def _check_features(self, features: Any) -> torch.Tensor:
        if isinstance(features, torch.Tensor) and getattr(self, "layer_weights", None) is not None:
            return self._combine_layers(features.to(self.head.classifier.weight.dtype))
        if not isinstance(features, torch.Tensor):
            raise JukeboxInputError(
                f"{type(self).__name__}: `features` must be a float tensor of shape (batch_size, "
                f"{self.config.input_dim}), got {type(features).__name__}."
            )
        if features.dim() == 3 and features.shape[1] == 1:
            features = features[:, 0]  # (B, 1, D) -> (B, D): a single stored layer
        if features.dim() != 2 or features.shape[-1] != self.config.input_dim:
            raise JukeboxInputError(
                f"{type(self).__name__}: expected features of shape (batch_size, {self.config.input_dim}), got "
                f"{tuple(features.shape)}. Select one layer of multi-layer embeddings first, or build the probe "
                f"with input_dim={features.shape[-1]}."
            )
        return features.to(self.head.classifier.weight.dtype)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of `logits` (B, num_labels) against `labels`, chosen by `config.problem_type`."""
        problem_type = self.config.problem_type
        num_labels = self.config.num_labels
        if problem_type == "single_label_classification":
            if labels.dim() == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.dim() != 1 or labels.dtype.is_floating_point:
                raise JukeboxInputError(
                    "single_label_classification expects integer class ids of shape (batch_size,), got "
                    f"{labels.dtype} of shape {tuple(labels.shape)}."
                )
            return nn.functional.cross_entropy(logits, labels.long())
        if problem_type == "multi_label_classification":
            if labels.shape != logits.shape:
                raise JukeboxInputError(
                    f"multi_label_classification expects multi-hot labels of shape (batch_size, {num_labels}), "
                    f"got {tuple(labels.shape)}."
                )
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        # regression
        if num_labels == 1 and labels.dim() == 1:
            labels = labels[:, None]  # (B,) -> (B, 1)
        if labels.shape != logits.shape:
            raise JukeboxInputError(
                f"regression expects float targets of shape (batch_size, {num_labels}), got {tuple(labels.shape)}."
            )
        return nn.functional.mse_loss(logits, labels.to(logits.dtype))

    @torch.no_grad()
    def fit_standardization(self, features: np.ndarray | torch.Tensor, *, enable: bool = True) -> None:
        """Set `feature_mean` / `feature_std` from training features of shape `(num_examples, input_dim)`.

        Uses the population standard deviation (as scikit-learn's `StandardScaler`); constant features get a
        standard deviation of 1. With `enable=False` the buffers are reset to identity and
        `config.standardize` is switched off.
        """
        head = self.head
        if not enable:
            head.feature_mean.zero_()
            head.feature_std.fill_(1.0)
            head.standardize = False
            self.config.standardize = False
            return
        x = torch.as_tensor(
            np.asarray(features, dtype=np.float64) if not isinstance(features, torch.Tensor) else features.double()
        )
        if x.dim() == 3 and self.config.num_layers > 1:
            x = x.mean(1)  # weighted-sum probes: statistics of the uniform layer average (the starting weights)
        if x.dim() != 2 or x.shape[1] != self.config.input_dim:
            raise JukeboxInputError(
                f"fit_standardization expects features of shape (num_examples, {self.config.input_dim}), got "
                f"{tuple(x.shape)}."
            )
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        std[std == 0] = 1.0
        head.feature_mean.copy_(mean.to(head.feature_mean.dtype))
        head.feature_std.copy_(std.to(head.feature_std.dtype))
        head.standardize = True
        self.config.standardize = True


class JukeboxProbeForSequenceClassification(JukeboxProbePreTrainedModel):
    r"""
    Probe on pre-computed clip embeddings: standardise -> dropout -> linear (or one-hidden-layer MLP).

    Example:

    ```python
    >>> import torch
    >>> from hf_jukebox_mir.models.configuration_jukebox_probe import JukeboxProbeConfig
    >>> from hf_jukebox_mir.models.modeling_jukebox_probe import JukeboxProbeForSequenceClassification

    >>> config = JukeboxProbeConfig(input_dim=72, num_labels=24)
    >>> probe = JukeboxProbeForSequenceClassification(config)
    >>> out = probe(features=torch.randn(4, 72), labels=torch.tensor([0, 5, 7, 23]))
    >>> out.logits.shape
    torch.Size([4, 24])
    ```
    """

    main_input_name = "features"
    # A head saved from the end-to-end model carries the backbone's weights too: ignore them here.
    _keys_to_ignore_on_load_unexpected = [r"^backbone\."]

    def __init__(self, config: JukeboxProbeConfig):
        super().__init__(config)
        self.head = JukeboxProbeHead(config)
        num_layers = getattr(config, "num_layers", 1) or 1
        self.layer_weights = nn.Parameter(torch.zeros(num_layers)) if num_layers > 1 else None
        self.post_init()

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            features (`torch.FloatTensor` of shape `(batch_size, input_dim)`):
                Clip embeddings (raw: standardisation is applied inside when `config.standardize`).
            labels (`torch.Tensor`, *optional*):
                `(batch_size,)` class ids for single-label classification, `(batch_size, num_labels)`
                multi-hot floats for multi-label classification, `(batch_size, num_labels)` floats for
                regression.

        Returns:
            [`~transformers.modeling_outputs.SequenceClassifierOutput`] with `loss` (when `labels` are given)
            and `logits` of shape `(batch_size, num_labels)`.
        """
        features = self._check_features(features)
        logits = self.head(features)  # (B, num_labels)
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def mean_pool_features(backbone: nn.Module, input_values: torch.Tensor, **kwargs) -> torch.Tensor:
    """Default `feature_fn`: run `backbone(input_values)` and pool its output to `(batch_size, dim)`.

    A tensor output of shape `(B, T, D)` is averaged over time, `(B, D)` is used as is; a `ModelOutput` gives
    its `pooler_output` when present, else the time average of `last_hidden_state` (or of its first field).
    """
    output = backbone(input_values, **kwargs)
    if not isinstance(output, torch.Tensor):
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            return pooled
        hidden = getattr(output, "last_hidden_state", None)
        output = hidden if hidden is not None else output[0]
    if output.dim() == 3:
        return output.mean(dim=1)  # (B, T, D) -> (B, D)
    if output.dim() == 2:
        return output
    raise JukeboxInputError(
        f"mean_pool_features: the backbone returned a tensor of shape {tuple(output.shape)}; expected "
        "(batch_size, time, dim) or (batch_size, dim). Pass a feature_fn that pools it."
    )


class JukeboxProbeForAudioClassification(JukeboxProbePreTrainedModel):
    r"""
    End-to-end probe on audio: `feature_fn(backbone, input_values) -> (batch_size, input_dim)` and the probe head.

    The backbone is any `nn.Module` (e.g. a Jukebox VQ-VAE + prior stack cut at one layer). Call
    [`freeze_base_model`] to train only the head, as in linear probing: the backbone then runs under
    `torch.no_grad()` and stays in eval mode.

    `save_pretrained` writes the backbone's weights beside the head's; `from_pretrained` needs the same
    `backbone=` (and `feature_fn=`) again. [`to_features_probe`] gives the head alone as a
    [`JukeboxProbeForSequenceClassification`], which is what should be published.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from hf_jukebox_mir.models.configuration_jukebox_probe import JukeboxProbeConfig
    >>> from hf_jukebox_mir.models.modeling_jukebox_probe import JukeboxProbeForAudioClassification

    >>> backbone = nn.Sequential(nn.Unflatten(1, (-1, 16)), nn.Linear(16, 8))  # (B, N) -> (B, N/16, 8)
    >>> model = JukeboxProbeForAudioClassification(JukeboxProbeConfig(input_dim=8, num_labels=3), backbone=backbone)
    >>> model.freeze_base_model()
    >>> model(input_values=torch.randn(2, 64)).logits.shape
    torch.Size([2, 3])
    ```
    """

    main_input_name = "input_values"

    def __init__(
        self,
        config: JukeboxProbeConfig,
        backbone: nn.Module | None = None,
        feature_fn: Callable[..., torch.Tensor] | None = None,
    ):
        super().__init__(config)
        if backbone is None or not isinstance(backbone, nn.Module):
            raise JukeboxConfigError(
                "JukeboxProbeForAudioClassification needs `backbone=`, an nn.Module that embeds audio (got "
                f"{type(backbone).__name__}). For cached embeddings use JukeboxProbeForSequenceClassification."
            )
        self.head = JukeboxProbeHead(config)
        # Initialise the head before the backbone is attached, so `post_init` never touches its weights.
        self.post_init()
        self.backbone = backbone
        self.feature_fn = feature_fn if feature_fn is not None else mean_pool_features
        self._base_frozen = False

    @classmethod
    def from_probe(
        cls,
        probe: JukeboxProbeForSequenceClassification,
        backbone: nn.Module,
        feature_fn: Callable[..., torch.Tensor] | None = None,
    ) -> JukeboxProbeForAudioClassification:
        """Put a probe trained on cached features on top of `backbone` (weights are copied)."""
        model = cls(probe.config, backbone=backbone, feature_fn=feature_fn)
        model.head.load_state_dict(probe.head.state_dict())
        model.head.standardize = probe.head.standardize
        return model

    def to_features_probe(self) -> JukeboxProbeForSequenceClassification:
        """The head alone (a copy) as a [`JukeboxProbeForSequenceClassification`] on pooled features."""
        probe = JukeboxProbeForSequenceClassification(self.config)
        probe.head.load_state_dict(self.head.state_dict())
        probe.head.standardize = self.head.standardize
        return probe

    def freeze_base_model(self) -> None:
        """Stop gradients into the backbone and keep it in eval mode (linear probing on a frozen model)."""
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        self.backbone.eval()
        self._base_frozen = True

    def unfreeze_base_model(self) -> None:
        """Undo [`freeze_base_model`] (fine-tune the backbone too)."""
        for param in self.backbone.parameters():
            param.requires_grad_(True)
        self._base_frozen = False
        self.backbone.train(self.training)

    def train(self, mode: bool = True) -> JukeboxProbeForAudioClassification:
        super().train(mode)
        if getattr(self, "_base_frozen", False):
            self.backbone.eval()  # dropout / batch-norm statistics of a frozen backbone stay fixed
        return self

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
                Audio (or whatever the backbone takes); extra keyword arguments (e.g. `padding_mask`) go to
                `feature_fn`.
            labels (`torch.Tensor`, *optional*): as in [`JukeboxProbeForSequenceClassification.forward`].
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._base_frozen):
            features = self.feature_fn(self.backbone, input_values, **kwargs)  # (B, input_dim)
        features = self._check_features(features)
        logits = self.head(features)  # (B, num_labels)
        loss = self.compute_loss(logits, labels) if labels is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)


__all__ = [
    "JukeboxProbeHead",
    "JukeboxProbePreTrainedModel",
    "JukeboxProbeForSequenceClassification",
    "JukeboxProbeForAudioClassification",
    "mean_pool_features",
]
