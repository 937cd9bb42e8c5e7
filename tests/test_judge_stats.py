"""Judge-vs-human statistics on hand-made label/verdict sets with known answers, and the
both-order combination rules (flip -> tie, probability averaging)."""

from __future__ import annotations

import math

import pytest

from evalkit.judge import stats as S
from evalkit.judge.verdict import SingleJudgment, combine, order_outcome, parse_verdict_text


# ------------------------------------------------------------------ agreement
def test_agreement_with_and_without_ties():
    human = ["a", "a", "b", "b", "tie"]
    judge = ["a", "b", "b", "tie", "tie"]
    assert S.agreement(human, judge) == pytest.approx(3 / 5)  # a/a, b/b, tie/tie
    rate, n = S.agreement_no_ties(human, judge)
    assert n == 3 and rate == pytest.approx(2 / 3)  # items 0, 1, 2: neither side says tie


def test_agreement_no_ties_undefined_when_everything_is_a_tie():
    rate, n = S.agreement_no_ties(["a", "b"], ["tie", "tie"])
    assert n == 0 and math.isnan(rate)
    assert S.agreement(["a", "b"], ["tie", "tie"]) == 0.0


def test_kappa_textbook_example():
    # 50 items: both "yes" 20, A yes/B no 5, A no/B yes 10, both "no" 15 -> p_o .7, p_e .5, kappa .4
    human = ["a"] * 20 + ["a"] * 5 + ["b"] * 10 + ["b"] * 15
    judge = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    assert S.cohen_kappa(human, judge) == pytest.approx(0.4)


def test_kappa_with_a_tie_class():
    human = ["a", "b", "a", "b", "tie"]
    judge = ["a", "a", "a", "b", "b"]
    # p_o = 3/5; p_e = .4*.6 + .4*.4 + .2*0 = .4 -> (0.6 - 0.4) / 0.6
    assert S.cohen_kappa(human, judge) == pytest.approx(1 / 3)


def test_kappa_edge_cases():
    assert S.cohen_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    # A judge that always says "a" on balanced data agrees 50% of the time and has kappa 0.
    assert S.cohen_kappa(["a", "b"] * 10, ["a"] * 20) == pytest.approx(0.0)
    # Systematic disagreement is negative.
    assert S.cohen_kappa(["a", "b"] * 5, ["b", "a"] * 5) == pytest.approx(-1.0)
    # Both constant and identical: chance agreement is 1, kappa undefined.
    assert math.isnan(S.cohen_kappa(["a"] * 4, ["a"] * 4))
    assert math.isnan(S.cohen_kappa([], []))


def test_kappa_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    import random

    rng = random.Random(3)
    human = [rng.choice(["a", "b", "tie"]) for _ in range(200)]
    judge = [h if rng.random() < 0.6 else rng.choice(["a", "b", "tie"]) for h in human]
    assert S.cohen_kappa(human, judge) == pytest.approx(sk.cohen_kappa_score(human, judge))


def test_confusion_matrix_rows_are_human():
    m = S.confusion_matrix(["a", "a", "b", "tie", "b"], ["a", "b", "b", "a", "tie"])
    assert m == [[1, 1, 0], [0, 1, 1], [1, 0, 0]]
    assert sum(map(sum, m)) == 5


# ------------------------------------------------------------- position bias
def test_position_consistency_and_first_position_rate():
    ab = ["a", "a", "b", None, "tie"]
    ba = ["a", "b", "b", "a", "tie"]
    rate, n = S.position_consistency(ab, ba)
    assert n == 4 and rate == pytest.approx(3 / 4)  # the None order is left out
    # decisive single-order verdicts: ab a,a,b (first=a wins twice), ba a,b,b,a (first=b wins twice)
    first, n_first = S.first_position_rate(ab, ba)
    assert n_first == 7 and first == pytest.approx(4 / 7)


def test_a_judge_that_always_picks_the_first_answer():
    ab = ["a"] * 6  # in the (a, b) order it says "first", which is a
    ba = ["b"] * 6  # in the (b, a) order it says "first", which is b
    assert S.position_consistency(ab, ba) == (0.0, 6)
    assert S.first_position_rate(ab, ba) == (1.0, 12)


# --------------------------------------------------------------- length bias
def test_length_bias_known_rates():
    len_a = [100, 10, 50, 50, 30]
    len_b = [10, 100, 50, 20, 60]
    judge = ["a", "b", "a", "a", "tie"]  # longer wins in items 0, 1, 3; item 2 equal length; 4 tie
    human = ["b", "b", "a", "b", "a"]  # longer wins only in item 1; item 4 shorter wins
    lb = S.length_bias(len_a, len_b, human, judge)
    assert lb["judge_longer_rate"] == pytest.approx(1.0) and lb["judge_n"] == 3
    assert lb["human_longer_rate"] == pytest.approx(1 / 4) and lb["human_n"] == 4
    assert lb["excess"] == pytest.approx(0.75)
    assert sum(b["n"] for b in lb["bins"]) == 5
    mid = [b for b in lb["bins"] if b["lo"] == -0.15][0]  # equal length: log2 ratio 0
    assert mid["n"] == 1 and mid["judge_a_rate"] == 1.0 and mid["human_a_rate"] == 1.0


# ----------------------------------------------------------- flips, win rate
def test_flip_rate_and_win_rate():
    assert S.flip_rate(["a", "b", "a", "tie"], ["a", "a", "b", "tie"]) == (0.5, 4)
    assert S.win_rate(["a", "a", "b", "tie"]) == pytest.approx(2.5 / 4)
    assert S.win_rate(["a", "a", "b", "tie"], winner="b") == pytest.approx(1.5 / 4)
    assert math.isnan(S.win_rate([]))


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    human = ["a", "b"] * 50
    judge = ["a", "b"] * 35 + ["b", "a"] * 15
    ci1 = S.bootstrap_ci(S.agreement, human, judge, iters=500, seed=7)
    ci2 = S.bootstrap_ci(S.agreement, human, judge, iters=500, seed=7)
    assert ci1 == ci2
    assert ci1[0] < S.agreement(human, judge) == 0.7 < ci1[1]


def test_bootstrap_ci_matches_the_normal_approximation_for_a_proportion():
    n, p = 1000, 0.7
    human = ["a"] * n
    judge = ["a"] * int(n * p) + ["b"] * (n - int(n * p))
    lo, hi = S.bootstrap_ci(S.agreement, human, judge, iters=2000, seed=0)
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.006) and hi == pytest.approx(p + half, abs=0.006)


def test_bootstrap_ci_degenerate_cases():
    assert S.bootstrap_ci(S.agreement, ["a"] * 10, ["a"] * 10, iters=200) == (1.0, 1.0)
    lo, hi = S.bootstrap_ci(S.agreement, [], [], iters=200)
    assert math.isnan(lo) and math.isnan(hi)
    # A statistic undefined on every resample gives NaNs, not an error.
    lo, hi = S.bootstrap_ci(S.agreement_no_ties, ["tie"] * 5, ["a"] * 5, iters=50)
    assert math.isnan(lo) and math.isnan(hi)
    # Tuple-returning statistics are accepted (first element used).
    lo, hi = S.bootstrap_ci(S.agreement_no_ties, ["a", "b", "a", "tie"], ["a", "b", "b", "a"], iters=300)
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0


# ----------------------------------------------- combining the two orders
def J(pa: float, pb: float, pc: float | None = None) -> SingleJudgment:
    probs = {"A": pa, "B": pb} if pc is None else {"A": pa, "B": pb, "C": pc}
    verdict = max(probs, key=probs.get)
    return SingleJudgment(verdict=verdict, probs=probs)


def test_consistent_verdict_survives_the_swap():
    # (a, b): A=a wins 0.8; (b, a): B=a wins 0.7 -> a, both policies
    for policy in ("tie", "average"):
        v = combine(J(0.8, 0.2), J(0.3, 0.7), allow_tie=False, tie_policy=policy)
        assert v.winner == "a" and v.consistent is True
        assert v.p_a == pytest.approx(0.75) and v.p_b == pytest.approx(0.25)


def test_flip_becomes_tie_or_is_averaged():
    # The judge prefers whatever is shown first: (a, b) -> a with 0.9, (b, a) -> b with 0.6.
    ab, ba = J(0.9, 0.1), J(0.6, 0.4)
    v = combine(ab, ba, allow_tie=False, tie_policy="tie")
    assert (v.order_ab, v.order_ba, v.consistent, v.winner) == ("a", "b", False, "tie")
    avg = combine(ab, ba, allow_tie=False, tie_policy="average")
    assert avg.p_a == pytest.approx((0.9 + 0.4) / 2) and avg.p_b == pytest.approx((0.1 + 0.6) / 2)
    assert avg.winner == "a"
    exact = combine(J(0.7, 0.3), J(0.7, 0.3), allow_tie=False, tie_policy="average")
    assert exact.winner == "tie"  # P(a) == P(b) exactly


def test_tie_letter_and_text_verdicts():
    v = combine(J(0.2, 0.2, 0.6), J(0.1, 0.3, 0.6), allow_tie=True, tie_policy="tie")
    assert v.winner == "tie" and v.p_tie == pytest.approx(0.6)
    # Text judges: one-hot verdicts; an unparsed order is uniform (no information).
    a_first = SingleJudgment(verdict="A", text="A")
    unparsed = SingleJudgment(verdict=None, text="I think both have merit")
    assert order_outcome(unparsed, ("A", "B"), swapped=True) is None
    t = combine(a_first, unparsed, allow_tie=False, tie_policy="tie")
    assert t.winner == "tie" and t.parse_failures == 1 and t.consistent is None
    a = combine(a_first, unparsed, allow_tie=False, tie_policy="average")
    assert a.winner == "a" and a.p_a == pytest.approx(0.75)
    with pytest.raises(ValueError):
        combine(a_first, a_first, allow_tie=False, tie_policy="coin")


@pytest.mark.parametrize("text,allow_tie,expected", [
    ("A", False, "A"), ("B.", False, "B"), ("**B**", False, "B"), ("Assistant A", False, "A"),
    ("Verdict: B", False, "B"), ("[[A]]", False, "A"), ("My final verdict is [[B]].", False, "B"),
    ("A is better", False, "A"), ("C", True, "C"), ("tie", True, "C"), ("C", False, None),
    ("A good answer would be B", False, None), ("[[A]] or [[B]]", False, None), ("", False, None),
    ("a", False, None), ("I cannot decide.", True, None),
])
def test_parse_verdict_text(text, allow_tie, expected):
    assert parse_verdict_text(text, allow_tie) == expected


# ------------------------------------- intervals the agreement command reports
from evalkit.judge.agreement import POSITION_WARNING, agreement_stats  # noqa: E402
from evalkit.judge.data import LabelledPair  # noqa: E402
from evalkit.judge.engine import Pair  # noqa: E402
from evalkit.judge.verdict import PairVerdict  # noqa: E402


def _labelled(human: list[str], ab: list[str], ba: list[str]) -> tuple[list[LabelledPair], list[PairVerdict]]:
    """Labelled pairs and verdicts as the command builds them: the verdict is the consistent order's
    outcome, a tie where the two orders disagree (the default tie policy)."""
    items = [LabelledPair(id=f"x:{i}", source="x", pair=Pair(f"q{i}", f"a{i}", f"b{i}"), label=h)
             for i, h in enumerate(human)]
    verdicts = []
    for x, y in zip(ab, ba):
        w = x if x == y else "tie"
        verdicts.append(PairVerdict(winner=w, p_a=float(w == "a"), p_b=float(w == "b"), p_tie=float(w == "tie"),
                                    order_ab=x, order_ba=y))
    return items, verdicts


def _binom(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


@pytest.mark.parametrize("n,p", [(15, 0.9), (15, 0.95), (30, 0.95), (15, 0.8), (15, 0.5)])
def test_proportion_intervals_cover_at_small_n(n, p):
    """Coverage of the 95% intervals ``agreement_stats`` (what `evalkit judge-agreement` runs) puts
    on agreement (with / without ties), judge tie rate and position consistency, for n Bernoulli(p)
    items. Exact, not sampled: with n items there are only n + 1 outcomes k, so coverage is
    sum_k Binom(k; n, p) * [p inside the CI at k] — what a seeded simulation of many draws estimates,
    without its noise. The old percentile bootstrap collapses to [1, 1] at k = n, so it covered
    0.78 at n = 15, p = 0.9, 0.53 at p = 0.95 and 0.78 at n = 30, p = 0.95 (these cases fail with it);
    Wilson covers 0.94, 0.96 and 0.94. At p = 0.8 and 0.5 both pass (0.98 / 0.96 Wilson)."""
    cover: dict[str, float] = {"agreement": 0, "agreement_no_ties": 0, "judge_tie_rate": 0, "position_consistency": 0}
    for k in range(n + 1):
        w = _binom(k, n, p)
        # k of n verdicts agree with the humans (consistently), the rest pick the other answer
        s = agreement_stats(*_labelled(["a"] * n, ["a"] * k + ["b"] * (n - k), ["a"] * k + ["b"] * (n - k)), iters=200)
        for key in ("agreement", "agreement_no_ties"):
            lo, hi = s[f"{key}_ci"]
            cover[key] += w * (lo <= p <= hi)
        # k of n pairs keep their verdict after the swap; the other n - k flip and become ties
        s = agreement_stats(*_labelled(["a"] * n, ["a"] * n, ["a"] * k + ["b"] * (n - k)), iters=200)
        lo, hi = s["position_consistency_ci"]
        cover["position_consistency"] += w * (lo <= p <= hi)
        lo, hi = s["judge_tie_rate_ci"]
        cover["judge_tie_rate"] += w * (lo <= 1 - p <= hi)
    for key, c in cover.items():
        assert c >= 0.90, (key, n, p, c)


def test_agreement_intervals_are_wilson_from_one_implementation():
    from evalkit.analysis import power

    items, verdicts = _labelled(["a"] * 10 + ["b"] * 5, ["a"] * 12 + ["b"] * 3, ["a"] * 12 + ["b"] * 3)
    s = agreement_stats(items, verdicts, iters=20)
    hits = round(s["agreement"] * s["n"])
    assert s["agreement_ci"] == pytest.approx(list(power.wilson_ci(hits, 15)))
    assert S.wilson_ci(hits, 15) == power.wilson_ci(hits, 15)  # judge stats delegates, no second formula
    assert all(math.isnan(x) for x in S.wilson_ci(3, 0))  # ... but keeps NaN for an empty sample
    assert s["ci_method"]["proportions"] == "wilson"
    # every interval brackets its estimate and stays in [0, 1]
    for key in ("agreement", "agreement_no_ties", "judge_tie_rate", "position_consistency"):
        lo, hi = s[f"{key}_ci"]
        assert 0.0 <= lo <= s[key] <= hi <= 1.0


def test_kappa_has_no_interval_at_small_n():
    human = ["a", "b"] * 10
    judge = ["a", "b"] * 8 + ["b", "a"] * 2
    ci, note = S.kappa_ci(human, judge, iters=200)
    assert note == S.KAPPA_CI_NOTE == "n too small for a κ interval" and all(math.isnan(x) for x in ci)
    items, verdicts = _labelled(human, judge, judge)
    s = agreement_stats(items, verdicts, iters=200)
    assert s["kappa"] == pytest.approx(0.6) and s["kappa_ci_note"] == S.KAPPA_CI_NOTE
    assert all(math.isnan(x) for x in s["kappa_ci"])
    big_h, big_j = human * 3, judge * 3  # 60 items: an interval, seeded, around the estimate
    ci, note = S.kappa_ci(big_h, big_j, iters=500, seed=1)
    assert note is None and ci[0] < S.cohen_kappa(big_h, big_j) < ci[1]
    assert ci == S.kappa_ci(big_h, big_j, iters=500, seed=1)[0]
    assert S.kappa_ci(big_h[: S.KAPPA_CI_MIN_N], big_j[: S.KAPPA_CI_MIN_N], iters=50)[1] is None


@pytest.mark.parametrize("consistent,n,flagged", [
    (0, 100, True),  # the embedded 135M judge: always the first answer
    (0, 5, True),  # upper bound 0.43 < 0.5
    (1, 5, False),  # 0.2, but upper bound 0.62: too few pairs to say
    (20, 100, True),  # 0.2, upper 0.29
    (30, 100, False),  # 0.3: not "mostly" position
    (65, 100, False),  # MT-Bench's GPT-4
])
def test_position_flag(consistent, n, flagged):
    ab = ["a"] * n
    ba = ["a"] * consistent + ["b"] * (n - consistent)  # the rest follow the position
    s = agreement_stats(*_labelled(["a"] * n, ab, ba), iters=20)
    assert s["position_no_signal"] is flagged
    assert s["position_warning"] == (POSITION_WARNING if flagged else None)
