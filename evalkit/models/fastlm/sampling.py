"""Choosing the next token: greedy, or temperature / top-k / top-p sampling via transformers' warpers.

Greedy picks the first maximum of the fp32-cast logits, as ``generate()`` does, so ties resolve
the same way as in the stock backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TokenSelector:
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "TokenSelector":
        """Normalised lm-eval gen kwargs (``do_sample``, ``temperature``, ``top_p``, ``top_k``)."""
        temperature = float(kwargs.get("temperature") or 0.0)
        if not kwargs.get("do_sample", temperature > 0) or temperature <= 0:
            return cls()
        top_p = kwargs.get("top_p")
        top_k = kwargs.get("top_k")
        return cls(temperature, float(top_p) if top_p is not None else None, int(top_k) if top_k else None)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [B, V]`` -> token ids ``[B]``."""
        scores = logits.float()
        if self.greedy:
            return scores.argmax(dim=-1)
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        scores = TemperatureLogitsWarper(self.temperature)(None, scores)
        if self.top_k:
            scores = TopKLogitsWarper(self.top_k)(None, scores)
        if self.top_p is not None and self.top_p < 1.0:
            scores = TopPLogitsWarper(self.top_p)(None, scores)
        return torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(-1)
