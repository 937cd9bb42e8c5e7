"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code", and its mean over problems.

Why the product form: 1 - C(n-c, k) / C(n, k) overflows floats (and is slow as exact
integers) for n in the hundreds; the paper's equivalent
``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` is numerically stable.

Rule for k > n (documented because it changes the denominator): a problem with fewer samples
than k says nothing about pass@k, so it is left out of that k's mean; the other k's still use
it. A k that no problem has enough samples for is absent from the result. Each entry of
:func:`aggregate_pass_at_k` therefore averages over its own set of problems;
:func:`pass_at_k_table` also reports how many.

The standard error follows the project's convention (``evalkit.analysis.stats``): sample
standard deviation (ddof=1) of the per-problem values over sqrt(number of problems); NaN with
fewer than two problems. It measures spread across problems only, not sampling noise within
a problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["pass_at_k", "aggregate_pass_at_k", "pass_at_k_table"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct)
    is correct. Raises ValueError for impossible inputs, including k > n."""
    _check_counts(n, c)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n (n={n}), got {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def aggregate_pass_at_k(counts: Sequence[tuple[int, int]],
                        ks: Iterable[int]) -> dict[int, tuple[float, float]]:
    """Mean pass@k over problems and its standard error, for each k that at least one
    problem has n >= k samples for: ``{k: (mean, stderr)}``.

    ``counts`` holds one (n, c) pair per problem.
    """
    table = pass_at_k_table(counts, ks)
    return {k: (row["mean"], row["stderr"]) for k, row in table.items()}


def pass_at_k_table(counts: Sequence[tuple[int, int]],
                    ks: Iterable[int]) -> dict[int, dict[str, float | int]]:
    """Like :func:`aggregate_pass_at_k`, with the number of problems each k was averaged over:
    ``{k: {"mean", "stderr", "num_problems"}}``."""
    for n, c in counts:
        _check_counts(n, c)
    out: dict[int, dict[str, float | int]] = {}
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        if not values:
            continue
        out[k] = {"mean": float(np.mean(values)), "stderr": _stderr(values),
                  "num_problems": len(values)}
    return out


def _stderr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return float("nan")
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1) / math.sqrt(len(values)))


def _check_counts(n: int, c: int) -> None:
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
