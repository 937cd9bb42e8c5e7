"""Token-level generation on a loaded transformers model: the building blocks every in-process
sampler shares, and the two decoding loops that run on a whole batch of prompts.

Why here: generating from a model is part of the model layer, not of one analysis. KL samples
the policy's completions (:func:`sample_completions`), the judge engine generates the model's
and the baseline's responses (:func:`generate_greedy`), and both used to share private helpers
of :mod:`evalkit.analysis.kl`. The helpers are public now and documented once:

* :func:`encode_prompts` — prompt strings to token ids, as a user turn in the chat template
  when the tokenizer has one (so a chat model sees what it was trained on).
* :func:`eos_ids`, :func:`pad_id` — which tokens end a completion and which one pads.
* :func:`left_pad` — a left-padded batch with explicit ``position_ids``, so every row's last
  prompt token sits in the last column and a row's positions do not depend on its padding.
* :func:`chunks` — numbered fixed-size batches (the batch number seeds the sampler).

Two loops, kept apart because they decode differently on purpose:

* :func:`sample_completions` — temperature 1 over the full vocabulary, no top-k/top-p, a small
  cache-using loop with one ``torch.Generator`` per batch (seeded ``seed + batch index``). Nothing
  in the model's ``generation_config`` can truncate the distribution, which KL's estimators
  assume. Same prompts, seed and batch size give the same tokens.
* :func:`generate_greedy` — greedy decoding through ``model.generate`` with sampling settings
  switched off, batches cut in prompt-length order (small padding), results in prompt order.

Not merged here: :mod:`evalkit.engines.inspect.batching` samples each *request* from its own
generator (a logits processor inside ``model.generate``), collects concurrent requests on a
worker thread and honours top-p and stop strings; it reuses :func:`eos_ids` and :func:`left_pad`
but keeps its own loop. evalkit's FastLM backend (:mod:`evalkit.models.fastlm`) decodes with a
shared-prefix KV cache and is its own mechanism too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError

__all__ = [
    "Completion",
    "chunks",
    "encode_prompts",
    "eos_ids",
    "generate_greedy",
    "left_pad",
    "model_device",
    "pad_id",
    "sample_batch",
    "sample_completions",
]


@dataclass
class Completion:
    """One sampled completion: the prompt, its token ids, the sampled token ids and their text."""

    prompt: str
    prompt_ids: list[int]
    token_ids: list[int]  # the completion only; ends with an EOS token when one was sampled
    text: str = ""  # ``token_ids`` decoded with special tokens skipped


# --------------------------------------------------------------------------- building blocks
def encode_prompts(tokenizer: Any, prompts: Sequence[str], chat_template: bool = True) -> list[list[int]]:
    """Token ids per prompt; a user turn in the chat template when the tokenizer has one.

    With a template the rendered text (which already holds its special tokens) is encoded with
    ``add_special_tokens=False``; without one the raw prompt is encoded with the tokenizer's
    defaults. A prompt that encodes to no tokens raises :class:`EvalkitError`.
    """
    use_chat = chat_template and bool(getattr(tokenizer, "chat_template", None))
    out = []
    for i, p in enumerate(prompts):
        if use_chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tokenizer(p)["input_ids"])
        if not ids:
            raise EvalkitError(f"prompt {i + 1}: encodes to no tokens")
        out.append(ids)
    return out


def model_device(model: Any) -> Any:
    """The torch device a model's (first) parameters live on."""
    return next(model.parameters()).device


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's
    ``generation_config.eos_token_id`` (an int or a list; chat models often name several)."""
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    return ids


def pad_id(tokenizer: Any) -> int:
    """The padding token id: the tokenizer's pad token, else its EOS, else 0 (padded positions are masked)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def chunks(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(batch index, batch)`` for consecutive slices of ``size`` items (the last may be shorter)."""
    for b, start in enumerate(range(0, len(items), size)):
        yield b, items[start : start + size]


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any, Any]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` for a left-padded batch, on ``device``.

    Positions count real tokens only (0 at each row's first token, 0 on padding), so a row
    scores the same as it would alone.
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


# --------------------------------------------------------------------------- sampling (T = 1)
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 8,
    chat_template: bool = True,
) -> list[Completion]:
    """Sample one completion per prompt from ``model`` at temperature 1 over the full vocabulary.

    Batch ``b`` uses a generator seeded with ``seed + b``: the same prompts, seed and batch size
    give the same tokens. A completion ends after an EOS token (kept) or ``max_new_tokens``.
    """
    import torch

    if max_new_tokens < 1:
        raise EvalkitError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    prompt_ids = encode_prompts(tokenizer, prompts, chat_template)
    eos, pad, dev = eos_ids(model, tokenizer), pad_id(tokenizer), model_device(model)
    out: list[Completion] = []
    with torch.inference_mode():
        for b, batch in chunks(prompt_ids, max(1, batch_size)):
            gen = torch.Generator(device=dev).manual_seed(seed + b)
            tokens = sample_batch(model, batch, max_new_tokens, eos, pad, gen)
            start = b * max(1, batch_size)
            for i, (ids, toks) in enumerate(zip(batch, tokens)):
                text = tokenizer.decode(toks, skip_special_tokens=True)
                out.append(Completion(prompt=prompts[start + i], prompt_ids=list(ids), token_ids=toks, text=text))
    return out


def sample_batch(model: Any, batch: Sequence[list[int]], max_new: int, eos: set[int], pad: int, gen: Any) -> list[list[int]]:
    """Token ids sampled for one left-padded batch of prompt ids (temperature 1, draws from ``gen``).

    One multinomial draw per step for the whole batch, in row order, so the tokens depend on the
    batch's composition (that is why :func:`sample_completions` fixes batches and seeds). A row
    that sampled an EOS is finished: later steps feed it ``pad`` and drop its draws. Call it
    under ``torch.inference_mode()``.
    """
    import torch

    ids, mask, pos = left_pad(batch, pad, model_device(model))
    result: list[list[int]] = [[] for _ in batch]
    done = torch.zeros(len(batch), dtype=torch.bool)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    for step in range(max_new):
        probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1)
        tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        for i, t in enumerate(tok.tolist()):
            if not done[i]:
                result[i].append(t)
                done[i] = t in eos
        if bool(done.all()) or step == max_new - 1:
            break
        feed = torch.where(done.to(tok.device), torch.full_like(tok, pad), tok)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=feed[:, None], attention_mask=mask, position_ids=pos,
                    past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
    return result


# --------------------------------------------------------------------------- greedy
def generate_greedy(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                    batch_size: int = 8) -> list[str]:
    """Greedy responses, one per prompt: chat template (when the tokenizer has one), batches left-padded,
    stop at eos. Prompts are batched in length order so padding is small; results come back in order.

    Decoding is ``model.generate`` with ``do_sample=False`` and the model's own temperature /
    top-p / top-k defaults switched off; the text is cut at the first EOS token, decoded without
    special tokens and stripped. The model is put in eval mode for the call and restored after.
    """
    import torch

    encoded = encode_prompts(tokenizer, prompts, chat_template=True)
    eos = sorted(eos_ids(model, tokenizer))
    pad = pad_id(tokenizer)
    device = model_device(model)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + batch_size]
            ids, mask, _ = left_pad([encoded[i] for i in idx], pad, device)
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, eos_token_id=eos or None, pad_token_id=pad,
                                     temperature=None, top_p=None, top_k=None)
            for row, i in enumerate(idx):
                new = gen[row, ids.shape[1] :].tolist()
                cut = next((k for k, t in enumerate(new) if t in eos), len(new))
                out[i] = tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return out
