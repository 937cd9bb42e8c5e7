"""The promotion gate: a round's model replaces the current one only with evidence.

Why three checks: a training round can (1) not help — the target's paired 95% CI must clear a
minimum gain, not just a positive mean; (2) help the target by spending other skills — every
other entry's paired CI lower bound must stay above the tax floor (default −1 point); (3) drift
far from the reference — mean per-token KL(policy‖ref) on the policy's own samples must stay
within budget (RLHF's usual KL control). The decision keeps every number and a sentence per
check, so the loop report can say *why* a round was rolled back.

Which target metric is fixed in the config before round 0 (the issue's lesson: IFEval's
instruction-level accuracy moves before prompt-level does; switching after seeing results
would be p-hacking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.analysis.paired import Comparison
from evalkit.analysis.tax import alignment_tax, entry_rows, primary_metric
from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class GateConfig:
    min_gain: float = 0.0  # target delta's CI lower bound must be > this (metric units: 0.01 = 1 point)
    tax_floor: float = -0.01  # each other entry's delta CI lower bound must be >= this
    kl_budget: float | None = 0.05  # nats per token; None: KL is not a gate condition
    primary: Mapping[str, str] = field(default_factory=dict)  # entry -> metric (target and tax)


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


def _flips(rows: Sequence[Any], metric: str) -> str:
    """Why a tax CI is wide: for a 0/1 metric its width comes from the answers that changed in
    either direction (half-width ~ 1.96*sqrt(changed/n)/sqrt(n)), not from the net delta."""
    r = next((r for r in rows if r.metric == metric), None)
    if r is None or r.a_only is None or r.b_only is None:
        return ""
    return f" ({r.a_only} of {r.n} right→wrong, {r.b_only} wrong→right)"


def decide(comparison: Comparison, targets: Sequence[str], config: GateConfig = GateConfig(),
           kl: float | None = None) -> GateDecision:
    """Gate the candidate (``comparison.run_b``) against the current model (``run_a``)."""
    if not targets:
        raise EvalkitError("gate: no target entries given")
    rows = entry_rows(comparison)
    checks: list[Check] = []
    for t in targets:
        if t not in rows:
            raise EvalkitError(f"gate: target entry '{t}' is not in both runs (entries: {', '.join(rows) or 'none'})")
        by_metric = {r.metric: r for r in rows[t]}
        metric = primary_metric(t, sorted(by_metric), config.primary)
        r = by_metric[metric]
        ok = r.ci_lo > config.min_gain
        checks.append(Check("target", f"{t} ({metric})", ok, r.delta, r.ci_lo, r.ci_hi, config.min_gain,
                            f"{t} {metric}: {_pt(r.delta)}, 95% CI [{_pt(r.ci_lo)}, {_pt(r.ci_hi)}] "
                            f"{'clears' if ok else 'does not clear'} the minimum gain {_pt(config.min_gain)}"))
    tax = alignment_tax(comparison, targets, primary=config.primary)
    for e in tax.per_entry:
        lo = e.ci_lo if e.ci_lo is not None else e.delta
        ok = lo >= config.tax_floor
        checks.append(Check("tax", f"{e.entry} ({e.metric})", ok, e.delta, e.ci_lo, e.ci_hi, config.tax_floor,
                            f"{e.entry} {e.metric}: {_pt(e.delta)}, CI lower bound {_pt(lo)} "
                            f"{'within' if ok else 'beyond'} the tax floor {_pt(config.tax_floor)}"
                            + _flips(rows.get(e.entry, []), e.metric)))
    if config.kl_budget is not None:
        if kl is None:
            checks.append(Check("kl", "policy", False, None, limit=config.kl_budget,
                                reason="KL(policy‖ref) was not measured, so the KL budget cannot be checked"))
        else:
            ok = kl <= config.kl_budget
            checks.append(Check("kl", "policy", ok, kl, limit=config.kl_budget,
                                reason=f"KL(policy‖ref) {kl:.4f} nats/token {'≤' if ok else '>'} budget {config.kl_budget:g}"))
    return GateDecision(all(c.passed for c in checks), checks)
