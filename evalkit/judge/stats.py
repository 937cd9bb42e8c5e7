"""Judge-vs-human statistics: pure functions over label / verdict lists.

Outcomes are ``"a"``, ``"b"`` or ``"tie"`` in the data's own orientation; single-order outcomes
may be ``None`` (an unparsed reply) and are left out of the statistics that need them.

Definitions follow the MT-Bench paper (Zheng et al. 2023) so figures are comparable:
*agreement with ties* is exact 3-way agreement over all items; *agreement without ties* only
counts items where neither the human nor the judge said tie. Cohen's κ corrects agreement for
chance (a judge that always answers "a" on data that is 50% "a" has agreement 0.5, κ 0).

Confidence intervals: a proportion (agreement, tie rate, position consistency, flip rate) gets the
Wilson score interval (:func:`wilson_ci`): at n = 15, p = 0.9 it covers 94% where the percentile
bootstrap covers 78% (53% at p = 0.95), because the bootstrap collapses to a point at 0% or 100%. κ is not a proportion; it gets a
percentile bootstrap over items with a fixed seed (reproducible;
:func:`evalkit.analysis.bootstrap.bootstrap_ci`), but only from
:data:`KAPPA_CI_MIN_N` items up (see :func:`kappa_ci` for why), and no interval below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# The generic resampler lives with the others; re-exported because judge code calls S.bootstrap_ci.
from evalkit.analysis.bootstrap import bootstrap_ci

OUTCOMES = ("a", "b", "tie")
NAN = float("nan")


def _arr(x: Sequence[Any]) -> np.ndarray:
    if isinstance(x, np.ndarray):  # bootstrap resamples arrive as object arrays already
        return np.where(x == None, "", x)  # noqa: E711 (element-wise)
    return np.asarray([("" if v is None else str(v)) for v in x], dtype=object)


def agreement(human: Sequence[str], judge: Sequence[str]) -> float:
    """Exact agreement over all items, ties included as a third class."""
    h, j = _arr(human), _arr(judge)
    return float(np.mean(h == j)) if len(h) else NAN


def agreement_no_ties(human: Sequence[str], judge: Sequence[str]) -> tuple[float, int]:
    """Agreement over items where neither side is a tie; returns (rate, n used)."""
    h, j = _arr(human), _arr(judge)
    keep = (h != "tie") & (j != "tie") & (h != "") & (j != "")
    n = int(keep.sum())
    return (float(np.mean(h[keep] == j[keep])) if n else NAN), n


def cohen_kappa(human: Sequence[str], judge: Sequence[str], categories: Sequence[str] = OUTCOMES) -> float:
    """Cohen's κ = (p_o − p_e) / (1 − p_e); NaN when chance agreement is 1 (both constant, same class)."""
    h, j = _arr(human), _arr(judge)
    n = len(h)
    if n == 0:
        return NAN
    po = float(np.mean(h == j))
    pe = sum(float(np.mean(h == c)) * float(np.mean(j == c)) for c in categories)
    if math.isclose(pe, 1.0):
        return NAN
    return (po - pe) / (1.0 - pe)


def confusion_matrix(human: Sequence[str], judge: Sequence[str], labels: Sequence[str] = OUTCOMES) -> list[list[int]]:
    """Counts with rows = human label, columns = judge verdict, both in ``labels`` order."""
    index = {k: i for i, k in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for h, j in zip(human, judge):
        if h in index and j in index:
            m[index[h]][index[j]] += 1
    return m


def position_consistency(order_ab: Sequence[str | None], order_ba: Sequence[str | None]) -> tuple[float, int]:
    """Share of items whose verdict is the same after swapping the answers (unparsed orders left out)."""
    pairs = [(x, y) for x, y in zip(order_ab, order_ba) if x is not None and y is not None]
    return ((sum(x == y for x, y in pairs) / len(pairs)) if pairs else NAN), len(pairs)


def first_position_rate(order_ab: Sequence[str | None], order_ba: Sequence[str | None]) -> tuple[float, int]:
    """Among decisive single-order verdicts, how often the answer shown first wins (0.5 = no bias).

    In the (a, b) order the first answer is ``a``; in the (b, a) order it is ``b``.
    """
    firsts = [v == "a" for v in order_ab if v in ("a", "b")] + [v == "b" for v in order_ba if v in ("a", "b")]
    return ((sum(firsts) / len(firsts)) if firsts else NAN), len(firsts)


def longer_wins_rate(len_a: Sequence[float], len_b: Sequence[float], outcome: Sequence[str]) -> tuple[float, int]:
    """Among decisive outcomes on pairs of different length, how often the longer answer won."""
    wins = [(o == "a") == (la > lb) for la, lb, o in zip(len_a, len_b, outcome) if o in ("a", "b") and la != lb]
    return ((sum(wins) / len(wins)) if wins else NAN), len(wins)


LENGTH_BINS = (-math.inf, -1.0, -0.5, -0.15, 0.15, 0.5, 1.0, math.inf)


def length_bias(len_a: Sequence[float], len_b: Sequence[float], human: Sequence[str], judge: Sequence[str]) -> dict[str, Any]:
    """Does the judge prefer longer answers more than the humans did?

    ``judge_longer_rate`` vs ``human_longer_rate`` (see :func:`longer_wins_rate`); ``bins`` group
    items by log2(len_a / len_b) and give the rate at which ``a`` wins (a tie counts ½) for the
    judge and for the humans — the data for the length-bias plot.
    """
    jr, jn = longer_wins_rate(len_a, len_b, judge)
    hr, hn = longer_wins_rate(len_a, len_b, human)
    ratio = [math.log2(max(la, 1) / max(lb, 1)) for la, lb in zip(len_a, len_b)]
    bins = []
    for lo, hi in zip(LENGTH_BINS[:-1], LENGTH_BINS[1:]):
        idx = [i for i, r in enumerate(ratio) if lo <= r < hi]
        score = lambda o: 1.0 if o == "a" else 0.5 if o == "tie" else 0.0  # noqa: E731
        bins.append({"lo": lo if math.isfinite(lo) else None, "hi": hi if math.isfinite(hi) else None, "n": len(idx),
                     "judge_a_rate": (sum(score(judge[i]) for i in idx) / len(idx)) if idx else NAN,
                     "human_a_rate": (sum(score(human[i]) for i in idx) / len(idx)) if idx else NAN})
    return {"judge_longer_rate": jr, "judge_n": jn, "human_longer_rate": hr, "human_n": hn,
            "excess": (jr - hr) if not (math.isnan(jr) or math.isnan(hr)) else NAN, "bins": bins}


def flip_rate(clean: Sequence[str], perturbed: Sequence[str]) -> tuple[float, int]:
    """How often the verdict changed under a perturbation (e.g. an injected instruction)."""
    n = len(clean)
    return ((sum(c != p for c, p in zip(clean, perturbed)) / n) if n else NAN), n


def win_rate(outcomes: Sequence[str], winner: str = "a") -> float:
    """(wins + ½ ties) / n from ``winner``'s side."""
    if len(outcomes) == 0:
        return NAN
    return sum(1.0 if o == winner else 0.5 if o == "tie" else 0.0 for o in outcomes) / len(outcomes)


def wilson_ci(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default); (NaN, NaN) when ``n`` is 0.

    Preferred over the percentile bootstrap for one proportion at small n, where the bootstrap's
    coverage is poor (and it collapses to a point at 0% or 100%). ``successes`` may be fractional
    (e.g. a tie counted as half a hit). The formula lives in one place,
    :func:`evalkit.analysis.power.wilson_ci`; this only maps an empty sample to NaN (power's
    answers (0, 1) there). Imported lazily: power pulls in scipy, which judge code need not load.
    """
    if n <= 0:
        return NAN, NAN
    from evalkit.analysis.power import wilson_ci as _wilson

    return _wilson(successes, n, z)


# κ gets an interval only from this many items up. Why 50: a coverage simulation of the 95%
# percentile bootstrap (400 data sets per case, 500 resamples each; binary and 3-way labels,
# balanced and skewed marginals, a judge biased to one answer, a position-biased judge that
# mostly "ties") covered 0.91-0.96 at n = 50 in every case whose rarest class has >= 10% of the
# items, but 0.87-0.89 at n = 30 and 0.61-0.82 at n = 15 once a class is rare (humans 85/15 or
# 90/10, or a judge that says tie 85% of the time); balanced cases cover ~0.93 even at n = 15.
# Known limit: a class near 5% (humans 95/5) still under-covers at n = 50 (0.86; 0.92 at 75).
# A rule on marginal counts (e.g. "every class >= 5 items") was tried and made the reported
# intervals *worse* (0.05-0.81): a rare class that happens to reach 5 items in a small sample is
# over-represented, so the data sets that pass such a rule are the unrepresentative ones; n
# alone does not select on the data. Below it: κ without an interval, said in words.
KAPPA_CI_MIN_N = 50
KAPPA_CI_NOTE = "n too small for a κ interval"


def kappa_ci(
    human: Sequence[str], judge: Sequence[str], *, iters: int = 2000, seed: int = 0, min_n: int = KAPPA_CI_MIN_N
) -> tuple[list[float], str | None]:
    """95% percentile-bootstrap CI of Cohen's κ and a note: ``([lo, hi], None)`` from ``min_n``
    items up, ``([NaN, NaN], KAPPA_CI_NOTE)`` below (see :data:`KAPPA_CI_MIN_N` for the rule)."""
    if len(human) < min_n:
        return [NAN, NAN], KAPPA_CI_NOTE
    return list(bootstrap_ci(cohen_kappa, human, judge, iters=iters, seed=seed)), None
