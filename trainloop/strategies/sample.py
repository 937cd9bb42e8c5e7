"""Sample k chat completions per prompt from the current model (rejection sampling's first half).

Why through the lm-eval LM: the loop's samples must be produced exactly the way the suite
produces its answers — same chat template (``lm.apply_chat_template``), same tokenisation and
stop handling — or the data would teach a format the eval never sees. Going through evalkit's
:class:`~evalkit.models.fastlm.FastLM` also gives continuous batching, which is what makes
k = 4 samples of a few hundred prompts affordable on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingConfig:
    k: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0


def chat_context(lm: Any, prompt: str, system: str = "") -> str:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return lm.apply_chat_template(msgs, add_generation_prompt=True)


def sample_chat(lm: Any, prompts: Sequence[str], config: SamplingConfig = SamplingConfig(),
                disable_tqdm: bool = False) -> list[list[str]]:
    """``config.k`` completions per prompt, in prompt order (seeded: same inputs, same samples)."""
    return sample_texts(lm, [chat_context(lm, p) for p in prompts], config, disable_tqdm=disable_tqdm)


def sample_texts(lm: Any, contexts: Sequence[str], config: SamplingConfig = SamplingConfig(),
                 until: Sequence[str] = (), disable_tqdm: bool = False) -> list[list[str]]:
    """``config.k`` continuations of each raw context (a few-shot task's own prompt format), stopping
    at ``until`` like the task's ``generate_until`` does."""
    import torch
    from lm_eval.api.instance import Instance

    if config.k < 1:
        raise ValueError("k must be >= 1")
    gen = {"until": list(until), "do_sample": config.temperature > 0, "temperature": config.temperature,
           "top_p": config.top_p, "max_gen_toks": config.max_new_tokens}
    reqs = []
    for i, ctx in enumerate(contexts):
        reqs += [Instance(request_type="generate_until", doc={}, arguments=(ctx, dict(gen)), idx=i * config.k + j)
                 for j in range(config.k)]
    state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        outs = lm.generate_until(reqs, disable_tqdm=disable_tqdm)
    finally:
        torch.random.set_rng_state(state)
    return [list(outs[i * config.k : (i + 1) * config.k]) for i in range(len(contexts))]
