"""Calibration drift between two runs: ECE and Brier recomputed from the stored choice log-likelihoods.

Why recompute rather than subtract the stored ECE/Brier: the stored figures carry no per-document
values to pair, and the two runs may have scored different documents. Here both are computed on
the documents both runs answered with the same choices and gold, and the CI of each difference
resamples those documents jointly (ECE vectorised per resample, same index stream as the other
paired statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalkit.analysis import calibration as calib
from evalkit.analysis.bootstrap import bootstrap_indices, bootstrap_mean_ci, percentile_ci
from evalkit.analysis.paired.significance import excludes_zero
from evalkit.analysis.paired.values import Key
from evalkit.jsonsafe import json_safe


@dataclass
class CalibrationDelta:
    """Calibration drift of one multiple-choice entry (b minus a; lower ECE/Brier is better)."""

    entry: str
    n: int
    ece_a: float
    ece_b: float
    ece_delta: float
    ece_lo: float
    ece_hi: float
    ece_significant: bool
    brier_a: float
    brier_b: float
    brier_delta: float
    brier_lo: float
    brier_hi: float
    brier_significant: bool

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _mc_items(samples: list[dict[str, Any]]) -> dict[Key, tuple[list[float], int]]:
    """Multiple-choice samples with usable log-likelihoods and an integer gold index."""
    out: dict[Key, tuple[list[float], int]] = {}
    for s in samples:
        ll = s.get("loglik")
        if not ll:
            continue
        try:
            gold = int(str(s.get("target")).strip())
        except ValueError:
            continue
        if 0 <= gold < len(ll):
            out[(s["task"], int(s["doc_id"]))] = ([float(x) for x in ll], gold)
    return out


def _conf_correct_brier(items: list[tuple[list[float], int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = [calib.softmax(ll) for ll, _ in items]
    conf = np.array([p.max() for p in probs])
    correct = np.array([float(int(np.argmax(p)) == g) for p, (_, g) in zip(probs, items)])
    brier = np.array([calib.brier_one(p, g) for p, (_, g) in zip(probs, items)])
    return conf, correct, brier


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Same binning as :func:`evalkit.analysis.calibration.ece_from` (right-closed bins)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def _ece_rows(bins: np.ndarray, conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of each resample row of ``idx`` (vectorised: |sum acc - sum conf| per bin / n)."""
    rows, n = idx.shape
    flat_bins = (bins[idx] + n_bins * np.arange(rows)[:, None]).ravel()
    gap = np.bincount(flat_bins, weights=(correct[idx] - conf[idx]).ravel(), minlength=rows * n_bins)
    sum_abs = np.abs(gap.reshape(rows, n_bins))
    return sum_abs.sum(axis=1) / n


def calibration_delta(
    entry: str, samples_a: list[dict[str, Any]], samples_b: list[dict[str, Any]], iters: int, seed: int, n_bins: int = 15
) -> CalibrationDelta | None:
    """ECE and Brier drift for an entry whose samples carry choice log-likelihoods in both runs."""
    ia, ib = _mc_items(samples_a), _mc_items(samples_b)
    keys = sorted(k for k in set(ia) & set(ib) if len(ia[k][0]) == len(ib[k][0]) and ia[k][1] == ib[k][1])
    if not keys:
        return None
    conf_a, corr_a, brier_a = _conf_correct_brier([ia[k] for k in keys])
    conf_b, corr_b, brier_b = _conf_correct_brier([ib[k] for k in keys])
    ece_a, _ = calib.ece_from(conf_a, corr_a, n_bins)
    ece_b, _ = calib.ece_from(conf_b, corr_b, n_bins)
    n = len(keys)
    ece_lo = ece_hi = float("nan")
    if n >= 2 and iters >= 1:
        bins_a, bins_b = _bin_index(conf_a, n_bins), _bin_index(conf_b, n_bins)
        stats = np.concatenate([
            _ece_rows(bins_b, conf_b, corr_b, idx, n_bins) - _ece_rows(bins_a, conf_a, corr_a, idx, n_bins)
            for idx in bootstrap_indices(n, iters, seed)
        ])
        ece_lo, ece_hi = percentile_ci(stats)
    b_delta, b_lo, b_hi = bootstrap_mean_ci(brier_b - brier_a, iters=iters, seed=seed)
    return CalibrationDelta(
        entry=entry, n=n, ece_a=ece_a, ece_b=ece_b, ece_delta=ece_b - ece_a, ece_lo=ece_lo, ece_hi=ece_hi,
        ece_significant=excludes_zero(ece_lo, ece_hi), brier_a=float(brier_a.mean()), brier_b=float(brier_b.mean()),
        brier_delta=b_delta, brier_lo=b_lo, brier_hi=b_hi, brier_significant=excludes_zero(b_lo, b_hi),
    )
