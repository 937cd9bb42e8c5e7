"""Judging pairs in both orders, through the content-addressed judgment cache.

Every pair becomes two single-order requests, (a, b) and (b, a). Each request's cache key is a
sha256 over the judge's identity (weights hash + dtype, or endpoint), its scoring method, the
prompt template version, the instruction, the candidate shown first, the one shown second
(this *is* the order), the reference answer and whether ties are allowed. Identical requests
are judged once per call; requests already in the store's ``judgments`` table are not judged
again, so a repeated run makes zero judge calls. Misses are sorted by length (less padding in
a local judge's batches) and committed in chunks, so an interrupted run resumes where it was.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalkit.judge.base import Judge
from evalkit.judge.prompt import PROMPT_VERSION, JudgeRequest
from evalkit.judge.verdict import PairVerdict, SingleJudgment, combine
from evalkit.store.sqlite import RunStore


@dataclass(frozen=True)
class Pair:
    """Two responses to one instruction; ``a``/``b`` is the data's own orientation."""

    instruction: str
    response_a: str
    response_b: str
    reference: str | None = None


@dataclass
class JudgeCounts:
    """What judging cost: requests made of the judge vs found in the cache."""

    requests: int = 0  # single-order judgments needed (2 per pair)
    unique: int = 0  # distinct cache keys among them
    cached: int = 0  # answered from the store
    computed: int = 0  # answered by the judge now
    judge_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "unique": self.unique, "cached": self.cached,
                "computed": self.computed, "judge_s": round(self.judge_s, 3), **self.extra}


def request_key(judge: Judge, req: JudgeRequest) -> str:
    payload = {
        "judge": judge.identity, "scoring": judge.scoring, "prompt": PROMPT_VERSION,
        "instruction": req.instruction, "first": req.first, "second": req.second,
        "reference": req.reference, "allow_tie": req.allow_tie,
    }
    return "j1:" + hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def judge_requests(
    judge: Judge,
    requests: Sequence[JudgeRequest],
    *,
    store: RunStore | None = None,
    chunk_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    counts: JudgeCounts | None = None,
) -> list[SingleJudgment]:
    """Single-order judgments for ``requests`` (cached by content), in order."""
    from evalkit.store import judgments as jstore

    counts = counts if counts is not None else JudgeCounts()
    keys = [request_key(judge, r) for r in requests]
    by_key: dict[str, JudgeRequest] = {}
    for k, r in zip(keys, requests):
        by_key.setdefault(k, r)
    counts.requests += len(requests)
    counts.unique += len(by_key)
    done: dict[str, dict[str, Any]] = jstore.get_judgments(store, list(by_key)) if store is not None else {}
    counts.cached += len(done)
    misses = sorted((k for k in by_key if k not in done), key=lambda k: by_key[k].size())
    t0 = time.perf_counter()
    for start in range(0, len(misses), chunk_size):
        chunk = misses[start : start + chunk_size]
        results = judge.judge([by_key[k] for k in chunk])
        rows = [(k, j.to_dict()) for k, j in zip(chunk, results)]
        if store is not None:
            jstore.put_judgments(store, rows, judge=judge.name, identity=judge.identity, scoring=judge.scoring,
                                 prompt_version=PROMPT_VERSION)
        done.update(rows)
        counts.computed += len(chunk)
        if progress:
            progress(min(start + chunk_size, len(misses)), len(misses))
    counts.judge_s += time.perf_counter() - t0
    return [SingleJudgment.from_dict(done[k]) for k in keys]


def judge_pairs(
    judge: Judge,
    pairs: Sequence[Pair],
    *,
    store: RunStore | None = None,
    allow_tie: bool = False,
    tie_policy: str = "tie",
    chunk_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    counts: JudgeCounts | None = None,
) -> list[PairVerdict]:
    """Judge every pair in both orders and combine the two verdicts under ``tie_policy``."""
    reqs: list[JudgeRequest] = []
    for p in pairs:
        ab = JudgeRequest(p.instruction, p.response_a, p.response_b, p.reference, allow_tie)
        reqs += [ab, ab.swapped()]
    singles = judge_requests(judge, reqs, store=store, chunk_size=chunk_size, progress=progress, counts=counts)
    return [combine(singles[2 * i], singles[2 * i + 1], allow_tie=allow_tie, tie_policy=tie_policy)
            for i in range(len(pairs))]
