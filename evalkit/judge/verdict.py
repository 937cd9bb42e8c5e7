"""Single-order judgments, combining the two orders, and parsing a text verdict.

Why both orders: LLM judges prefer a position (MT-Bench: GPT-4 gives the same verdict after a
swap only ~65% of the time), so every pair is judged as (a, b) and as (b, a). A verdict that
flips with the order is not a preference; by default it becomes a tie (``tie_policy="tie"``, as
in MT-Bench). ``tie_policy="average"`` instead averages the probability of each *original*
candidate over the two orders and takes the larger (a text judge's verdict counts as
probability 1; an unparseable reply as uniform, i.e. no information).

Outcomes are named in the *original* orientation of the pair: ``"a"``, ``"b"`` or ``"tie"``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

TIE_POLICIES = ("tie", "average")
OUTCOMES = ("a", "b", "tie")


@dataclass
class SingleJudgment:
    """A judge's answer for one order. ``probs`` maps verdict letters to probabilities
    (normalised over the allowed letters); ``verdict`` is None when a text reply did not parse."""

    verdict: str | None
    probs: dict[str, float] | None = None
    text: str | None = None
    mass: float | None = None  # local judges: raw probability mass on the verdict tokens
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SingleJudgment:
        return cls(verdict=d.get("verdict"), probs=d.get("probs"), text=d.get("text"), mass=d.get("mass"),
                   truncated=bool(d.get("truncated")))


@dataclass
class PairVerdict:
    """The combined verdict on one pair judged in both orders."""

    winner: str  # "a" | "b" | "tie"
    p_a: float
    p_b: float
    p_tie: float
    order_ab: str | None  # outcome read from the (a, b) order, original orientation; None = unparsed
    order_ba: str | None  # outcome read from the (b, a) order, original orientation
    parse_failures: int = 0
    judgments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def consistent(self) -> bool | None:
        if self.order_ab is None or self.order_ba is None:
            return None
        return self.order_ab == self.order_ba

    def to_dict(self, with_judgments: bool = False) -> dict[str, Any]:
        d = {"winner": self.winner, "p_a": self.p_a, "p_b": self.p_b, "p_tie": self.p_tie,
             "order_ab": self.order_ab, "order_ba": self.order_ba, "consistent": self.consistent,
             "parse_failures": self.parse_failures}
        if with_judgments:
            d["judgments"] = self.judgments
        return d


def _probs(j: SingleJudgment, letters: tuple[str, ...]) -> dict[str, float]:
    """The judgment's distribution over letters; one-hot for text verdicts; uniform when unparsed."""
    if j.probs:
        total = sum(float(j.probs.get(k, 0.0)) for k in letters) or 1.0
        return {k: float(j.probs.get(k, 0.0)) / total for k in letters}
    if j.verdict in letters:
        return {k: 1.0 if k == j.verdict else 0.0 for k in letters}
    return {k: 1.0 / len(letters) for k in letters}


def _argmax(p: dict[str, float]) -> str:
    """Largest probability; an exact tie between the best letters reads as "C" (tie)."""
    best = max(p.values())
    top = [k for k, v in p.items() if v == best]
    return top[0] if len(top) == 1 else "C"


def order_outcome(j: SingleJudgment, letters: tuple[str, ...], swapped: bool) -> str | None:
    """Which original candidate this single-order judgment prefers (None when unparsed)."""
    if not j.probs and j.verdict not in letters:
        return None
    letter = _argmax(_probs(j, letters))
    if letter == "C":
        return "tie"
    first = "b" if swapped else "a"
    second = "a" if swapped else "b"
    return first if letter == "A" else second


def combine(ab: SingleJudgment, ba: SingleJudgment, *, allow_tie: bool, tie_policy: str = "tie") -> PairVerdict:
    """Combine the (a, b) and (b, a) judgments of one pair into a :class:`PairVerdict`."""
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, not {tie_policy!r}")
    letters = ("A", "B", "C") if allow_tie else ("A", "B")
    p1, p2 = _probs(ab, letters), _probs(ba, letters)
    p_a = (p1["A"] + p2["B"]) / 2
    p_b = (p1["B"] + p2["A"]) / 2
    p_tie = (p1.get("C", 0.0) + p2.get("C", 0.0)) / 2
    o1, o2 = order_outcome(ab, letters, False), order_outcome(ba, letters, True)
    if tie_policy == "tie":
        winner = o1 if (o1 is not None and o1 == o2) else "tie"
    else:
        best = max(p_a, p_b, p_tie)
        top = [k for k, v in (("a", p_a), ("b", p_b), ("tie", p_tie)) if v == best]
        winner = top[0] if len(top) == 1 else "tie"
    fails = int(o1 is None) + int(o2 is None)
    return PairVerdict(winner=winner, p_a=p_a, p_b=p_b, p_tie=p_tie, order_ab=o1, order_ba=o2,
                       parse_failures=fails, judgments=[ab.to_dict(), ba.to_dict()])


_BRACKET = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LEADING = re.compile(
    r"^[\s*_`\"'(\[]*(?:(?:assistant|answer|verdict|output|winner)\s*[:\-]?\s*)?([ABC])"
    r"(?=\s*$|[.,:;!)\]*_`\"'\n]|\s+(?:is|wins|was)\b)",
    re.I,
)
_TIE_WORDS = re.compile(r"^\W*(tie|equal|equally good|both)\b", re.I)


def parse_verdict_text(text: str, allow_tie: bool) -> str | None:
    """"A" / "B" / "C" from a judge's reply, or None when it cannot be read unambiguously.

    Accepts ``[[A]]`` anywhere, or a reply that *starts* with the letter (``A``, ``A.``,
    ``**B**``, ``Assistant B``, ``Verdict: A``); "tie"/"equal" at the start reads as C when
    ties are allowed. Anything else is a parse failure (recorded, never guessed).
    """
    if not text:
        return None
    letters = "ABC" if allow_tie else "AB"
    found = {m.upper() for m in _BRACKET.findall(text)}
    if len(found) == 1:
        v = found.pop()
        return v if v in letters else None
    if found:
        return None
    m = _LEADING.match(text.strip())
    if m:
        v = m.group(1).upper()
        # A bare leading "a"/"c" in lower case is an English word, not a verdict.
        if m.group(1).islower():
            return None
        return v if v in letters else None
    if allow_tie and _TIE_WORDS.match(text.strip()):
        return "C"
    return None
