"""The paired tests: bootstrap of per-document differences, the pooled-ratio bootstrap, McNemar.

* :func:`paired_bootstrap` — percentile 95% CI of ``mean(b) - mean(a)`` resampling documents
  jointly (one index draws both models' values for that document);
* :func:`paired_ratio_bootstrap` — the same for pooled item-level metrics (IFEval instructions):
  ratio estimator, prompts (clusters) resampled jointly;
* :func:`mcnemar_exact` — exact two-sided binomial test on the discordant pairs of a 0/1 metric.

List-valued metrics keep lm-eval's definition of the figure: ``inst_level_strict_acc`` is
*pooled* over all instructions (followed / total), the value ``evalkit show`` prints. So the
paired statistic is a ratio estimator, ``Δ = Σb/Σn − Σa/Σn`` over prompts, and its CI comes from
a per-prompt (cluster) paired bootstrap: each prompt is one paired unit, because a prompt's
instructions are not independent, and every resample recomputes both models' pooled ratios on
the same resampled prompts, so the CI is for the figure displayed. (The mean of per-prompt
accuracies is a different estimand: a prompt going [F]→[T] next to an unchanged [T,T,T] is +0.50
per prompt but +0.25 pooled.)

Resampling itself is :mod:`evalkit.analysis.bootstrap` (one seeded index stream for all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evalkit.analysis.bootstrap import bootstrap_indices, bootstrap_mean_ci, percentile_ci
from evalkit.analysis.paired.values import align
from evalkit.analysis.stats import clustered_ratio

ALPHA = 0.05
# Why McNemar decides for 0/1 metrics: with few discordant docs the percentile bootstrap is too
# liberal (4 wins, 0 losses gives a CI excluding 0 while the exact test says p = 0.125), and a
# promotion gate must not rest on that. Non-binary metrics use the bootstrap CI.


def excludes_zero(lo: float, hi: float) -> bool:
    return bool(not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0))


def paired_bootstrap(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any], iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(delta, lo, hi)``: mean(b) - mean(a) over paired samples with a 95% percentile CI.

    ``a``/``b`` are mappings keyed by ``(task, doc_id)`` (paired on shared keys) or aligned
    sequences. Documents are resampled jointly: each draw takes both runs' values of one doc.
    """
    xa, xb = align(a, b)
    return bootstrap_mean_ci(xb - xa, iters=iters, seed=seed)


def paired_ratio_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], iters: int = 2000, seed: int = 0
) -> tuple[float, float, float, float, float]:
    """``(ratio_a, ratio_b, delta, lo, hi)`` of a pooled (ratio) metric paired per cluster.

    ``a[i]``/``b[i]`` are the item values (e.g. instructions followed) of cluster ``i`` (a prompt)
    in each run. The ratios are the pooled means of :func:`~evalkit.analysis.stats.clustered_ratio`,
    ``Σ items / Σ sizes`` (lm-eval's ``inst_level_*_acc``), and ``delta = ratio_b - ratio_a``.
    The 95% percentile CI resamples *clusters* jointly: one index draws both runs' items of one
    prompt, and each resample recomputes both pooled ratios on the same prompts, so the interval
    is for the pooled difference itself. (Bootstrapping mean per-prompt differences instead gives
    a CI for a different number, and covers the pooled one far less often than 95% when gains sit
    on prompts with many instructions.) Runs may differ in a cluster's size; each ratio uses its
    own sizes. Same index stream as :func:`~evalkit.analysis.bootstrap.bootstrap_mean_ci`
    (:func:`~evalkit.analysis.bootstrap.bootstrap_indices`).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_ratio_bootstrap: cluster lists differ in length ({len(a)} vs {len(b)})")
    sums_a, size_a = _cluster_sums(a)
    sums_b, size_b = _cluster_sums(b)
    ra, rb = clustered_ratio(a)[0], clustered_ratio(b)[0]
    delta = rb - ra
    n = len(a)
    if n < 2 or iters < 1:
        return ra, rb, delta, float("nan"), float("nan")
    stats = np.concatenate([
        sums_b[idx].sum(axis=1) / size_b[idx].sum(axis=1) - sums_a[idx].sum(axis=1) / size_a[idx].sum(axis=1)
        for idx in bootstrap_indices(n, iters, seed)
    ])
    lo, hi = percentile_ci(stats)
    return ra, rb, delta, lo, hi


def _cluster_sums(clusters: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster item sums and sizes (plain ``sum``: thousands of short lists, no numpy per list)."""
    return (np.array([float(sum(v)) for v in clusters], dtype=np.float64),
            np.array([float(len(v)) for v in clusters], dtype=np.float64))


def ratio_contributions(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-cluster differences whose *mean* is the pooled delta: ``Σb_i/n̄_b − Σa_i/n̄_a``.

    ``MetricDelta.diffs`` holds one number per paired unit and consumers average it (the
    alignment tax's weighted mean); for a ratio metric these linearised contributions (sizes
    scaled by their mean, held fixed) keep that mean equal to the pooled delta shown.
    """
    sums_a, size_a = _cluster_sums(a)
    sums_b, size_b = _cluster_sums(b)
    mean_a = float(size_a.mean()) if len(a) else 1.0
    mean_b = float(size_b.mean()) if len(b) else 1.0
    return sums_b / mean_b - sums_a / mean_a


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (2 x the smaller tail, capped at 1)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def discordant(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> tuple[int, int]:
    """``(a_only, b_only)``: pairs right in a but not b, and right in b but not a."""
    xa, xb = align(a, b)
    if not (np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all()):
        raise ValueError("mcnemar_exact: needs binary (0/1) per-sample values")
    return int(((xa == 1) & (xb == 0)).sum()), int(((xa == 0) & (xb == 1)).sum())


def mcnemar_exact(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> float:
    """Exact McNemar p-value for binary per-sample scores (1.0 when no pair is discordant)."""
    a_only, b_only = discordant(a, b)
    return binom_two_sided(min(a_only, b_only), a_only + b_only)
