"""What a round starts from and works on, derived from stored step results only.

"Current model" is derived, never held in memory: the base, replaced by the merged model of
each promoted round (:func:`current`). Every step reads it (and the frozen split, the target
entries, the eval items) through the helpers here, from the store, so a resumed process sees
exactly the inputs an uninterrupted one would have seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError
from trainloop.config import LoopConfig
from trainloop.record.driver import RoundContext
from trainloop.steps.backends import Backends


@dataclass(frozen=True)
class LoopEnv:
    """What every step is given besides its :class:`RoundContext`: the loop's config and the
    heavy parts (:class:`Backends`, swapped for fakes in the fast tests)."""

    cfg: LoopConfig
    b: Backends


@dataclass
class Current:
    model: str
    run_id: str
    clusters_round: int
    rejected_since: int = 0  # rounds rejected since the last promotion (the next round asks for more data)
    misfit_since: int = 0  # of those, training failures (the next round changes the training instead)


def current(ctx: RoundContext, cfg: LoopConfig) -> Current:
    """The model a round starts from: the base, or the last promoted round's merged model."""
    st = Current(cfg.model, ctx.result("eval", 0)["run_id"], 0)
    for r in range(1, ctx.round):
        p = ctx.result("promote", r)
        if p.get("promoted"):
            st = Current(p["model"], p["run_id"], r)
        elif (ctx.maybe_result("fit", r) or {}).get("ok") is False:
            st.misfit_since += 1
        else:
            st.rejected_since += 1
    return st


def loop_dir(ctx: RoundContext) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(ctx.store.path)), "loops", ctx.loop_id)


def samples_items(store: Any, run_id: str) -> list[Any]:
    from evalkit.analysis.clusters.texts import build_items

    return build_items(store.samples(run_id))[0]


def entry_of(entry: str, targets: tuple[str, ...] | list[str]) -> bool:
    """A suite entry belongs to a TARGET when it is that name or one of its ``<name>_...`` parts."""
    return any(entry == t or entry.startswith(t + "_") for t in targets)


def target_entries(cfg: LoopConfig, entries: list[str]) -> list[str]:
    out = [e for e in entries if entry_of(e, cfg.targets)]
    missing = [t for t in cfg.targets if not any(entry_of(e, (t,)) for e in entries)]
    if missing:
        raise EvalkitError(f"loop: TARGET {', '.join(missing)} is not an entry of suite '{cfg.suite}' "
                           f"(entries: {', '.join(entries)})")
    return out


def split_of(ctx: RoundContext) -> dict[str, Any]:
    """The frozen selection/confirmation split recorded by round 0 (empty: no split entries)."""
    return ctx.result("suite", 0).get("split") or {}


def confirm_keys(ctx: RoundContext) -> dict[str, set[tuple[str, int]]]:
    """entry -> {(task, doc_id)} of the confirmation half (the half that never chooses data)."""
    from trainloop.gate.confirm import part_keys

    return part_keys(split_of(ctx), "confirm")
