"""Finding shared token prefixes, and keeping their key/values for reuse.

Every MMLU question of a subject starts with the same 5-shot prompt (~85% of its tokens); lm-eval
recomputes it for every question. Planning groups by *token* prefix (not by task knowledge) makes
the reuse exact — the cached positions are the very tokens the full sequence would have — and
general: any task with a fixed few-shot prompt, system prompt or chat preamble benefits.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch

MIN_PREFIX = 32  # shorter shared prefixes are not worth a separate forward pass


@dataclass
class PrefixGroup:
    prefix_len: int  # tokens computed once and shared (0 = no sharing)
    members: list[int] = field(default_factory=list)  # indices into the planned sequences


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    return len(os.path.commonprefix([a, b]))  # type: ignore[list-item]


def plan_groups(seqs: Sequence[tuple[int, ...]], limits: Sequence[int], min_prefix: int = MIN_PREFIX) -> list[PrefixGroup]:
    """Group sequences that share a long token prefix.

    ``limits[i]`` is the longest prefix sequence ``i`` may share (positions whose logits are read
    must be recomputed, so at least its last input token stays out of the prefix). Sequences are
    sorted lexicographically, so any shared prefix makes them adjacent; a run is cut when joining
    would shrink the group's prefix below ``min_prefix`` or below 3/4 of what the group shares.
    Sequences sharing nothing go to one group with ``prefix_len`` 0.
    """
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    runs: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    cur_len = 0
    for i in order:
        if cur:
            shared = min(cur_len if len(cur) > 1 else limits[cur[0]], common_prefix_len(seqs[cur[-1]], seqs[i]), limits[i])
            if shared >= min_prefix and (len(cur) == 1 or shared * 4 >= cur_len * 3):
                cur.append(i)
                cur_len = shared
                continue
            runs.append((cur_len if len(cur) > 1 else 0, cur))
        cur, cur_len = [i], 0
    if cur:
        runs.append((cur_len if len(cur) > 1 else 0, cur))
    groups = [PrefixGroup(p, m) for p, m in runs if p > 0]
    loose = [i for p, m in runs if p == 0 for i in m]
    if loose:
        groups.append(PrefixGroup(0, loose))
    return groups


def merge_small_groups(groups: list[PrefixGroup], seqs: Sequence[tuple[int, ...]], limits: Sequence[int],
                       min_rows: int, min_prefix: int = MIN_PREFIX) -> list[PrefixGroup]:
    """For generation: fold groups too small to fill a decode batch into one group.

    Why: decoding runs one prefix group at a time, and a decode step costs nearly the same for
    4 rows as for 40. Sampling k answers per prompt makes every prompt its own k-row group (the
    copies share the whole prompt), which left the decode batch at k rows — 4x slower than one
    continuous batch over all prompts, measured. Prefill is a small share of generation, so the
    folded group keeps only the prefix *all* its members share (e.g. a chat preamble), if any.
    """
    big = [g for g in groups if len(g.members) >= min_rows]
    small = [g for g in groups if len(g.members) < min_rows]
    if len(small) < 2:
        return groups
    members = sorted((i for g in small for i in g.members), key=lambda i: seqs[i])
    shared = min(limits[i] for i in members)
    for a, b in zip(members, members[1:]):
        shared = min(shared, common_prefix_len(seqs[a], seqs[b]))
    return big + [PrefixGroup(shared if shared >= min_prefix else 0, members)]


class PrefixCache:
    """A small LRU of prefix key/values, so a prefix split across lm-eval calls is computed once."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def lookup(self, tokens: tuple[int, ...], min_len: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None:
        """The longest cached prefix of ``tokens`` that is at least ``min_len`` long."""
        best = None
        for key, kv in self._items.items():
            if min_len <= len(key) <= len(tokens) and tokens[: len(key)] == key and (best is None or len(key) > best[0]):
                best = (len(key), kv, key)
        if best is None:
            return None
        self._items.move_to_end(best[2])
        return best[0], best[1]

    def put(self, tokens: tuple[int, ...], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._items[tokens] = kv
        self._items.move_to_end(tokens)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
