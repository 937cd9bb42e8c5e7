"""Continuous batching: rows leave the batch when they stop and new rows take their slots.

The stock backend decodes a batch until its longest row ends; here a row is done at its own
EOS / stop sequence / token limit, and when half the slots are free the queue refills them:
the new rows are prefilled (after the group's shared prefix) and merged into the running batch.
Finished rows are dropped lazily (when a quarter of the batch is dead) because every compaction
copies the cache; columns no live row attends to are trimmed at the same time, so the cache does
not grow with the total number of decode steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.models.fastlm.kvcache import BufferedCache, merge_batches
from evalkit.models.fastlm.sampling import TokenSelector

KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Batch:
    rows: list[int]  # sequence index of each batch row
    cache: BufferedCache
    mask: torch.Tensor  # [B, T] 2-D attention mask (prefix + per-row padding + tokens)
    pos: torch.Tensor  # [B] position id of the next token fed
    nxt: torch.Tensor  # [B] token to feed next
    alive: list[bool]

    @property
    def n_alive(self) -> int:
        return sum(self.alive)


def compact(batch: Batch, prefix_len: int, capacity_extra: int) -> Batch:
    """Keep live rows and drop the columns after the prefix that no live row attends to."""
    keep = [i for i, a in enumerate(batch.alive) if a]
    idx = torch.tensor(keep, dtype=torch.long)
    mask = batch.mask[idx]
    used = mask[:, prefix_len:].any(dim=0)
    gap = int(used.long().argmax()) if bool(used.any()) else 0
    cols = torch.cat([torch.arange(prefix_len), torch.arange(prefix_len + gap, mask.shape[1])])
    dev = batch.nxt.device
    kv = [(k[idx.to(dev)][:, :, cols.to(dev)], v[idx.to(dev)][:, :, cols.to(dev)]) for k, v in batch.cache.tensors()]
    cache = BufferedCache.from_tensors(kv, len(cols) + capacity_extra)
    return Batch([batch.rows[i] for i in keep], cache, mask[:, cols], batch.pos[idx], batch.nxt[idx.to(dev)], [True] * len(keep))


class Decoder:
    """Runs one stop/limit/sampling configuration over groups of sequences for a :class:`FastLM`."""

    def __init__(self, lm: Any, until: list[str], max_gen: int, selector: TokenSelector, eos_ids: set[int],
                 on_done: Callable[[int], None] | None = None) -> None:
        self.lm = lm
        self.on_done = on_done  # told each sequence index as it finishes (answers are committed as they come)
        self.until = [s for s in until if s]
        self.max_gen = max_gen
        self.selector = selector
        self.eos_ids = eos_ids
        lens = [len(lm.tok_encode(s, add_special_tokens=False)) for s in self.until]
        self.lookback = max(lens, default=1) + 4

    def _done(self, out: list[int]) -> bool:
        if out[-1] in self.eos_ids or len(out) >= self.max_gen:
            return True
        if not self.until:
            return False
        tail = self.lm.tokenizer.decode(out[-self.lookback :], skip_special_tokens=False)
        return any(s in tail for s in self.until)

    def _record(self, batch: Batch, tokens: torch.Tensor, outputs: list[list[int]], bar: Any) -> None:
        for b, tok in enumerate(tokens.tolist()):
            if not batch.alive[b]:
                continue
            out = outputs[batch.rows[b]]
            out.append(tok)
            if self._done(out):
                batch.alive[b] = False
                bar.update(1)
                if self.on_done is not None:
                    self.on_done(batch.rows[b])
        batch.nxt = tokens

    def _start(self, take: list[int], suffixes: dict[int, list[int]], plen: int, prefix: KV | None,
               outputs: list[list[int]], bar: Any) -> Batch:
        logits, cache, mask, pos = self.lm._prefill(
            [suffixes[i] for i in take], plen, prefix, keep=1, extra_capacity=self.max_gen + 1
        )
        batch = Batch(list(take), cache, mask, pos, torch.empty(0), [True] * len(take))
        self._record(batch, self.selector(logits[:, -1]), outputs, bar)
        return batch

    @torch.no_grad()
    def _step(self, batch: Batch, outputs: list[list[int]], bar: Any) -> None:
        t0 = time.perf_counter()
        dev = self.lm.device
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype)], dim=1)
        out = self.lm.model(
            input_ids=batch.nxt[:, None].to(dev),
            attention_mask=batch.mask.to(dev),
            position_ids=batch.pos[:, None].to(dev),
            past_key_values=batch.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch.pos = batch.pos + 1
        n_alive = batch.n_alive
        self._record(batch, self.selector(out.logits[:, -1]), outputs, bar)
        self.lm.stats["decode_tokens"] += n_alive
        self.lm.stats["decode_rows"] += len(batch.rows)
        self.lm.stats["decode_seconds"] += time.perf_counter() - t0

    def run(self, members: list[int], suffixes: dict[int, list[int]], plen: int, prefix: KV | None,
            outputs: list[list[int]], bar: Any) -> None:
        queue = deque(sorted(members, key=lambda i: -len(suffixes[i])))
        batch: Batch | None = None
        slots, budget = self.lm.gen_batch, self.lm.token_budget
        while queue or (batch is not None and batch.n_alive):
            alive = batch.n_alive if batch is not None else 0
            if queue and alive <= slots // 2:
                width = len(suffixes[queue[0]])
                take: list[int] = []
                while queue and len(take) < slots - alive and (len(take) + 1) * width <= max(budget, width):
                    take.append(queue.popleft())
                fresh = self._start(take, suffixes, plen, prefix, outputs, bar)
                if batch is None or not alive:
                    batch = fresh
                else:
                    old = compact(batch, plen, 0)
                    fresh = compact(fresh, plen, 0) if fresh.n_alive < len(fresh.rows) else fresh
                    if fresh.n_alive:
                        cache, mask = merge_batches((old.cache, old.mask), (fresh.cache, fresh.mask), plen,
                                                    max(old.mask.shape[1], fresh.mask.shape[1]) + self.max_gen + 1)
                        batch = Batch(old.rows + fresh.rows, cache, mask, torch.cat([old.pos, fresh.pos]),
                                      torch.cat([old.nxt, fresh.nxt]), [True] * (len(old.rows) + len(fresh.rows)))
                    else:
                        batch = old
                continue
            if batch is None or not batch.n_alive:
                batch = None
                continue
            if batch.n_alive * 4 <= len(batch.rows) * 3:
                batch = compact(batch, plen, self.max_gen + 1)
            self._step(batch, outputs, bar)
