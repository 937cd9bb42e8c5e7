"""Win rate of a model's responses against a baseline's, by a pairwise judge.

Why a plain function over lists of strings: it is the judge as a suite-style comparison (an
AlpacaEval-like metric) without tying the judge to how responses were produced; the caller
generates or loads both sides. Each prompt is judged in both orders (position bias cancels,
flips become ties under the default policy) through the same judgment cache as agreement runs,
so re-scoring unchanged responses is free. Win rate = (wins + ½ ties) / n with a seeded
percentile-bootstrap 95% CI over prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.judge import stats as S
from evalkit.judge.agreement import open_store
from evalkit.judge.base import Judge, load_judge
from evalkit.judge.engine import JudgeCounts, Pair, judge_pairs
from evalkit.judge.prompt import PROMPT_VERSION
from evalkit.judge.verdict import TIE_POLICIES
from evalkit.store.sqlite import RunStore

_SIDE = {"a": "model", "b": "baseline", "tie": "tie"}


def win_rate(
    judge: str | Judge,
    prompts: Sequence[str],
    responses_model: Sequence[str],
    responses_baseline: Sequence[str],
    *,
    references: Sequence[str | None] | None = None,
    store: RunStore | str | None = None,
    tie_policy: str = "tie",
    allow_tie: bool = False,
    seed: int = 0,
    bootstrap_iters: int = 2000,
    batch_size: int = 8,
    dtype: str | None = "auto",
    device: str | None = "auto",
    save: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Judge ``responses_model[i]`` against ``responses_baseline[i]`` for each ``prompts[i]``.

    Returns a JSON-able dict: ``win_rate`` with ``ci``, ``wins``/``losses``/``ties``,
    ``position_consistency``, per-item verdicts (``winner`` is "model", "baseline" or "tie",
    with the judge's averaged probabilities) and timings; saved in the store's ``judge_runs``
    table (``id``) when ``save``.
    """
    n = len(prompts)
    if len(responses_model) != n or len(responses_baseline) != n or (references is not None and len(references) != n):
        raise EvalkitError(
            f"win rate: {n} prompts but {len(responses_model)} model and {len(responses_baseline)} baseline responses"
            + (f" and {len(references)} references" if references is not None else "")
        )
    if n == 0:
        raise EvalkitError("win rate: no prompts")
    if tie_policy not in TIE_POLICIES:
        raise EvalkitError(f"tie policy '{tie_policy}': expected one of {', '.join(TIE_POLICIES)}")
    t0 = time.perf_counter()
    db = open_store(store)
    j = judge if not isinstance(judge, str) else load_judge(judge, dtype=dtype, device=device, batch_size=batch_size)
    pairs = [Pair(p, m, b, references[i] if references is not None else None)
             for i, (p, m, b) in enumerate(zip(prompts, responses_model, responses_baseline))]
    counts = JudgeCounts()
    verdicts = judge_pairs(j, pairs, store=db, allow_tie=allow_tie, tie_policy=tie_policy, progress=progress,
                           counts=counts)
    outcomes = [v.winner for v in verdicts]
    consistency, n_cons = S.position_consistency([v.order_ab for v in verdicts], [v.order_ba for v in verdicts])
    result: dict[str, Any] = {
        "kind": "winrate", "judge": getattr(j, "name", str(judge)), "judge_identity": j.identity,
        "scoring": j.scoring, "prompt_version": PROMPT_VERSION, "tie_policy": tie_policy, "allow_tie": allow_tie,
        "n": n, "win_rate": S.win_rate(outcomes, "a"),
        "ci": list(S.bootstrap_ci(S.win_rate, outcomes, iters=bootstrap_iters, seed=seed)),
        "wins": outcomes.count("a"), "losses": outcomes.count("b"), "ties": outcomes.count("tie"),
        "position_consistency": consistency, "n_consistency": n_cons, "seed": seed,
        "parse_failures": sum(v.parse_failures for v in verdicts),
        "items": [{"index": i, "winner": _SIDE[v.winner], "p_model": v.p_a, "p_baseline": v.p_b, "p_tie": v.p_tie,
                   "consistent": v.consistent} for i, v in enumerate(verdicts)],
        "timings": {"load_s": round(float(getattr(j, "load_s", 0.0)), 3), "total_s": round(time.perf_counter() - t0, 3),
                    **counts.to_dict()},
    }
    from evalkit.jsonsafe import json_safe
    from evalkit.store import judgments as jstore
    from evalkit.store.analyses import new_id

    result = json_safe(result)
    if save:
        result["id"] = new_id()
        jstore.save_judge_run(db, "winrate", result, run_id=result["id"])
    if not isinstance(store, RunStore):
        db.close()
    return result
