"""Which failure clusters a round targets, and how much data each one gets.

Why failure mass first: the loop's goal is the target task's score, and a cluster's share of the
failures bounds what fixing it can gain; lift breaks ties (a slice far worse than its tasks'
average is a more specific lesson than one that merely mirrors them). HDBSCAN's outlier groups
are not slices, so they are only used when no real cluster has target failures (tiny runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from evalkit.analysis.clusters.result import ClusterResult, Member


@dataclass(frozen=True)
class Target:
    cluster_id: int
    label: str
    failures: int  # failing members on the target tasks
    lift: float | None
    keys: tuple[tuple[str, str, int], ...]  # (entry, task, doc_id) of those failures, most central first


def matches(member: Member, targets: Iterable[str] | None) -> bool:
    """A member is on target when its entry or task equals, or its task starts with, a target name
    (``mmlu`` covers every ``mmlu_<subject>``)."""
    if targets is None:
        return True
    return any(member.entry == t or member.task == t or member.task.startswith(t + "_") for t in targets)


def rank_targets(result: ClusterResult, targets: Iterable[str] | None = None, top: int | None = None,
                 max_members: int = 200) -> list[Target]:
    """Clusters holding target failures, most failures first (then higher lift, then id)."""
    wanted = list(targets) if targets is not None else None
    picked: list[Target] = []
    for outliers in (False, True):
        for c in result.clusters:
            if c.is_outliers != outliers:
                continue
            fails = [m for m in result.members_of(c.cluster_id, failed_only=True) if matches(m, wanted)]
            if fails:
                keys = tuple((m.entry, m.task, m.doc_id) for m in fails[:max_members])
                picked.append(Target(c.cluster_id, c.label, len(fails), c.lift, keys))
        if picked:
            break
    picked.sort(key=lambda t: (-t.failures, -(t.lift or 0.0), t.cluster_id))
    return picked[:top] if top else picked


def allot(masses: list[int], budget: int) -> list[int]:
    """Split ``budget`` in proportion to ``masses`` (largest remainder; ties to the earlier, larger one)."""
    total = sum(masses)
    if budget <= 0 or total <= 0:
        return [0] * len(masses)
    exact = [budget * m / total for m in masses]
    out = [int(x) for x in exact]
    order = sorted(range(len(masses)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: budget - sum(out)]:
        out[i] += 1
    return out


def key_texts(keys: Iterable[tuple[str, str, int]], text_of: Callable[[tuple[str, str, int]], str | None]) -> list[str]:
    """Texts of the given sample keys, skipping keys without one."""
    return [t for t in (text_of(k) for k in keys) if t]
