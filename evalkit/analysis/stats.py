"""Standard errors of per-sample metrics, computed the same way for every engine.

Why our own: lm-eval reports "N/A" for aggregations it has no formula for (IFEval's
instruction-level accuracy), and pooled group metrics (MMLU over subjects) need the stderr of
the pooled mean. Means use lm-eval's convention (sample std, ddof=1, over sqrt(n)); ratio
metrics with several items per sample (instructions per prompt) use the cluster-robust
(delta-method) stderr, because instructions of one prompt are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_stderr(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1) / math.sqrt(n))


def clustered_ratio(values: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """Pooled mean of items grouped in clusters, with its cluster-robust stderr."""
    sums = np.array([float(np.sum(v)) for v in values])
    sizes = np.array([float(len(v)) for v in values])
    total = sizes.sum()
    if total == 0:
        return float("nan"), float("nan"), 0
    p = sums.sum() / total
    n = len(values)
    if n < 2:
        return float(p), float("nan"), int(total)
    resid = sums - p * sizes
    var = n / (n - 1) * float((resid**2).sum()) / total**2
    return float(p), float(math.sqrt(var)), int(total)
