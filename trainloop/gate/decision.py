"""The promotion gate: a round's model replaces the current one only with evidence.

Why three checks: a training round can (1) not help — the target's paired 95% CI must clear a
minimum gain, not just a positive mean, and for a 0/1 metric the exact McNemar test must reject
at ``alpha`` too (the percentile bootstrap is too liberal with few discordant items: 4 wins and 0
losses give a CI above 0 but p = 0.125); (2) help the target by spending other skills — every
other entry's paired CI lower bound must stay above the tax floor (default −2 points), unless
the entry has no signal (its baseline CI includes chance, see
:mod:`evalkit.analysis.power`), where a "tax" is noise around chance; (3) drift
far from the reference — mean per-token KL(policy‖ref) on the policy's own samples must stay
within budget (RLHF's usual KL control). The decision keeps every number and a sentence per
check, so the loop report can say *why* a round was rolled back.

Which target metric is fixed in the config before round 0 (the issue's lesson: IFEval's
instruction-level accuracy moves before prompt-level does; switching after seeing results
would be p-hacking).

What the target check estimates is the figure it reports. IFEval's ``inst_level_strict_acc`` is
pooled over instructions (lm-eval's definition), so its delta is a ratio estimator
(``Σb/Σn − Σa/Σn`` over prompts) with a per-prompt cluster bootstrap CI
(:func:`evalkit.analysis.paired.paired_ratio_bootstrap`, via ``compare_runs``). Pairing per
prompt is right (a prompt's instructions are not independent), but averaging per-prompt
accuracies would gate a different number: a prompt going [F]→[T] beside an unchanged [T,T,T] is
+50 pt per prompt, +25 pt pooled. The reason names the pairing of such a metric.

Each check's reason can carry the entry's minimum detectable effect (``mde``, from the power
plan) so a rolled-back round says whether the split could have seen the hoped-for change at all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.analysis.paired import PAIRED_PER_DOC, Comparison, MetricDelta, binom_two_sided
from evalkit.analysis.power import PerItem, PowerRow, power_table
from evalkit.analysis.tax import alignment_tax, entry_rows, primary_metric
from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class GateConfig:
    min_gain: float = 0.0  # target delta's CI lower bound must be > this (metric units: 0.01 = 1 point)
    # The target gain a round hopes for (metric units). The power plan refuses to start a loop
    # whose target MDE at the confirmation split's n exceeds it: such a loop could only roll back.
    hoped_gain: float = 0.08
    # Each other entry's delta CI lower bound must be >= this. Measured SFT rounds flipped 4-6%
    # of answers on untargeted entries; at the demo's tax n a -1 pt floor was unreachable (the CI
    # lower bound of a zero true change sat below it), so every round was rolled back.
    tax_floor: float = -0.02
    # Nats per token; None: KL is not a gate condition. Measured mean per-token KL(policy‖ref) of
    # rounds that moved IFEval formats: 0.43-0.51; of rounds that did nothing: 0.08-0.17. The
    # budget caps average per-token drift: at 0.75 nats the reference gives the policy's tokens
    # on average e^-0.75 ≈ 0.47 of the probability the policy gives them.
    kl_budget: float | None = 0.75
    primary: Mapping[str, str] = field(default_factory=dict)  # entry -> metric (target and tax)
    # Planned discordant-pair rates (fraction of items right in exactly one model) for the power
    # plan of 0/1 metrics: targets are meant to move (many flips), tax entries less so.
    plan_discordance_target: float = 0.25
    plan_discordance_tax: float = 0.06
    alpha: float = 0.05  # two-sided level of the target's exact McNemar test (0/1 metrics) and the plan
    chance: Mapping[str, float] = field(default_factory=dict)  # entry -> chance level (overrides power.DEFAULT_CHANCE)


@dataclass
class Check:
    name: str  # target | tax | kl
    subject: str  # entry (metric) or "policy"
    passed: bool
    value: float | None
    ci_lo: float | None = None
    ci_hi: float | None = None
    limit: float | None = None
    reason: str = ""
    status: str = ""  # "pass" | "fail" | "no signal" (a tax entry at chance, not gated)
    mde: float | None = None  # the entry's minimum detectable effect from the power plan, if given
    p: float | None = None  # exact McNemar p of a 0/1 target


@dataclass
class GateDecision:
    promote: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "checks": [asdict(c) for c in self.checks]}


def _pt(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pt"


def _mde(mde: float | None) -> str:
    return "" if mde is None else f"; MDE ±{mde * 100:.1f} pt"


def _flips(rows: Sequence[Any], metric: str) -> str:
    """Why a tax CI is wide: for a 0/1 metric its width comes from the answers that changed in
    either direction (half-width ~ 1.96*sqrt(changed/n)/sqrt(n)), not from the net delta."""
    r = next((r for r in rows if r.metric == metric), None)
    if r is None or r.a_only is None or r.b_only is None:
        return ""
    return f" ({r.a_only} of {r.n} right→wrong, {r.b_only} wrong→right)"


def _mcnemar_p(r: MetricDelta) -> float | None:
    """The row's exact McNemar p, recomputed from its discordant counts when it was not stored."""
    if r.p_mcnemar is not None:
        return r.p_mcnemar
    if r.a_only is not None and r.b_only is not None:
        return binom_two_sided(min(r.a_only, r.b_only), r.a_only + r.b_only)
    return None


def _pairing(r: MetricDelta) -> str:
    """How a non-per-document metric was paired, e.g. ' (paired per prompt (cluster), ratio estimator,
    834 items pooled over 300 prompts)'; empty for per-document metrics."""
    pairing = getattr(r, "pairing", PAIRED_PER_DOC) or PAIRED_PER_DOC
    if pairing == PAIRED_PER_DOC:
        return ""
    items = getattr(r, "n_items", None)
    return f" (paired {pairing}" + (f", {items} items pooled over {r.n} prompts" if items is not None else "") + ")"


def _target_check(t: str, metric: str, r: MetricDelta, config: GateConfig, mde: float | None) -> Check:
    ci_ok = r.ci_lo > config.min_gain
    reason = (f"{t} {metric}{_pairing(r)}: {_pt(r.delta)}, 95% CI [{_pt(r.ci_lo)}, {_pt(r.ci_hi)}] "
              f"{'clears' if ci_ok else 'does not clear'} the minimum gain {_pt(config.min_gain)}")
    ok, p = ci_ok, None
    if r.binary:  # a 0/1 metric also needs the exact test: the bootstrap CI is too liberal on few flips
        p = _mcnemar_p(r)
        if p is None:
            ok = False
            reason += "; exact McNemar p not available (no discordant counts), so the gain is not established"
        else:
            sig = p < config.alpha and r.delta > 0
            ok = ci_ok and sig
            flips = f" ({r.b_only} wrong→right, {r.a_only} right→wrong)" if r.a_only is not None else ""
            reason += f"; exact McNemar p = {p:.3g}{flips} {'<' if p < config.alpha else '≥'} α = {config.alpha:g}"
    reason += _mde(mde)
    return Check("target", f"{t} ({metric})", ok, r.delta, r.ci_lo, r.ci_hi, config.min_gain, reason,
                 "pass" if ok else "fail", mde, p)


def decide(comparison: Comparison, targets: Sequence[str], config: GateConfig = GateConfig(),
           kl: float | None = None, no_signal: Collection[str] = (),
           mde: Mapping[str, float] | None = None) -> GateDecision:
    """Gate the candidate (``comparison.run_b``) against the current model (``run_a``).

    ``no_signal``: tax entries whose baseline CI includes chance (:func:`evalkit.analysis.power.no_signal`);
    they are reported but not gated. ``mde``: entry -> minimum detectable effect from the power
    plan, quoted in each check's reason.
    """
    if not targets:
        raise EvalkitError("gate: no target entries given")
    mde = mde or {}
    rows = entry_rows(comparison)
    checks: list[Check] = []
    for t in targets:
        if t not in rows:
            raise EvalkitError(f"gate: target entry '{t}' is not in both runs (entries: {', '.join(rows) or 'none'})")
        by_metric = {r.metric: r for r in rows[t]}
        metric = primary_metric(t, sorted(by_metric), config.primary)
        checks.append(_target_check(t, metric, by_metric[metric], config, mde.get(t)))
    tax = alignment_tax(comparison, targets, primary=config.primary)
    for e in tax.per_entry:
        m = mde.get(e.entry)
        if e.entry in no_signal:
            checks.append(Check("tax", f"{e.entry} ({e.metric})", True, e.delta, e.ci_lo, e.ci_hi, config.tax_floor,
                                f"{e.entry} {e.metric}: no signal (baseline CI includes chance) — not gated" + _mde(m),
                                "no signal", m))
            continue
        lo = e.ci_lo if e.ci_lo is not None else e.delta
        ok = lo >= config.tax_floor
        checks.append(Check("tax", f"{e.entry} ({e.metric})", ok, e.delta, e.ci_lo, e.ci_hi, config.tax_floor,
                            f"{e.entry} {e.metric}: {_pt(e.delta)}, CI lower bound {_pt(lo)} "
                            f"{'within' if ok else 'beyond'} the tax floor {_pt(config.tax_floor)}"
                            + _flips(rows.get(e.entry, []), e.metric) + _mde(m),
                            "pass" if ok else "fail", m))
    if config.kl_budget is not None:
        if kl is None:
            checks.append(Check("kl", "policy", False, None, limit=config.kl_budget,
                                reason="KL(policy‖ref) was not measured, so the KL budget cannot be checked",
                                status="fail"))
        else:
            ok = kl <= config.kl_budget
            checks.append(Check("kl", "policy", ok, kl, limit=config.kl_budget,
                                reason=f"KL(policy‖ref) {kl:.4f} nats/token {'≤' if ok else '>'} budget {config.kl_budget:g}",
                                status="pass" if ok else "fail"))
    return GateDecision(all(c.passed for c in checks), checks)


def power_plan(baseline: Mapping[str, PerItem], targets: Sequence[str], config: GateConfig = GateConfig(),
               rho: float = 0.8, power: float = 0.8) -> list[PowerRow]:
    """The gate's power plan from the baseline's per-item values (entry -> values of its gated
    metric), with this config's hoped gain, tax floor, planned discordances, alpha and chance levels."""
    return power_table(baseline, targets, metrics=config.primary, hoped_gain=config.hoped_gain,
                       tax_floor=config.tax_floor, discordance_target=config.plan_discordance_target,
                       discordance_tax=config.plan_discordance_tax, chance=config.chance, rho=rho,
                       alpha=config.alpha, power=power)
