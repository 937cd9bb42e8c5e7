"""The ``self`` strategy for IFEval targets: rejection sampling (STaR / RFT) plus verified repairs.

Flow: the failing clusters' instruction types (weighted by how often they failed) → new
verifiable prompts (:mod:`trainloop.data.ifeval`) → decontaminated against the suite → k samples
each from the current model → the official checker. Samples passing every instruction become SFT
data; a failing sample whose repair passes becomes SFT data too (``origin: repair``). DPO pairs
are (passing, failing) samples of one prompt and (repair, its original) — the latter is the only
preference signal for types the model never meets on its own. Each kept prompt is also a GRPO
prompt, with the checker as its reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainloop.data.decontam import DecontamConfig, Embedder, decontaminate
from trainloop.data.ifeval import IfevalPrompt, check, repair, sample_prompts
from trainloop.strategies.sample import SamplingConfig, sample_chat

Example = tuple[str, dict[str, Any], dict[str, Any]]  # (kind, data, provenance), as the loop stores them


@dataclass(frozen=True)
class SelfConfig:
    n_prompts: int = 150
    sampling: SamplingConfig = SamplingConfig()
    sft_per_prompt: int = 2  # distinct verified responses kept per prompt
    dpo_per_prompt: int = 2
    repairs: bool = True
    seed: int = 0


@dataclass
class SelfData:
    examples: list[Example] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def instruction_weights(clusters: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Failures per IFEval instruction id summed over the target clusters' ``tag_mix``, and which
    clusters each id came from (provenance)."""
    weights: dict[str, float] = {}
    sources: dict[str, list[int]] = {}
    for c in clusters:
        for iid, mix in (c.get("tag_mix") or {}).items():
            failed = float((mix or {}).get("failed", 0) or 0)
            if failed > 0:
                weights[iid] = weights.get(iid, 0.0) + failed
                sources.setdefault(iid, []).append(int(c["cluster_id"]))
    return weights, sources


def _chat(prompt: str, response: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def _pair(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def self_ifeval(lm: Any, weights: dict[str, float], sources: dict[str, list[int]], config: SelfConfig,
                eval_texts: Sequence[str], embed: Embedder | None, decontam: DecontamConfig = DecontamConfig(),
                strategy: str = "self") -> SelfData:
    """``lm`` is the current model (``self``: rejection sampling) or a stronger one (``teacher``:
    LLM2LLM-style, its answers kept only where the checker accepts them)."""
    out = SelfData()
    prompts = sample_prompts(weights, config.n_prompts, seed=config.seed)
    report = decontaminate([p.prompt for p in prompts], eval_texts, embed, decontam)
    kept: list[IfevalPrompt] = [prompts[i] for i in report.kept]
    samples = sample_chat(lm, [p.prompt for p in kept], config.sampling) if kept else []
    n_pass = n_fail = n_repaired = prompts_with_pass = 0
    per_type: dict[str, list[int]] = {}
    for p, outs in zip(kept, samples):
        verdicts = [check(p, o) for o in outs]
        for v in verdicts:
            for iid, ok in zip(p.instruction_id_list, v):
                per_type.setdefault(iid, [0, 0])[0 if ok else 1] += 1
        good = list(dict.fromkeys(o for o, v in zip(outs, verdicts) if all(v) and o.strip()))
        bad = [(o, v) for o, v in zip(outs, verdicts) if not all(v)]
        n_pass += sum(all(v) for v in verdicts)
        n_fail += len(bad)
        prompts_with_pass += bool(good)
        fixed = []
        if config.repairs:
            for o, v in bad:
                r = repair(p, o, v)
                if r is not None and r.response not in good and all(r.response != f for f, _ in fixed):
                    fixed.append((r.response, o))
        n_repaired += len(fixed)
        clusters = sorted({c for iid in p.instruction_id_list for c in sources.get(iid, [])})
        base = {"strategy": strategy, "clusters": clusters, "prompt_key": p.key, "instructions": list(p.instruction_id_list),
                "kwargs": [dict(k) for k in p.kwargs]}
        sft = [(g, "sample") for g in good] + [(f, "repair") for f, _ in fixed]
        for resp, origin in sft[: config.sft_per_prompt]:
            out.examples.append(("sft", _chat(p.prompt, resp), {**base, "origin": origin}))
        pairs = [(g, b, "pass-vs-fail") for g, (b, _) in zip(good, bad)] + [(f, o, "repair-vs-original") for f, o in fixed]
        for chosen, rejected, origin in pairs[: config.dpo_per_prompt]:
            out.examples.append(("dpo", _pair(p.prompt, chosen, rejected), {**base, "origin": origin}))
        # every kept prompt is also a GRPO prompt: the checker is its reward
        out.examples.append(("grpo", {"prompt": [{"role": "user", "content": p.prompt}], "verifier": "ifeval",
                                      "doc": p.to_doc()}, {**base, "origin": "prompt"}))
    out.stats = {"prompts": len(prompts), "decontam": report.counts(), "samples": n_pass + n_fail, "passed": n_pass,
                 "prompts_with_pass": prompts_with_pass, "repaired": n_repaired,
                 "sft": sum(k == "sft" for k, _, _ in out.examples), "dpo": sum(k == "dpo" for k, _, _ in out.examples),
                 "grpo": sum(k == "grpo" for k, _, _ in out.examples),
                 "per_type": {k: {"pass": v[0], "fail": v[1]} for k, v in sorted(per_type.items())}}
    return out
