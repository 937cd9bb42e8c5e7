"""The ``pool`` strategy: nearest training-pool neighbours of the failure clusters.

Why nearest neighbours of failing items (not of the cluster centroid): a cluster is often a
union of a few tight groups, and a centroid can sit between them near nothing real. Each pool row
is scored by its best cosine to any failing member of the cluster; clusters take their allotment
(in proportion to failure mass) best-first, a row goes to at most one cluster, and rows that would
leak an eval item of the suite (:mod:`trainloop.data.decontam`) are dropped before anything is taken.
The pool is embedded once and reused for both tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainloop.data.decontam import DecontamConfig, Embedder, NGramIndex, nearest
from trainloop.data.pool import PoolExample
from trainloop.strategies.targets import Target, allot


@dataclass(frozen=True)
class Selected:
    example: PoolExample
    cluster_id: int
    similarity: float  # best cosine to a failing member of the cluster
    strategy: str = "pool"

    def provenance(self) -> dict[str, object]:
        return {"strategy": self.strategy, "cluster_id": self.cluster_id, "source_row": self.example.row,
                "similarity": round(self.similarity, 4)}


@dataclass
class PoolSelection:
    selected: list[Selected] = field(default_factory=list)
    allotment: dict[int, int] = field(default_factory=dict)  # cluster -> rows asked for
    dropped: dict[str, int] = field(default_factory=lambda: {"ngram": 0, "embedding": 0})
    short: dict[int, int] = field(default_factory=dict)  # cluster -> rows it could not get


def select_from_pool(targets: Sequence[Target], target_texts: dict[int, list[str]], pool: Sequence[PoolExample],
                     budget: int, embed: Embedder, eval_texts: Sequence[str],
                     decontam: DecontamConfig = DecontamConfig(), min_similarity: float = 0.0) -> PoolSelection:
    """Pick up to ``budget`` pool rows for ``targets``; ``target_texts`` holds each cluster's failing
    items as the model saw them (question or prompt, no few-shot boilerplate)."""
    out = PoolSelection()
    if not targets or not pool or budget <= 0:
        return out
    shares = allot([t.failures for t in targets], budget)
    out.allotment = {t.cluster_id: n for t, n in zip(targets, shares)}

    clean = np.ones(len(pool), dtype=bool)
    index = NGramIndex(eval_texts, decontam.ngram) if decontam.ngram > 0 and eval_texts else None
    if index is not None:
        for i, ex in enumerate(pool):
            if index.hit(ex.prompt) is not None:
                clean[i] = False
                out.dropped["ngram"] += 1
    vecs = np.asarray(embed([ex.prompt for ex in pool]), dtype=np.float32)
    if eval_texts and decontam.cosine <= 1:
        ev = np.asarray(embed(list(eval_texts)), dtype=np.float32)
        for i, (_, score) in enumerate(nearest(vecs, ev, decontam.chunk)):
            if clean[i] and score >= decontam.cosine:
                clean[i] = False
                out.dropped["embedding"] += 1

    taken = ~clean  # contaminated rows are never available
    for t, want in zip(targets, shares):
        texts = target_texts.get(t.cluster_id) or []
        if want <= 0 or not texts:
            out.short[t.cluster_id] = want
            continue
        fv = np.asarray(embed(texts), dtype=np.float32)
        score = np.array([s for _, s in nearest(vecs, fv, decontam.chunk)], dtype=np.float32)
        got = 0
        for i in np.argsort(-score, kind="stable"):
            if got >= want or score[i] < min_similarity:
                break
            if taken[i]:
                continue
            taken[i] = True
            out.selected.append(Selected(pool[int(i)], t.cluster_id, float(score[i])))
            got += 1
        if got < want:
            out.short[t.cluster_id] = want - got
    return out
