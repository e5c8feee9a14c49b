"""Configuration of the Jukebox probing heads (linear or one-hidden-layer MLP on clip embeddings).

The head follows the JukeMIR probe (Castellon et al., ISMIR 2021): dropout on the input, then either a
single `Linear` layer (linear / logistic probe) or `Linear -> ReLU -> dropout -> Linear` with one hidden
layer, and a loss chosen by `problem_type`. Feature standardisation statistics (fit on the training split)
are stored as buffers of the model, so a saved probe takes raw embeddings.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .errors import JukeboxConfigError

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


class JukeboxProbeConfig(PreTrainedConfig):
    r"""
    Configuration of [`JukeboxProbeForSequenceClassification`] and [`JukeboxProbeForAudioClassification`].

    Args:
        input_dim (`int`, *optional*, defaults to 4800):
            Size of one clip embedding (4800 for a Jukebox 5B prior layer, 72 for the chroma statistics).
        hidden_size (`int`, *optional*):
            Width of the hidden layer. `None` (default) gives a linear probe; JukeMIR's MLP uses 512.
        dropout (`float`, *optional*, defaults to 0.5):
            Dropout probability on the input features (and after the hidden layer, as in JukeMIR).
        standardize (`bool`, *optional*, defaults to `True`):
            Subtract `feature_mean` and divide by `feature_std` (model buffers, fit on the training split
            with [`~JukeboxProbeForSequenceClassification.fit_standardization`]) before the first layer.
        num_layers (`int`, *optional*, defaults to 1):
            Layers per input. With more than one, the probe takes `(batch_size, num_layers, input_dim)` and
            reads a learned softmax-weighted sum of the layers (the MERT / MARBLE "weighted layer sum").
        feature_source (`str`, *optional*):
            Free-text provenance of the embeddings the probe was trained on (e.g. `"jukebox-5b layer 36"`).
        problem_type (`str`, *optional*, defaults to `"single_label_classification"`):
            One of `"single_label_classification"` (cross-entropy on class ids),
            `"multi_label_classification"` (binary cross-entropy on multi-hot float targets) or
            `"regression"` (mean squared error on `num_labels` float targets).
        num_labels (`int`, *optional*):
            Number of classes, tags or regression outputs; `id2label` names them.

    Example:

    ```python
    >>> from hf_jukebox_mir.models.configuration_jukebox_probe import JukeboxProbeConfig

    >>> config = JukeboxProbeConfig(input_dim=72, hidden_size=512, id2label={0: "major", 1: "minor"})
    >>> config.num_labels, config.label2id["minor"]
    (2, 1)
    ```
    """

    model_type = "jukebox_mir_probe"

    input_dim: int = 4800
    hidden_size: int | None = None
    dropout: float = 0.5
    standardize: bool = True
    feature_source: str | None = None
    num_layers: int = 1

    def __post_init__(self, **kwargs):
        if self.problem_type is None:
            self.problem_type = "single_label_classification"
        if self.problem_type not in PROBLEM_TYPES:
            raise JukeboxConfigError(
                f"JukeboxProbeConfig.problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}."
            )
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and (
            not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1
        ):
            raise JukeboxConfigError(f"JukeboxProbeConfig.num_labels must be an integer >= 1, got {num_labels!r}.")
        n = len(self.id2label) if self.id2label is not None else num_labels
        if self.problem_type == "single_label_classification" and n is not None and n < 2:
            raise JukeboxConfigError(
                "JukeboxProbeConfig: problem_type='single_label_classification' needs num_labels >= 2, got "
                f"{n}; use problem_type='regression' for a single output."
            )
        self._validate()
        super().__post_init__(**kwargs)
        # `PreTrainedConfig` keeps `label2id` as given (None when only `id2label` came): derive it.
        self.label2id = {str(name): int(idx) for idx, name in self.id2label.items()}

    def _validate(self) -> None:
        if not isinstance(self.input_dim, int) or isinstance(self.input_dim, bool) or self.input_dim < 1:
            raise JukeboxConfigError(
                f"JukeboxProbeConfig.input_dim must be a positive integer, got {self.input_dim!r}."
            )
        if self.hidden_size is not None and (
            not isinstance(self.hidden_size, int) or isinstance(self.hidden_size, bool) or self.hidden_size < 1
        ):
            raise JukeboxConfigError(
                f"JukeboxProbeConfig.hidden_size must be None (linear probe) or a positive integer, got "
                f"{self.hidden_size!r}."
            )
        if (
            not isinstance(self.dropout, (int, float))
            or isinstance(self.dropout, bool)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise JukeboxConfigError(f"JukeboxProbeConfig.dropout must be a number in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or self.num_layers < 1:
            raise JukeboxConfigError(
                f"JukeboxProbeConfig.num_layers must be a positive integer, got {self.num_layers!r}."
            )
        if not isinstance(self.standardize, bool):
            raise JukeboxConfigError(f"JukeboxProbeConfig.standardize must be True or False, got {self.standardize!r}.")

    @property
    def is_linear(self) -> bool:
        """`True` for a linear probe (no hidden layer)."""
        return self.hidden_size is None


__all__ = ["JukeboxProbeConfig", "PROBLEM_TYPES"]
