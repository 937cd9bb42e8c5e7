"""Turn stored samples into the items failure clustering works on.

Why error-aware texts: clusters must tell the user something the task's own metadata does not.
Embedding the question alone clusters MMLU by subject (the topic dominates the vector), which
the subject split already says. So a FAILED sample's text describes what went wrong, led by
the error itself: MMLU "model answered: <choice text>; correct: <choice text>" then the
question; GSM8K the model's final answer against the target, then the question's tail; IFEval
the instruction ids that failed, then the head of the failing output. A PASSING sample keeps a
neutral text of the same shape (the correct answer / the instructions followed), because error
rates need the successes in the same space. The subject is left out of MMLU texts on purpose.

Two texts per sample: a compact one to embed (about 60 word pieces: MiniLM's cost grows with
length — ~8k word pieces/s on 2 CPU cores in bf16 — and 5,000 samples must cluster in under a
minute) and a fuller one for the c-TF-IDF labels (counting words is cheap). ``groups`` is the
sample's plain metadata split (MMLU subject, IFEval instruction types such as change_case, a task inside a group
entry; none for GSM8K) that slices are compared against (``stats.compare_to_metadata``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The per-sample metric that decides pass/fail, by task family (an entry's or task's name
# prefix). A sample fails when that value is not 1 (False, 0, 0.5 ...; a list of per-instruction
# booleans fails unless all are true). Families not listed use their first metric that is not a
# calibration score. HumanEval's pass@1 is c/n over its n completions: failing = not all passed.
FAILURE_METRIC: dict[str, str] = {
    "mmlu": "acc",
    "gsm8k": "exact_match,strict-match",
    "ifeval": "prompt_level_strict_acc",
    "humaneval": "pass@1",
}
NOT_PASS_FAIL = {"brier", "ece", "n", "n_correct"}

LETTERS = "ABCDEFGHIJ"
EMBED_BODY, EMBED_TAIL = 140, 60       # characters of prompt / response in the embedded text (~60 word pieces)
LABEL_BODY, LABEL_TAIL = 1500, 1000    # ... in the text the labels are counted over


@dataclass
class Item:
    """One sample as clustering sees it; ``key`` = (entry, task, doc_id) names it in the store."""

    entry: str
    task: str
    doc_id: int
    family: str
    metric: str
    failed: bool
    text: str                     # what is embedded (compact)
    instruction: str              # the prompt as a reader wants it (no few-shot boilerplate)
    response: str
    expected: str
    tags: dict[str, bool | None] = field(default_factory=dict)  # IFEval instruction id -> failed? (None: unknown)
    label_text: str = ""          # what c-TF-IDF counts (fuller); empty = ``text``
    groups: list[str] = field(default_factory=list)  # the metadata split's groups (subject, instruction ids)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.entry, self.task, self.doc_id)


def family_of(entry: str, task: str) -> str:
    for name in (task, entry):
        for fam in FAILURE_METRIC:
            if name == fam or name.startswith(fam + "_"):
                return fam
    return entry


def failure_metric(family: str, metrics: dict[str, Any]) -> str | None:
    """The mapped metric when present, else the first pass/fail-like metric, else None."""
    chosen = FAILURE_METRIC.get(family)
    if chosen in metrics:
        return chosen
    usable = [m for m in metrics if m not in NOT_PASS_FAIL and _is_score(metrics[m])]
    return usable[0] if usable else None


def is_failure(value: Any) -> bool:
    if isinstance(value, list):
        return not all(bool(v) for v in value)
    if isinstance(value, bool):
        return not value
    return abs(float(value) - 1.0) > 1e-9


def build_item(sample: dict[str, Any]) -> Item | None:
    """An :class:`Item` for a stored sample, or None when it has no pass/fail metric."""
    family = family_of(sample["entry"], sample["task"])
    metrics = sample.get("metrics") or {}
    metric = failure_metric(family, metrics)
    if metric is None:
        return None
    failed = is_failure(metrics[metric])
    build = {"ifeval": _ifeval, "gsm8k": _gsm8k, "mmlu": _mmlu}.get(family, _generic)
    head, body, tail, instruction, response, expected, tags, groups = build(sample, failed)
    text = "\n".join(p for p in (head, _cut(body, EMBED_BODY), _cut(tail, EMBED_TAIL)) if p)
    label_text = "\n".join(p for p in (head, _cut(body, LABEL_BODY), _cut(tail, LABEL_TAIL)) if p)
    return Item(sample["entry"], sample["task"], int(sample["doc_id"]), family, metric, failed,
                text, instruction, response, expected, tags, label_text, groups)


def build_items(samples: list[dict[str, Any]]) -> tuple[list[Item], int]:
    """Items for all samples with a pass/fail metric, and how many samples were skipped."""
    items = [it for it in (build_item(s) for s in samples) if it is not None]
    return items, len(samples) - len(items)


# ----------------------------------------------------------------- per family
# Each takes (sample, failed) and returns (head, body, tail, instruction, response, expected, tags,
# groups): head is short and always embedded whole (for a failure: the error itself); body and
# tail are cut to the budgets above; groups = the metadata split's groups for the baseline.
Parts = tuple[str, str, str, str, str, str, dict[str, "bool | None"], list[str]]


def _ifeval(s: dict[str, Any], failed: bool) -> Parts:
    doc = s.get("doc") or {}
    ids = [str(i) for i in doc.get("instruction_id_list") or []]
    per_inst = (s.get("metrics") or {}).get("inst_level_strict_acc")
    tags: dict[str, bool | None] = {}
    for i, inst in enumerate(ids):
        ok = per_inst[i] if isinstance(per_inst, list) and i < len(per_inst) else None
        tags[inst] = None if ok is None else not bool(ok)
    prompt = str(doc.get("prompt") or s.get("prompt") or "")
    response = _response(s)
    if failed:
        broke = [i for i, f in tags.items() if f] or ids  # per-instruction results unknown: all of them
        kept = [i for i in ids if i not in broke]
        head = f"ifeval failed instructions: {', '.join(broke)}" + (f"; kept: {', '.join(kept)}" if kept else "")
    else:
        head = f"ifeval followed instructions: {', '.join(ids)}"
    types = list(dict.fromkeys(i.split(":")[0] for i in ids))  # instruction type: change_case, length_constraints ...
    return head, f"output: {response}", "", prompt, response, "follow: " + ", ".join(ids), tags, types


def _gsm8k(s: dict[str, Any], failed: bool) -> Parts:
    doc = s.get("doc") or {}
    question = str(doc.get("question") or _last_question(s.get("prompt") or ""))
    answer = str(doc.get("answer") or s.get("target") or "")
    gold = answer.split("####")[-1].strip() if "####" in answer else answer.strip()
    filtered = s.get("filtered") or {}
    extracted = {name: _first(v) for name, v in filtered.items()}
    values = list(dict.fromkeys(str(v) for v in extracted.values()))
    got = values[0] if len(values) == 1 else (", ".join(f"{k} {v!s}" for k, v in extracted.items()) or "none")
    response = _response(s)
    head = f"gsm8k wrong final answer: model {got} vs target {gold}" if failed else f"gsm8k correct final answer: {gold}"
    tail_q = question if len(question) <= EMBED_BODY else "…" + question[-(EMBED_BODY - 1):]
    return head, f"question tail: {tail_q}", f"response: {response}" if failed else "", question, response, \
        f"{gold}  (extracted: {got})\n\n{answer}", {}, []


def _mmlu(s: dict[str, Any], failed: bool) -> Parts:
    doc = s.get("doc") or {}
    question = str(doc.get("question") or _last_question(s.get("prompt") or ""))
    choices = [str(c) for c in doc.get("choices") or []]
    subject = str(doc.get("subject") or s["task"].removeprefix("mmlu_"))
    gold = _as_int(doc.get("answer", s.get("target")))
    ll = s.get("loglik") or []
    chosen = max(range(len(ll)), key=lambda i: ll[i]) if ll else None
    letter = lambda i: LETTERS[i] if i is not None and 0 <= i < len(LETTERS) else "?"  # noqa: E731
    listed = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices[: len(LETTERS)]))
    chosen_txt = f"{letter(chosen)}. {choices[chosen]}" if chosen is not None and chosen < len(choices) else letter(chosen)
    gold_txt = f"{letter(gold)}. {choices[gold]}" if gold is not None and 0 <= gold < len(choices) else letter(gold)
    # the subject stays out of the text: the subject split is the baseline the slices must beat
    head = (f"mmlu model answered: {_cut(chosen_txt, 60)}; correct: {_cut(gold_txt, 60)}" if failed
            else f"mmlu answered correctly: {_cut(gold_txt, 60)}")
    return head, f"question: {question}", "", f"{question}\n\n{listed}", f"chose {chosen_txt}", gold_txt, {}, [subject]


def _generic(s: dict[str, Any], failed: bool) -> Parts:
    prompt = str(s.get("prompt") or "")
    response = _response(s)
    expected = str(s.get("target") or "")
    tail = prompt[-LABEL_BODY:]  # the end of a few-shot prompt is the sample's own question
    head = f"{s['task']} wrong: expected {_cut(expected, 80)}" if failed else f"{s['task']} right: {_cut(expected, 80)}"
    groups = [str(s["task"])] if s["task"] != s["entry"] else []
    return head, f"prompt: {tail}", f"response: {response}", prompt, response, expected, {}, groups


# -------------------------------------------------------------------- helpers
def _response(s: dict[str, Any]) -> str:
    responses = s.get("responses") or []
    if responses and isinstance(responses[0], str):
        return responses[0]
    return str(_first((s.get("filtered") or {}).get("none")) or "")


def _first(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value if not isinstance(value, list) else ""


def _last_question(prompt: str) -> str:
    """The final block of a few-shot prompt (its own question), without the shots."""
    return prompt.strip().split("\n\n")[-1]


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        text = str(value).strip()
        return LETTERS.index(text) if len(text) == 1 and text in LETTERS else None


def _is_score(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, (bool, int, float)) for v in value) and bool(value)
    return isinstance(value, (bool, int, float))


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
