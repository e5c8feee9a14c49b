"""MIREX weighted key score: 1.0 same key, 0.5 a fifth above, 0.3 relative, 0.2 parallel (GiantSteps key).

An `evaluate` module shipped with hf-jukebox-mir; it loads offline from its path:

    >>> import evaluate
    >>> from hf_jukebox_mir.probing.metrics import metric_path
    >>> metric = evaluate.load(metric_path("mirex_key"))
    >>> metric.compute(predictions=['G major', 'A minor'], references=['C major', 'C major'])  # doctest: +SKIP
    {'weighted_score': 0.4, 'accuracy': 0.0, ...}

The computation lives in `hf_jukebox_mir.probing.metrics` (class `MirexKeyMetric`), shared with the plain functions.
"""

import hf_jukebox_mir.probing.metrics


class MirexKey(hf_jukebox_mir.probing.metrics.MirexKeyMetric):
    """MIREX weighted key score: 1.0 same key, 0.5 a fifth above, 0.3 relative, 0.2 parallel (GiantSteps key)."""
