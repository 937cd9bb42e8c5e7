"""A judge proves itself before the loop uses it.

The ``judge`` strategy turns a pairwise judge's preferences into SFT targets and DPO pairs, so a
judge whose verdicts carry no signal manufactures noise as training data. Before the strategy
uses a judge, :func:`require_judge` runs (or reuses) the judge-agreement check
(:func:`evalkit.judge.agreement.run_agreement`) on human-labelled pairs, by default the
``preference/LLMBar_Natural.json`` file that ``make judge-agreement`` uses, and refuses the judge,
with one line, when

* its agreement with the humans is not clearly better than chance: the 95% Wilson interval of
  the agreement includes (or lies below) 50%, or
* its position consistency (same verdict after the two answers are swapped) is below
  :attr:`JudgeCheckConfig.min_position_consistency`.

*Agreement* here is read the way the strategy uses the judge: from the preference averaged over
both orders (``p_a`` vs ``p_b``, the ``average`` tie policy), over pairs whose human label is
decisive; a pair the judge cannot separate (``p_a == p_b``, e.g. a text judge whose two orders
disagree) counts as half a hit, so a judge that only ever reads the position lands on 50%.
The Wilson interval is used rather than the percentile bootstrap of ``run_agreement``: at a
hundred pairs or fewer the bootstrap's coverage is poor.

Cost: judgments are cached by content in the store's ``judgments`` table, and the check's
agreement run is saved in ``judge_runs``; a later check of the same judge (same identity,
scoring and prompt version) on the same data reuses a stored run, a ``make judge-agreement`` run
included, and makes no judge calls at all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.jsonsafe import json_safe
from evalkit.judge import stats as S
from evalkit.judge.data import LabelledPair, read_pairs
from evalkit.judge.prompt import PROMPT_VERSION
from evalkit.store.sqlite import RunStore

DEFAULT_DATA = os.path.join("preference", "LLMBar_Natural.json")
_EPS = 1e-9


@dataclass(frozen=True)
class JudgeCheckConfig:
    """What the judge is checked on, and the bar it has to clear.

    ``data`` is a labelled-pairs file (any format :func:`evalkit.judge.data.read_pairs` reads); a
    relative path is resolved under ``data_dir`` (else ``$EVALKIT_DATA_DIR``), the data mirror
    ``make`` passes as ``DATA_DIR`` (``../shared/data``). ``limit`` keeps the first N pairs so the
    check stays affordable for a local judge on CPU (LLMBar_Natural has 100).

    ``min_position_consistency`` is the documented floor on the share of pairs whose verdict is
    the same after the two answers are swapped. A judge that flips its verdict when only the
    order changes is reading the position, not the content; with two answers, a coin flip per
    order is consistent 50% of the time, so a judge below 0.5 is worse than a coin at ignoring
    the position. (For scale: GPT-4 is consistent ~65% of the time in the MT-Bench paper; the
    embedded 135M judge picks the first position 100% of the time, consistency 0.)
    """

    data: str = DEFAULT_DATA
    data_dir: str | None = None
    limit: int | None = 100
    min_position_consistency: float = 0.5
    seed: int = 0
    bootstrap_iters: int = 200  # only for the stored run's own (bootstrap) CIs; the decision uses Wilson

    def data_path(self) -> str:
        if os.path.isabs(self.data):
            path = self.data
        else:
            root = self.data_dir or os.environ.get("EVALKIT_DATA_DIR")
            if not root:
                raise EvalkitError(
                    f"loop: the judge check needs human-labelled pairs ({self.data}); pass DATA_DIR=<data mirror> "
                    "or --skip-judge-check")
            path = os.path.join(root, self.data)
        if not os.path.isfile(path):
            raise EvalkitError(f"loop: the judge check needs human-labelled pairs, and '{path}' is not a file; "
                               "pass DATA_DIR=<data mirror> or --skip-judge-check")
        return path


@dataclass
class JudgeCheck:
    """The check's outcome. ``n`` counts pairs with a decisive human label (those in ``agreement``)."""

    n: int
    agreement: float
    ci_lo: float
    ci_hi: float
    position_consistency: float
    tie_rate: float  # share of those pairs the judge could not separate (p_a == p_b; counted as half a hit)
    passed: bool
    reason: str  # one line, whether passed or not
    judge: str = ""
    first_position_rate: float = math.nan
    min_position_consistency: float = 0.5
    run_id: str | None = None  # the judge_runs row the numbers come from
    reused: bool = False  # True when that row was already stored (no agreement run now)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def check_judge(judge: Any, store: RunStore, config: JudgeCheckConfig = JudgeCheckConfig(), *,
                progress: Callable[[int, int], None] | None = None) -> JudgeCheck:
    """Run (or reuse) the agreement check of ``judge`` (a :class:`evalkit.judge.base.Judge`) and decide."""
    from evalkit.judge.agreement import run_agreement

    path = config.data_path()
    items, info = read_pairs(path, seed=config.seed, limit=config.limit)
    result = _stored_run(store, judge, items, set(info.sha256.values()))
    reused = result is not None
    if result is None:
        result = run_agreement(judge, path, config.limit, store, seed=config.seed, injection_subset=0,
                               bootstrap_iters=config.bootstrap_iters, progress=progress)
    rows = result["items"][: len(items)]
    return decide(rows, judge=str(getattr(judge, "name", judge)), floor=config.min_position_consistency,
                  run_id=result.get("id"), reused=reused)


def require_judge(judge: Any, store: RunStore, config: JudgeCheckConfig = JudgeCheckConfig(), *,
                  progress: Callable[[int, int], None] | None = None) -> JudgeCheck:
    """:func:`check_judge`, raising :class:`EvalkitError` (one line) when the judge fails."""
    check = check_judge(judge, store, config, progress=progress)
    if not check.passed:
        raise EvalkitError(check.reason)
    return check


def decide(rows: list[dict[str, Any]], *, judge: str, floor: float, run_id: str | None = None,
           reused: bool = False) -> JudgeCheck:
    """The decision from an agreement run's per-item rows (``human``, ``p_a``, ``p_b``, ``order_ab``, ``order_ba``)."""
    decisive = [r for r in rows if r.get("human") in ("a", "b")]
    hits = ties = 0.0
    for r in decisive:
        p_a, p_b = float(r.get("p_a") or 0.0), float(r.get("p_b") or 0.0)
        if abs(p_a - p_b) <= _EPS:
            ties += 1
            hits += 0.5
        elif (p_a > p_b) == (r["human"] == "a"):
            hits += 1
    n = len(decisive)
    agreement = hits / n if n else math.nan
    lo, hi = S.wilson_ci(hits, n)
    ab, ba = [r.get("order_ab") for r in rows], [r.get("order_ba") for r in rows]
    consistency, _ = S.position_consistency(ab, ba)
    first, _ = S.first_position_rate(ab, ba)

    agree_ok = n > 0 and lo > 0.5
    cons_ok = not math.isnan(consistency) and consistency >= floor
    passed = agree_ok and cons_ok
    if n == 0:
        detail = "no pair has a decisive human label"
    else:
        detail = f"agreement {agreement:.2f}, 95% CI [{lo:.2f}, {hi:.2f}]"
        if not agree_ok:
            detail += " lies below 50%" if hi < 0.5 else " includes 50%"
    detail += f"; position consistency {_fmt(consistency)}"
    if not cons_ok:
        detail += f" < floor {floor:.2f}"
        if not math.isnan(first) and abs(first - 0.5) >= 0.25:
            where = "first" if first > 0.5 else "second"
            share = first if first > 0.5 else 1 - first
            detail += (f" (it picks the answer shown {where} in {share:.0%} of single-order verdicts; "
                       "its verdicts follow the position, not the content)")
        else:
            detail += " (its verdict flips when the answers are swapped; it carries little signal)"
    elif not agree_ok and n:
        detail += " (its verdicts do not agree with the humans better than chance)"
    if passed:
        reason = f"judge '{judge}' passed its agreement check on {n} human-labelled pairs: {detail}"
    else:
        reason = (f"loop: judge '{judge}' failed its agreement check on {n} human-labelled pairs: {detail}"
                  " — choose a stronger JUDGE= or pass --skip-judge-check")
    return JudgeCheck(n=n, agreement=agreement, ci_lo=lo, ci_hi=hi, position_consistency=consistency,
                      tie_rate=(ties / n if n else math.nan), passed=passed, reason=" ".join(reason.split()),
                      judge=judge, first_position_rate=first, min_position_consistency=floor, run_id=run_id,
                      reused=reused)


def _stored_run(store: RunStore, judge: Any, items: list[LabelledPair], shas: set[str]) -> dict[str, Any] | None:
    """The newest stored agreement run of this judge (identity, scoring, prompt version) on this data
    (same file hashes) that covers ``items``: its first rows are the same pairs with the same labels
    in the same orientation. ``make judge-agreement`` runs qualify, whatever their tie policy."""
    from evalkit.store import judgments as jstore

    jstore.ensure_tables(store)
    with store.transaction() as db:
        rows = db.execute("SELECT result_json FROM judge_runs WHERE kind='agreement' AND judge_identity=?"
                          " ORDER BY created_at DESC", (getattr(judge, "identity", None),)).fetchall()
    want = [(it.id, it.label) for it in items]
    ties = any(it.label == "tie" for it in items)
    for (text,) in rows:
        res = json.loads(text)
        got = [(r.get("id"), r.get("human")) for r in res.get("items") or []][: len(want)]
        if (res.get("scoring") == getattr(judge, "scoring", None) and res.get("prompt_version") == PROMPT_VERSION
                and set((res.get("data") or {}).get("sha256", {}).values()) == shas
                and bool(res.get("allow_tie")) == ties and got == want):
            return res
    return None


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"
