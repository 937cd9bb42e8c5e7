"""Verified IFEval data at volume: fill a per-cluster budget, hold some back to test the fit.

Why this exists next to :mod:`trainloop.strategies.self_ifeval`: a few dozen examples per round never
moved the 135M model (stops 12-13: 41-74 SFT examples, IFEval flat); a probe with ~370 verified
examples of four format types did (1/128 -> 32/128 real prompts). What made the difference:
*greedy* answers of the current model to many new prompts (one sample each: 4x the prompts of
k=4 sampling for the same decode time), answers cut back to clean sentences (a capped answer
repeats itself and teaches looping), then the programmatic repair of each failing answer,
re-checked by lm-eval's own checker. Only checker-verified text becomes training data.

Budget: ``per_cluster`` verified examples for each targeted cluster (a prompt counts for every
cluster its instruction types came from). Prompts are generated in chunks, each chunk drawn only
from the instruction types of clusters still short, until every cluster is met or ``max_prompts``
is spent; the stats say which (``met`` / ``exhausted``). The first ``holdout`` verified prompts
are kept out of training: the fit check (:mod:`trainloop.training.fit`) runs the candidate on them.

Decontamination checks each new prompt's *topic* against every eval item (both halves, tax
sets): the instruction descriptions come from lm-eval's own templates, identical in every IFEval
prompt that carries the instruction, so on the full prompt the 13-gram rule dropped 288 of 600
prompts in the first demo round, all on template text (every lowercase prompt among them).

The random control (:func:`uniform_weights`) uses the same sources and pipeline with instruction types
drawn uniformly instead of from the failing clusters, truncated to the same number of examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainloop.data.decontam import DecontamConfig, Embedder, decontaminate
from trainloop.data.ifeval import REPAIRS, IfevalPrompt, check, repair, sample_prompts
from trainloop.strategies.sample import SamplingConfig, sample_chat
from trainloop.strategies.self_ifeval import _chat, _pair

Example = tuple[str, dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class VolumeConfig:
    per_cluster: int = 120  # verified SFT examples wanted per targeted cluster
    max_prompts: int = 900  # new prompts generated at most per round (the source's limit)
    chunk: int = 150  # prompts per generation call
    holdout: int = 40  # verified prompts kept out of training for the fit check
    max_new_tokens: int = 160
    min_chars: int = 40  # a cleaned answer shorter than this is dropped (degenerate)
    seed: int = 0
    repairable_only: bool = True  # draw only instruction types a programmatic repair can fix (verified data
    # for any failing answer); other types yield data only where the model already passes them


@dataclass
class VolumeData:
    examples: list[Example] = field(default_factory=list)  # SFT + DPO rows for training
    holdout: list[dict[str, Any]] = field(default_factory=list)  # IfevalPrompt docs + the base's greedy pass
    stats: dict[str, Any] = field(default_factory=dict)


_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*(?=\s|$)")


def clean_answer(text: str) -> str:
    """Cut an answer back to whole sentences and stop at the first repeated sentence.

    A greedy answer of a small model that hits the token cap usually ends mid-sentence or in a
    loop; training on it teaches both. Keeps the text up to the last sentence end before the cap
    or before the first sentence that repeats an earlier one."""
    text = text.strip()
    if not text:
        return ""
    out, seen, pos = [], set(), 0
    for m in _SENT_END.finditer(text):
        sent = text[pos : m.end()]
        key = re.sub(r"\W+", " ", sent).strip().lower()
        if key and key in seen:
            break
        if key:
            seen.add(key)
        out.append(sent)
        pos = m.end()
    kept = "".join(out).strip()
    return kept


def normalised(texts: Sequence[str]) -> list[str]:
    from trainloop.data.decontam import words

    return [" " + " ".join(words(t)) + " " for t in texts]


def contained(topic: str, norm_eval: Sequence[str], cache: dict[str, bool]) -> bool:
    """Does the topic appear word for word inside an eval item (``norm_eval``: :func:`normalised`)?
    A topic is shorter than the 13-gram rule's window, so that rule alone could never fire on it."""
    if not topic:
        return False
    if topic not in cache:
        needle = normalised([topic])[0]
        cache[topic] = any(needle in t for t in norm_eval)
    return cache[topic]


def fill(lm: Any, weights: dict[str, float], sources: dict[str, list[int]], config: VolumeConfig,
         eval_texts: Sequence[str], embed: Embedder | None, decontam: DecontamConfig = DecontamConfig(),
         strategy: str = "self", target_total: int | None = None,
         generate: Callable[[Any, list[str], SamplingConfig], list[list[str]]] | None = None,
         progress: Callable[[str], None] | None = None) -> VolumeData:
    """Generate, clean, verify and repair until each source cluster has ``per_cluster`` examples
    (or, with ``target_total``, until that many training examples exist: the random control)."""
    generate = generate or (lambda m, ps, sc: sample_chat(m, ps, sc, disable_tqdm=True))
    out = VolumeData()
    clusters = sorted({c for cs in sources.values() for c in cs})
    have = {c: 0 for c in clusters}
    used = dropped_contam = dropped_short = natural = repaired = unrepairable = 0
    n_sft = repeats = 0
    seen: set[str] = set()
    contained_cache: dict[str, bool] = {}
    norm_eval = normalised(eval_texts)
    chunk_no = 0
    sampling = SamplingConfig(k=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)

    def short() -> list[int]:
        return [c for c in clusters if have[c] < config.per_cluster]

    def done() -> bool:
        if target_total is not None:
            return n_sft >= target_total + config.holdout
        return not short()

    while not done() and used < config.max_prompts:
        n = min(config.chunk, config.max_prompts - used)
        if target_total is None:
            want = set(short())
            w = {i: x for i, x in weights.items() if want & set(sources.get(i, []))}
        else:
            w = dict(weights)
        if config.repairable_only:
            w = {i: x for i, x in w.items() if i in REPAIRS}
        if not w:
            break
        prompts = sample_prompts(w, n, seed=config.seed * 1000 + chunk_no + 1)
        prompts = [IfevalPrompt(f"{p.key}-c{chunk_no}", p.prompt, p.instruction_id_list, p.kwargs, p.topic)
                   for p in prompts]
        chunk_no += 1
        used += n
        fresh = []
        for p in prompts:  # a repeated prompt would be trained twice, or leak into the fit check
            if p.prompt not in seen:
                seen.add(p.prompt)
                fresh.append(p)
        repeats += len(prompts) - len(fresh)
        prompts = fresh
        # what a new prompt adds to lm-eval's fixed instruction templates is its topic: the templates are
        # the same words in every IFEval prompt with that instruction (a 13-gram match on them says
        # nothing about an eval item leaking), so the topic is what is checked against the suite
        report = decontaminate([p.topic or p.prompt for p in prompts], eval_texts, embed, decontam)
        kept = [prompts[i] for i in report.kept if not contained(prompts[i].topic, norm_eval, contained_cache)]
        dropped_contam += len(prompts) - len(kept)
        outs = generate(lm, [p.prompt for p in kept], sampling) if kept else []
        for p, o in zip(kept, outs):
            raw = o[0] if o else ""
            base_pass = all(check(p, raw))
            text = clean_answer(raw)
            if len(text) < config.min_chars:
                dropped_short += 1
                continue
            verdict = check(p, text)
            origin, resp = "sample", text
            if not all(verdict):
                fixed = repair(p, text, verdict)
                if fixed is None:
                    unrepairable += 1
                    continue
                origin, resp = "repair", fixed.response
            cl = sorted({c for iid in p.instruction_id_list for c in sources.get(iid, [])})
            base = {"strategy": strategy, "clusters": cl, "prompt_key": p.key,
                    "instructions": list(p.instruction_id_list), "origin": origin}
            if len(out.holdout) < config.holdout:
                out.holdout.append({"doc": p.to_doc(), "base_pass": base_pass, "base_response": raw})
                n_sft += 1
                continue
            if done():  # budget met inside this chunk: the rest of its answers are not needed
                break
            natural += origin == "sample"
            repaired += origin == "repair"
            out.examples.append(("sft", _chat(p.prompt, resp), base))
            if origin == "repair":
                out.examples.append(("dpo", _pair(p.prompt, resp, text), {**base, "origin": "repair-vs-original"}))
            n_sft += 1
            for c in cl:
                have[c] = have.get(c, 0) + 1
        if progress is not None:
            goal = (f"{n_sft}/{target_total + config.holdout} examples" if target_total is not None else
                    "per cluster " + ", ".join(f"{c}: {have[c]}/{config.per_cluster}" for c in clusters))
            progress(f"  {strategy} data: {used}/{config.max_prompts} prompts, {goal} "
                     f"({dropped_contam} decontaminated, {repeats} repeats, {unrepairable} unrepairable)")
    sft = sum(k == "sft" for k, _, _ in out.examples)
    out.stats = {
        "strategy": strategy, "prompts": used, "decontam_dropped": dropped_contam, "dropped_short": dropped_short,
        "unrepairable": unrepairable, "repeats": repeats, "natural": natural, "repaired": repaired, "sft": sft,
        "dpo": sum(k == "dpo" for k, _, _ in out.examples), "holdout": len(out.holdout),
        "per_cluster": {str(c): have[c] for c in clusters}, "budget_per_cluster": config.per_cluster,
        "target_total": target_total,
        "status": "met" if done() else "exhausted",
    }
    return out


def uniform_weights() -> tuple[dict[str, float], dict[str, list[int]]]:
    """The random control's source: every instruction type the repair pipeline can verify, equally
    likely, attributed to no cluster (-1)."""
    from trainloop.data.ifeval import available_ids

    ids = [i for i in available_ids() if i in REPAIRS]
    return {i: 1.0 for i in ids}, {i: [-1] for i in ids}
