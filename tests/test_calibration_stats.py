from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.analysis.calibration import brier_one, calibration, ece_from, softmax
from evalkit.analysis.stats import clustered_ratio, mean_stderr


def test_softmax_and_brier_known_values():
    p = softmax([0.0, 0.0, 0.0, 0.0])
    assert np.allclose(p, 0.25)
    # uniform over 4 with gold 0: (0.75^2 + 3 * 0.25^2) = 0.75
    assert brier_one(p, 0) == pytest.approx(0.75)
    assert brier_one(np.array([1.0, 0, 0, 0]), 0) == 0.0
    assert brier_one(np.array([0.0, 1.0, 0, 0]), 0) == 2.0


def test_ece_hand_computed():
    # two bins used: conf 0.9 (acc 1/2) and conf 0.3 (acc 1/2), equal weight
    conf = np.array([0.9, 0.9, 0.3, 0.3])
    correct = np.array([1.0, 0.0, 1.0, 0.0])
    ece, bins = ece_from(conf, correct, 15)
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    assert sum(b["count"] for b in bins) == 4 and len(bins) == 15


def test_ece_perfectly_calibrated_is_zero_and_bin_edges():
    # confidence exactly 1.0 belongs to the last bin (edges are right-closed)
    ece, bins = ece_from(np.array([1.0, 1.0]), np.array([1.0, 1.0]), 15)
    assert ece == 0.0 and bins[-1]["count"] == 2


def test_calibration_from_logliks():
    lls = [[0.0, -10.0, -10.0, -10.0], [-10.0, 0.0, -10.0, -10.0]]
    cal = calibration(lls, [0, 0])
    assert cal.n == 2
    # first: confident and right; second: confident and wrong -> ECE ~ 0.5 (acc 0.5 vs conf ~1)
    assert cal.ece == pytest.approx(0.5, abs=1e-3)
    assert cal.brier == pytest.approx((0.0 + 2.0) / 2, abs=1e-3)


def test_stderr_helpers():
    assert mean_stderr([1, 0, 1, 0]) == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert math.isnan(mean_stderr([1]))
    p, se, n = clustered_ratio([[1, 1], [0], [1, 0, 0]])
    assert p == pytest.approx(3 / 6) and n == 6 and se > 0
    # identical clusters -> no between-cluster variance
    p, se, n = clustered_ratio([[1, 0], [1, 0], [1, 0]])
    assert p == 0.5 and se == pytest.approx(0.0)
