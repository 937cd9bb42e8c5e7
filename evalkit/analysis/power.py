"""Power planning for the promotion gate: can the confirmation split detect what we hope for?

Why: a gate that needs a significant gain on too few items rolls back every round, and a tax
floor tighter than the tax check's resolution rejects every round, whatever the training did.
Both failures look like "the method does not work" while the cause is the sample size. So
before any training we compute, per gated entry, the *minimum detectable effect* (MDE): the
true paired change a two-sided test at ``alpha`` (0.05) finds with probability ``power``
(0.80) at ``n`` items, ``MDE = (z_{1-alpha/2} + z_{power}) * SE`` (≈ 2.8 × SE), and refuse to
start when a target's MDE exceeds the hoped-for gain or a tax entry's MDE exceeds the tax
floor's size.

The SE of a paired difference depends on how often the two models *disagree* on an item, which
is not known before round 0, so it is planned:

* 0/1 metrics (accuracy, prompt-level pass): with a discordant-pair rate ``d`` (fraction of items
  right in exactly one model) the per-item difference is ±1 on a ``d`` fraction and 0 elsewhere,
  so its variance is ``d - delta² ≈ d`` and ``SE ≈ sqrt(d / n)``. Rule of thumb:
  ``MDE ≈ 2.8 * sqrt(d / n)``; e.g. ``d = 0.10, n = 270`` gives ≈ 5.4 points.
* other per-item metrics, and IFEval's pooled instruction-level accuracy (planned per prompt as
  the gate tests it: the ratio estimator's linearised per-prompt values): from the
  baseline's per-item variance and a planned correlation ``rho`` between the two models' scores
  on the same item, ``sd_diff = sqrt(2 * var(x) * (1 - rho))`` (the variance of a difference of
  two equally variable, ``rho``-correlated scores). ``rho = 0.8`` by default: one fine-tuning
  round leaves most items scored as before.

An entry sitting at chance (its baseline 95% CI includes the chance level, e.g. a small model's
MMLU at 25%) carries no signal: a "tax" measured on it is noise around chance, so such a tax
entry is reported as "no signal" and not required to be powered (nor, in the gate, to pass).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from evalkit.analysis.paired import cluster_items, is_binary, is_clustered, per_sample_value
from evalkit.analysis.stats import clustered_ratio
from evalkit.analysis.tax import DEFAULT_PRIMARY

try:  # scipy's quantiles when present; the standard library's are exact enough otherwise
    from scipy.stats import norm as _norm

    def _z(q: float) -> float:
        return float(_norm.ppf(q))
except ImportError:  # pragma: no cover - scipy is installed in the project venv
    from statistics import NormalDist

    def _z(q: float) -> float:
        return NormalDist().inv_cdf(q)


ALPHA = 0.05
POWER = 0.80
RHO = 0.8
# Chance level of well-known entries' primary metric (4-way multiple choice). Entries not here
# have unknown chance (signal None) unless the caller passes one.
DEFAULT_CHANCE: dict[str, float] = {"mmlu": 0.25}

PerItem = Mapping[Any, Any] | Sequence[Any]


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """``z_{1-alpha/2} + z_{power}`` (2.80 at the defaults): MDEs are this many SEs."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("power: alpha and power must lie in (0, 1)")
    return _z(1 - alpha / 2) + _z(power)


def mde_paired(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE of a paired two-sided test: ``(z_{1-a/2} + z_power) * sd_diff / sqrt(n)`` (inf at n=0)."""
    if n <= 0:
        return math.inf
    return z_sum(alpha, power) * sd_diff / math.sqrt(n)


def mde_binary(discordance: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE of a paired 0/1 metric with discordant-pair rate ``d``: ``(z_a + z_b) * sqrt(d / n)``.

    ≈ ``2.8 * sqrt(d / n)``; ``d = 0.10, n = 270`` → ≈ 0.054 (5.4 points).
    """
    if not 0 <= discordance <= 1:
        raise ValueError("power: discordance must lie in [0, 1]")
    return mde_paired(math.sqrt(discordance), n, alpha, power)


def n_needed_paired(sd_diff: float, mde: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Smallest n with ``mde_paired(sd_diff, n) <= mde``."""
    if mde <= 0:
        raise ValueError("power: the effect to detect must be positive")
    n = math.ceil((z_sum(alpha, power) * sd_diff / mde) ** 2 - 1e-9)
    while mde_paired(sd_diff, n, alpha, power) > mde:  # guard the ceil against float rounding
        n += 1
    return max(n, 1)


def n_needed_binary(discordance: float, mde: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Smallest n with ``mde_binary(discordance, n) <= mde``."""
    return n_needed_paired(math.sqrt(discordance), mde, alpha, power)


def wilson_ci(k: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``k / n``: stays inside [0, 1] and is not
    degenerate at 0 or n successes, unlike the normal (Wald) interval."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass
class PowerRow:
    """One gated entry's power plan."""

    entry: str
    metric: str
    role: Literal["target", "tax"]
    n: int  # items in the split the gate will compare on
    baseline: float  # baseline mean of the metric
    ci_lo: float  # baseline 95% CI (Wilson for 0/1 metrics, normal otherwise)
    ci_hi: float
    chance: float | None  # chance level of the metric; None: unknown
    signal: bool | None  # False: baseline CI includes chance; None: chance unknown
    binary: bool
    discordance: float | None  # planned discordant-pair rate (0/1 metrics)
    rho: float | None  # planned between-model correlation (other metrics)
    sd_diff: float  # planned SD of the per-item difference
    mde: float  # minimum detectable effect at n (metric units)
    limit: float  # hoped-for gain (target) or |tax floor| (tax)
    ok: bool  # mde <= limit, or a tax entry without signal
    n_needed: int | None  # n at which mde <= limit (None: sd_diff is 0, any n will do)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(items: PerItem) -> list[Any]:
    raw = list(items.values()) if isinstance(items, Mapping) else list(items)
    return [v for v in raw if per_sample_value(v) is not None]


def power_row(
    entry: str,
    values: PerItem,
    role: Literal["target", "tax"],
    limit: float,
    metric: str = "",
    discordance: float = 0.25,
    chance: float | None = None,
    rho: float = RHO,
    alpha: float = ALPHA,
    power: float = POWER,
) -> PowerRow:
    """The plan for one entry from its baseline per-item values (dict or list, 0/1 or float)."""
    raw = _values(values)
    clustered = is_clustered(raw)
    z = _z(1 - alpha / 2)
    binary, successes = False, 0.0
    if clustered:
        # a pooled item-level metric (IFEval inst_level_*): plan the ratio estimator the gate tests,
        # from its value and cluster-robust SE (per prompt); n * SE² is the per-prompt variance of
        # the linearised ratio, sized into a paired change like any per-item metric's, with rho
        mean, se, _ = clustered_ratio([c for c in (cluster_items(v) for v in raw) if c])
        n = sum(1 for v in raw if cluster_items(v))
        var = se * se * n if n > 1 else 0.0
    else:
        xs = [float(per_sample_value(v)) for v in raw]  # type: ignore[arg-type]
        n = len(xs)
        mean = sum(xs) / n if n else float("nan")
        binary, successes = is_binary(raw), sum(xs)
        var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    if binary:
        lo, hi = wilson_ci(successes, n, z)
        sd = math.sqrt(discordance)
        disc, r = discordance, None
    else:
        half = z * math.sqrt(var / n) if n else math.inf
        lo, hi = mean - half, mean + half
        sd = math.sqrt(2 * var * (1 - rho))
        disc, r = None, rho
    mde = mde_paired(sd, n, alpha, power)
    signal = None if chance is None else not (lo <= chance <= hi)
    limit = abs(limit)
    ok = mde <= limit or (role == "tax" and signal is False)
    needed = n_needed_paired(sd, limit, alpha, power) if sd > 0 and limit > 0 else None
    return PowerRow(entry, metric, role, n, mean, lo, hi, chance, signal, binary, disc, r, sd, mde, limit, ok, needed)


def power_table(
    baseline: Mapping[str, PerItem],
    targets: Collection[str],
    metrics: Mapping[str, str] | None = None,
    hoped_gain: float = 0.08,
    tax_floor: float = -0.02,
    discordance_target: float = 0.25,
    discordance_tax: float = 0.06,
    chance: Mapping[str, float] | None = None,
    rho: float = RHO,
    alpha: float = ALPHA,
    power: float = POWER,
) -> list[PowerRow]:
    """Plan every gated entry: ``baseline`` maps entry -> per-item values of its gated metric.

    Targets (in the order given) are planned against ``hoped_gain`` with ``discordance_target``;
    every other entry of ``baseline`` is a tax entry planned against ``|tax_floor|`` with
    ``discordance_tax``. ``chance`` overrides :data:`DEFAULT_CHANCE` per entry; ``metrics``
    names each entry's metric (default: the gate's default primary metric).
    """
    missing = [t for t in targets if t not in baseline]
    if missing:
        raise ValueError(f"power: no baseline values for target entr{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
    chances = {**DEFAULT_CHANCE, **(chance or {})}
    names = {**DEFAULT_PRIMARY, **(metrics or {})}
    rows = [power_row(t, baseline[t], "target", hoped_gain, names.get(t, ""), discordance_target,
                      chances.get(t), rho, alpha, power) for t in targets]
    rows += [power_row(e, v, "tax", tax_floor, names.get(e, ""), discordance_tax, chances.get(e), rho, alpha, power)
             for e, v in baseline.items() if e not in targets]
    return rows


def no_signal(rows: Sequence[PowerRow]) -> list[str]:
    """Tax entries whose baseline CI includes chance (the gate's ``no_signal`` argument)."""
    return [r.entry for r in rows if r.role == "tax" and r.signal is False]


def _pt(x: float) -> str:
    return f"{x * 100:.1f} pt"


def refusal(rows: Sequence[PowerRow]) -> str | None:
    """One line naming the first underpowered entry (its MDE, limit and the n it needs), or None."""
    r = next((r for r in rows if not r.ok), None)
    if r is None:
        return None
    plan = f"planned discordance {r.discordance:g}" if r.binary else f"planned correlation {r.rho:g}"
    subject = f"{r.entry} ({r.metric})" if r.metric else r.entry
    if r.role == "target":
        what = f"can only detect +{_pt(r.mde)} at n={r.n} ({plan}), above the hoped-for gain +{_pt(r.limit)}"
    else:
        what = f"can only detect a loss of {_pt(r.mde)} at n={r.n} ({plan}), beyond the tax floor -{_pt(r.limit)}"
    need = f"it needs n≥{r.n_needed}" if r.n_needed is not None else "no n suffices"
    return f"loop: {subject} {what}; {need} — enlarge the confirmation split or pass --allow-underpowered"
