"""The promotion gate: target CI, alignment-tax floor, KL budget."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.analysis.paired import Comparison, MetricDelta, bootstrap_mean_ci, mcnemar_exact
from evalkit.errors import EvalkitError
from trainloop.gate.decision import GateConfig, decide, power_plan


def _row(entry: str, metric: str, a: np.ndarray, b: np.ndarray, with_p: bool = True) -> MetricDelta:
    d = b.astype(float) - a.astype(float)
    mean, lo, hi = bootstrap_mean_ci(d, iters=500, seed=0)
    p = mcnemar_exact(a.tolist(), b.tolist()) if with_p else None
    return MetricDelta(entry, entry, metric, "entry", len(d), float(a.mean()), float(b.mean()), mean, lo, hi,
                       lo > 0 or hi < 0, True, p, int((d < 0).sum()), int((d > 0).sum()), None, None, len(d),
                       len(d), diffs=d)


def _comparison(target_gain: int, mmlu_loss: int, n: int = 400, with_p: bool = True) -> Comparison:
    rng = np.random.default_rng(0)
    a_if = rng.integers(0, 2, n)
    b_if = a_if.copy()
    b_if[np.flatnonzero(a_if == 0)[:target_gain]] = 1  # target_gain items fixed, nothing broken
    a_mm = rng.integers(0, 2, n)
    b_mm = a_mm.copy()
    b_mm[np.flatnonzero(a_mm == 1)[:mmlu_loss]] = 0
    rows = [_row("ifeval", "inst_level_strict_acc", a_if, b_if, with_p), _row("mmlu", "acc", a_mm, b_mm, with_p)]
    return Comparison("a", "b", "m", "m2", "h", "h2", "s", "s", False, 500, 0, rows, [], [], [])


def test_promotes_a_clear_gain_without_tax() -> None:
    d = decide(_comparison(target_gain=30, mmlu_loss=0), ["ifeval"], GateConfig(kl_budget=0.1), kl=0.02)
    assert d.promote, d.reasons
    assert [c.name for c in d.checks] == ["target", "tax", "kl"]
    assert d.checks[0].value == pytest.approx(30 / 400)
    assert "clears" in d.reasons[0] and "exact McNemar p = " in d.reasons[0]
    assert [c.status for c in d.checks] == ["pass", "pass", "pass"]


def test_rejects_no_gain() -> None:
    d = decide(_comparison(target_gain=0, mmlu_loss=0), ["ifeval"], GateConfig(kl_budget=None))
    assert not d.promote
    assert "does not clear" in d.reasons[0]


def test_rejects_alignment_tax_beyond_floor() -> None:
    d = decide(_comparison(target_gain=30, mmlu_loss=20), ["ifeval"], GateConfig(kl_budget=None))
    assert not d.promote
    tax = next(c for c in d.checks if c.name == "tax")
    assert not tax.passed and tax.ci_lo < -0.02 and "beyond the tax floor -2.0 pt" in tax.reason
    assert tax.status == "fail"
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


def test_defaults() -> None:
    c = GateConfig()
    assert (c.tax_floor, c.kl_budget, c.hoped_gain, c.alpha) == (-0.02, 0.75, 0.08, 0.05)
    assert (c.plan_discordance_target, c.plan_discordance_tax, dict(c.chance)) == (0.25, 0.06, {})


def test_four_wins_no_losses_is_not_enough() -> None:
    """The bootstrap CI clears 0 on 4 wins, 0 losses at n=400; the exact test (p = 0.125) does not."""
    d = decide(_comparison(target_gain=4, mmlu_loss=0), ["ifeval"], kl=0.1)
    t = d.checks[0]
    assert t.ci_lo > 0 and "clears the minimum gain" in t.reason
    assert t.p == pytest.approx(0.125) and "p = 0.125" in t.reason and "≥ α = 0.05" in t.reason
    assert not t.passed and t.status == "fail" and not d.promote


def test_mcnemar_p_recomputed_when_not_stored() -> None:
    d = decide(_comparison(target_gain=4, mmlu_loss=0, with_p=False), ["ifeval"], kl=0.1)
    assert d.checks[0].p == pytest.approx(0.125) and not d.promote


def test_two_items_both_fixed_is_not_enough() -> None:
    a, b = np.array([0, 0]), np.array([1, 1])
    rows = [_row("ifeval", "inst_level_strict_acc", a, b), _row("mmlu", "acc", np.array([1, 0]), np.array([1, 0]))]
    comp = Comparison("a", "b", "m", "m2", "h", "h2", "s", "s", False, 500, 0, rows, [], [], [])
    d = decide(comp, ["ifeval"], kl=0.1)
    assert d.checks[0].ci_lo == 1.0 and d.checks[0].p == pytest.approx(0.5)
    assert not d.promote and "p = 0.5" in d.reasons[0]


def test_significant_gain_promotes_with_default_config() -> None:
    d = decide(_comparison(target_gain=30, mmlu_loss=0), ["ifeval"], kl=0.45)
    assert d.promote, d.reasons
    assert d.checks[0].p is not None and d.checks[0].p < 1e-6 and "< α = 0.05" in d.reasons[0]


def test_no_signal_tax_entry_is_not_gated() -> None:
    comp = _comparison(target_gain=30, mmlu_loss=20)
    assert not decide(comp, ["ifeval"], kl=0.1).promote  # the same loss on an entry with signal blocks
    d = decide(comp, ["ifeval"], kl=0.1, no_signal=["mmlu"], mde={"ifeval": 0.123, "mmlu": 0.041})
    assert d.promote, d.reasons
    tax = next(c for c in d.checks if c.name == "tax")
    assert tax.passed and tax.status == "no signal" and tax.value == pytest.approx(-20 / 400)
    assert tax.reason == "mmlu acc: no signal (baseline CI includes chance) — not gated; MDE ±4.1 pt"
    assert d.checks[0].mde == 0.123 and d.reasons[0].endswith("MDE ±12.3 pt")
    assert d.checks[-1].mde is None and "MDE" not in d.reasons[-1]  # KL has no MDE


def test_power_plan_uses_the_gate_config() -> None:
    cfg = GateConfig(hoped_gain=0.10, chance={"mmlu": 0.25}, primary={"ifeval": "prompt_level_strict_acc"})
    rows = power_plan({"ifeval": [1] * 300 + [0] * 300, "mmlu": [1] * 26 + [0] * 74}, ["ifeval"], cfg)
    assert [(r.entry, r.metric, r.role) for r in rows] == [("ifeval", "prompt_level_strict_acc", "target"), ("mmlu", "acc", "tax")]
    assert rows[0].limit == 0.10 and rows[0].discordance == 0.25 and rows[0].ok
    assert rows[1].discordance == 0.06 and rows[1].signal is False and rows[1].ok
