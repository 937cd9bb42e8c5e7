"""Shape buckets for the CUDA path: few distinct shapes, so kernels, allocator blocks and CUDA graphs are reused.

Why: on one H200 FastLM was 1.36x slower than stock ``lm_eval --model hf`` on MMLU. Every
prefill batch had its own exact width and every decode batch its own row count, so each forward
met a new shape (fresh allocator blocks, no reusable CUDA graph). Rounding widths up to a bucket
costs a few masked padding columns and buys shape reuse. The CPU path does not use these
(there, padding is pure extra work). Unmeasured until ``make gpu-check`` runs on a GPU.
"""

from __future__ import annotations

LEN_MULTIPLE = 64  # widths above this round up to a multiple of it; below, to a power of two


def bucket_len(n: int, multiple: int = LEN_MULTIPLE, minimum: int = 8) -> int:
    """Padded length for ``n`` tokens: the next power of two up to ``multiple``, then the next
    multiple of ``multiple`` (8 -> 8, 9 -> 16, 65 -> 128, 130 -> 192)."""
    if n <= 0:
        return 0
    if n <= multiple:
        b = max(1, minimum)
        while b < n:
            b *= 2
        return min(b, multiple) if n <= multiple else b
    return -(-n // multiple) * multiple


def bucket_rows(n: int, cap: int | None = None) -> int:
    """Row count for a decode batch of ``n`` live rows: the next power of two (one CUDA graph per
    bucket), never above ``cap`` (which need not be a power of two)."""
    if n <= 0:
        return 0
    b = 1
    while b < n:
        b *= 2
    return min(b, cap) if cap is not None else b


def rows_for_memory(bytes_per_row: int, free_bytes: int | None, fraction: float, want: int) -> int:
    """How many cache rows fit in ``fraction`` of ``free_bytes`` (``torch.cuda.mem_get_info``),
    at most ``want``, at least 1. ``free_bytes`` None (CPU) means no memory cap."""
    if free_bytes is None or bytes_per_row <= 0:
        return max(1, want)
    fit = int(free_bytes * fraction) // bytes_per_row
    return max(1, min(want, fit))


def floor_pow2(n: int) -> int:
    """Largest power of two <= ``n`` (``n`` >= 1)."""
    b = 1
    while b * 2 <= n:
        b *= 2
    return b
