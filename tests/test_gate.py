"""The promotion gate: target CI, alignment-tax floor, KL budget."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.analysis.paired import Comparison, MetricDelta, bootstrap_mean_ci
from evalkit.errors import EvalkitError
from trainloop.gate import GateConfig, decide


def _row(entry: str, metric: str, a: np.ndarray, b: np.ndarray) -> MetricDelta:
    d = b.astype(float) - a.astype(float)
    mean, lo, hi = bootstrap_mean_ci(d, iters=500, seed=0)
    return MetricDelta(entry, entry, metric, "entry", len(d), float(a.mean()), float(b.mean()), mean, lo, hi,
                       lo > 0 or hi < 0, True, None, int((d < 0).sum()), int((d > 0).sum()), None, None, len(d),
                       len(d), diffs=d)


def _comparison(target_gain: int, mmlu_loss: int, n: int = 400) -> Comparison:
    rng = np.random.default_rng(0)
    a_if = rng.integers(0, 2, n)
    b_if = a_if.copy()
    b_if[np.flatnonzero(a_if == 0)[:target_gain]] = 1  # target_gain items fixed, nothing broken
    a_mm = rng.integers(0, 2, n)
    b_mm = a_mm.copy()
    b_mm[np.flatnonzero(a_mm == 1)[:mmlu_loss]] = 0
    rows = [_row("ifeval", "inst_level_strict_acc", a_if, b_if), _row("mmlu", "acc", a_mm, b_mm)]
    return Comparison("a", "b", "m", "m2", "h", "h2", "s", "s", False, 500, 0, rows, [], [], [])


def test_promotes_a_clear_gain_without_tax() -> None:
    d = decide(_comparison(target_gain=30, mmlu_loss=0), ["ifeval"], GateConfig(kl_budget=0.1), kl=0.02)
    assert d.promote, d.reasons
    assert [c.name for c in d.checks] == ["target", "tax", "kl"]
    assert d.checks[0].value == pytest.approx(30 / 400)
    assert "clears" in d.reasons[0]


def test_rejects_no_gain() -> None:
    d = decide(_comparison(target_gain=0, mmlu_loss=0), ["ifeval"], GateConfig(kl_budget=None))
    assert not d.promote
    assert "does not clear" in d.reasons[0]


def test_rejects_alignment_tax_beyond_floor() -> None:
    d = decide(_comparison(target_gain=30, mmlu_loss=20), ["ifeval"], GateConfig(kl_budget=None))
    assert not d.promote
    tax = next(c for c in d.checks if c.name == "tax")
    assert not tax.passed and tax.ci_lo < -0.01 and "beyond the tax floor" in tax.reason
    assert "(20 of 400 right→wrong, 0 wrong→right)" in tax.reason  # what makes the CI as wide as it is


def test_kl_budget_and_unmeasured_kl() -> None:
    comp = _comparison(target_gain=30, mmlu_loss=0)
    over = decide(comp, ["ifeval"], GateConfig(kl_budget=0.05), kl=0.2)
    assert not over.promote and "> budget" in over.reasons[-1]
    missing = decide(comp, ["ifeval"], GateConfig(kl_budget=0.05), kl=None)
    assert not missing.promote and "not measured" in missing.reasons[-1]


def test_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(EvalkitError, match="target entry 'gsm8k'"):
        decide(_comparison(1, 0), ["gsm8k"])
    with pytest.raises(EvalkitError, match="no paired metric 'prompt_level_strict_acc'"):
        decide(_comparison(1, 0), ["ifeval"], GateConfig(primary={"ifeval": "prompt_level_strict_acc"}))
