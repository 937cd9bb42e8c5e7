"""The power plan: what effect can the gate detect at the frozen n, before any training?

Why: every round of the first loop runs was rolled back, and nobody could say whether the gate
*could* have seen the gain it hoped for. Round 0's per-item results give each gated metric's
baseline, n and CI; with a planned discordance (share of items whose outcome a round changes:
0.25 for the target, from the probe's 32 of 128 real prompts flipped; 0.06 for the tax sets,
from the measured SFT rounds' 3.8-6.3% flipped MMLU answers) they give the minimum detectable
effect (two-sided 95%, 80% power, :mod:`evalkit.analysis.power`). The loop refuses to train
when the target's MDE exceeds ``gate.hoped_gain`` or a tax entry's exceeds ``|gate.tax_floor|``,
unless ``allow_underpowered`` — an underpowered loop can only be rolled back, at full cost.
A tax entry whose baseline CI includes chance carries no signal about a tax; it is reported as
"no signal" and not gated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from evalkit.analysis.paired import per_sample_value
from evalkit.analysis.power import no_signal, power_table, refusal
from evalkit.analysis.tax import primary_metric

Key = tuple[str, int]


def entry_values(samples: Iterable[dict[str, Any]], entry: str, metric: str,
                 keep: set[Key] | None = None) -> dict[Key, Any]:
    """Per-item values of ``metric`` for one entry, optionally only the items in ``keep``."""
    out: dict[Key, Any] = {}
    for s in samples:
        if s["entry"] != entry or metric not in (s.get("metrics") or {}):
            continue
        key = (s["task"], int(s["doc_id"]))
        if keep is None or key in keep:
            v = s["metrics"][metric]
            out[key] = v if isinstance(v, bool) or per_sample_value(v) is None else v
    return out


def chance_levels(samples: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Chance accuracy of each multiple-choice entry: the mean of 1/(number of choices) over its
    items (ARC has a few 3- and 5-choice questions), from the stored per-choice log-likelihoods."""
    per: dict[str, list[float]] = {}
    for s in samples:
        ll = s.get("loglik", s.get("loglikelihoods"))  # the store's field; the row builder's name
        if isinstance(ll, list) and len(ll) >= 2:
            per.setdefault(s["entry"], []).append(1.0 / len(ll))
    return {e: sum(v) / len(v) for e, v in per.items()}


def make_plan(samples: list[dict[str, Any]], targets: list[str], gate: Any,
              confirm: Mapping[str, set[Key]]) -> dict[str, Any]:
    """The plan as stored in the loop: rows (one per gated metric), refusal line, no-signal list."""
    by_entry: dict[str, set[str]] = {}
    for s in samples:
        by_entry.setdefault(s["entry"], set()).update((s.get("metrics") or {}).keys())
    metrics = {e: primary_metric(e, sorted(m), gate.primary) for e, m in by_entry.items()}
    baseline = {e: entry_values(samples, e, metrics[e], confirm.get(e)) for e in sorted(by_entry)}
    chance = {e: c for e, c in chance_levels(samples).items() if metrics.get(e) in ("acc", "acc_norm")}
    rows = power_table(baseline, targets, metrics=metrics, hoped_gain=gate.hoped_gain, tax_floor=gate.tax_floor,
                       discordance_target=gate.plan_discordance_target, discordance_tax=gate.plan_discordance_tax,
                       chance={**chance, **dict(gate.chance)})
    return {"rows": [{**asdict(r), "split": "confirm" if r.entry in confirm else "all"} for r in rows],
            "refusal": refusal(rows), "no_signal": no_signal(rows)}


def format_plan(plan: Mapping[str, Any]) -> str:
    """The power table as text (loop output and ``evalkit loop --plan``)."""
    head = f"{'entry':<16} {'metric':<26} {'role':<6} {'split':<8} {'n':>5} {'baseline':>16} {'chance':>6} {'MDE':>8} {'limit':>8}  verdict"
    lines = ["power plan (paired test, two-sided 95%, 80% power):", head]
    for r in plan["rows"]:
        base = f"{r['baseline']:.3f} [{r['ci_lo']:.3f},{r['ci_hi']:.3f}]"
        ch = "-" if r.get("chance") is None else f"{r['chance']:.2f}"
        if r["role"] == "tax" and r.get("signal") is False:
            verdict = "no signal (baseline CI includes chance): not gated"
        elif r["ok"]:
            verdict = "ok"
        else:
            verdict = f"UNDERPOWERED: needs n≥{r['n_needed']}"
        lines.append(f"{r['entry']:<16} {r['metric']:<26} {r['role']:<6} {r.get('split', 'all'):<8} {r['n']:>5} {base:>16} "
                     f"{ch:>6} {r['mde'] * 100:>6.1f}pt {r['limit'] * 100:>6.1f}pt  {verdict}")
    return "\n".join(lines)
