"""Per-sample values and their pairing across two runs.

Per-sample values: numbers and bools are used as they are. List-valued metrics (IFEval's
instruction-level accuracies, one bool per instruction of a prompt) are *clusters* of items:
:func:`per_sample_value` reduces one to its mean where a single number per document is wanted,
and :func:`align_clusters` keeps the items where the pooled (ratio) figure is estimated (see
:mod:`evalkit.analysis.paired.significance`). Pairs where either run has no usable value are
dropped rather than imputed: a missing score is not a zero.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Key = tuple[str, int]


def per_sample_value(value: Any) -> float | None:
    """One number per sample: bools/numbers as is, lists reduced to their mean, else None."""
    if isinstance(value, (list, tuple)):
        nums = [per_sample_value(v) for v in value]
        nums = [v for v in nums if v is not None]
        return float(np.mean(nums)) if nums else None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        return None if math.isnan(x) else x
    return None


def is_binary(values: Sequence[Any]) -> bool:
    """True when every raw value is a scalar 0/1 (bools included; lists never are)."""
    if not values:
        return False
    for v in values:
        if isinstance(v, (list, tuple)) or per_sample_value(v) not in (0.0, 1.0):
            return False
    return True


def align(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Paired float arrays. Mappings pair on shared keys (sorted); sequences must be aligned already.

    Pairs where either side has no usable value are dropped.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = sorted(set(a) & set(b), key=repr)
        pairs = [(per_sample_value(a[k]), per_sample_value(b[k])) for k in keys]
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("align: pass two mappings keyed by (task, doc_id) or two aligned sequences")
    else:
        if len(a) != len(b):
            raise ValueError(f"align: sequences differ in length ({len(a)} vs {len(b)})")
        pairs = [(per_sample_value(x), per_sample_value(y)) for x, y in zip(a, b)]
    kept = [(x, y) for x, y in pairs if x is not None and y is not None]
    xa = np.array([x for x, _ in kept], dtype=np.float64)
    xb = np.array([y for _, y in kept], dtype=np.float64)
    return xa, xb


def is_clustered(values: Sequence[Any]) -> bool:
    """True when a metric's values are lists of items per document (IFEval instruction lists)."""
    return any(isinstance(v, (list, tuple)) for v in values)


def cluster_items(value: Any) -> list[float] | None:
    """A document's usable item values: a list's numbers, a scalar as a cluster of one, else None."""
    items = value if isinstance(value, (list, tuple)) else [value]
    nums = [x for x in (per_sample_value(v) for v in items) if x is not None]
    return nums or None


def align_clusters(a: Sequence[Any], b: Sequence[Any]) -> tuple[list[list[float]], list[list[float]]]:
    """Aligned per-document item lists; documents with no usable item in either run are dropped."""
    if len(a) != len(b):
        raise ValueError(f"align_clusters: sequences differ in length ({len(a)} vs {len(b)})")
    kept = [(x, y) for x, y in ((cluster_items(u), cluster_items(v)) for u, v in zip(a, b)) if x and y]
    return [x for x, _ in kept], [y for _, y in kept]
