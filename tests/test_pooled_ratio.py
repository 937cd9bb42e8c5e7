"""IFEval's inst-level accuracy is pooled over instructions (lm-eval's definition); the paired
comparison and the gate estimate that pooled figure with a ratio estimator and a per-prompt
(cluster) paired bootstrap, not the mean of per-prompt accuracies."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evalkit.analysis.paired import (
    PAIRED_PER_CLUSTER,
    Comparison,
    bootstrap_mean_ci,
    metric_delta,
    paired_ratio_bootstrap,
    ratio_contributions,
)
from evalkit.analysis.stats import clustered_ratio
from evalkit.analysis.tax import alignment_tax
from trainloop.gate.decision import GateConfig, decide

KEY = ("ifeval", "ifeval", "inst_level_strict_acc")


def _comparison(rows: list) -> Comparison:
    return Comparison("a", "b", "m", "m2", "h", "h2", "s", "s", False, 500, 0, rows, [], [], [])


def test_one_instruction_fixed_beside_three_unchanged_is_plus_a_quarter():
    """Prompt 0 goes [F]→[T], prompt 1 stays [T,T,T]: pooled 3/4 → 4/4 = +0.25 (per-prompt
    averaging would say +0.50, a number no run displays)."""
    a = {("ifeval", 0): [False], ("ifeval", 1): [True, True, True]}
    b = {("ifeval", 0): [True], ("ifeval", 1): [True, True, True]}
    row = metric_delta(KEY, a, b, 0.75, 1.0, iters=200, seed=0)
    assert row.delta == pytest.approx(0.25) and (row.value_a, row.value_b) == (0.75, 1.0)
    assert row.value_a == row.stored_a and row.value_b == row.stored_b  # what `evalkit show` prints
    assert row.pairing == PAIRED_PER_CLUSTER and row.n == 2 and row.n_items == 4
    assert not row.binary and row.p_mcnemar is None
    assert float(np.mean(row.diffs)) == pytest.approx(0.25)  # consumers that average diffs agree
    assert row.to_dict()["pairing"] == "per prompt (cluster), ratio estimator"

    d = decide(_comparison([row]), ["ifeval"], GateConfig(kl_budget=None))
    t = d.checks[0]
    assert t.value == pytest.approx(0.25)
    assert "+25.0 pt" in t.reason and "paired per prompt (cluster), ratio estimator, 4 items pooled over 2 prompts" in t.reason


def test_ratio_matches_clustered_ratio_and_resamples_prompts_jointly():
    rng = np.random.default_rng(4)
    a = [list(rng.random(k) < 0.6) for k in rng.integers(1, 7, 50)]
    b = [list(np.array(x) | (rng.random(len(x)) < 0.2)) for x in a]
    ra, rb, delta, lo, hi = paired_ratio_bootstrap(a, b, iters=500, seed=1)
    assert ra == pytest.approx(clustered_ratio(a)[0]) and rb == pytest.approx(clustered_ratio(b)[0])
    assert delta == pytest.approx(rb - ra) and lo <= delta <= hi and lo > 0
    assert float(np.mean(ratio_contributions(a, b))) == pytest.approx(delta)
    assert paired_ratio_bootstrap(a, a, iters=200) == (ra, ra, 0.0, 0.0, 0.0)  # joint resampling
    assert paired_ratio_bootstrap(a, b, iters=300, seed=7) == paired_ratio_bootstrap(a, b, iters=300, seed=7)
    one = paired_ratio_bootstrap(a[:1], b[:1])
    assert np.isnan(one[3]) and np.isnan(one[4])


def test_tax_of_a_pooled_entry_uses_the_pooled_delta():
    a = {("ifeval", 0): [False], ("ifeval", 1): [True, True, True], ("ifeval", 2): [True, False]}
    b = {("ifeval", 0): [True], ("ifeval", 1): [True, True, True], ("ifeval", 2): [True, False]}
    row = metric_delta(KEY, a, b, None, None, iters=200, seed=0)
    tax = alignment_tax(_comparison([row, _gsm_row()]), ["gsm8k"])
    assert tax.weighted_delta == pytest.approx(row.delta) == pytest.approx(1 / 6)


def _gsm_row():
    a = {("gsm8k", i): float(i % 2) for i in range(10)}
    return metric_delta(("gsm8k", "gsm8k", "exact_match,strict-match"), a, a, None, None, iters=50, seed=0)


def _true_pooled_gain(gain: float, base: float, sd: float) -> float:
    """E[Σ(b−a)] / E[Σn]: prompt sizes 1..6 uniform, gain only on prompts with ≥ 4 instructions,
    each instruction a fails with prob 1 − sigmoid(base + sd·u), u ~ N(0, 1) per prompt."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    fail = float((w / w.sum() * (1.0 - 1.0 / (1.0 + np.exp(-(base + sd * x))))).sum())
    sizes = np.arange(1, 7)
    return gain * fail * sizes[sizes >= 4].sum() / sizes.sum()


def test_gate_ci_covers_the_true_pooled_difference():
    """Seeded simulation: 300 prompts of 1–6 instructions with correlated instructions (a prompt
    effect), the candidate fixes failed instructions only on prompts with ≥ 4 of them. The gate's
    95% CI must cover the true pooled difference in ≥ 90% of 200 replications. The per-prompt mean
    bootstrap it replaced targets another number and covers it far less often."""
    n, reps, gain, base, sd = 300, 200, 0.05, 0.3, 1.0
    true = _true_pooled_gain(gain, base, sd)
    rng = np.random.default_rng(2024)
    covered = covered_old = 0
    start = time.perf_counter()
    for rep in range(reps):
        sizes = rng.integers(1, 7, n)
        p = 1.0 / (1.0 + np.exp(-(base + sd * rng.normal(size=n))))
        a, b = {}, {}
        for i, (k, pi) in enumerate(zip(sizes, p)):
            ai = rng.random(k) < pi
            bi = ai | (rng.random(k) < gain) if k >= 4 else ai
            a[("ifeval", i)], b[("ifeval", i)] = ai.tolist(), bi.tolist()
        row = metric_delta(KEY, a, b, None, None, iters=500, seed=rep)
        check = decide(_comparison([row]), ["ifeval"], GateConfig(kl_budget=None)).checks[0]
        covered += check.ci_lo <= true <= check.ci_hi
        per_prompt = np.array([np.mean(b[k]) - np.mean(a[k]) for k in sorted(a)])
        _, lo, hi = bootstrap_mean_ci(per_prompt, iters=500, seed=rep)
        covered_old += lo <= true <= hi
    elapsed = time.perf_counter() - start
    print(f"coverage {covered / reps:.3f} (per-prompt mean bootstrap {covered_old / reps:.3f}), true {true:.4f}, {elapsed:.1f}s")
    assert covered / reps >= 0.90, (covered / reps, covered_old / reps)
    assert covered_old / reps < 0.80, (covered / reps, covered_old / reps)
    assert elapsed < 30  # a few seconds on one core


def test_power_plan_of_a_pooled_metric_plans_the_ratio_the_gate_tests():
    """The plan's baseline mean is the pooled ratio (not the mean of per-prompt accuracies), and
    its SE is the ratio estimator's linearised one (checked against the cluster bootstrap)."""
    import numpy as np

    from evalkit.analysis.paired import paired_ratio_bootstrap
    from evalkit.analysis.power import power_row

    rng = np.random.default_rng(0)
    prompts = [[bool(x) for x in rng.random(int(rng.integers(1, 7))) < (0.4 if k % 3 else 0.9)] for k in range(300)]
    pooled = sum(map(sum, prompts)) / sum(map(len, prompts))
    per_prompt = float(np.mean([np.mean(p) for p in prompts]))
    row = power_row("ifeval", prompts, "target", 0.05, rho=0.0)
    assert row.baseline == pytest.approx(pooled) and abs(row.baseline - per_prompt) > 0.01 and not row.binary
    # rho = 0: the paired sd is sqrt(2) x the one-sample sd; compare that one-sample SE with the
    # spread of the pooled ratio under a cluster bootstrap (delta of a run against an empty-gain copy)
    se_plan = row.sd_diff / np.sqrt(2) / np.sqrt(row.n)
    _, _, _, lo, hi = paired_ratio_bootstrap([[0.0] * len(p) for p in prompts], prompts, iters=4000, seed=1)
    assert se_plan == pytest.approx((hi - lo) / (2 * 1.96), rel=0.15)
