"""What an engine is and what it is handed: the frozen entry, the run's model, the run context.

An engine turns one suite entry into (1) a frozen, hashable resolved config — before any model
is loaded, so bad input fails fast — and (2) samples + metrics in the store. Engines are found
by name (``engine:`` in a suite entry) through :data:`evalkit.registry.ENGINES`, which imports
an engine's module only when it is used; the runner knows nothing engine-specific. Adding an
engine: write a module with an object that has ``name``, ``freeze`` and ``run`` (the
:class:`Engine` protocol) and add its ``"module:attr"`` to the registry (or declare an
``evalkit.engines`` entry point from another package). The model an engine receives is a
:class:`evalkit.models.handle.ModelHandle` (device, dtype and backend already resolved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from evalkit.models.handle import ModelHandle
from evalkit.registry import ENGINES
from evalkit.store import RunStore
from evalkit.suite.config import SuiteEntry
from evalkit.suite.freeze import FrozenEntry

__all__ = ["Engine", "FrozenEntry", "ModelHandle", "RunContext", "engine_names", "get_engine", "register_engine"]


@dataclass(frozen=True)
class RunContext:
    store: RunStore
    run_id: str
    batch_size: int = 8
    progress: bool = True
    part: str = "all"  # "confirm": split entries run their confirmation half only (evalkit.suite.split)


class Engine(Protocol):
    name: str

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry: ...

    def run(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None: ...


def register_engine(engine: Engine) -> Engine:
    """Register an engine object directly (plugins usually declare an ``evalkit.engines`` entry point)."""
    return ENGINES.register(engine.name, engine)


def get_engine(name: str) -> Engine:
    """The engine for a suite entry's ``engine:`` name, imported on first use."""
    return ENGINES.get(name)


def engine_names() -> list[str]:
    return ENGINES.names()
