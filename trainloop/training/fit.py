"""Did the adapter learn its own training data? The fit check before the costly re-evaluation.

Why: in the first loop runs nothing checked that the candidate even followed the formats it was
trained on (it did not: it still capitalised lowercase requests), so a round that never learned
looked the same as one that learned something useless. The candidate answers the held-back
training prompts greedily (same decoding as the data), lm-eval's checker scores them, and the
base model's greedy answers to the same prompts (recorded when the data was made) are the
comparison. A round *fits* when the candidate passes clearly more often: the exact McNemar test
on the paired outcomes is significant (p < alpha) and the gain is at least ``min_gain``. A round
that does not fit is a **training failure**; the loop's next round then changes the training
(:func:`next_training`), not only the amount of data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from evalkit.analysis.paired import binom_two_sided
from trainloop.data.ifeval import IfevalPrompt, check


@dataclass
class Fit:
    n: int
    base_pass: int
    cand_pass: int
    wins: int  # fail -> pass
    losses: int  # pass -> fail
    p: float
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_of(doc: dict[str, Any]) -> IfevalPrompt:
    return IfevalPrompt(doc["key"], doc["prompt"], tuple(doc["instruction_id_list"]), tuple(doc["kwargs"]))


def judge_fit(base: Sequence[bool], cand: Sequence[bool], min_gain: float = 0.1, alpha: float = 0.05) -> Fit:
    n = len(base)
    wins = sum(1 for b, c in zip(base, cand) if c and not b)
    losses = sum(1 for b, c in zip(base, cand) if b and not c)
    p = binom_two_sided(min(wins, losses), wins + losses) if wins + losses else 1.0
    gain = (sum(cand) - sum(base)) / n if n else 0.0
    ok = n > 0 and p < alpha and gain >= min_gain
    reason = (f"train fit: {sum(cand)}/{n} held-back training prompts pass with the candidate vs {sum(base)}/{n} "
              f"with the current model ({wins} gained, {losses} lost, exact McNemar p = {p:.2g}) — "
              + ("the adapter learned its data" if ok else
                 f"TRAINING FAILURE (needs p < {alpha:g} and a gain ≥ {min_gain * 100:.0f} pt)"))
    return Fit(n, sum(base), sum(cand), wins, losses, p, ok, reason)


def score_holdout(holdout: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[bool]:
    return [all(check(prompt_of(h["doc"]), r)) for h, r in zip(holdout, responses)]


def next_training(train: Any, failures: int, max_lr: float = 4e-3) -> Any:
    """The documented rule after training failures since the last promotion: each one doubles
    the learning rate (capped at ``max_lr``) and adds one epoch. Data is doubled only after a
    round that fitted but did not pass the gate (see :func:`trainloop.steps.select.select`)."""
    if failures <= 0:
        return train
    return replace(train, learning_rate=min(max_lr, train.learning_rate * 2 ** failures),
                   epochs=train.epochs + failures)
