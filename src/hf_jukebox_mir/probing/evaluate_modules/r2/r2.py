"""Coefficient of determination, uniform average over outputs and per output (Emomusic arousal/valence).

An `evaluate` module shipped with hf-jukebox-mir; it loads offline from its path:

    >>> import evaluate
    >>> from hf_jukebox_mir.probing.metrics import metric_path
    >>> metric = evaluate.load(metric_path("r2"))
    >>> metric.compute(predictions=[[0.1, 1.0], [0.9, 0.1], [2.1, -1.0]], references=[[0.0, 1.0], [1.0, 0.0], [2.0, -1.0]], output_names=['arousal', 'valence'])  # doctest: +SKIP
    {'r2': ..., 'arousal_r2': ..., 'valence_r2': ...}

The computation lives in `hf_jukebox_mir.probing.metrics` (class `R2Metric`), shared with the plain functions.
"""

import hf_jukebox_mir.probing.metrics


class R2(hf_jukebox_mir.probing.metrics.R2Metric):
    """Coefficient of determination, uniform average over outputs and per output (Emomusic arousal/valence)."""
