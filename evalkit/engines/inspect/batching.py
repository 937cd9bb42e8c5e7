"""Batched generation on one loaded transformers model, with one random stream per request.

Why not ``model.generate(do_sample=True)`` on a batch: it draws every row's tokens from the one
global torch RNG, so what a request samples depends on which other requests happened to share
its batch -- and with inspect-ai running samples concurrently that changes from run to run.
Here every request carries its own seed; a logits processor turns each step's logits into
that row's sampled token (temperature, then top-p, then a draw from the row's own
``torch.Generator``) and greedy decoding takes it. A request's random draws therefore do not
depend on the other rows of its batch. Temperature 0 is plain greedy decoding.

Requests are collected by one worker thread (the model is not thread-safe) and run together
when they share generation settings: left-padded, at most ``batch_size`` at a time. The worker
gathers everything that arrives until ``wait_s`` passes without a new request (inspect's own hf
provider waits 2 s), then cuts batches from the pending requests in a canonical order (settings,
prompt, seed). bf16 matmuls on CPU are not batch-invariant (a padded or differently sized batch
moves logits by a few bf16 ulps and flips some draws), so exact reruns need the same batches:
the engine lets every sample of an eval generate at once and announces how many requests are
coming (:meth:`BatchedGenerator.expect`: those not already in the generate cache), so the first
batch is cut only when all are pending. Then the batches, and so the samples, are the same on
every run on the same machine -- and a resumed run, whose finished batches come from the cache,
cuts the remaining ones exactly as the uninterrupted run did. The canonical order also puts the
n epochs of one problem in one batch: no padding within a problem.

Not :func:`evalkit.models.generate.sample_completions` (one generator per *batch*, temperature
1 only, for KL): per-request streams, temperature/top-p and stop strings are this module's
reason to exist. It shares the model layer's building blocks (:func:`~evalkit.models.generate.left_pad`,
:func:`~evalkit.models.generate.eos_ids`) and keeps its own pad rule (pad, else EOS).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class GenParams:
    """Settings shared by every row of a batch (requests with different ones never mix)."""

    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    add_special_tokens: bool = False  # False when the prompt was rendered by a chat template


@dataclass(frozen=True)
class Completion:
    text: str  # decoded, special tokens removed, cut before the first stop sequence
    input_tokens: int
    output_tokens: int
    stop_reason: str  # "stop" (eos or a stop sequence) or "max_tokens"
    seconds: float  # wall time of the batch it ran in


@dataclass
class _Request:
    prompt: str
    seed: int
    params: GenParams
    future: Future[Completion]


class RowSampler:
    """A logits processor that samples each row's next token from its own generator.

    Returns logits that are -inf everywhere except the drawn token, so greedy decoding picks it.
    """

    def __init__(self, generators: list[Any], temperature: float, top_p: float) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = torch.softmax(sorted_logits, dim=-1)
            drop = probs.cumsum(dim=-1) - probs > self.top_p  # never drops the most likely token
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
        probs = torch.softmax(logits, dim=-1)
        picks = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(1, torch.stack(picks), 0.0)


class BatchedGenerator:
    """Owns the worker thread that runs queued requests in batches on one model."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, wait_s: float = 0.1,
                 max_wait_s: float = 2.0, patience_s: float = 10.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s
        self.patience_s = patience_s
        self._expected = 0
        self.batches_run = 0  # for tests and logs: how many model.generate calls were made
        self.last_batches: list[list[int]] = []  # seeds of the recent batches (diagnostics)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop_criteria: dict[tuple[str, ...], Any] = {}

    # ------------------------------------------------------------------ queueing
    def submit(self, prompt: str, seed: int, params: GenParams) -> Future[Completion]:
        future: Future[Completion] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="evalkit-generate", daemon=True)
                self._thread.start()
            self._queue.put(_Request(prompt, seed, params, future))
        return future

    def close(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
            self._thread = None

    def expect(self, n: int) -> None:
        """Announce that ``n`` requests are about to arrive together (an eval's uncached
        generations): no batch is cut until all of them are pending, or until ``patience_s``
        passes without one arriving, so the batches do not depend on arrival timing."""
        self._expected = max(0, int(n))

    def _work(self) -> None:
        pending: list[_Request] = []
        stopping = False
        while True:
            if not pending:
                if stopping:
                    return
                item = self._queue.get()
                if item is None:
                    return
                self._take(item, pending)
            stopping = self._collect(pending) or stopping
            # canonical order: the same pending set always makes the same batches (bitwise
            # reproducible runs), and equal prompts (the epochs of one problem) share a batch
            pending.sort(key=lambda r: (r.params, r.prompt, r.seed))
            key = pending[0].params
            batch = [r for r in pending if r.params == key][: self.batch_size]
            taken = {id(r) for r in batch}
            pending = [r for r in pending if id(r) not in taken]
            try:
                results = self.generate_batch([r.prompt for r in batch], [r.seed for r in batch], key)
            except BaseException as exc:  # hand the error to every waiting request
                for r in batch:
                    r.future.set_exception(exc)
                continue
            for r, res in zip(batch, results, strict=True):
                r.future.set_result(res)

    def _take(self, item: _Request, pending: list[_Request]) -> None:
        pending.append(item)
        if self._expected > 0:
            self._expected -= 1

    def _collect(self, pending: list[_Request]) -> bool:
        """Move queued requests into ``pending``: every announced one (see :meth:`expect`),
        then any others until none arrives for ``wait_s`` (for at most ``max_wait_s``).
        Returns True when close() was called."""
        started = time.monotonic()
        while True:
            waiting = self._expected > 0
            if not waiting and time.monotonic() - started > self.max_wait_s:
                return False
            try:
                item = self._queue.get(timeout=self.patience_s if waiting else self.wait_s)
            except queue.Empty:
                self._expected = 0  # an announced request never came: stop waiting for it
                return False
            if item is None:
                return True
            self._take(item, pending)

    # ---------------------------------------------------------------- generation
    def generate_batch(self, prompts: list[str], seeds: list[int], params: GenParams) -> list[Completion]:
        """Generate for ``prompts`` in one left-padded batch (synchronous; any thread)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        from evalkit.models.generate import left_pad

        started = time.monotonic()
        tok = self.tokenizer
        device = self.model.device
        encoded = [tok(p, add_special_tokens=params.add_special_tokens)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in encoded)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        input_ids, attention, _ = left_pad(encoded, pad_id, device)  # generate() derives positions itself
        eos_ids = self._eos_ids()
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, eos_token_id=eos_ids)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            gens = [torch.Generator(device=device).manual_seed(int(s) % (2**63)) for s in seeds]
            processors.append(RowSampler(gens, params.temperature, params.top_p))
        stopping = StoppingCriteriaList([self._stop_criterion(params.stop)] if params.stop else [])
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention,
                                      generation_config=config, logits_processor=processors,
                                      stopping_criteria=stopping)
        self.batches_run += 1
        self.last_batches = [*self.last_batches[-63:], list(seeds)]
        new = out[:, width:].tolist()
        seconds = time.monotonic() - started
        ends = {*eos_ids, pad_id}  # finished rows are filled with pad after their last token
        return [self._completion(row, len(ids), params, ends, seconds) for row, ids in zip(new, encoded, strict=True)]

    def _completion(self, row: list[int], n_in: int, params: GenParams, ends: set[int], seconds: float) -> Completion:
        ended = next((i for i, t in enumerate(row) if t in ends), None)
        tokens = row if ended is None else row[:ended]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        stopped = ended is not None or cut >= 0 or len(tokens) < params.max_new_tokens
        return Completion(text=text, input_tokens=n_in, output_tokens=len(tokens) + (ended is not None),
                          stop_reason="stop" if stopped else "max_tokens", seconds=seconds)

    def _eos_ids(self) -> list[int]:
        from evalkit.models.generate import eos_ids

        return sorted(eos_ids(self.model, self.tokenizer))

    def _stop_criterion(self, stop: tuple[str, ...]) -> Any:
        """StopStringCriteria precomputes tables over the vocabulary: build each once."""
        if stop not in self._stop_criteria:
            from transformers import StopStringCriteria

            self._stop_criteria[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria[stop]
