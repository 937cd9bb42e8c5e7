"""Decontamination: training candidates must not leak the frozen suite's eval items.

Why two tests: a 13-gram overlap on normalised words (the GPT-3 / Llama convention) catches
copies and near-copies, including an eval question pasted inside a longer training prompt; an
embedding cosine catches paraphrases (LLM2LLM-style teacher variants of a *failed eval item* are
exactly that, and training on them would inflate the next round's score). Texts shorter than
13 words are compared as one whole gram, so a short eval item copied verbatim is still caught.

The filter only drops; it never edits a candidate. Every drop keeps the reason and the eval item
it collided with, so the loop can report counts and a user can audit them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Embedder = Callable[[Sequence[str]], np.ndarray]
_WORD = re.compile(r"[0-9a-z]+")


@dataclass(frozen=True)
class DecontamConfig:
    """``ngram`` words per shingle (0 turns the test off); ``cosine`` threshold (>= drops; > 1 turns it off)."""

    ngram: int = 13
    cosine: float = 0.9
    chunk: int = 2048  # candidate rows per similarity block: bounds memory at chunk x eval items floats


@dataclass
class Drop:
    index: int  # candidate position
    reason: str  # "ngram" or "embedding"
    eval_index: int  # the colliding eval item
    score: float  # shared shingles, or cosine


@dataclass
class DecontamReport:
    kept: list[int] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"candidates": len(self.kept) + len(self.dropped), "kept": len(self.kept), "ngram": 0, "embedding": 0}
        for d in self.dropped:
            out[d.reason] += 1
        return out


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric runs: punctuation, spacing and case never hide an overlap."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    toks = words(text)
    if not toks:
        return set()
    if len(toks) <= n:
        return {tuple(toks)}
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


class NGramIndex:
    """Shingle -> first eval item holding it. Short eval items (< n words) are also kept whole, and a
    candidate containing one of them as a contiguous word run counts as an overlap."""

    def __init__(self, texts: Sequence[str], n: int) -> None:
        self.n = n
        self.index: dict[tuple[str, ...], int] = {}
        self.short: dict[tuple[str, ...], int] = {}
        for i, text in enumerate(texts):
            toks = words(text)
            if 0 < len(toks) < n:
                self.short.setdefault(tuple(toks), i)
            for g in shingles(text, n):
                self.index.setdefault(g, i)
        self._short_lengths = sorted({len(k) for k in self.short})

    def hit(self, text: str) -> tuple[int, int] | None:
        """(eval item, shared shingles) of the best-overlapping eval item, or None."""
        toks = words(text)
        hits: dict[int, int] = {}
        for g in shingles(text, self.n):
            j = self.index.get(g)
            if j is not None:
                hits[j] = hits.get(j, 0) + 1
        for length in self._short_lengths:
            for s in range(0, len(toks) - length + 1):
                j = self.short.get(tuple(toks[s : s + length]))
                if j is not None:
                    hits[j] = hits.get(j, 0) + 1
        if not hits:
            return None
        j = max(hits, key=lambda k: (hits[k], -k))
        return j, hits[j]


def decontaminate(candidates: Sequence[str], eval_texts: Sequence[str], embed: Embedder | None,
                  config: DecontamConfig = DecontamConfig()) -> DecontamReport:
    """Split candidate texts into kept and dropped against every eval item of the suite.

    ``embed`` returns L2-normalised rows (MiniLM in the product); None skips the embedding test.
    The n-gram test runs first; only its survivors are embedded."""
    report = DecontamReport()
    survivors: list[int] = []
    index = NGramIndex(eval_texts, config.ngram) if config.ngram > 0 and eval_texts else None
    for i, text in enumerate(candidates):
        hit = index.hit(text) if index else None
        if hit is not None:
            report.dropped.append(Drop(i, "ngram", hit[0], float(hit[1])))
        else:
            survivors.append(i)
    if embed is None or config.cosine > 1 or not survivors or not eval_texts:
        report.kept = survivors
        return report
    ev = np.asarray(embed(list(eval_texts)), dtype=np.float32)
    for start in range(0, len(survivors), config.chunk):
        block = survivors[start : start + config.chunk]
        cand = np.asarray(embed([candidates[i] for i in block]), dtype=np.float32)
        for row, (j, score) in enumerate(nearest(cand, ev, config.chunk)):
            if score >= config.cosine:
                report.dropped.append(Drop(block[row], "embedding", j, score))
            else:
                report.kept.append(block[row])
    report.dropped.sort(key=lambda d: d.index)
    return report


def nearest(rows: np.ndarray, others: np.ndarray, chunk: int = 2048) -> list[tuple[int, float]]:
    """For each row, (index, cosine) of its most similar row of ``others`` (rows need not be unit length)."""
    a, b = _unit(rows.astype(np.float32, copy=False)), _unit(others.astype(np.float32, copy=False))
    out: list[tuple[int, float]] = []
    for start in range(0, len(a), chunk):
        sims = a[start : start + chunk] @ b.T
        best = sims.argmax(axis=1)
        out += [(int(j), float(sims[r, j])) for r, j in enumerate(best)]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
