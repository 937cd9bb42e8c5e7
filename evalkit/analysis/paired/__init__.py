"""Paired comparison of two runs on the same frozen suite.

Why paired: two models evaluated on the *same* documents disagree on far fewer items than two
independent samples would, so comparing per-document differences (rather than two means with
their own stderrs) detects real changes with a fraction of the data. Every statistic here pairs
samples by ``(task, doc_id)``:

* :func:`paired_bootstrap` — percentile 95% CI of ``mean(b) - mean(a)`` resampling documents
  jointly (one index draws both models' values for that document);
* :func:`paired_ratio_bootstrap` — the same for pooled item-level metrics (IFEval instructions):
  ratio estimator, prompts (clusters) resampled jointly;
* :func:`mcnemar_exact` — exact two-sided binomial test on the discordant pairs of a 0/1 metric;
* :func:`compare_runs` — every ``(task, metric)`` two stored runs share, plus calibration drift
  (ECE / Brier recomputed from the stored choice log-likelihoods).

One concept per module: :mod:`.values` (per-sample values and their alignment),
:mod:`.significance` (the paired tests), :mod:`.drift` (calibration drift) and :mod:`.compare`
(:func:`compare_runs`, :class:`Comparison`, :class:`MetricDelta`) and :mod:`.flips` (the
documents behind a delta: :func:`flipped_items`). The resampling itself is
:mod:`evalkit.analysis.bootstrap`. Everything is importable from here, as it was when this was
one module: trainloop and the CLI import ``from evalkit.analysis.paired``.
"""

from evalkit.analysis.bootstrap import bootstrap_indices, bootstrap_mean_ci, percentile_ci
from evalkit.analysis.paired.compare import (
    CALIBRATION_METRICS,
    PAIRED_PER_CLUSTER,
    PAIRED_PER_DOC,
    Comparison,
    MetricDelta,
    compare_runs,
    metric_delta,
    metric_values,
)
from evalkit.analysis.paired.drift import CalibrationDelta, calibration_delta
from evalkit.analysis.paired.flips import FlipItem, Flips, flipped_items
from evalkit.analysis.paired.significance import (
    ALPHA,
    binom_two_sided,
    discordant,
    excludes_zero,
    mcnemar_exact,
    paired_bootstrap,
    paired_ratio_bootstrap,
    ratio_contributions,
)
from evalkit.analysis.paired.values import (
    Key,
    align,
    align_clusters,
    cluster_items,
    is_binary,
    is_clustered,
    per_sample_value,
)

__all__ = [
    "ALPHA", "CALIBRATION_METRICS", "PAIRED_PER_CLUSTER", "PAIRED_PER_DOC", "CalibrationDelta", "Comparison",
    "FlipItem", "Flips", "Key", "MetricDelta", "align", "align_clusters", "binom_two_sided", "bootstrap_indices", "bootstrap_mean_ci",
    "calibration_delta", "cluster_items", "compare_runs", "discordant", "excludes_zero", "flipped_items", "is_binary",
    "is_clustered", "mcnemar_exact", "metric_delta", "metric_values", "paired_bootstrap",
    "paired_ratio_bootstrap", "per_sample_value", "percentile_ci", "ratio_contributions",
]
