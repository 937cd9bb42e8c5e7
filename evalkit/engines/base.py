"""What an engine is, and the lazily loaded model every engine in a run shares.

An engine turns one suite entry into (1) a frozen, hashable resolved config — before any model
is loaded, so bad input fails fast — and (2) samples + metrics in the store. Engines register
by name (``engine:`` in a suite entry); the runner knows nothing engine-specific.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalkit.errors import EvalkitError
from evalkit.models.loader import LoadedModel, ResolvedWeights
from evalkit.models.spec import ModelSpec
from evalkit.store import RunStore
from evalkit.suite.config import SuiteEntry


@dataclass
class FrozenEntry:
    """An entry resolved against data and engine: exactly what will run."""

    entry: SuiteEntry
    limit: int | None
    configs: dict[str, Any]  # engine-specific, e.g. lm-eval task name -> full task config
    canonical: dict[str, Any]  # machine-independent form of ``configs`` (hashed)
    files: dict[str, str] = field(default_factory=dict)  # data path -> sha256
    source: str = "local"  # "local" or "hub"
    note: str = ""
    split: dict[str, dict[str, list[int]]] | None = None  # task -> {"select": doc ids, "confirm": doc ids}


@dataclass(frozen=True)
class RunContext:
    store: RunStore
    run_id: str
    batch_size: int = 8
    progress: bool = True
    part: str = "all"  # "confirm": split entries run their confirmation half only (evalkit.suite.split)


class ModelHandle:
    """One model per run, loaded on first use and shared by every engine that needs it."""

    def __init__(self, spec: ModelSpec, weights: ResolvedWeights, *, dtype: str, device: str, batch_size: int) -> None:
        self.spec = spec
        self.weights = weights
        self.dtype = dtype
        self.device = device
        self.batch_size = batch_size

    @functools.cached_property
    def hf(self) -> LoadedModel:
        from evalkit.models.loader import load_causal_lm

        return load_causal_lm(self.spec, dtype=self.dtype, device=self.device, weights=self.weights)

    @functools.cached_property
    def lmeval(self) -> Any:
        from evalkit.models.lmeval_lm import build_lm

        loaded = None if self.spec.kind in ("openai", "vllm") else self.hf
        backend = os.environ.get("EVALKIT_LM_BACKEND", "fast")  # "hf": lm-eval's stock scheduler
        return build_lm(self.spec, loaded=loaded, batch_size=self.batch_size, dtype=self.dtype, device=self.device,
                        backend=backend)


class Engine(Protocol):
    name: str

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry: ...

    def run(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None: ...


_ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> Engine:
    _ENGINES[engine.name] = engine
    return engine


def get_engine(name: str) -> Engine:
    _load_builtin()
    if name not in _ENGINES:
        raise EvalkitError(f"engine '{name}': unknown (known: {', '.join(sorted(_ENGINES))})")
    return _ENGINES[name]


def engine_names() -> list[str]:
    _load_builtin()
    return sorted(_ENGINES)


def _load_builtin() -> None:
    import evalkit.engines.lmeval.engine  # noqa: F401  (registers "lm-eval")

    try:
        import evalkit.engines.inspect.engine  # noqa: F401  (registers "inspect")
    except ImportError:
        pass
    try:
        import evalkit.engines.judge_engine  # noqa: F401  (registers "judge")
    except ImportError:
        pass
