"""Continuous-batching decode for CUDA: per-row state on the device, host readback every N steps.

Why (H200 measurement: 157 decoded tokens/s, FastLM 1.36x slower than stock ``lm_eval --model hf``):
the CPU decoder (:mod:`.decode`) reads every step's tokens back to the host (``tokens.tolist()``,
a device sync per step), copies the growing attention mask and position ids host->device each
step, and compacts/merges its cache with ``torch.cat`` as rows finish and join. On a GPU each
sync drains the launch queue, so the GPU idles between small decode kernels.

Here:
* the per-row state (token to feed, position id, write column, done mask, generated count) lives
  on the device and is advanced by device ops only (:func:`advance`); tokens go to a device
  history ``[N, rows]``;
* the host reads the history back once every ``readback_every`` steps (one sync), appends each
  row's tokens one at a time applying exactly the CPU path's stop test (EOS, token limit, stop
  strings on the decoded tail) and drops what a row generated after its stop; EOS and the token
  limit are also applied on the device so a finished row stops emitting at once;
* rows live in fixed slots of a preallocated :class:`~.static_cache.SlotKVCache` (no compaction);
  freed slots are refilled by a batched, length-bucketed prefill when half the slots are free;
* on CUDA the forward of one decode step is captured once per (rows, max_len) as a CUDA graph
  (greedy selection included) and replayed; capture and warm-up time go to ``stats``
  (``cuda_graph_seconds``, ``cuda_graphs_captured``). A capture failure falls back to eager
  steps (``stats['cuda_graph_failed']``) instead of failing the run.

Outputs are the CPU decoder's: the same per-row stop test on the same token stream (only batch
composition, hence bf16 rounding, can differ). Everything except graph capture is device-agnostic
and runs on CPU in ``tests/test_fastlm_cuda_logic.py``. The CUDA path is unmeasured until
``make gpu-check`` runs on a GPU; no speed is claimed here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.models.fastlm.buckets import bucket_len, bucket_rows, rows_for_memory
from evalkit.models.fastlm.sampling import TokenSelector
from evalkit.models.fastlm.static_cache import SlotKVCache, SlotTable

KV = list[tuple[torch.Tensor, torch.Tensor]]
NO_TOKEN = -1  # history entry of a row that did not emit at that step


@dataclass
class DeviceState:
    """Per-row decode state, all on the model's device (``rows`` = slots of the cache)."""

    tok: torch.Tensor  # [R] long: token fed at the next step
    pos: torch.Tensor  # [R] long: its position id
    done: torch.Tensor  # [R] bool: row emits nothing (finished, or empty slot)
    ngen: torch.Tensor  # [R] long: tokens generated so far
    hist: torch.Tensor  # [N, R] long: tokens emitted since the last readback (NO_TOKEN if none)
    t: torch.Tensor  # [1] long: steps since the last readback

    @classmethod
    def empty(cls, rows: int, every: int, device: torch.device | str) -> "DeviceState":
        z = lambda: torch.zeros(rows, dtype=torch.long, device=device)  # noqa: E731
        return cls(z(), z(), torch.ones(rows, dtype=torch.bool, device=device), z(),
                   torch.full((every, rows), NO_TOKEN, dtype=torch.long, device=device),
                   torch.zeros(1, dtype=torch.long, device=device))


def advance(state: DeviceState, col: torch.Tensor, new: torch.Tensor, eos: torch.Tensor, max_gen: int,
            max_col: int) -> None:
    """Record one step's selected tokens ``new [R]`` on the device (no host sync).

    Rows not done emit ``new`` into the history and count it; a row whose token is an EOS id or
    whose count reaches ``max_gen`` becomes done (it emits nothing afterwards). Rows that emitted
    move to the next position and write column (clamped to ``max_col`` so finished rows never
    index past the cache)."""
    emit = ~state.done
    state.hist.index_copy_(0, state.t, torch.where(emit, new, NO_TOKEN)[None])
    state.t += 1
    state.ngen += emit.long()
    state.done |= emit & (torch.isin(new, eos) | (state.ngen >= max_gen))
    state.tok.copy_(torch.where(emit, new, state.tok))
    state.pos += emit.long()
    col += emit.long()
    col.clamp_(max=max_col)


def readback(state: DeviceState, steps: int | None = None) -> list[list[int]]:
    """The history since the last readback, ``[steps][rows]`` (one device->host sync), and reset it.
    ``steps`` is the host's own count of steps since the last readback (saves a second sync)."""
    if steps is None:
        steps = int(state.t.item())
    hist = state.hist[:steps].tolist() if steps else []
    state.hist.fill_(NO_TOKEN)
    state.t.zero_()
    return hist


def apply_history(hist: list[list[int]], owners: list[int | None], outputs: list[list[int]],
                  is_done: Callable[[list[int]], bool]) -> list[int]:
    """Append each row's emitted tokens to its sequence one at a time, stopping at the first token
    for which ``is_done`` holds (tokens after it are dropped). Returns the slots that finished."""
    finished: list[int] = []
    for slot, seq in enumerate(owners):
        if seq is None:
            continue
        out = outputs[seq]
        for step in hist:
            tok = step[slot]
            if tok == NO_TOKEN:
                continue
            out.append(tok)
            if is_done(out):
                finished.append(slot)
                break
    return finished


class SlotDecoder:
    """The CUDA counterpart of :class:`~.decode.Decoder` (same ``run`` signature and outputs)."""

    def __init__(self, lm: Any, until: list[str], max_gen: int, selector: TokenSelector, eos_ids: set[int],
                 on_done: Callable[[int], None] | None = None) -> None:
        from evalkit.models.fastlm.decode import Decoder

        self.lm = lm
        self.on_done = on_done
        self.max_gen = max_gen
        self.selector = selector
        self.every = max(1, int(getattr(lm, "readback_every", 8)))
        self._stop = Decoder(lm, until, max_gen, selector, eos_ids)  # the CPU path's exact stop test
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=lm.device)
        dev = torch.device(lm.device)
        self.use_graphs = dev.type == "cuda" and bool(getattr(lm, "cuda_graphs", True)) and selector.greedy

    # ------------------------------------------------------------------ setup
    def _rows_and_len(self, members: list[int], suffixes: dict[int, list[int]], plen: int) -> tuple[int, int]:
        lm = self.lm
        longest = max(len(suffixes[i]) for i in members)
        max_len = bucket_len(plen + bucket_len(longest, lm.len_bucket) + self.max_gen + 1, lm.len_bucket)
        want = bucket_rows(min(lm.gen_batch, len(members)), cap=lm.gen_batch)
        free = None
        if torch.device(lm.device).type == "cuda":
            free, _ = torch.cuda.mem_get_info(torch.device(lm.device))
            pooled = getattr(lm, "_slot_pool", None)
            if pooled is not None:  # a pooled cache will be freed if this one differs
                free += sum(l.keys.numel() * l.keys.element_size() * 2 for l in pooled[1].layers)
        shapes = kv_shapes(lm.model)
        if shapes is None:
            return want, max_len
        per_row = SlotKVCache.bytes_per_row(shapes, max_len, lm.model.dtype)
        rows = rows_for_memory(per_row, free, lm.kv_mem_fraction, want)
        if rows < want:  # a power-of-two row count keeps graph buckets few
            from evalkit.models.fastlm.buckets import floor_pow2

            rows = floor_pow2(rows)
        return rows, max_len

    def _cache(self, kv: KV, rows: int, max_len: int) -> SlotKVCache:
        """A slot cache for (rows, max_len), reused from the backend's pool when the shape matches
        (so captured graphs stay valid); a different shape replaces the pooled one."""
        lm = self.lm
        key = (rows, max_len, tuple((k.shape[1], k.shape[-1], v.shape[-1]) for k, v in kv), kv[0][0].dtype)
        pooled = getattr(lm, "_slot_pool", None)
        if pooled is not None and pooled[0] == key:
            return pooled[1]
        lm._slot_pool = None
        lm._slot_graphs = {}
        if torch.device(lm.device).type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        cache = SlotKVCache.like(kv, rows, max_len)
        lm.stats["slot_cache_allocs"] += 1
        lm.stats["slot_cache_seconds"] += time.perf_counter() - t0
        lm._slot_pool = (key, cache)
        return cache

    # ------------------------------------------------------------------ one step
    def _forward(self, cache: SlotKVCache, state: DeviceState) -> torch.Tensor:
        """Set each row's mask bit at its write column, run one token per row, return logits ``[R, V]``."""
        cache.mask.scatter_(1, cache.col[:, None], 1)
        out = self.lm.model(
            input_ids=state.tok[:, None],
            attention_mask=cache.attention_mask_4d(self.lm.model.dtype),
            position_ids=state.pos[:, None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _graphed(self, cache: SlotKVCache, state: DeviceState) -> Callable[[], torch.Tensor] | None:
        """A replayable CUDA graph of forward + greedy selection bound to ``cache``/``state``'s
        static tensors; None if capture failed (the caller runs eagerly)."""
        lm = self.lm
        graphs = lm.__dict__.setdefault("_slot_graphs", {})
        key = (id(cache), id(state))
        if key in graphs:
            return graphs[key]
        t0 = time.perf_counter()
        try:
            # state tensors are bound by address: keep one DeviceState per cache (see run)
            mask0, col0 = cache.mask.clone(), cache.col.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up (allocator, cuBLAS handles) outside capture
                    self._forward(cache, state).float().argmax(dim=-1)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(cache, state).float().argmax(dim=-1)
            cache.mask.copy_(mask0)
            cache.col.copy_(col0)

            def replay() -> torch.Tensor:
                graph.replay()
                return static_out

            graphs[key] = replay
            lm.stats["cuda_graphs_captured"] += 1
        except Exception as exc:  # noqa: BLE001 - any capture problem: run eagerly, say so in stats
            graphs[key] = None
            lm.stats["cuda_graph_failed"] += 1
            lm.cuda_graph_error = f"{type(exc).__name__}: {exc}"
            torch.cuda.synchronize()
        lm.stats["cuda_graph_seconds"] += time.perf_counter() - t0
        return graphs[key]

    # ------------------------------------------------------------------ admission
    def _admit(self, take: list[int], suffixes: dict[int, list[int]], plen: int, prefix: KV | None,
               cache: SlotKVCache | None, rows: int, max_len: int, table: SlotTable | None,
               state: DeviceState | None, outputs: list[list[int]], bar: Any):
        lm = self.lm
        logits, pcache, mask, next_pos = lm._prefill(
            [suffixes[i] for i in take], plen, prefix, keep=1, extra_capacity=1,
            pad_to=bucket_len(max(len(suffixes[i]) for i in take), lm.len_bucket),
        )
        first = self.selector(logits[:, -1])
        kv = pcache.tensors()
        if cache is None:
            cache = self._cache(kv, rows, max_len)
            table = SlotTable(rows)
            state = getattr(lm, "_slot_state", None)
            if state is None or state.tok.shape[0] != rows or state.hist.shape[0] != self.every \
                    or state.tok.device != cache.col.device:
                state = DeviceState.empty(rows, self.every, cache.col.device)
                lm._slot_state = state
                lm._slot_graphs = {}  # graphs are bound to the old state's tensors
            state.done.fill_(True)
            state.hist.fill_(NO_TOKEN)
            state.t.zero_()
        slots = table.take(take)
        lm.stats["slot_admissions"] += 1
        lm.stats["slot_rows_admitted"] += len(slots)
        idx = torch.tensor(slots, dtype=torch.long, device=cache.col.device)
        cache.write_rows(idx, kv, mask)
        state.tok[idx] = first
        state.pos[idx] = next_pos.to(idx.device)
        state.ngen[idx] = 1
        state.done[idx] = False
        # the first token is checked on the host at once, as the CPU path does (one sync per admission)
        stopped = []
        for slot, tok in zip(slots, first.tolist()):
            seq = table.owner[slot]
            outputs[seq].append(tok)
            if self._stop._done(outputs[seq]):
                stopped.append(slot)
        self._retire(stopped, table, state, bar)
        return cache, table, state

    def _retire(self, slots: list[int], table: SlotTable, state: DeviceState, bar: Any) -> None:
        if not slots:
            return
        state.done[torch.tensor(slots, dtype=torch.long, device=state.done.device)] = True
        for slot in slots:
            seq = table.owner[slot]
            table.release(slot)
            bar.update(1)
            if self.on_done is not None:
                self.on_done(seq)

    # ------------------------------------------------------------------ the loop
    @torch.no_grad()
    def run(self, members: list[int], suffixes: dict[int, list[int]], plen: int, prefix: KV | None,
            outputs: list[list[int]], bar: Any) -> None:
        lm = self.lm
        queue = deque(sorted(members, key=lambda i: -len(suffixes[i])))
        rows, max_len = self._rows_and_len(members, suffixes, plen)
        budget = lm.token_budget
        cache: SlotKVCache | None = None
        table: SlotTable | None = None
        state: DeviceState | None = None
        step_fn = None
        while queue or (table is not None and table.n_used):
            alive = table.n_used if table is not None else 0
            if queue and alive <= rows // 2:
                width = bucket_len(len(suffixes[queue[0]]), lm.len_bucket)
                take: list[int] = []
                while queue and len(take) < rows - alive and (len(take) + 1) * width <= max(budget, width):
                    take.append(queue.popleft())
                cache, table, state = self._admit(take, suffixes, plen, prefix, cache, rows, max_len, table, state,
                                                  outputs, bar)
                continue
            if table is None or not table.n_used:
                continue
            if step_fn is None and self.use_graphs:
                step_fn = self._graphed(cache, state) or False
            t0 = time.perf_counter()
            n_steps = 0
            for _ in range(self.every):
                if step_fn:
                    new = step_fn()
                else:
                    new = self.selector(self._forward(cache, state))
                advance(state, cache.col, new, self.eos, self.max_gen, max_len - 1)
                n_steps += 1
            hist = readback(state, n_steps)  # the one host sync per `every` steps
            lm.stats["decode_seconds"] += time.perf_counter() - t0
            lm.stats["decode_rows"] += rows * n_steps
            lm.stats["decode_readbacks"] += 1
            lm.stats["decode_tokens"] += sum(t != NO_TOKEN for step in hist for t in step)
            finished = apply_history(hist, table.owner, outputs, self._stop._done)
            self._retire(finished, table, state, bar)


def supports_slot_decode(model: Any) -> bool:
    """Whether the slot cache fits the model: every layer full attention over a standard KV cache.

    The slot cache gives every layer the whole ``max_len`` under one 4-D mask, which would be wrong
    for sliding-window / hybrid (linear-attention) layers; such models keep the CPU decoder."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    types = getattr(cfg, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return kv_shapes(model) is not None


def kv_shapes(model: Any) -> list[tuple[int, int, int]] | None:
    """(kv heads, key dim, value dim) per layer from a transformers config, or None if unknown
    (then the memory cap is skipped and rows = the requested bucket)."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    try:
        n = int(cfg.num_hidden_layers)
        heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    except (AttributeError, TypeError, ValueError):
        return None
    return [(heads, dim, dim)] * n
