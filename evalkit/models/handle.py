"""The one way to get a model: :func:`get_model` returns a :class:`ModelHandle` whose device,
dtype and lm-eval backend are resolved once, here.

Why one handle: before, the runner, the model loader and the local judge each turned
``auto`` into a device and a dtype, and ``EVALKIT_LM_BACKEND`` was read in two places, so the
identity a run was stored under and the settings its model actually ran with could disagree.
Now whatever runs a model — the eval engines, the judge, KL, the loop's sampling and its
training step — asks for a handle and reads ``handle.device`` / ``handle.dtype``; nobody
re-derives them. Weights resolve at once (cheap: a folder and its hash, so a run's identity is
known before anything is loaded); the transformers model and the lm-eval LM load on first use.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.models.hardware import resolve_device, resolve_dtype
from evalkit.models.loader import LoadedModel, ResolvedWeights, load_causal_lm, resolve_weights
from evalkit.models.spec import ModelSpec, parse_model

BACKENDS = ("fast", "hf")


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs, with every ``auto`` already decided."""

    device: str  # "cpu", "cuda", "cuda:N"; "remote" for openai: servers
    dtype: str  # "bfloat16", "float16", "float32"; "remote" for openai: servers
    backend: str  # lm-eval scheduler: "fast" (evalkit's FastLM), "hf" (stock HFLM), "local-completions", "vllm"


def default_backend() -> str:
    """The lm-eval scheduler for in-process weights: ``EVALKIT_LM_BACKEND`` (``fast`` or ``hf``), read only here."""
    backend = os.environ.get("EVALKIT_LM_BACKEND", "fast")
    if backend not in BACKENDS:
        raise EvalkitError(f"EVALKIT_LM_BACKEND={backend!r}: choose fast or hf")
    return backend


def resolve_runtime(spec: ModelSpec, device: str | None = "auto", dtype: str | None = "auto",
                    backend: str | None = None) -> Runtime:
    """Decide device, dtype and backend for ``spec`` once (see module docstring)."""
    if spec.kind == "openai":
        return Runtime("remote", "remote", "local-completions")
    if spec.kind == "vllm":  # vLLM owns its GPU; dtype auto -> bfloat16 like every GPU run
        return Runtime("cuda", resolve_dtype(dtype, "cuda"), "vllm")
    dev = resolve_device(device)
    chosen = backend or default_backend()
    if chosen not in BACKENDS:
        raise EvalkitError(f"lm-eval backend '{chosen}': choose fast or hf")
    return Runtime(dev, resolve_dtype(dtype, dev), chosen)


class ModelHandle:
    """One model: its spec, resolved weights and runtime; loaded lazily, shared by everything that uses it."""

    def __init__(self, spec: ModelSpec, weights: ResolvedWeights, runtime: Runtime, *, batch_size: int = 8) -> None:
        self.spec = spec
        self.weights = weights
        self.runtime = runtime
        self.batch_size = batch_size

    @property
    def device(self) -> str:
        return self.runtime.device

    @property
    def dtype(self) -> str:
        return self.runtime.dtype

    @property
    def backend(self) -> str:
        return self.runtime.backend

    @property
    def name(self) -> str:
        return self.spec.raw

    def _require_local(self) -> None:
        if self.spec.kind in ("openai", "vllm"):
            raise EvalkitError(f"model '{self.spec.raw}': {self.spec.kind} models are served, not loaded in-process")

    @functools.cached_property
    def hf(self) -> LoadedModel:
        """The transformers model (a PEFT adapter merged in) and its tokenizer, in eval mode on ``device``."""
        self._require_local()
        return load_causal_lm(self.spec, dtype=self.dtype, device=self.device, weights=self.weights)

    def load_unmerged(self) -> LoadedModel:
        """A fresh load that keeps a PEFT adapter separate (KL scores the base inside ``disable_adapter()``)."""
        self._require_local()
        return load_causal_lm(self.spec, dtype=self.dtype, device=self.device, weights=self.weights,
                              merge_adapter=False)

    @functools.cached_property
    def lmeval(self) -> Any:
        """An lm-eval ``LM`` over this model (FastLM / HFLM in process; local-completions / vLLM when served)."""
        from evalkit.models.lmeval_lm import build_lm

        loaded = None if self.spec.kind in ("openai", "vllm") else self.hf
        return build_lm(self.spec, loaded=loaded, batch_size=self.batch_size, dtype=self.dtype, device=self.device,
                        backend=self.backend if self.backend in BACKENDS else "fast")


def get_model(model: str | ModelSpec, *, device: str | None = "auto", dtype: str | None = "auto",
              batch_size: int = 8, backend: str | None = None, weights: ResolvedWeights | None = None) -> ModelHandle:
    """A handle for any evalkit model string (or parsed spec); weights resolved now, loading deferred."""
    spec = model if isinstance(model, ModelSpec) else parse_model(model)
    runtime = resolve_runtime(spec, device, dtype, backend)
    return ModelHandle(spec, weights or resolve_weights(spec), runtime, batch_size=batch_size)
