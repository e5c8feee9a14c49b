"""Macro ROC-AUC and macro average precision of multi-label scores (MagnaTagATune tags).

An `evaluate` module shipped with hf-jukebox-mir; it loads offline from its path:

    >>> import evaluate
    >>> from hf_jukebox_mir.probing.metrics import metric_path
    >>> metric = evaluate.load(metric_path("multilabel"))
    >>> metric.compute(predictions=[[0.9, 0.2], [0.1, 0.7], [0.8, 0.4]], references=[[1, 0], [0, 1], [1, 0]])  # doctest: +SKIP
    {'roc_auc': 1.0, 'average_precision': 1.0, 'num_labels_scored': 2.0}

The computation lives in `hf_jukebox_mir.probing.metrics` (class `MultilabelMetric`), shared with the plain functions.
"""

import hf_jukebox_mir.probing.metrics


class Multilabel(hf_jukebox_mir.probing.metrics.MultilabelMetric):
    """Macro ROC-AUC and macro average precision of multi-label scores (MagnaTagATune tags)."""
