"""A preallocated key/value cache addressed by slot (row) index, for the CUDA decode path.

Why: on one H200 FastLM decoded only 157 tokens/s. Its CPU cache (:mod:`.kvcache`) hands the
model strided views (``buf[:, :, :end]``) of buffers that are regrown, compacted and merged with
``torch.cat`` whenever rows leave or join the batch; each of those is a full-cache copy and a new
shape. Here each layer owns one contiguous buffer ``[rows, heads, max_len, dim]`` allocated once;
a request is given a free *slot* (row), its prefill key/values are copied into columns
``[0, T)`` of that row, and each decode step writes one column per row at that row's own write
column (``index_put`` with device index tensors: no host sync, capturable in a CUDA graph).
Rows never move, so there is no compaction and no merge; a finished row's slot is simply
reused. Attention always reads the whole ``max_len`` (masked), so every step has one shape.

The code is device-agnostic (it runs on CPU tensors in ``tests/test_fastlm_cuda_logic.py``);
only :class:`FastLM` on a CUDA device uses it. Unmeasured until ``make gpu-check`` runs on a GPU.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotLayer(CacheLayerMixin):
    """One layer's ``[rows, heads, max_len, dim]`` key and value buffers."""

    is_compileable = True
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, col: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.col = col  # [rows] long, shared by all layers: the column the next token is written to
        self.rows = torch.arange(keys.shape[0], device=keys.device)
        self.is_initialized = True
        self.dtype, self.device = keys.dtype, keys.device

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:  # pragma: no cover
        raise RuntimeError("SlotLayer is preallocated")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write ``[rows, heads, q, dim]`` at columns ``col[r] + i`` of each row; return the whole buffers."""
        q = key_states.shape[-2]
        if q == 1:
            self.keys[self.rows, :, self.col] = key_states[:, :, 0]
            self.values[self.rows, :, self.col] = value_states[:, :, 0]
        else:
            cols = self.col[:, None] + torch.arange(q, device=self.col.device)  # [rows, q]
            self.keys[self.rows[:, None], :, cols] = key_states.transpose(1, 2)
            self.values[self.rows[:, None], :, cols] = value_states.transpose(1, 2)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]

    def get_max_length(self) -> int:
        return self.keys.shape[-2]


class SlotKVCache(Cache):
    """Per-layer slot buffers plus the per-row write column; attention is masked by a 4-D mask
    built from :attr:`mask` (``[rows, max_len]``, 1 where a row has a real token)."""

    def __init__(self, n_layers: int, rows: int, max_len: int, shapes: list[tuple[int, int, int]],
                 dtype: torch.dtype, device: torch.device | str) -> None:
        """``shapes[l]`` = (kv heads, key dim, value dim) of layer ``l``."""
        self.rows, self.max_len = rows, max_len
        self.col = torch.zeros(rows, dtype=torch.long, device=device)
        self.mask = torch.zeros((rows, max_len), dtype=torch.long, device=device)
        layers = []
        for heads, dk, dv in shapes[:n_layers]:
            k = torch.zeros((rows, heads, max_len, dk), dtype=dtype, device=device)
            v = torch.zeros((rows, heads, max_len, dv), dtype=dtype, device=device)
            layers.append(SlotLayer(k, v, self.col))
        super().__init__(layers=layers)

    @staticmethod
    def bytes_per_row(shapes: list[tuple[int, int, int]], max_len: int, dtype: torch.dtype) -> int:
        size = torch.empty((), dtype=dtype).element_size()
        return sum(h * (dk + dv) for h, dk, dv in shapes) * max_len * size

    @classmethod
    def like(cls, kv: list[tuple[torch.Tensor, torch.Tensor]], rows: int, max_len: int) -> "SlotKVCache":
        """A cache with the head counts / dims / dtype / device of prefill key/values ``kv``."""
        shapes = [(k.shape[1], k.shape[-1], v.shape[-1]) for k, v in kv]
        return cls(len(kv), rows, max_len, shapes, kv[0][0].dtype, kv[0][0].device)

    def shapes(self) -> list[tuple[int, int, int]]:
        return [(l.keys.shape[1], l.keys.shape[-1], l.values.shape[-1]) for l in self.layers]

    def write_rows(self, slots: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """Admit prefilled rows: ``kv[l]`` is ``[n, H, T, D]``, ``mask`` ``[n, T]``; row ``i`` goes to
        slot ``slots[i]``, columns ``[0, T)``; the rest of the slot's mask is cleared and its write
        column set to ``T`` (stale key/values beyond ``T`` stay but are masked)."""
        t = mask.shape[1]
        if t > self.max_len:
            raise ValueError(f"prefill of {t} columns does not fit max_len {self.max_len}")
        slots = slots.to(self.col.device)
        for layer, (k, v) in zip(self.layers, kv, strict=True):
            layer.keys[slots, :, :t] = k.to(layer.keys.dtype)
            layer.values[slots, :, :t] = v.to(layer.values.dtype)
        self.mask[slots] = 0
        self.mask[slots, :t] = mask.to(self.mask.device, self.mask.dtype)
        self.col[slots] = t

    def read_row(self, slot: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """A slot's (key, value) per layer over its written columns, and its mask (for tests/debugging)."""
        n = int(self.col[slot])
        return [(l.keys[slot, :, :n], l.values[slot, :, :n]) for l in self.layers], self.mask[slot, :n]

    def attention_mask_4d(self, dtype: torch.dtype) -> torch.Tensor:
        """``[rows, 1, 1, max_len]`` additive mask (0 attend, dtype-min masked) for one-token decode.

        Passed as a 4-D mask, transformers returns it as-is (``_preprocess_mask_arguments``): no
        data-dependent mask construction, so the step stays sync-free and graph-capturable. The
        decoded token sits at the row's write column, whose mask bit is set before the forward,
        so causality for a one-token query is exactly "attend to the row's set columns"."""
        return ((1 - self.mask[:, None, None, :]).to(dtype)) * torch.finfo(dtype).min


class SlotTable:
    """Host-side slot bookkeeping: which slot holds which sequence; free slots are reused lowest first."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.owner: list[int | None] = [None] * rows

    def free_slots(self) -> list[int]:
        return [s for s, o in enumerate(self.owner) if o is None]

    def take(self, seqs: list[int]) -> list[int]:
        free = self.free_slots()
        if len(seqs) > len(free):
            raise ValueError(f"{len(seqs)} rows requested, {len(free)} slots free")
        for s, q in zip(free, seqs):
            self.owner[s] = q
        return free[: len(seqs)]

    def release(self, slot: int) -> None:
        self.owner[slot] = None

    @property
    def n_used(self) -> int:
        return sum(o is not None for o in self.owner)
