"""Calibration of multiple-choice answers from choice log-likelihoods.

Confidence is the softmax over the choices' log-likelihoods (the distribution the model puts
on the answer letters); ECE uses 15 equal-width bins over the top-choice confidence (Guo et al.
2017), and the multi-class Brier score is sum_k (p_k - y_k)^2 averaged over questions (range 0-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evalkit.analysis.bootstrap import bootstrap_rows


@dataclass(frozen=True)
class Calibration:
    ece: float
    brier: float
    n: int
    bins: list[dict[str, float]]  # reliability diagram: lo, hi, count, confidence, accuracy


def softmax(logliks: Sequence[float]) -> np.ndarray:
    x = np.asarray(logliks, dtype=np.float64)
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()


def brier_one(probs: np.ndarray, gold: int) -> float:
    onehot = np.zeros_like(probs)
    onehot[gold] = 1.0
    return float(((probs - onehot) ** 2).sum())


def ece_from(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; confidence 0 (impossible after softmax) goes to bin 0
    idx = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)
    total = len(confidences)
    ece = 0.0
    bins = []
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        conf = float(confidences[mask].mean()) if count else 0.0
        acc = float(correct[mask].mean()) if count else 0.0
        if count:
            ece += count / total * abs(acc - conf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": conf, "accuracy": acc})
    return float(ece), bins


def calibration(logliks: Sequence[Sequence[float]], golds: Sequence[int], n_bins: int = 15) -> Calibration:
    """ECE and Brier for a set of MC questions. ``logliks[i]`` are question i's choice log-likelihoods."""
    if not logliks:
        return Calibration(float("nan"), float("nan"), 0, [])
    probs = [softmax(ll) for ll in logliks]
    conf = np.array([p.max() for p in probs])
    correct = np.array([float(int(np.argmax(p)) == int(g)) for p, g in zip(probs, golds)])
    ece, bins = ece_from(conf, correct, n_bins)
    brier = float(np.mean([brier_one(p, int(g)) for p, g in zip(probs, golds)]))
    return Calibration(ece=ece, brier=brier, n=len(probs), bins=bins)


def ece_stderr(logliks: Sequence[Sequence[float]], golds: Sequence[int], n_bins: int = 15, iters: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of ECE (it has no closed form)."""
    n = len(logliks)
    if n < 2:
        return float("nan")
    probs = [softmax(ll) for ll in logliks]
    conf = np.array([p.max() for p in probs])
    correct = np.array([float(int(np.argmax(p)) == int(g)) for p, g in zip(probs, golds)])
    vals = [ece_from(conf[s], correct[s], n_bins)[0] for s in bootstrap_rows(n, iters, seed)]
    return float(np.std(vals, ddof=1))
