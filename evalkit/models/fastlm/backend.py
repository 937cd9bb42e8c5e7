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

**On a CUDA device** (and only there: ``decode_path="auto"`` picks it iff ``self.device.type ==
"cuda"``) generation runs :class:`~evalkit.models.fastlm.cuda_decode.SlotDecoder` over a
preallocated slot cache (:mod:`~evalkit.models.fastlm.static_cache`) with device-side stop state,
a host readback every ``readback_every`` steps and CUDA-graph-captured decode steps; prefill
widths are padded to buckets (:mod:`~evalkit.models.fastlm.buckets`) and log-likelihood batches
are scored with one device->host copy per batch instead of two syncs per request. Why: on one
H200 this backend was 1.36x slower than stock ``lm_eval --model hf`` on MMLU and decoded 157
tokens/s with the CPU-tuned path. The CUDA path is unmeasured until ``make gpu-check`` runs on a
GPU. On CPU nothing changes: same code path, same defaults.
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

from evalkit.models.fastlm.buckets import LEN_MULTIPLE, bucket_len
from evalkit.models.fastlm.kvcache import BufferedCache, expand_prefix, merge_batches
from evalkit.models.fastlm.prefix import MIN_PREFIX, PrefixCache, merge_small_groups, plan_groups
from evalkit.models.fastlm.sampling import TokenSelector

KV = list[tuple[torch.Tensor, torch.Tensor]]
SUPPORTED_GEN_KEYS = {"do_sample", "temperature", "top_p", "top_k"}
# (token_budget, max_rows, gen_batch) when not given. CPU: tuned for CPU caches (unchanged).
# CUDA: a GPU forward costs about the same at 8 rows as at 128, so batches are much larger; the
# slot cache caps gen_batch further by free memory (kv_mem_fraction of torch.cuda.mem_get_info).
CPU_DEFAULTS = (4096, 64, 48)
CUDA_DEFAULTS = (32768, 256, 256)


class FastLM(HFLM):
    """``HFLM`` with shared-prefix reuse and continuous batching (see module docstring)."""

    # read by PersistentLM: bigger resumable chunks, grouped by context, give the scheduler more to share
    request_chunks = {"loglikelihood": 512, "generate_until": 96}
    partial_results = True  # every answer goes to cache_hook.add_partial as it finishes (commits <= 64)
    prefers_prefix_order = True

    def __init__(
        self,
        *args: Any,
        token_budget: int | None = None,
        max_rows: int | None = None,
        gen_batch: int | None = None,
        min_prefix: int = MIN_PREFIX,
        decode_path: str = "auto",
        readback_every: int = 8,
        cuda_graphs: bool = True,
        len_bucket: int = LEN_MULTIPLE,
        kv_mem_fraction: float = 0.4,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        on_cuda = torch.device(self.device).type == "cuda"
        budget0, rows0, gen0 = CUDA_DEFAULTS if on_cuda else CPU_DEFAULTS
        self.token_budget = int(token_budget if token_budget is not None else budget0)  # input tokens per prefill pass
        self.max_rows = int(max_rows if max_rows is not None else rows0)  # rows per log-likelihood forward pass
        self.gen_batch = int(gen_batch if gen_batch is not None else gen0)  # concurrent generation rows
        self.min_prefix = int(min_prefix)
        # CUDA path knobs ("auto": the slot decoder iff on CUDA; "static"/"buffered" force one, for tests)
        if decode_path not in ("auto", "static", "buffered"):
            raise ValueError(f"decode_path must be auto, static or buffered, not {decode_path!r}")
        self.static_path = decode_path == "static" or (decode_path == "auto" and on_cuda)
        self.readback_every = int(readback_every)  # decode steps between host readbacks (CUDA path)
        self.cuda_graphs = bool(cuda_graphs)  # capture decode steps as CUDA graphs (greedy, CUDA only)
        self.len_bucket = int(len_bucket)  # prefill widths / cache length rounded up to this (CUDA path)
        # share of free GPU memory the slot cache may take: admission prefills build a temporary
        # cache up to the slot cache's size (prefix expanded per row), so <= ~0.45 leaves room for both
        self.kv_mem_fraction = float(kv_mem_fraction)
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
        self, suffixes: list[list[int]], prefix_len: int, prefix: KV | None, keep: int, extra_capacity: int = 0,
        pad_to: int | None = None,
    ) -> tuple[torch.Tensor, BufferedCache | None, torch.Tensor, torch.Tensor]:
        """Run left-padded suffixes after a shared prefix; logits of the last ``keep`` positions.

        ``pad_to`` (CUDA path only) left-pads to at least that width, so batches share shapes.
        Returns (logits ``[B, keep, V]``, cache or None, 2-D attention mask, next position ids).
        """
        t0 = time.perf_counter()
        b, width = len(suffixes), max(len(s) for s in suffixes)
        if pad_to is not None:
            width = max(width, int(pad_to))
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
            if self.static_path:  # budget against the padded (bucketed) width that will run
                lengths = {i: bucket_len(n, self.len_bucket) for i, n in lengths.items()}
            for batch in self._batches(group.members, lengths, self.max_rows):
                keep = max(keep_of[i] for i in batch)
                if self.static_path:
                    self._score_batch(batch, rows, plen, prefix, keep, readers, conts, requests, results)
                    bar.update(sum(len(readers[i]) for i in batch))
                    continue
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

    @torch.no_grad()
    def _score_batch(self, batch: list[int], rows: list[tuple[int, ...]], plen: int, prefix: KV | None, keep: int,
                     readers: list[list[int]], conts: list[list[int]], requests: Any, results: list) -> None:
        """CUDA path: score every request reading ``batch`` with one device->host copy.

        The CPU path does ``float(...)`` and ``bool(...)`` per request, two device syncs each; on a
        GPU each one drains the queue. Here continuations are padded into one ``[n, keep]`` index
        tensor, gathered and reduced on the device, and read back together."""
        suffixes = [list(rows[i][plen:]) for i in batch]
        pad_to = bucket_len(max(len(s) for s in suffixes), self.len_bucket)
        logits, _, _, _ = self._prefill(suffixes, plen, prefix, keep, pad_to=pad_to)
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)  # [B, keep, V]
        row_of, tok, valid = [], [], []
        order = [(b, r) for b, i in enumerate(batch) for r in readers[i]]
        for b, r in order:
            n = len(conts[r])
            row_of.append(b)
            tok.append([0] * (keep - n) + conts[r])
            valid.append([False] * (keep - n) + [True] * n)
        dev = logprobs.device
        lp = logprobs[torch.tensor(row_of, device=dev)]  # [n, keep, V]
        tok_t = torch.tensor(tok, dtype=torch.long, device=dev)
        valid_t = torch.tensor(valid, dtype=torch.bool, device=dev)
        picked = lp.gather(-1, tok_t[..., None]).squeeze(-1)
        score = torch.where(valid_t, picked, torch.zeros_like(picked)).sum(-1)
        greedy = ((lp.argmax(dim=-1) == tok_t) | ~valid_t).all(-1)
        scores, greedies = score.tolist(), greedy.tolist()  # one transfer for the batch
        for k, (_, r) in enumerate(order):
            results[r] = (float(scores[k]), bool(greedies[k]))
            if requests[r][0] is not None:
                self.cache_hook.add_partial("loglikelihood", requests[r][0], results[r])

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

        decoder: Any = None
        if self.static_path:  # CUDA (or forced): slot cache, device-side stop state, graphs
            from evalkit.models.fastlm.cuda_decode import SlotDecoder, supports_slot_decode

            if supports_slot_decode(self.model):  # sliding-window / hybrid models keep the Decoder
                decoder = SlotDecoder(self, until, max_gen, selector, self._eos_ids(), on_done=on_done)
        if decoder is None:
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
