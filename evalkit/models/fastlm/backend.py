"""``FastLM``: lm-eval's HF backend with evalkit's scheduler for the two request types that dominate.

What stays lm-eval's (inherited from ``HFLM``): tokenisation and context/continuation splitting,
chat templates, stop-sequence normalisation, left truncation, decoding and post-processing of
generations, the softmax dtype convention, and every other request type. What changes:

* **log-likelihoods**: unique input rows (lm-eval's one-row-per-context trick kept) are grouped by
  shared token prefix; each prefix is run once and its key/values reused for every row of the
  group; the rest is batched by length under a token budget; logits are computed only at the
  positions that are scored (``logits_to_keep``), not over the whole prompt x 49k vocabulary.
* **generation**: continuous batching. Rows share prefix key/values as above; each row stops at
  its own stop sequence / EOS / token limit and its slot is refilled from the queue, instead of
  the whole batch decoding until its longest row ends. The cache grows in place
  (:mod:`evalkit.models.fastlm.kvcache`).

Greedy outputs and scores therefore equal the stock backend's up to bf16 batch-composition noise;
``bench/compare_lmeval.py`` measures that agreement and the speed-up. Generation settings this
scheduler does not implement (beams, penalties, ``max_length`` ...) fall back to ``HFLM``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

from evalkit.models.fastlm.kvcache import BufferedCache, expand_prefix, merge_batches
from evalkit.models.fastlm.prefix import MIN_PREFIX, PrefixCache, merge_small_groups, plan_groups
from evalkit.models.fastlm.sampling import TokenSelector

KV = list[tuple[torch.Tensor, torch.Tensor]]
SUPPORTED_GEN_KEYS = {"do_sample", "temperature", "top_p", "top_k"}


class FastLM(HFLM):
    """``HFLM`` with shared-prefix reuse and continuous batching (see module docstring)."""

    # read by PersistentLM: bigger resumable chunks, grouped by context, give the scheduler more to share
    request_chunks = {"loglikelihood": 512, "generate_until": 96}
    partial_results = True  # every answer goes to cache_hook.add_partial as it finishes (commits <= 64)
    prefers_prefix_order = True

    def __init__(
        self,
        *args: Any,
        token_budget: int = 4096,
        max_rows: int = 64,
        gen_batch: int = 48,
        min_prefix: int = MIN_PREFIX,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.token_budget = int(token_budget)  # input tokens per forward pass (prefill batches)
        self.max_rows = int(max_rows)  # rows per log-likelihood forward pass
        self.gen_batch = int(gen_batch)  # concurrent generation rows
        self.min_prefix = int(min_prefix)
        self.prefixes = PrefixCache()
        self.stats: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------------ model calls
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eot_token_id)

    @torch.no_grad()
    def _prefix_kv(self, tokens: tuple[int, ...]) -> tuple[int, KV]:
        """Key/values of ``tokens`` (or of the longest cached prefix of it covering >= 3/4)."""
        hit = self.prefixes.lookup(tokens, max(self.min_prefix, (3 * len(tokens)) // 4))
        if hit is not None:
            self.stats["prefix_reused"] += 1
            return hit
        t0 = time.perf_counter()
        cache = BufferedCache()
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        kv = [(k.clone(), v.clone()) for k, v in cache.tensors()]
        self.prefixes.put(tokens, kv)
        self.stats["prefill_tokens"] += len(tokens)
        self.stats["prefill_seconds"] += time.perf_counter() - t0
        self.stats["prefix_computed"] += 1
        return len(tokens), kv

    @torch.no_grad()
    def _prefill(
        self, suffixes: list[list[int]], prefix_len: int, prefix: KV | None, keep: int, extra_capacity: int = 0
    ) -> tuple[torch.Tensor, BufferedCache | None, torch.Tensor, torch.Tensor]:
        """Run left-padded suffixes after a shared prefix; logits of the last ``keep`` positions.

        Returns (logits ``[B, keep, V]``, cache or None, 2-D attention mask, next position ids).
        """
        t0 = time.perf_counter()
        b, width = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.full((b, width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        pos = torch.full((b, width), prefix_len, dtype=torch.long)
        for row, seq in enumerate(suffixes):
            n = len(seq)
            ids[row, width - n :] = torch.tensor(seq, dtype=torch.long)
            mask[row, prefix_len + width - n :] = 1
            pos[row, width - n :] = torch.arange(prefix_len, prefix_len + n)
        need_cache = prefix is not None or extra_capacity > 0
        cache = None
        if prefix is not None:
            cache = expand_prefix(prefix, b, prefix_len + width + extra_capacity)
        elif need_cache:
            cache = BufferedCache()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            past_key_values=cache,
            use_cache=need_cache,
            logits_to_keep=keep,
        )
        self.stats["prefill_tokens"] += sum(len(s) for s in suffixes)
        self.stats["prefill_seconds"] += time.perf_counter() - t0
        self.stats["forward_calls"] += 1
        next_pos = torch.tensor([prefix_len + len(s) for s in suffixes], dtype=torch.long)
        return out.logits, cache, mask, next_pos

    def _batches(self, members: list[int], lengths: dict[int, int], max_rows: int) -> list[list[int]]:
        """Length-bucketed batches: longest first, cut by row count and the padded-token budget."""
        order = sorted(members, key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            width = lengths[cur[0]] if cur else lengths[i]
            if cur and (len(cur) >= max_rows or (len(cur) + 1) * width > self.token_budget):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    # ------------------------------------------------------------------ log-likelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        row_of: dict[tuple[int, ...], int] = {}
        rows: list[tuple[int, ...]] = []
        readers: list[list[int]] = []  # requests reading each row
        conts: list[list[int]] = []
        for r, (_, ctx, cont) in enumerate(requests):
            assert ctx and cont and len(cont) <= self.max_length
            inp = tuple((ctx + cont)[-(self.max_length + 1) :][:-1])
            if inp not in row_of:
                row_of[inp] = len(rows)
                rows.append(inp)
                readers.append([])
            readers[row_of[inp]].append(r)
            conts.append(list(cont))
        keep_of = [max(len(conts[r]) for r in rd) for rd in readers]
        limits = [len(rows[i]) - keep_of[i] for i in range(len(rows))]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="evalkit loglikelihood")
        for group in plan_groups(rows, limits, self.min_prefix):
            plen, prefix = 0, None
            if group.prefix_len:
                plen, prefix = self._prefix_kv(rows[group.members[0]][: group.prefix_len])
            lengths = {i: len(rows[i]) - plen for i in group.members}
            for batch in self._batches(group.members, lengths, self.max_rows):
                keep = max(keep_of[i] for i in batch)
                logits, _, _, _ = self._prefill([list(rows[i][plen:]) for i in batch], plen, prefix, keep)
                logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
                for b, i in enumerate(batch):
                    for r in readers[i]:
                        cont = torch.tensor(conts[r], dtype=torch.long, device=logprobs.device)
                        lp = logprobs[b, keep - len(cont) : keep]
                        greedy = bool((lp.argmax(dim=-1) == cont).all())
                        results[r] = (float(lp.gather(-1, cont[:, None]).sum()), greedy)
                        if requests[r][0] is not None:
                            self.cache_hook.add_partial("loglikelihood", requests[r][0], results[r])
                    bar.update(len(readers[i]))
        bar.close()
        return results

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self.backend != "causal":
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        results: list[str | None] = [None] * len(requests)
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            by_kwargs[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="evalkit generate")
        for idx in by_kwargs.values():
            gen_kwargs = requests[idx[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if set(kwargs) - SUPPORTED_GEN_KEYS - {"until", "max_gen_toks"}:
                outs = super().generate_until([requests[i] for i in idx], disable_tqdm=True)
                for i, out in zip(idx, outs, strict=True):
                    results[i] = out
                bar.update(len(idx))
                continue
            eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            contexts = [requests[i].args[0] for i in idx]
            enc, attn = self.tok_batch_encode(contexts, left_truncate_len=self.max_length - max_gen, truncation=self.truncation)
            seqs = [tuple(row[m.bool()].tolist()) for row, m in zip(enc, attn, strict=True)]
            selector = TokenSelector.from_kwargs(kwargs)
            outputs: list[list[int]] = [[] for _ in seqs]

            def finish(j: int, idx: list[int] = idx, contexts: list[str] = contexts, gen_kwargs: dict = gen_kwargs,
                       until: list[str] = until) -> None:
                # as soon as a row stops, so the cache hook (evalkit's PersistentLM) can commit it
                results[idx[j]] = self._finish(outputs[j], contexts[j], gen_kwargs, until)

            self._generate(seqs, until, max_gen, selector, bar, outputs=outputs, on_done=finish)
            for j, i in enumerate(idx):
                if results[i] is None:
                    finish(j)
        bar.close()
        return results  # type: ignore[return-value]

    def _finish(self, tokens: list[int], context: str, gen_kwargs: dict, until: list[str]) -> str:
        """Decode + post-process exactly as ``HFLM.generate_until`` does."""
        if isinstance(self.think_end_token, int):
            marks = [k for k, t in enumerate(tokens) if t == self.think_end_token]
            if marks:
                tokens = tokens[marks[-1] + 1 :]
        text = self.tok_decode(tokens)
        if isinstance(self.think_end_token, int):
            text = text.lstrip()
        text = postprocess_generated_text(
            generation=text, stop=until,
            think_end_token=self.think_end_token if isinstance(self.think_end_token, str) else None,
        )
        self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return text

    def _eos_ids(self) -> set[int]:
        ids: set[int] = {int(self.eot_token_id)}
        cfg = getattr(self.model, "generation_config", None)
        eos = getattr(cfg, "eos_token_id", None)
        if eos is not None:
            ids |= {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
        return ids

    @torch.no_grad()
    def _generate(
        self, seqs: list[tuple[int, ...]], until: list[str], max_gen: int, selector: "TokenSelector", bar: Any,
        outputs: list[list[int]] | None = None, on_done: Any = None,
    ) -> list[list[int]]:
        """Continuous batching over prefix groups; returns generated token ids per sequence
        (``on_done(j)`` is called as sequence ``j`` finishes)."""
        from evalkit.models.fastlm.decode import Decoder

        decoder = Decoder(self, until, max_gen, selector, self._eos_ids(), on_done=on_done)
        outputs = outputs if outputs is not None else [[] for _ in seqs]
        limits = [len(s) - 1 for s in seqs]
        groups = merge_small_groups(plan_groups(seqs, limits, self.min_prefix), seqs, limits, self.gen_batch, self.min_prefix)
        for group in groups:
            plen, prefix = 0, None
            if group.prefix_len:
                plen, prefix = self._prefix_kv(seqs[group.members[0]][: group.prefix_len])
            decoder.run(group.members, {i: list(seqs[i][plen:]) for i in group.members}, plen, prefix, outputs, bar)
        return outputs
