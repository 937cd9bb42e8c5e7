"""The percentile bootstrap: the one resampling mechanism behind every interval evalkit reports.

Why one module: an interval is reproducible only if its resamples are. Every bootstrap here
(paired deltas, pooled ratios, calibration drift, the alignment tax, judge agreement, κ, ECE's
stderr) draws its indices from :func:`bootstrap_indices`: one ``numpy.random.default_rng(seed)``
stream, read row after row, so a seed means the same resamples whichever statistic consumes
them and however they are chunked. (PCG64 keeps its spare 32-bit half between calls, so a
``(rows, n)`` draw and ``rows`` draws of ``n`` yield the same indices; chunking changes memory,
never numbers.) Intervals are the plain percentile kind (:func:`percentile_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

NAN = float("nan")
CHUNK_CELLS = 4_000_000  # resampled indices held in memory at once


def bootstrap_indices(n: int, iters: int, seed: int) -> Iterator[np.ndarray]:
    """Resampled index rows (shape ``(rows, n)``) in memory-bounded chunks, ``iters`` rows in all."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < iters:
        rows = min(per_chunk, iters - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def bootstrap_rows(n: int, iters: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of :func:`bootstrap_indices` one at a time, for statistics computed per resample."""
    for chunk in bootstrap_indices(n, iters, seed):
        yield from chunk


def percentile_ci(stats: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap replicates (95% by default)."""
    lo, hi = np.quantile(np.asarray(stats), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(diffs: np.ndarray, iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile 95% CI (NaN bounds when n < 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return NAN, NAN, NAN
    delta = float(d.mean())
    if n < 2 or iters < 1:
        return delta, NAN, NAN
    means = np.concatenate([d[idx].mean(axis=1) for idx in bootstrap_indices(n, iters, seed)])
    lo, hi = percentile_ci(means)
    return delta, lo, hi


def bootstrap_ci(
    stat: Callable[..., float],
    *columns: Sequence[Any],
    iters: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(*columns)``, resampling items (rows) with replacement.

    ``stat`` may return a tuple (its first element is the statistic). Replicates where the
    statistic is undefined (NaN) are dropped; (NaN, NaN) when none is left.
    """
    n = len(columns[0]) if columns else 0
    if n == 0 or iters <= 0:
        return NAN, NAN
    cols = [_column(c) for c in columns]
    values = []
    for idx in bootstrap_rows(n, iters, seed):
        v = stat(*[c[idx] for c in cols])
        if isinstance(v, tuple):
            v = v[0]
        if v is not None and not math.isnan(v):
            values.append(v)
    if not values:
        return NAN, NAN
    return percentile_ci(values, alpha)


def _column(c: Sequence[Any]) -> np.ndarray:
    """An object array (fast fancy indexing); values, None included, are kept as they are."""
    out = np.empty(len(c), dtype=object)
    out[:] = list(c)
    return out
