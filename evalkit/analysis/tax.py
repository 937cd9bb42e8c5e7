"""Alignment tax: what a training round cost on the suite entries it did not target.

Why: post-training aimed at one capability (say IFEval) routinely erodes others (MMLU
knowledge, GSM8K arithmetic). The loop's gate must see that cost with its uncertainty, not a
bare difference of two means. Given a paired :class:`~evalkit.analysis.paired.Comparison` and
the target entries, the tax is the paired change (b - a) of every *other* entry's primary
metric, each with its bootstrap CI, and a weighted mean of those changes whose CI comes from a
stratified bootstrap (each entry's documents resampled independently, same seed convention).

Sign: values are b - a on higher-is-better metrics, so a negative change is a cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalkit.analysis.bootstrap import bootstrap_indices, percentile_ci
from evalkit.analysis.paired import CALIBRATION_METRICS, Comparison, MetricDelta, excludes_zero
from evalkit.errors import EvalkitError
from evalkit.jsonsafe import json_safe

DEFAULT_PRIMARY: dict[str, str] = {
    "mmlu": "acc",
    "gsm8k": "exact_match,strict-match",
    "ifeval": "inst_level_strict_acc",
}


@dataclass
class EntryTax:
    entry: str
    metric: str
    n: int
    value_a: float
    value_b: float
    delta: float
    ci_lo: float | None
    ci_hi: float | None
    significant: bool
    weight: float  # normalised


@dataclass
class AlignmentTax:
    targets: list[str]
    per_entry: list[EntryTax]
    weighted_delta: float | None
    ci_lo: float | None
    ci_hi: float | None
    significant: bool
    iters: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def entry_rows(comparison: Comparison) -> dict[str, list[MetricDelta]]:
    """Each entry's compared rows at entry level (falls back to task rows when it has none)."""
    out: dict[str, list[MetricDelta]] = {}
    for entry in comparison.entries():
        rows = [r for r in comparison.rows if r.entry == entry]
        top = [r for r in rows if r.level == "entry"]
        out[entry] = top or rows
    return out


def primary_metric(entry: str, available: list[str], primary: Mapping[str, str] | None = None) -> str:
    """The configured metric, else the default for well-known entries, else the first one present."""
    chosen = (primary or {}).get(entry) or DEFAULT_PRIMARY.get(entry)
    if chosen is not None:
        if chosen not in available:
            raise EvalkitError(f"alignment tax: entry '{entry}' has no paired metric '{chosen}' (has: {', '.join(available) or 'none'})")
        return chosen
    usable = [m for m in sorted(available) if m not in CALIBRATION_METRICS]
    if not usable:
        raise EvalkitError(f"alignment tax: entry '{entry}' has no paired metric to use")
    return usable[0]


def normalised_weights(entries: list[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Equal weights by default; entries missing from a given map weigh 1. Sums to 1."""
    raw = {e: float((weights or {}).get(e, 1.0)) for e in entries}
    if any(w < 0 or math.isnan(w) for w in raw.values()):
        raise EvalkitError("alignment tax: weights must be non-negative numbers")
    total = sum(raw.values())
    if entries and total <= 0:
        raise EvalkitError("alignment tax: weights sum to zero")
    return {e: w / total for e, w in raw.items()} if entries else {}


def alignment_tax(
    comparison: Comparison,
    targets: Iterable[str],
    primary: Mapping[str, str] | None = None,
    weights: Mapping[str, float] | None = None,
    iters: int | None = None,
    seed: int | None = None,
) -> AlignmentTax:
    """Change on every non-target entry's primary metric, and their weighted mean with a CI."""
    targets = list(targets)
    by_entry = entry_rows(comparison)
    unknown = [t for t in targets if t not in by_entry]
    if unknown:
        raise EvalkitError(f"alignment tax: target entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} not compared (entries: {', '.join(by_entry) or 'none'})")
    iters = comparison.iters if iters is None else iters
    seed = comparison.seed if seed is None else seed
    others = [e for e in by_entry if e not in targets]
    w = normalised_weights(others, weights)
    chosen: list[MetricDelta] = []
    for entry in others:
        rows = {r.metric: r for r in by_entry[entry]}
        chosen.append(rows[primary_metric(entry, sorted(rows), primary)])
    per_entry = [
        EntryTax(entry=r.entry, metric=r.metric, n=r.n, value_a=r.value_a, value_b=r.value_b, delta=r.delta,
                 ci_lo=r.ci_lo, ci_hi=r.ci_hi, significant=r.significant, weight=w[r.entry])
        for r in chosen
    ]
    mean, lo, hi = weighted_delta_ci([r.diffs for r in chosen], [w[r.entry] for r in chosen], iters, seed)
    return AlignmentTax(
        targets=targets, per_entry=per_entry, weighted_delta=mean, ci_lo=lo, ci_hi=hi,
        significant=excludes_zero(_nan(lo), _nan(hi)), iters=iters, seed=seed,
    )


def weighted_delta_ci(diffs: list[np.ndarray], weights: list[float], iters: int, seed: int) -> tuple[float | None, float | None, float | None]:
    """Weighted mean of per-entry mean differences with a stratified percentile bootstrap CI."""
    if not diffs:
        return None, None, None
    if any(len(d) == 0 for d in diffs):
        raise EvalkitError("alignment tax: a comparison without per-sample differences (e.g. loaded from JSON) cannot be bootstrapped; recompute it with compare_runs")
    mean = float(sum(wt * float(np.mean(d)) for d, wt in zip(diffs, weights)))
    if iters < 1 or any(len(d) < 2 for d in diffs):
        return mean, None, None
    total = np.zeros(iters)
    for i, (d, wt) in enumerate(zip(diffs, weights)):
        means = np.concatenate([d[idx].mean(axis=1) for idx in bootstrap_indices(len(d), iters, seed + i)])
        total += wt * means
    lo, hi = percentile_ci(total)
    return mean, lo, hi


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x
