"""KL(policy || reference), measured on the policy's own samples.

Why: a post-trained policy that drifts far from its reference has usually learned to game the
training signal (or forgotten things the evals do not cover). The loop's gate watches this KL,
so it must be measured the way RLHF defines it: on completions *sampled from the policy*, as
the mean over generated positions of KL(pi(.|prefix) || ref(.|prefix)).

How: sampling and scoring are separate steps so the same tokens can be scored by any pair of
models (that is how the adapter fast path is checked against the two-model path):

1. :func:`~evalkit.models.generate.sample_completions` (in the model layer, re-exported here)
   draws completions from the policy (temperature 1, no top-k/top-p, seeded per batch) with a
   small cache-using sampling loop, so nothing in a model's ``generation_config`` silently
   truncates the distribution the estimators assume.
2. :func:`score_kl` scores prompt + completion under both models in one forward pass each and
   reports, per completion token, the exact full-vocabulary KL ``sum_v p (log p - log q)``
   (float32 log-softmax of the logits) and the two single-sample estimators used in RL
   libraries: ``k1 = log p(x) - log q(x)`` and ``k3 = (r - 1) - log r`` with ``r = q(x)/p(x)``
   (Schulman, "Approximating KL divergence"). Exact KL is the number to trust; k1/k3 show how
   noisy the cheap estimators a trainer uses would be on the same tokens.

Fast path: a PEFT-adapter policy whose base is the reference is one model, scored with the
adapter enabled and inside ``model.disable_adapter()``. Otherwise two models are loaded, and
they must share one tokenizer (the same token ids must mean the same text to both).
Scoring defaults to float32: bf16 logits carry ~1e-2 noise, larger than a small adapter's KL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evalkit.analysis.stats import clustered_ratio
from evalkit.errors import EvalkitError
from evalkit.models.generate import Completion, chunks, left_pad, model_device, pad_id, sample_completions

__all__ = [
    "Completion",  # re-exported from evalkit.models.generate (KL's sampled tokens)
    "KLResult",
    "PromptKL",
    "TokenKL",
    "check_same_tokenizer",
    "completion_logprobs",
    "kl_divergence",
    "kl_estimates",
    "load_prompts",
    "sample_completions",  # re-exported from evalkit.models.generate
    "score_kl",
    "summarize",
]

PROMPT_FIELDS = ("prompt", "question", "instruction")
PROBE = "The quick brown fox, 12345 <tags> & ünïcödé — \n\tdone."


# --------------------------------------------------------------------------- results
@dataclass
class TokenKL:
    """Per completion token: exact KL, k1 and k3 (float64 arrays of equal length)."""

    kl: np.ndarray
    k1: np.ndarray
    k3: np.ndarray


@dataclass
class PromptKL:
    prompt: str
    completion: str
    n_tokens: int
    kl: float  # mean per token
    k1: float
    k3: float
    kl_sum: float  # sequence-level KL (what an RLHF KL penalty sums)
    token_kl: list[float] = field(default_factory=list)


@dataclass
class KLResult:
    policy: str
    ref: str
    policy_hash: str | None
    ref_hash: str | None
    method: str  # "adapter" (one model, adapter on/off) | "two-models" | "identical"
    settings: dict[str, Any]
    n_prompts: int
    n_tokens: int
    mean_kl: float  # mean per token over all prompts' tokens
    kl_stderr: float  # cluster-robust (prompts are the clusters)
    k1: float
    k3: float
    per_prompt: list[PromptKL]
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def store_fields(self) -> dict[str, Any]:
        """Keyword arguments for :func:`evalkit.store.analyses.save_kl`."""
        settings = {**self.settings, "method": self.method, "n_prompts": self.n_prompts, "n_tokens": self.n_tokens,
                    "kl_stderr": self.kl_stderr, "elapsed_s": self.elapsed_s}
        return {"policy": self.policy, "ref": self.ref, "policy_hash": self.policy_hash, "ref_hash": self.ref_hash,
                "settings": settings, "mean_kl": self.mean_kl, "k1": self.k1, "k3": self.k3,
                "per_prompt": [asdict(p) for p in self.per_prompt]}


# --------------------------------------------------------------------------- prompts
def load_prompts(path: str, limit: int | None = None) -> list[str]:
    """Prompts from a .txt file (one per non-empty line) or JSONL (``prompt``/``question``/``instruction``)."""
    if not os.path.isfile(path):
        raise EvalkitError(f"prompts '{path}': file not found")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".txt", ".jsonl", ".json"):
        raise EvalkitError(f"prompts '{path}': expected a .txt or .jsonl file")
    prompts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if limit is not None and len(prompts) >= limit:
                break
            if not line.strip():
                continue
            prompts.append(line.rstrip("\n") if ext == ".txt" else _jsonl_prompt(path, lineno, line))
    if not prompts:
        raise EvalkitError(f"prompts '{path}': no prompts in file")
    return prompts


def _jsonl_prompt(path: str, lineno: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise EvalkitError(f"{path}:{lineno}: expected a JSON object")
    for key in PROMPT_FIELDS:
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    raise EvalkitError(f"{path}:{lineno}: no non-empty string field {'/'.join(PROMPT_FIELDS)}")


def check_same_tokenizer(tok_a: Any, tok_b: Any, name_a: str = "policy", name_b: str = "ref") -> None:
    """Refuse two models whose token ids do not mean the same text (KL would compare nonsense)."""
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va != vb:
        raise EvalkitError(
            f"KL: '{name_a}' and '{name_b}' use different tokenizers ({len(va)} vs {len(vb)} tokens); "
            "KL needs one shared vocabulary"
        )
    if tok_a.encode(PROBE, add_special_tokens=False) != tok_b.encode(PROBE, add_special_tokens=False):
        raise EvalkitError(f"KL: '{name_a}' and '{name_b}' tokenize the same text differently; KL needs one tokenizer")


# --------------------------------------------------------------------------- scoring
def completion_logprobs(model: Any, batch: Sequence[Completion], pad: int = 0) -> list[Any]:
    """Float32 log-softmax over the vocabulary at each completion position: one ``(T_i, V)`` per item."""
    import torch

    seqs = [c.prompt_ids + c.token_ids for c in batch]
    longest = max(len(c.token_ids) for c in batch)
    ids, mask, pos = left_pad(seqs, pad, model_device(model))
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=longest + 1)
    # kept logits cover positions L-T-1 .. L-1; position j predicts token j+1, so drop the last
    logp = torch.log_softmax(out.logits[:, -(longest + 1) : -1, :].float(), dim=-1)
    return [logp[i, longest - len(c.token_ids) :, :] for i, c in enumerate(batch)]


def kl_estimates(logp: Any, logq: Any, tokens: Sequence[int]) -> TokenKL:
    """Exact KL(p||q) per position from full log-distributions, and k1/k3 at the sampled tokens."""
    import torch

    if logp.shape != logq.shape:
        raise EvalkitError(f"KL: policy and reference output different vocabularies ({logp.shape[-1]} vs {logq.shape[-1]} logits)")
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    kl = terms.sum(dim=-1)
    idx = torch.as_tensor(list(tokens), dtype=torch.long, device=logp.device)[:, None]
    k1 = (logp.gather(-1, idx) - logq.gather(-1, idx)).squeeze(-1)
    k1_64 = k1.double().cpu().numpy()
    return TokenKL(kl=kl.double().cpu().numpy(), k1=k1_64, k3=np.expm1(-k1_64) + k1_64)


def score_kl(policy_model: Any, completions: Sequence[Completion], ref_model: Any | None = None, batch_size: int = 8, pad: int = 0) -> list[TokenKL]:
    """Per-token KL/k1/k3 of each completion; ``ref_model=None`` means the policy with its adapter disabled."""
    import torch

    if ref_model is None and not hasattr(policy_model, "disable_adapter"):
        raise EvalkitError("KL: no reference model given and the policy has no PEFT adapter to disable")
    stats: list[TokenKL] = []
    with torch.inference_mode():
        for _, batch in chunks(completions, max(1, batch_size)):
            logp = completion_logprobs(policy_model, batch, pad)
            if ref_model is None:
                with policy_model.disable_adapter():
                    logq = completion_logprobs(policy_model, batch, pad)
            else:
                logq = completion_logprobs(ref_model, batch, pad)
            stats.extend(kl_estimates(lp, lq, c.token_ids) for lp, lq, c in zip(logp, logq, batch))
    return stats


def summarize(
    completions: Sequence[Completion],
    stats: Sequence[TokenKL],
    *,
    policy: str,
    ref: str,
    policy_hash: str | None = None,
    ref_hash: str | None = None,
    method: str = "two-models",
    settings: dict[str, Any] | None = None,
    elapsed_s: float = 0.0,
) -> KLResult:
    """Per-prompt means and the per-token means over all prompts' tokens."""
    per_prompt = [
        PromptKL(prompt=c.prompt, completion=c.text, n_tokens=len(s.kl), kl=_mean(s.kl), k1=_mean(s.k1), k3=_mean(s.k3),
                 kl_sum=float(s.kl.sum()), token_kl=[float(x) for x in s.kl])
        for c, s in zip(completions, stats)
    ]
    all_kl = np.concatenate([s.kl for s in stats]) if stats else np.zeros(0)
    _, se, _ = clustered_ratio([s.kl.tolist() for s in stats]) if stats else (0.0, float("nan"), 0)
    return KLResult(
        policy=policy, ref=ref, policy_hash=policy_hash, ref_hash=ref_hash, method=method, settings=settings or {},
        n_prompts=len(per_prompt), n_tokens=int(all_kl.size), mean_kl=_mean(all_kl), kl_stderr=float(se),
        k1=_mean(np.concatenate([s.k1 for s in stats])) if stats else float("nan"),
        k3=_mean(np.concatenate([s.k3 for s in stats])) if stats else float("nan"),
        per_prompt=per_prompt, elapsed_s=elapsed_s,
    )


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


# ---------------------------------------------------------------------- orchestrator
def kl_divergence(
    policy_spec_str: str,
    ref_spec_str: str,
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    seed: int = 0,
    *,
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 8,
    chat_template: bool = True,
) -> KLResult:
    """KL(policy || ref) on completions sampled from the policy for ``prompts``.

    A PEFT adapter whose base weights are the reference's is scored as one model with the
    adapter on and off; other pairs load two models that must share a tokenizer. Both models
    come from :func:`evalkit.models.handle.get_model`: the policy's handle decides device and
    dtype once (``dtype`` defaults to float32, see the module docstring), the reference runs
    with the same, and the recorded ``settings`` are the handle's resolved values.
    """
    from evalkit.models.handle import get_model
    from evalkit.models.spec import parse_model

    if not prompts:
        raise EvalkitError("KL: no prompts given")
    pspec, rspec = parse_model(policy_spec_str), parse_model(ref_spec_str)
    for spec in (pspec, rspec):
        if spec.kind in ("openai", "vllm"):
            raise EvalkitError(f"model '{spec.raw}': KL needs full-vocabulary logits from in-process weights; {spec.kind} models are served")
    t0 = time.perf_counter()
    ph = get_model(pspec, device=device, dtype=dtype, batch_size=batch_size)
    rh = get_model(rspec, device=ph.device, dtype=ph.dtype, batch_size=batch_size)
    pw, rw = ph.weights, rh.weights
    base_hash = (get_model(parse_model(pspec.path), device=ph.device, dtype=ph.dtype).weights.weights_hash
                 if pspec.kind == "peft" and pspec.path else None)
    ref_model = None
    if pw.weights_hash == rw.weights_hash:
        method = "identical"
        policy = ph.hf
        ref_model = policy.model
    elif base_hash is not None and base_hash == rw.weights_hash:
        method = "adapter"
        policy = ph.load_unmerged()
    else:
        method = "two-models"
        policy = ph.hf
        ref = rh.hf
        check_same_tokenizer(policy.tokenizer, ref.tokenizer, pspec.raw, rspec.raw)
        ref_model = ref.model
    completions = sample_completions(policy.model, policy.tokenizer, prompts, max_new_tokens, seed, batch_size, chat_template)
    stats = score_kl(policy.model, completions, ref_model, batch_size, pad_id(policy.tokenizer))
    settings = {"max_new_tokens": max_new_tokens, "seed": seed, "dtype": ph.dtype, "device": ph.device,
                "batch_size": batch_size, "chat_template": chat_template, "temperature": 1.0}
    return summarize(completions, stats, policy=pspec.raw, ref=rspec.raw, policy_hash=pw.weights_hash,
                     ref_hash=rw.weights_hash, method=method, settings=settings, elapsed_s=time.perf_counter() - t0)
