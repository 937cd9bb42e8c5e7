"""Dimension reduction: UMAP to a few dimensions for clustering, and to 2-D for the map.

Why UMAP (as BERTopic): HDBSCAN's density estimates degrade in 384 dimensions; UMAP keeps local
neighbourhoods in 5-10 dimensions where density clustering works. ``min_dist=0`` packs
neighbours tightly for clustering; the map uses a separate 2-D fit with ``min_dist=0.1`` so
points stay readable.

Why one exact k-NN graph shared by every fit: the cosine k-NN of a few thousand 384-d vectors is
one matrix product (well under a second), it is exact (UMAP's own NN-descent above 4,096 points
is approximate and seeded), and the stability fits with other seeds then only redo the
layout optimisation. With ``random_state`` set UMAP runs single-threaded and is reproducible.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

N_NEIGHBORS = 15
N_EPOCHS = 200          # UMAP's own default for large inputs; 500 (its small-input default) buys little here
_warmed = False
_warm_lock = threading.Lock()
jit_seconds: float | None = None  # how long the one-off compile took (None: not yet)


@dataclass
class Knn:
    indices: np.ndarray
    dists: np.ndarray


@dataclass
class Timer:
    """Seconds spent per stage (embed_load, embed, knn, umap_jit_wait, umap_fit, hdbscan, umap_2d, labels)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - since, 3)
        return now


def knn_graph(X: np.ndarray, n_neighbors: int = N_NEIGHBORS) -> Knn:
    """Exact cosine k-NN (self included first, as UMAP expects)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, len(X))
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(X)
    dists, idx = nn.kneighbors(X)
    return Knn(idx.astype(np.int32), np.maximum(dists, 0.0).astype(np.float32))


def is_warm() -> bool:
    return _warmed


def warm_up() -> None:
    """Compile UMAP's numba kernels on a toy input once per process (7-10 s here). Run in a
    thread during embedding it costs almost nothing; its time is measured apart from the fits."""
    global _warmed, jit_seconds
    with _warm_lock:
        if _warmed:
            return
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        X = rng.normal(size=(40, 8)).astype(np.float32)
        umap_fit(X, 2, seed=0, knn=knn_graph(X, 10), min_dist=0.1, n_neighbors=10)
        _warmed = True
        jit_seconds = round(time.perf_counter() - start, 3)


def umap_fit(X: np.ndarray, n_components: int, seed: int, knn: Knn | None = None, min_dist: float = 0.0,
             n_neighbors: int = N_NEIGHBORS) -> np.ndarray:
    import umap

    n = len(X)
    k = max(2, min(n_neighbors, n - 1))
    kwargs = {}
    if knn is not None and knn.indices.shape[1] >= k:
        kwargs["precomputed_knn"] = (knn.indices[:, :k].copy(), knn.dists[:, :k].copy())
    model = umap.UMAP(
        n_neighbors=k, n_components=n_components, min_dist=min_dist, metric="cosine", random_state=seed,
        n_epochs=N_EPOCHS, init="spectral" if n > n_components + 2 else "random", low_memory=True, **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; no search index for transform()
        Z = model.fit_transform(X)
    return np.asarray(Z, dtype=np.float64)


def pca(X: np.ndarray, n_components: int) -> np.ndarray:
    """Deterministic fallback for inputs too small for UMAP (and the 2-D map of tiny runs)."""
    from sklearn.decomposition import PCA

    n_comp = max(1, min(n_components, len(X), X.shape[1]))
    if len(X) < 2:
        Z = np.zeros((len(X), n_comp))
    else:
        Z = PCA(n_components=n_comp, svd_solver="full").fit_transform(X)
    if n_comp < n_components:
        Z = np.hstack([Z, np.zeros((len(X), n_components - n_comp))])
    return Z
