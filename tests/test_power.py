"""Power planning: closed-form MDEs, a Monte-Carlo check that the binary MDE is detected with
~80% power by the exact McNemar test, the no-signal rule and the refusal line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.analysis.paired import mcnemar_exact
from evalkit.analysis.power import (
    mde_binary,
    mde_paired,
    n_needed_binary,
    n_needed_paired,
    no_signal,
    power_table,
    refusal,
    wilson_ci,
    z_sum,
)


def test_closed_form() -> None:
    assert z_sum() == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert mde_binary(0.10, 270) == pytest.approx(0.0540, abs=0.001)  # the rule of thumb 2.8*sqrt(d/n)
    assert mde_paired(1.0, 100) == pytest.approx(z_sum() / 10)
    assert mde_binary(0.1, 0) == math.inf
    n = n_needed_binary(0.10, 0.05)
    assert mde_binary(0.10, n) <= 0.05 < mde_binary(0.10, n - 1)
    assert n_needed_binary(0.10, mde_binary(0.10, 270)) == 270  # round trip
    assert n_needed_paired(0.3, mde_paired(0.3, 123)) == 123
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


def test_monte_carlo_power_of_the_binary_mde() -> None:
    """Paired 0/1 data with discordance d and true effect = MDE: McNemar rejects ~80% of the time."""
    d, n, sims = 0.10, 300, 1000
    delta = mde_binary(d, n)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(sims):
        u = rng.random(n)
        a_only = u < (d - delta) / 2  # right in a only
        b_only = (u >= (d - delta) / 2) & (u < d)  # right in b only: (d + delta) / 2
        both = u >= (1 + d) / 2  # the concordant rest, half right in both
        a, b = (a_only | both).astype(int), (b_only | both).astype(int)
        hits += mcnemar_exact(a.tolist(), b.tolist()) < 0.05
    assert 0.7 <= hits / sims <= 0.9


def test_no_signal_tax_entry_is_not_required_to_pass() -> None:
    base = {
        "ifeval": [1] * 400 + [0] * 600,  # target, n=1000: MDE 2.8*sqrt(0.25/1000) = 4.4 pt <= 8 pt
        "mmlu": [1] * 70 + [0] * 200,  # 25.9%: Wilson CI includes chance 0.25 -> no signal
        "gsm8k": {("gsm8k", i): int(i < 100) for i in range(270)},  # 37%, chance 0 -> signal, underpowered
    }
    rows = power_table(base, ["ifeval"], chance={"gsm8k": 0.0})
    by = {r.entry: r for r in rows}
    assert [r.role for r in rows] == ["target", "tax", "tax"]
    assert by["ifeval"].ok and by["ifeval"].signal is None and by["ifeval"].metric == "inst_level_strict_acc"
    mm = by["mmlu"]
    assert mm.ci_lo <= 0.25 <= mm.ci_hi and mm.signal is False
    assert mm.mde > mm.limit == pytest.approx(0.02) and mm.ok  # underpowered, but no signal: not gated
    gs = by["gsm8k"]
    assert gs.signal is True and not gs.ok and gs.n_needed == n_needed_binary(0.06, 0.02)
    assert no_signal(rows) == ["mmlu"]
    line = refusal(rows)
    assert line is not None and line.startswith("loop: gsm8k (exact_match,strict-match) can only detect a loss of")
    assert refusal([by["ifeval"], mm]) is None


def test_refusal_line_for_an_underpowered_target() -> None:
    base = {"ifeval": [1] * 50 + [0] * 80}
    rows = power_table(base, ["ifeval"], metrics={"ifeval": "prompt_level_strict_acc"}, hoped_gain=0.08,
                       discordance_target=0.25)
    r = rows[0]
    assert r.binary and not r.ok and r.mde == pytest.approx(mde_binary(0.25, 130))
    need = n_needed_binary(0.25, 0.08)
    assert refusal(rows) == (
        f"loop: ifeval (prompt_level_strict_acc) can only detect +{r.mde * 100:.1f} pt at n=130 (planned discordance "
        f"0.25), above the hoped-for gain +8.0 pt; it needs n≥{need} — enlarge the confirmation split or pass "
        "--allow-underpowered")
    assert f"+{r.mde * 100:.1f} pt" == "+12.3 pt" and need == 307


def test_non_binary_metric_uses_planned_correlation() -> None:
    xs = [0.0, 0.5, 1.0, 0.25, 0.75] * 40  # per-prompt means (IFEval instruction-level)
    rows = power_table({"ifeval": xs}, ["ifeval"], rho=0.8)
    r = rows[0]
    var = float(np.var(xs, ddof=1))
    assert not r.binary and r.discordance is None and r.rho == 0.8
    assert r.sd_diff == pytest.approx(math.sqrt(2 * var * 0.2))
    assert r.mde == pytest.approx(mde_paired(r.sd_diff, 200))
    assert r.ci_lo < 0.5 < r.ci_hi
    assert "planned correlation 0.8" in (refusal(power_table({"ifeval": xs[:20]}, ["ifeval"], hoped_gain=0.01)) or "")
