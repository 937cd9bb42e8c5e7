"""Verifiable IFEval-style training data: new prompts, the official checkers, and repairs.

Why new prompts: training on the suite's own IFEval prompts would be contamination. New ones
are a topic request plus instruction descriptions built by lm-eval's own instruction classes
(``build_description`` with seeded random arguments), so the *same* checker that scores the
eval scores the training samples.

Why repairs: the first experiment here (``../shared/notes/loop-experiment.md``) found that
self-sampling yields data only for constraints the model already meets — lowercase, capitals,
quotation, end phrase and repeat-prompt had 0 passes in hundreds of samples. A repair rewrites a
failing response programmatically (lowercase it, wrap it in quotes, append the end phrase ...);
it is kept only if the official checker then passes *every* instruction of the prompt.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

TOPICS: tuple[str, ...] = (
    "Write a short blog post about learning to bake bread at home.",
    "Describe a walk through a city market on a rainy morning.",
    "Explain to a teenager how compound interest works.",
    "Write a product description for a reusable water bottle.",
    "Give advice to someone starting their first job in an office.",
    "Write a letter to a neighbour asking them to water your plants.",
    "Summarize the benefits of regular stretching.",
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "Describe how a bicycle gear system works.",
    "Write an email inviting colleagues to a farewell lunch.",
    "Explain why the sky looks blue during the day.",
    "Write a review of an imaginary science fiction film.",
    "Give tips for keeping a small apartment tidy.",
    "Describe the life cycle of a butterfly.",
    "Write a speech for the opening of a community library.",
    "Explain the rules of a simple card game you invent.",
    "Write a poem about a train journey through the mountains.",
    "Describe a plan for a weekend camping trip.",
    "Explain how to prepare for a job interview.",
    "Write a short history of an imaginary island nation.",
    "Give reasons why people enjoy gardening.",
    "Write a riddle about time and explain its answer.",
    "Describe your ideal workspace.",
    "Explain how recycling plastic bottles works.",
    "Write a dialogue between a chef and a food critic.",
    "Give a beginner's guide to bird watching.",
    "Write a travel guide entry for a fictional mountain village.",
    "Explain the difference between weather and climate.",
    "Write a motivational note for students before exams.",
    "Describe how to care for a houseplant.",
    "Write a news report about a town festival.",
    "Explain what a budget is and how to make one.",
    "Write a fairy tale about a clever fox and a stubborn goat.",
    "Describe the sounds of a forest at night.",
    "Give instructions for making a paper airplane.",
    "Write a complaint letter about a late package delivery.",
    "Explain why sleep is important for memory.",
    "Write an advertisement for a new neighbourhood cafe.",
    "Describe a day in the life of a bus driver.",
    "Explain how a rainbow forms.",
    "Write a short biography of an imaginary inventor.",
    "Give tips for learning a new language.",
    "Write a song about friendship and long summer evenings.",
    "Describe how to organize a school science fair.",
    "Explain the basics of how a computer stores files.",
    "Write a thank-you note to a teacher.",
    "Describe the view from the top of a tall building.",
    "Explain how to plan a healthy weekly menu.",
    "Write a pitch for a mobile app that helps people share tools.",
    "Describe a memorable football match between two rival towns.",
    "Explain how vaccines train the immune system.",
    "Write a diary entry of a sailor crossing the ocean.",
    "Give advice on saving energy at home.",
    "Write a limerick about a cat who loves cheese.",
    "Describe the steps to change a flat tyre.",
    "Explain why volunteering can be rewarding.",
    "Write a proposal for a new park in your town.",
    "Describe the taste of your favourite fruit to someone who never had it.",
    "Explain how a library organizes its books.",
    "Write an essay about the importance of public transport.",
)

# instruction ids whose prompts this module can build (those IFEval's registry can build without
# a hand-made argument: rephrasing and key-sentence instructions are disabled in lm-eval too)
REPAIRABLE = ("change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma",
              "startend:quotation", "startend:end_checker", "detectable_format:title",
              "detectable_content:postscript", "combination:repeat_prompt", "detectable_format:json_format",
              "detectable_content:number_placeholders", "detectable_format:number_highlighted_sections",
              "combination:two_responses", "detectable_format:multiple_sections", "length_constraints:number_paragraphs")


@dataclass(frozen=True)
class IfevalPrompt:
    """One verifiable prompt in IFEval's own schema (``key``, ``prompt``, ids, kwargs)."""

    key: str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]
    topic: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {"key": self.key, "prompt": self.prompt, "instruction_id_list": list(self.instruction_id_list),
                "kwargs": [dict(k) for k in self.kwargs]}


def _registry() -> tuple[dict[str, Any], dict[str, set[str]]]:
    from evalkit.data.punkt import ensure_punkt

    ensure_punkt()  # lm-eval's ifeval module tries an nltk download at import otherwise
    from lm_eval.tasks.ifeval import instructions_registry as reg

    conflicts: dict[str, set[str]] = {}
    for k, vs in reg.INSTRUCTION_CONFLICTS.items():
        for v in set(vs) | {k}:
            conflicts.setdefault(k, set()).add(v)
            conflicts.setdefault(v, set()).add(k)
    return reg.INSTRUCTION_DICT, conflicts


def available_ids() -> list[str]:
    return sorted(_registry()[0])


def build_prompt(topic: str, ids: Sequence[str], seed: int, key: str = "") -> IfevalPrompt:
    """The topic followed by each instruction's description, arguments drawn with ``seed``.

    lm-eval's instruction classes draw from the global ``random`` module, so its state is saved,
    seeded and restored: the same seed always builds the same prompt, and callers' streams are
    left alone."""
    classes, conflicts = _registry()
    unknown = [i for i in ids if i not in classes]
    if unknown:
        raise ValueError(f"unknown IFEval instruction ids: {', '.join(unknown)}")
    for a in ids:
        clash = [b for b in ids if b != a and b in conflicts.get(a, set())]
        if clash:
            raise ValueError(f"IFEval instructions {a} and {clash[0]} conflict")
    state = random.getstate()
    random.seed(seed)
    try:
        parts, kwargs = [topic], []
        for iid in ids:
            inst = classes[iid](iid)
            if iid == "combination:repeat_prompt":
                desc = inst.build_description(prompt_to_repeat=topic)
            else:
                desc = inst.build_description()
            args = inst.get_instruction_args() or {}
            kwargs.append({k: v for k, v in args.items() if v is not None})
            parts.append(desc)
    finally:
        random.setstate(state)
    return IfevalPrompt(key or f"loop-{seed}", " ".join(parts), tuple(ids), tuple(kwargs), topic)


def check(prompt: IfevalPrompt, response: str) -> list[bool]:
    """Per-instruction strict verdicts from lm-eval's own IFEval scorer."""
    _registry()
    from lm_eval.tasks.ifeval.utils import InputExample, test_instruction_following_strict

    inp = InputExample(key=0, instruction_id_list=list(prompt.instruction_id_list), prompt=prompt.prompt,
                       kwargs=[dict(k) for k in prompt.kwargs])
    return list(test_instruction_following_strict(inp, response).follow_instruction_list)


def sample_prompts(failing: dict[str, float], n: int, seed: int, per_prompt: tuple[int, int] = (1, 2),
                   topics: Sequence[str] = TOPICS, allowed: Iterable[str] | None = None) -> list[IfevalPrompt]:
    """``n`` new prompts whose instructions are drawn in proportion to ``failing`` (id -> weight,
    e.g. failures in the target clusters), 1-2 compatible instructions each."""
    classes, conflicts = _registry()
    ok = set(allowed) if allowed is not None else set(classes)
    weights = {i: w for i, w in failing.items() if i in classes and i in ok and w > 0}
    if not weights:
        raise ValueError("no buildable IFEval instruction ids among the failing ones")
    rng = random.Random(seed)
    ids, ws = list(weights), list(weights.values())
    out: list[IfevalPrompt] = []
    for k in range(n):
        want = rng.randint(*per_prompt)
        chosen: list[str] = []
        for _ in range(want * 4):
            if len(chosen) >= want:
                break
            c = rng.choices(ids, ws)[0]
            if c not in chosen and not any(c in conflicts.get(x, set()) for x in chosen):
                chosen.append(c)
        out.append(build_prompt(rng.choice(list(topics)), chosen, seed=seed * 100_003 + k, key=f"loop-{seed}-{k}"))
    return out


# ---------------------------------------------------------------------------------------- repairs
Repair = Callable[[str, dict[str, Any], IfevalPrompt], str]


def _title(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    words = re.findall(r"[A-Za-z]+", p.topic)[1:5] or ["Response"]
    return f"<<{' '.join(w.capitalize() for w in words)}>>\n\n{text}"


def _highlights(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    need = int(kw.get("num_highlights") or 1)
    lines = [ln for ln in text.split("\n")]
    done, out = 0, []
    for ln in lines:
        plain = ln.strip().replace("*", "")
        if done < need and plain:
            out.append(f"*{plain}*")
            done += 1
        else:
            out.append(ln)
    out += [f"*note {i + 1}*" for i in range(need - done)]
    return "\n".join(out)


def _sections(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    n, name = int(kw.get("num_sections") or 2), str(kw.get("section_spliter") or "Section")
    paras = _split_even(text, n)
    return "\n\n".join(f"{name} {i + 1}\n{para}" for i, para in enumerate(paras))


def _paragraphs(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    return "\n***\n".join(_split_even(text.replace("***", " "), int(kw.get("num_paragraphs") or 2)))


def _split_even(text: str, n: int) -> list[str]:
    sents = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s.strip()] or [text.strip() or "..."]
    while len(sents) < n:
        sents.append(sents[-1])
    size = -(-len(sents) // n)
    chunks = [" ".join(sents[i * size : (i + 1) * size]) for i in range(n)]
    return [c if c.strip() else sents[-1] for c in chunks]


def _two(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    body = text.replace("******", "").strip()
    half = _split_even(body, 2)
    first, second = (half[0], half[1]) if half[0].strip() != half[1].strip() else (body, body + " In short, that is all.")
    return f"{first}\n******\n{second}"


def _end(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    phrase = str(kw.get("end_phrase") or "")
    return text.rstrip() + ("\n" if text.strip() else "") + phrase


def _postscript(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    marker = str(kw.get("postscript_marker") or "P.S.")
    return f"{text.rstrip()}\n\n{marker} Thank you for reading."


def _placeholders(text: str, kw: dict[str, Any], p: IfevalPrompt) -> str:
    need = int(kw.get("num_placeholders") or 1)
    have = len(re.findall(r"\[.*?\]", text))
    names = ["name", "address", "date", "place", "time", "email", "phone", "company"]
    extra = ", ".join(f"[{names[i % len(names)]}]" for i in range(max(0, need - have)))
    return f"{text.rstrip()}\n\nDetails: {extra}" if extra else text


REPAIRS: dict[str, Repair] = {
    # content first, then text added around it, then whole-response wrappers (the order matters)
    "change_case:english_lowercase": lambda t, kw, p: t.lower(),
    "change_case:english_capital": lambda t, kw, p: t.upper(),
    "punctuation:no_comma": lambda t, kw, p: t.replace(",", ""),
    "detectable_format:multiple_sections": _sections,
    "length_constraints:number_paragraphs": _paragraphs,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_content:number_placeholders": _placeholders,
    "combination:two_responses": _two,
    "detectable_format:title": _title,
    "combination:repeat_prompt": lambda t, kw, p: f"{kw.get('prompt_to_repeat', '')}\n\n{t}",
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end,
    "detectable_format:json_format": lambda t, kw, p: json.dumps({"response": t}),
    "startend:quotation": lambda t, kw, p: f'"{t.strip()}"',
}
ORDER = {k: i for i, k in enumerate(REPAIRS)}


@dataclass
class Verified:
    prompt: IfevalPrompt
    response: str
    passed: list[bool]
    origin: str  # "sample" | "repair"
    repaired: list[str] = field(default_factory=list)  # instruction ids a repair rewrote for

    @property
    def ok(self) -> bool:
        return bool(self.passed) and all(self.passed)


def repair(prompt: IfevalPrompt, response: str, passed: Sequence[bool] | None = None) -> Verified | None:
    """Apply the repairs of every failed instruction (in :data:`ORDER`), then re-check all of them.
    None when an instruction has no repair or the repaired text still fails any check."""
    passed = list(passed) if passed is not None else check(prompt, response)
    failed = [(i, iid) for i, (iid, ok) in enumerate(zip(prompt.instruction_id_list, passed)) if not ok]
    if not failed or any(iid not in REPAIRS for _, iid in failed):
        return None
    text = response
    # a case change must also hold for text other repairs add, so it is re-applied at the end
    for i, iid in sorted(failed, key=lambda x: ORDER[x[1]]):
        text = REPAIRS[iid](text, prompt.kwargs[i], prompt)
    for i, iid in enumerate(prompt.instruction_id_list):
        if iid in ("change_case:english_lowercase", "change_case:english_capital"):
            text = REPAIRS[iid](text, prompt.kwargs[i], prompt)
    verdict = check(prompt, text)
    if not all(verdict):
        return None
    return Verified(prompt, text, verdict, "repair", [iid for _, iid in failed])
