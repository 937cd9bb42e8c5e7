"""A resumable LM: every model response is committed to the run store as it is computed.

lm-eval hands the model all of a task's requests in one call and keeps the answers in memory
until the end, so a killed run loses everything. :class:`PersistentLM` wraps any lm-eval LM,
splits each call into fixed, deterministic chunks (same order and composition on every
attempt), commits answers to the store's ``request_cache`` as they finish, and on a later
attempt serves finished answers from there.

Two sizes, kept apart on purpose:
  * the **call** (chunk) size is the schedule: how many requests the backend sees at once.
    evalkit's FastLM asks for 512 log-likelihoods / 96 generations, because its shared-prefix
    reuse and continuous batching need a full queue (cutting generation calls to 64 would add a
    batch drain per 64 rows);
  * the **commit** size is what a kill can lose: at most :data:`MAX_COMMIT` (64) answers. Answers
    reach the store as the backend reports them through lm-eval's ``cache_hook.add_partial``
    (FastLM reports each row as it stops). A backend that does not report (no
    ``partial_results``) gets calls of at most 64, so the bound holds for every backend.

An uninterrupted run therefore computes exactly what it always did. A resumed run never
recomputes a committed answer; the rest of a chunk cut short is finished in a smaller call, so
those few answers equal an uninterrupted run's up to bf16 batch-composition noise (greedy) and
are other draws (sampling; chunks are seeded by their keys).

Keys include the occurrence number of identical requests, so ``repeats`` (several samples of
the same prompt) stay distinct samples rather than one cached answer.

``EVALKIT_REQUEST_CHUNK`` (``N``, or ``loglikelihood=N,generate_until=N``) sets the call size:
smaller for very slow models or tests, larger for benchmarks. ``commit_seconds`` records the
price of fine-grained commits (the engine stores it with each entry as ``commit_s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lm_eval.api.model import LM

from evalkit.engines.lmeval.progress import EntryProgress
from evalkit.store import RunStore

CHUNK = {"loglikelihood": 64, "loglikelihood_rolling": 8, "generate_until": 16}
MAX_COMMIT = 64  # requests per commit at most: what Ctrl-C can lose
CHUNK_ENV = "EVALKIT_REQUEST_CHUNK"


def chunk_sizes_from_env(base: dict[str, int], value: str | None) -> dict[str, int]:
    """Apply ``EVALKIT_REQUEST_CHUNK`` (``N`` or ``method=N,...``) to ``base``; bad values are errors."""
    from evalkit.errors import EvalkitError

    if not value:
        return dict(base)
    out = dict(base)
    try:
        if "=" not in value:
            out = {k: int(value) for k in base}
        else:
            for part in value.split(","):
                name, _, num = part.partition("=")
                if name.strip() not in base:
                    raise ValueError(f"unknown request type '{name.strip()}'")
                out[name.strip()] = int(num)
    except ValueError as exc:
        raise EvalkitError(f"{CHUNK_ENV}={value!r}: expected N or loglikelihood=N,generate_until=N ({exc})") from exc
    if any(v < 1 for v in out.values()):
        raise EvalkitError(f"{CHUNK_ENV}={value!r}: chunk sizes must be positive")
    return out


def _hash_args(method: str, args: Any) -> str:
    blob = json.dumps([method, args], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _seed_chunk(keys: Any) -> None:
    """Seed torch from the chunk's request keys, so sampled generations are reproducible and a
    resumed run samples exactly what an uninterrupted run would have."""
    import torch

    digest = hashlib.sha256("|".join(keys).encode()).hexdigest()
    torch.manual_seed(int(digest[:8], 16))


class PersistentLM(LM):
    def __init__(
        self,
        inner: LM,
        store: RunStore,
        run_id: str,
        namespace: str,
        *,
        chunk_sizes: dict[str, int] | None = None,
        progress: bool = True,
        bar: Any = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.store = store
        self.run_id = run_id
        self.namespace = namespace
        # a backend that schedules its own batches asks for bigger calls (more to share per call); it
        # must report answers as they finish (``partial_results``), or calls stay at MAX_COMMIT
        preferred = getattr(inner, "request_chunks", None)
        sizes = {**CHUNK, **(preferred if isinstance(preferred, dict) else {})}
        if getattr(inner, "partial_results", False) is not True:
            sizes = {k: min(v, MAX_COMMIT) for k, v in sizes.items()}
        self.chunk_sizes = {**chunk_sizes_from_env(sizes, os.environ.get(CHUNK_ENV)), **(chunk_sizes or {})}
        self.prefix_order = bool(getattr(inner, "prefers_prefix_order", False) is True)
        self.progress = progress
        self.bar = bar  # one bar per entry (evalkit.engines.lmeval.progress), shared by its calls
        self.computed = 0  # requests actually sent to the model (tests use this)
        self.reused = 0  # requests served from the store
        self.commits = 0  # store transactions of answers
        self.commit_seconds = 0.0  # time spent committing (the price of fine-grained resume)

    # ---- the three request types ------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [tuple(r) for r in self._run("loglikelihood", requests)]  # type: ignore[misc]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return self._run("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return self._run("generate_until", requests)

    # ---- delegation of everything lm-eval asks a model ---------------------------
    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.inner.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        return self.inner.tokenizer_name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.inner.chat_template(chat_template)

    @property
    def rank(self) -> int:
        return self.inner.rank

    @property
    def world_size(self) -> int:
        return self.inner.world_size

    @property
    def device(self) -> Any:
        return getattr(self.inner, "device", "cpu")

    def __getattr__(self, name: str) -> Any:  # anything else lm-eval probes (e.g. tokenizer)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # ---- the resumable core -------------------------------------------------------
    def _keys(self, method: str, requests: list[Any]) -> list[str]:
        seen: Counter[str] = Counter()
        keys = []
        for req in requests:
            h = _hash_args(method, req.args)
            seen[h] += 1
            keys.append(f"{self.namespace}|{method}|{h}|{seen[h]}")
        return keys

    def _order(self, method: str, requests: list[Any]) -> list[int]:
        """Longest first (as lm-eval's HF backend batches); same-context requests stay adjacent.

        For a prefix-sharing backend, lexicographic by context instead, so requests sharing a
        few-shot prompt land in the same chunk."""
        if self.prefix_order:
            return sorted(range(len(requests)), key=lambda i: (str(requests[i].args[0]), i))

        def length(i: int) -> int:
            args = requests[i].args
            return len(args[0]) + (len(args[1]) if method == "loglikelihood" and isinstance(args[1], str) else 0)

        return sorted(range(len(requests)), key=lambda i: (-length(i), str(requests[i].args[0]), i))

    def _run(self, method: str, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        keys = self._keys(method, requests)
        cached = self.store.cache_get(self.run_id, keys)
        results: list[Any] = [cached.get(k) for k in keys]
        done = sum(r is not None for r in results)
        self.reused += done
        order = self._order(method, requests)
        size = self.chunk_sizes[method]
        fn = getattr(self.inner, method)
        quiet = "disable_tqdm" in inspect.signature(fn).parameters
        own_bar = self.bar is None
        bar = self.bar if not own_bar else EntryProgress(self.namespace, self.progress)
        bar.add(len(requests), done)
        try:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                todo = [i for i in chunk if results[i] is None]
                if not todo:
                    continue
                batch = [requests[i] for i in todo]
                if method == "generate_until":
                    _seed_chunk(keys[i] for i in todo)
                sink = _CommitSink(self, method, requests, keys, todo, results, bar)
                with sink.hooked(self.inner):
                    answers = fn(batch, disable_tqdm=True) if quiet else fn(batch)
                for i, ans in zip(todo, answers, strict=True):  # the call's answers are authoritative
                    sink.take(i, ans)
                sink.flush()
        finally:
            if own_bar:
                bar.close()
        return results

    def _commit(self, items: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.store.cache_put(self.run_id, items)
        self.commit_seconds += time.perf_counter() - t0
        self.commits += 1
        self.computed += len(items)


class _CommitSink:
    """Collects one chunk's answers as the backend reports them and commits every ``MAX_COMMIT``.

    Backends report each finished request through lm-eval's ``cache_hook.add_partial`` (the hook
    lm-eval's own ``CachingLM`` uses); a report is matched to a pending request of this chunk by
    the hash of its arguments (identical requests: first pending occurrence). Reports that match
    nothing are ignored; whatever the hook missed is taken from the call's return value.
    """

    def __init__(self, plm: PersistentLM, method: str, requests: list[Any], keys: list[str], todo: list[int],
                 results: list[Any], bar: Any) -> None:
        self.plm, self.method, self.keys, self.results, self.bar = plm, method, keys, results, bar
        self.pending: dict[str, list[int]] = {}
        for i in todo:
            self.pending.setdefault(_hash_args(method, requests[i].args), []).append(i)
        self.buffer: dict[str, Any] = {}
        self.taken: set[int] = set()

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if attr != self.method:
            return
        waiting = self.pending.get(_hash_args(attr, req))
        if waiting:
            self.take(waiting.pop(0), res)

    def take(self, i: int, answer: Any) -> None:
        value = list(answer) if isinstance(answer, tuple) else answer
        self.results[i] = value
        if i in self.taken:
            return
        self.taken.add(i)
        self.buffer[self.keys[i]] = value
        if len(self.buffer) >= MAX_COMMIT:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            n = len(self.buffer)
            self.plm._commit(self.buffer)
            self.buffer = {}
            self.bar.advance(n)

    @contextlib.contextmanager
    def hooked(self, inner: Any) -> Iterator[None]:
        previous = getattr(inner, "cache_hook", None)
        try:
            inner.cache_hook = self
        except AttributeError:  # a backend that does not take hooks: commits at the end of the chunk
            yield
            return
        try:
            yield
        finally:
            inner.cache_hook = previous
