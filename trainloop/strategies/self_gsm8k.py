"""The ``self`` strategy for GSM8K-style targets: STaR / rejection sampling on pool problems with known answers.

Flow: pool problems nearest the failing clusters (:mod:`trainloop.strategies.select_pool`, already
decontaminated) → each is sampled k times from the current model with a few-shot prefix of other
pool problems, in lm-eval's own GSM8K format (``Question: ...\\nAnswer:``, stops at
``Question:``) → the final number is read the way lm-eval's filters read it and compared with the
pool answer's ``#### N``. Correct samples become SFT data (zero-shot prompt → the model's own
rationale, as in STaR); a correct and a wrong sample of one problem become a DPO pair; every problem
becomes a GRPO prompt whose reward is that same check.

Why plain prompt/completion text rather than chat messages: GSM8K is scored few-shot without a
chat template, so the data must teach the format the eval reads.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainloop.data.pool import PoolExample
from trainloop.strategies.sample import SamplingConfig, sample_texts
from trainloop.strategies.self_ifeval import SelfData

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k "strict-match"
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k "flexible-extract" (last match)
UNTIL = ("Question:", "</s>", "<|im_end|>")  # lm-eval gsm8k generation_kwargs.until


@dataclass(frozen=True)
class Gsm8kSelfConfig:
    sampling: SamplingConfig = SamplingConfig()
    num_fewshot: int = 5
    sft_per_problem: int = 2
    dpo_per_problem: int = 2
    seed: int = 0


def normalise(number: str) -> str:
    """lm-eval's exact_match settings for GSM8K: drop ``,`` and ``$`` and a trailing ``.``."""
    n = number.replace(",", "").replace("$", "").strip()
    n = n[:-1] if n.endswith(".") else n
    try:  # "18.00" and "18" are the same answer
        f = float(n)
        return str(int(f)) if f == int(f) else str(f)
    except ValueError:
        return n


def final_answer(text: str) -> str | None:
    """The ``#### N`` answer if present (strict), else the last number (flexible), normalised."""
    m = STRICT.search(text)
    if m:
        return normalise(m.group(1))
    found = [a or b for a, b in FLEXIBLE.findall(text)]
    found = [f for f in found if any(c.isdigit() for c in f)]
    return normalise(found[-1]) if found else None


def question_text(q: str) -> str:
    return f"Question: {q}\nAnswer:"


def fewshot_context(problem: PoolExample, shots: Sequence[PoolExample]) -> str:
    head = "".join(f"{question_text(s.prompt)} {s.response.strip()}\n\n" for s in shots)
    return head + question_text(problem.prompt)


def self_gsm8k(lm: Any, problems: Sequence[tuple[PoolExample, dict[str, Any]]], pool: Sequence[PoolExample],
               config: Gsm8kSelfConfig = Gsm8kSelfConfig(), strategy: str = "self") -> SelfData:
    """``problems`` are (pool row, provenance) pairs; ``pool`` supplies the few-shot examples."""
    out = SelfData()
    rng = random.Random(config.seed)
    usable = [(p, prov, final_answer(p.response)) for p, prov in problems]
    no_answer = sum(a is None for _, _, a in usable)
    usable = [(p, prov, a) for p, prov, a in usable if a is not None]
    shots_from = [e for e in pool if STRICT.search(e.response)]
    contexts = []
    for p, _, _ in usable:
        others = [e for e in shots_from if e.row != p.row]
        contexts.append(fewshot_context(p, rng.sample(others, min(config.num_fewshot, len(others)))))
    samples = sample_texts(lm, contexts, config.sampling, until=UNTIL) if contexts else []
    n_correct = with_correct = 0
    for (p, prov, answer), outs in zip(usable, samples):
        texts = [o.rstrip() for o in outs]
        right = list(dict.fromkeys(t for t in texts if t.strip() and final_answer(t) == answer))
        wrong = [t for t in texts if t.strip() and final_answer(t) != answer]
        n_correct += sum(1 for t in texts if t.strip() and final_answer(t) == answer)
        with_correct += bool(right)
        base = {"strategy": strategy, **prov, "answer": answer}
        prompt = question_text(p.prompt)
        for t in right[: config.sft_per_problem]:
            out.examples.append(("sft", {"prompt": prompt, "completion": " " + t.strip()}, {**base, "origin": "sample"}))
        for good, bad in list(zip(right, wrong))[: config.dpo_per_problem]:
            out.examples.append(("dpo", {"prompt": prompt, "chosen": " " + good.strip(), "rejected": " " + bad.strip()},
                                 {**base, "origin": "correct-vs-wrong"}))
        out.examples.append(("grpo", {"prompt": prompt, "verifier": "gsm8k", "doc": {"answer": answer}},
                             {**base, "origin": "prompt"}))
    out.stats = {"problems": len(problems), "no_answer": no_answer, "samples": len(usable) * config.sampling.k,
                 "correct": n_correct, "problems_with_correct": with_correct,
                 "sft": sum(k == "sft" for k, _, _ in out.examples), "dpo": sum(k == "dpo" for k, _, _ in out.examples),
                 "grpo": sum(k == "grpo" for k, _, _ in out.examples)}
    return out
