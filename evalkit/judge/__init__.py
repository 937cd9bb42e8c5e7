"""Pairwise LLM judge and judge-vs-human agreement.

Entry points:
  * :func:`evalkit.judge.agreement.run_agreement` — judge labelled pairs, compare with humans.
  * :func:`evalkit.judge.winrate.win_rate` — a model's win rate against a baseline's responses.
  * :func:`evalkit.judge.base.load_judge` — any evalkit model string as a judge.
  * :func:`evalkit.judge.engine.judge_pairs` — both-order judging through the judgment cache.

Nothing here imports torch at module level: statistics and readers stay cheap to import.
"""

from __future__ import annotations

from evalkit.judge.agreement import run_agreement
from evalkit.judge.base import Judge, load_judge
from evalkit.judge.engine import Pair, judge_pairs
from evalkit.judge.winrate import win_rate

__all__ = ["Judge", "Pair", "judge_pairs", "load_judge", "run_agreement", "win_rate"]
