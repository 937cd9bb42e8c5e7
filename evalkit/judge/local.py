"""A local transformers model as a judge: the verdict is read from log-probabilities.

Why log-probabilities instead of generating: at the position right after the chat template's
assistant prefix the model's next-token distribution already *is* its verdict. Comparing
P("A") with P("B") (and P("C") when ties are allowed) gives every judge, even a 135M one, a
probability and never a parse failure, costs one forward pass with no decoding, and lets the
"average" tie policy use real probabilities. Each letter's probability sums its single-token
spellings ("A" and " A"), is normalised over the allowed letters, and the raw mass on the
verdict tokens is kept as a diagnostic (how much the model wanted to answer with a letter).

Batching: prompts are sorted by length, left-padded (so the answer position is the last column
for every row) and run in batches of ``batch_size`` rows (fewer for long prompts, to bound
memory), asking the model for the last position's logits only (``logits_to_keep=1``).
Weights load lazily, on the first request not found in the cache, through one
:class:`~evalkit.models.handle.ModelHandle` (which also decided device and dtype; the dtype is
part of ``identity``, so cached judgments follow it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.judge.prompt import JudgeRequest, build_messages
from evalkit.judge.verdict import SingleJudgment
from evalkit.models.spec import ModelSpec

SCORING = "logprob-v1"
TRUNC_MARK = "\n[... truncated ...]"


class LocalJudge:
    scoring = SCORING

    def __init__(
        self,
        spec: ModelSpec,
        *,
        dtype: str | None = "auto",
        device: str | None = "auto",
        batch_size: int = 8,
        max_prompt_tokens: int | None = None,
        batch_token_budget: int = 16384,
    ) -> None:
        from evalkit.models.handle import get_model

        # the judge's own handle (never the run's: _load sets the tokenizer's padding side) decides
        # device and dtype once; weights resolve now, load on the first uncached judgment
        self.handle = get_model(spec, device=device, dtype=dtype, batch_size=batch_size)
        self.spec = spec
        self.name = spec.raw
        self.weights = self.handle.weights
        self.device = self.handle.device
        self.dtype = self.handle.dtype
        self.identity = f"{self.weights.weights_hash}|{self.dtype}"
        self.batch_size = max(1, int(batch_size))
        self.batch_token_budget = batch_token_budget
        self.max_prompt_tokens = max_prompt_tokens
        self._loaded: Any = None
        self._letter_ids: dict[str, list[int]] = {}
        self.calls = 0  # forward passes made (for timings and tests)
        self.load_s = 0.0

    # ------------------------------------------------------------------ setup
    def _load(self) -> Any:
        if self._loaded is None:
            import time

            t0 = time.perf_counter()
            self._loaded = self.handle.hf
            self.load_s = time.perf_counter() - t0
            tok = self._loaded.tokenizer
            tok.padding_side = "left"
            if not getattr(tok, "chat_template", None):
                raise EvalkitError(f"judge '{self.name}': tokenizer has no chat template (use an instruct/chat model)")
            for letter in ("A", "B", "C"):
                ids = sorted({ids[0] for s in (letter, " " + letter)
                              if len(ids := tok.encode(s, add_special_tokens=False)) == 1})
                if not ids:
                    raise EvalkitError(f"judge '{self.name}': verdict letter {letter!r} is not a single token")
                self._letter_ids[letter] = ids
            if self.max_prompt_tokens is None:
                cfg_max = getattr(self._loaded.model.config, "max_position_embeddings", None) or 4096
                self.max_prompt_tokens = min(int(cfg_max), 4096)
        return self._loaded

    # --------------------------------------------------------------- prompts
    def _encode(self, req: JudgeRequest) -> tuple[list[int], bool]:
        """Token ids of the templated prompt, shrinking the texts (head kept) if it is too long."""
        tok = self._loaded.tokenizer
        limit = int(self.max_prompt_tokens or 4096)
        current, truncated = req, False
        for _ in range(6):
            text = tok.apply_chat_template(build_messages(current), add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= limit:
                return ids, truncated
            ratio = max(0.05, limit / len(ids) * 0.9)
            current = JudgeRequest(
                _cut(current.instruction, ratio), _cut(current.first, ratio), _cut(current.second, ratio),
                _cut(current.reference, ratio) if current.reference else None, current.allow_tie,
            )
            truncated = True
        return ids[-limit:], True

    # --------------------------------------------------------------- scoring
    def judge(self, requests: Sequence[JudgeRequest]) -> list[SingleJudgment]:
        if not requests:
            return []
        self._load()
        encoded = [self._encode(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i][0]))
        out: list[SingleJudgment | None] = [None] * len(requests)
        start = 0
        while start < len(order):
            longest = len(encoded[order[min(start + self.batch_size, len(order)) - 1]][0])
            rows = max(1, min(self.batch_size, self.batch_token_budget // max(longest, 1)))
            idx = order[start : start + rows]
            logprobs = self._last_logprobs([encoded[i][0] for i in idx])
            for row, i in enumerate(idx):
                out[i] = self._verdict(logprobs[row], requests[i], encoded[i][1])
            start += rows
        return [j for j in out if j is not None]

    def _last_logprobs(self, batch: list[list[int]]) -> list[dict[str, float]]:
        """log P(letter) at the answer position, per row (summed over the letter's spellings)."""
        import torch

        from evalkit.models.generate import left_pad

        lm = self._loaded
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        input_ids, mask, positions = left_pad(batch, pad, lm.device)
        with torch.inference_mode():
            logits = lm.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False,
            ).logits[:, -1, :]
        self.calls += 1
        lp = torch.log_softmax(logits.float(), dim=-1).cpu()
        return [
            {k: float(torch.logsumexp(lp[r, ids], dim=0)) for k, ids in self._letter_ids.items()}
            for r in range(len(batch))
        ]

    @staticmethod
    def _verdict(logp: dict[str, float], req: JudgeRequest, truncated: bool) -> SingleJudgment:
        letters = req.letters
        raw = {k: math.exp(logp[k]) for k in letters}
        mass = sum(raw.values())
        probs = {k: (v / mass if mass > 0 else 1.0 / len(letters)) for k, v in raw.items()}
        best = max(probs.values())
        top = [k for k in letters if probs[k] == best]
        verdict = top[0] if len(top) == 1 else "C"
        return SingleJudgment(verdict=verdict, probs=probs, mass=mass, truncated=truncated,
                              text=None)


def _cut(text: str, ratio: float) -> str:
    """Keep the head of a text that makes up ``ratio`` of it (long texts only)."""
    if len(text) < 400:
        return text
    keep = max(200, int(len(text) * ratio))
    return text[:keep] + TRUNC_MARK if keep < len(text) else text
