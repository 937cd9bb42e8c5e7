"""Format leak: does a trained format show up where nobody asked for it?

Why: the probe that first moved this model on IFEval taught lowercase, capitals, quotes and end
phrases, and 17 of 80 answers to prompts asking for none of them came out all lowercase. An
aggregate metric hides that (a lowercase answer to a prompt with no case instruction still
"passes" it), so the loop counts it directly: for every format the round trained, on the
confirmation items whose instructions do *not* ask for it, how many answers have that format —
current model vs candidate, paired per item (exact McNemar on the items that changed). It is
reported next to the gate, not gated: KL on untargeted prompts is the budgeted measure of drift;
this says which format drifted.

Only formats whose presence is decidable from the text alone are counted (no arguments needed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from evalkit.analysis.paired import binom_two_sided


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


def _lower(text: str) -> bool:
    s = _letters(text)
    return len(s) >= 20 and s == s.lower()


def _upper(text: str) -> bool:
    s = _letters(text)
    return len(s) >= 20 and s == s.upper()


def _quoted(text: str) -> bool:
    t = text.strip()
    return len(t) > 2 and t[0] == '"' and t[-1] == '"'


def _title(text: str) -> bool:
    return re.search(r"<<[^\n]+>>", text) is not None


def _two(text: str) -> bool:
    return "******" in text


def _highlight(text: str) -> bool:
    return re.search(r"\*[^\n\*]+\*", text) is not None


# instruction id -> "does this response have the format?" (decidable without the instruction's arguments)
FORMATS: dict[str, Callable[[str], bool]] = {
    "change_case:english_lowercase": _lower,
    "change_case:english_capital": _upper,
    "startend:quotation": _quoted,
    "detectable_format:title": _title,
    "combination:two_responses": _two,
    "detectable_format:number_highlighted_sections": _highlight,
}


def format_leak(before: Mapping[Any, tuple[str, Collection[str]]], after: Mapping[Any, str],
                trained: Collection[str]) -> list[dict[str, Any]]:
    """``before``: item key -> (current model's response, the item's instruction ids); ``after``:
    item key -> candidate's response. One row per trained, decidable format."""
    rows = []
    for fmt in sorted(set(trained) & set(FORMATS)):
        has = FORMATS[fmt]
        keys = [k for k, (_, ids) in before.items() if fmt not in ids and k in after]
        a = [has(before[k][0]) for k in keys]
        b = [has(after[k]) for k in keys]
        gained = sum(1 for x, y in zip(a, b) if y and not x)
        lost = sum(1 for x, y in zip(a, b) if x and not y)
        p = binom_two_sided(min(gained, lost), gained + lost) if gained + lost else 1.0
        rows.append({"format": fmt, "n": len(keys), "before": sum(a), "after": sum(b), "p": p,
                     "leaks": sum(b) > sum(a) and p < 0.05})
    return rows


def leak_rows(items_before: Sequence[Any], items_after: Sequence[Any], trained: Collection[str],
              keep: Callable[[Any], bool]) -> list[dict[str, Any]]:
    """:func:`format_leak` over clustering items (``evalkit.analysis.clusters.texts.Item``) of two runs."""
    before = {it.key: (it.response, set(it.tags)) for it in items_before if keep(it)}
    after = {it.key: it.response for it in items_after if it.key in before}
    return format_leak(before, after, trained)
