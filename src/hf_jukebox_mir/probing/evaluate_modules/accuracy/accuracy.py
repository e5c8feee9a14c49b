"""Accuracy of class ids (GTZAN genre).

An `evaluate` module shipped with hf-jukebox-mir; it loads offline from its path:

    >>> import evaluate
    >>> from hf_jukebox_mir.probing.metrics import metric_path
    >>> metric = evaluate.load(metric_path("accuracy"))
    >>> metric.compute(predictions=[0, 2, 1], references=[0, 1, 1])  # doctest: +SKIP
    {'accuracy': 0.666...}

The computation lives in `hf_jukebox_mir.probing.metrics` (class `AccuracyMetric`), shared with the plain functions.
"""

import hf_jukebox_mir.probing.metrics


class Accuracy(hf_jukebox_mir.probing.metrics.AccuracyMetric):
    """Accuracy of class ids (GTZAN genre)."""
