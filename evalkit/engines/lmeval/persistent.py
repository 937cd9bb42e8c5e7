"""A resumable LM: every model response is committed to the run store as it is computed.

lm-eval hands the model all of a task's requests in one call and keeps the answers in memory
until the end, so a killed run loses everything. :class:`PersistentLM` wraps any lm-eval LM,
splits each call into fixed, deterministic chunks (same order and composition on every
attempt, so batched bf16 numerics are identical), commits each chunk's answers to the store's
``request_cache``, and on a later attempt serves finished chunks from there. Final metrics of a
resumed run therefore equal an uninterrupted run's exactly.

Keys include the occurrence number of identical requests, so ``repeats`` (several samples of
the same prompt) stay distinct samples rather than one cached answer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections import Counter
from typing import Any

from tqdm.auto import tqdm

from lm_eval.api.model import LM

from evalkit.store import RunStore

CHUNK = {"loglikelihood": 64, "loglikelihood_rolling": 8, "generate_until": 16}


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
    ) -> None:
        super().__init__()
        self.inner = inner
        self.store = store
        self.run_id = run_id
        self.namespace = namespace
        # a backend that schedules its own batches asks for bigger chunks (more to share per call)
        preferred = getattr(inner, "request_chunks", None)
        self.chunk_sizes = {**CHUNK, **(preferred if isinstance(preferred, dict) else {}), **(chunk_sizes or {})}
        self.prefix_order = bool(getattr(inner, "prefers_prefix_order", False) is True)
        if os.environ.get("EVALKIT_REQUEST_CHUNK"):  # finer commits (tests, very slow models)
            self.chunk_sizes = {k: int(os.environ["EVALKIT_REQUEST_CHUNK"]) for k in self.chunk_sizes}
        self.progress = progress
        self.computed = 0  # requests actually sent to the model (tests use this)
        self.reused = 0  # requests served from the store

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
        bar = tqdm(
            total=len(requests), initial=done, desc=f"{self.namespace} {method}", unit="req",
            disable=not self.progress, dynamic_ncols=True,
        )
        try:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                todo = [i for i in chunk if results[i] is None]
                if not todo:
                    continue
                batch = [requests[i] for i in todo]
                if method == "generate_until":
                    _seed_chunk(keys[i] for i in todo)
                answers = fn(batch, disable_tqdm=True) if quiet else fn(batch)
                fresh = {}
                for i, ans in zip(todo, answers, strict=True):
                    value = list(ans) if isinstance(ans, tuple) else ans
                    results[i] = value
                    fresh[keys[i]] = value
                self.store.cache_put(self.run_id, fresh)
                self.computed += len(todo)
                bar.update(len(todo))
        finally:
            bar.close()
        return results
