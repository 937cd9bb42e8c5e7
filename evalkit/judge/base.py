"""What a judge is, and turning any evalkit model string into one.

A judge scores single-order :class:`~evalkit.judge.prompt.JudgeRequest` s. The swap logic,
caching and statistics live elsewhere and only see this protocol, so a scripted judge in the
tests, a local transformers model and an OpenAI-compatible endpoint are interchangeable.

``identity`` names *what answers*: weights hash + dtype for local models (a bf16 and an fp32
judge can disagree on close calls), endpoint + model + decoding settings for HTTP judges. It is
part of every cache key together with ``scoring`` (how a verdict is read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from evalkit.errors import EvalkitError
from evalkit.judge.prompt import JudgeRequest
from evalkit.judge.verdict import SingleJudgment


@runtime_checkable
class Judge(Protocol):
    name: str  # the model string the user gave
    identity: str  # what answers (weights hash / endpoint), for cache keys
    scoring: str  # how verdicts are read, e.g. "logprob-v1" or "text-v1"

    def judge(self, requests: Sequence[JudgeRequest]) -> list[SingleJudgment]:
        """One judgment per request, in order. Batching is the judge's business."""
        ...


def load_judge(
    model: str,
    *,
    dtype: str | None = "auto",
    device: str | None = "auto",
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    timeout_s: float = 120.0,
    concurrency: int = 4,
) -> Judge:
    """Any evalkit model string as a judge.

    Local forms (``smollm2-135m``, folders, GGUF, PEFT adapters, hub ids) read the verdict from
    log-probabilities and load their weights only when a judgment is not in the cache, through
    a :func:`~evalkit.models.handle.get_model` handle that resolves ``device``/``dtype`` once;
    ``openai:<base_url>#<model>`` endpoints generate a short reply that is parsed (no device or
    dtype: the server decides).
    """
    from evalkit.models.spec import parse_model

    spec = parse_model(model)
    if spec.kind == "openai":
        from evalkit.judge.remote import OpenAIJudge

        return OpenAIJudge(spec, timeout_s=timeout_s, concurrency=concurrency)
    if spec.kind == "vllm":
        raise EvalkitError(
            f"judge '{model}': vllm: judges are not run in-process; serve the model with `vllm serve` and "
            "pass openai:http://127.0.0.1:8000/v1#<model>"
        )
    from evalkit.judge.local import LocalJudge

    return LocalJudge(spec, dtype=dtype, device=device, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens)
