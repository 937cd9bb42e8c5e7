"""Partition the reduced points into clusters, with fallbacks for small inputs, and measure
how stable the partition is across seeds.

Rules (in order):
  * fewer than ``MIN_POINTS`` (15) items: one cluster per entry ("by-entry") — density
    clustering and UMAP mean nothing on a handful of points;
  * otherwise ``sklearn.cluster.HDBSCAN`` on the UMAP output (label -1 = outliers, kept as
    their own group so no slice is diluted by points that belong nowhere);
  * if HDBSCAN finds fewer than 2 clusters (one blob, or everything noise): KMeans with
    k = clamp(round(sqrt(n / 5)), 2, 8), seeded — a slice finder that returns one slice is useless.
Cluster ids are then renumbered by size (largest = 0) so ids are reproducible and readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

MIN_POINTS = 15


@dataclass
class Partition:
    labels: np.ndarray              # cluster id per item; -1 = HDBSCAN outliers
    method: str                     # hdbscan | kmeans | by-entry
    params: dict[str, Any] = field(default_factory=dict)


def default_min_cluster_size(n: int) -> int:
    """~sqrt(n)/2, at least 5: 155 items -> 6, 5,000 -> 35 (BERTopic uses a flat 10)."""
    return max(5, int(round(math.sqrt(n) / 2)))


def by_group(groups: Sequence[str]) -> Partition:
    names = sorted(set(groups))
    labels = np.array([names.index(g) for g in groups], dtype=int)
    return Partition(canonical(labels), "by-entry", {"min_points": MIN_POINTS})


def partition(Z: np.ndarray, seed: int, min_cluster_size: int | None = None) -> Partition:
    """HDBSCAN, else seeded KMeans (see the module docstring)."""
    from sklearn.cluster import HDBSCAN, KMeans

    n = len(Z)
    mcs = min_cluster_size or default_min_cluster_size(n)
    min_samples = max(2, mcs // 2)  # fewer outliers than the default (= min_cluster_size)
    labels = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, copy=True).fit_predict(Z)
    params = {"min_cluster_size": mcs, "min_samples": min_samples}
    if labels.max() + 1 >= 2:
        return Partition(canonical(labels), "hdbscan", params)
    found = int(max(labels.max(), -1) + 1)
    k = int(min(8, max(2, round(math.sqrt(n / 5)))))
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(Z)
    return Partition(canonical(labels), "kmeans", {**params, "k": k, "hdbscan_clusters": found})


def canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by decreasing size (ties: first appearance); -1 stays -1."""
    labels = np.asarray(labels, dtype=int)
    ids = [c for c in dict.fromkeys(labels.tolist()) if c >= 0]
    order = sorted(ids, key=lambda c: (-int((labels == c).sum()), ids.index(c)))
    remap = {c: i for i, c in enumerate(order)}
    return np.array([remap.get(c, -1) for c in labels.tolist()], dtype=int)


def stability(label_sets: Sequence[np.ndarray]) -> tuple[float | None, list[float]]:
    """Mean pairwise adjusted Rand index between partitions made with different seeds
    (1 = identical up to renaming, ~0 = chance agreement). None with fewer than two."""
    from sklearn.metrics import adjusted_rand_score

    pairs = [float(adjusted_rand_score(a, b)) for a, b in combinations(label_sets, 2)]
    return (float(np.mean(pairs)) if pairs else None), [round(p, 4) for p in pairs]


def centroid_distances(Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point to its own cluster's centroid in the reduced space."""
    out = np.zeros(len(Z))
    for c in np.unique(labels):
        mask = labels == c
        out[mask] = np.linalg.norm(Z[mask] - Z[mask].mean(axis=0), axis=1)
    return out
