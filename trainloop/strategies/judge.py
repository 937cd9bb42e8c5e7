"""The ``judge`` strategy (UltraFeedback-style) for targets with no verifier.

Flow: prompts from the training pool nearest the failing clusters (:mod:`trainloop.strategies.select_pool`,
already decontaminated) → candidates per prompt: k samples of the current model, the pool row's
own reference answer, and optionally a stronger model's answer → every pair of candidates judged
by the pairwise LLM judge in both orders (:func:`evalkit.judge.engine.judge_pairs`, cached in the
store) → each candidate's score is its mean win probability over its pairs (a round robin) → the
best becomes SFT data; best vs worst becomes a DPO pair when the score gap is at least
``min_margin`` (close calls are where judges are least reliable, see ``make judge-agreement``).

Why round robin rather than one pass over a list: a pairwise judge compares two answers at a
time, and both orders are judged so the position bias cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from trainloop.data.pool import PoolExample
from trainloop.strategies.sample import SamplingConfig, sample_chat
from trainloop.strategies.self_ifeval import SelfData, _chat, _pair


@dataclass(frozen=True)
class JudgeStrategyConfig:
    sampling: SamplingConfig = SamplingConfig()
    use_reference: bool = True  # the pool row's own answer is one of the candidates
    min_margin: float = 0.2  # best - worst mean win probability needed for a DPO pair


def round_robin(judge: Any, prompt: str, candidates: Sequence[str], store: Any = None,
                counts: Any = None) -> list[float]:
    """Each candidate's mean win probability against all the others (both orders judged)."""
    from evalkit.judge.engine import Pair, judge_pairs

    n = len(candidates)
    if n < 2:
        return [0.5] * n
    pairs = list(combinations(range(n), 2))
    verdicts = judge_pairs(judge, [Pair(prompt, candidates[i], candidates[j]) for i, j in pairs],
                           store=store, counts=counts)
    wins = [0.0] * n
    for (i, j), v in zip(pairs, verdicts):
        wins[i] += v.p_a + v.p_tie / 2
        wins[j] += v.p_b + v.p_tie / 2
    return [w / (n - 1) for w in wins]


def judge_strategy(lm: Any, judge: Any, problems: Sequence[tuple[PoolExample, dict[str, Any]]],
                   config: JudgeStrategyConfig = JudgeStrategyConfig(), other: Any = None,
                   store: Any = None) -> SelfData:
    """``problems`` are (pool row, provenance); ``other`` is an optional second model whose single
    sample per prompt joins the candidates."""
    from evalkit.judge.engine import JudgeCounts

    out = SelfData()
    prompts = [p.prompt for p, _ in problems]
    own = sample_chat(lm, prompts, config.sampling) if prompts else []
    theirs = (sample_chat(other, prompts, SamplingConfig(k=1, temperature=0.0, max_new_tokens=config.sampling.max_new_tokens))
              if other is not None and prompts else [[] for _ in prompts])
    counts = JudgeCounts()
    pairs_made = skipped_margin = 0
    for (p, prov), mine, extra in zip(problems, own, theirs):
        cands: list[tuple[str, str]] = [(t, "sample") for t in mine]
        cands += [(t, "other-model") for t in extra]
        if config.use_reference:
            cands.append((p.response, "pool-reference"))
        seen: dict[str, str] = {}
        for text, origin in cands:
            if text.strip() and text.strip() not in seen:
                seen[text.strip()] = origin
        texts = list(seen)
        if len(texts) < 2:
            continue
        scores = round_robin(judge, p.prompt, texts, store=store, counts=counts)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        best, worst = order[0], order[-1]
        base = {"strategy": "judge", **prov, "scores": [round(s, 4) for s in scores]}
        out.examples.append(("sft", _chat(p.prompt, texts[best]), {**base, "origin": seen[texts[best]],
                                                                    "score": round(scores[best], 4)}))
        if scores[best] - scores[worst] >= config.min_margin:
            out.examples.append(("dpo", _pair(p.prompt, texts[best], texts[worst]),
                                 {**base, "origin": f"{seen[texts[best]]}-vs-{seen[texts[worst]]}",
                                  "margin": round(scores[best] - scores[worst], 4)}))
            pairs_made += 1
        else:
            skipped_margin += 1
    out.stats = {"prompts": len(problems), "sft": sum(k == "sft" for k, _, _ in out.examples), "dpo": pairs_made,
                 "below_margin": skipped_margin, "judge": counts.to_dict()}
    return out
