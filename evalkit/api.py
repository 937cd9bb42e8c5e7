"""evalkit as a library: the few calls the command line and the training loop are built on.

Why a service layer: ``evalkit/cli.py`` parses flags and prints; ``trainloop`` drives rounds.
Both need the same operations — evaluate a model on a frozen suite, open the store, get a
model handle, measure KL, compare two runs — and neither should reach into the runner or an
engine to get them. Everything here is a thin, typed call into the module that owns the
mechanism (named in each docstring); heavy libraries are imported only when a call needs them.

    >>> from evalkit import api
    >>> store = api.open_store("runs/evalkit.sqlite")
    >>> result = api.evaluate(api.EvalSettings(model="smollm2-135m", suite="core", limit=4), store)
    >>> api.compare(store, "latest", result.run_id)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from evalkit.models.handle import ModelHandle, Runtime, get_model, resolve_runtime
from evalkit.runner import EvalSettings, RunResult, run_suite
from evalkit.store import RunStore, default_store_path
from evalkit.suite.config import Suite, load_suite
from evalkit.suite.freeze import FrozenSuite, freeze

if TYPE_CHECKING:
    from evalkit.analysis.kl import KLResult
    from evalkit.analysis.paired import Comparison

__all__ = [
    "EvalSettings", "FrozenSuite", "ModelHandle", "RunResult", "RunStore", "Runtime", "Suite",
    "compare", "evaluate", "freeze_suite", "get_model", "load_suite", "measure_kl", "open_store",
    "resolve_runtime",
]


def open_store(path: str | None = None, *, create: bool = True) -> RunStore:
    """The SQLite run store (``EVALKIT_STORE`` or ``runs/evalkit.sqlite`` by default).
    ``create=False`` for reading: a missing file is an error, and nothing is created."""
    return RunStore(path or default_store_path(), create=create)


def evaluate(settings: EvalSettings, store: RunStore, say: Callable[[str], None] | None = None) -> RunResult:
    """Run a suite on a model into the store (:func:`evalkit.runner.run_suite`): reuses a complete run
    of the same identity, resumes an unfinished one, else evaluates."""
    return run_suite(settings, store) if say is None else run_suite(settings, store, say)


def freeze_suite(suite: str | Suite, data_dir: str | None = None, limit: int | None = None) -> FrozenSuite:
    """A suite resolved against its data into the exact configs that will run, with its hash
    (:func:`evalkit.suite.freeze.freeze`); IFEval's sentence-splitter data is made present first."""
    from evalkit.data.punkt import ensure_punkt

    ensure_punkt()
    return freeze(load_suite(suite) if isinstance(suite, str) else suite, data_dir, limit)


def measure_kl(policy: str, ref: str, prompts: Sequence[str], *, max_new_tokens: int = 48, seed: int = 0,
               device: str = "auto", dtype: str = "float32", batch_size: int = 8,
               chat_template: bool = True) -> KLResult:
    """KL(policy || ref) on completions sampled from the policy (:func:`evalkit.analysis.kl.kl_divergence`)."""
    from evalkit.analysis.kl import kl_divergence

    return kl_divergence(policy, ref, prompts, max_new_tokens, seed, dtype=dtype, device=device,
                         batch_size=batch_size, chat_template=chat_template)


def compare(store: RunStore, run_a: str, run_b: str, **options: Any) -> Comparison:
    """Paired per-task deltas of two runs on the same frozen suite (:func:`evalkit.analysis.paired.compare_runs`)."""
    from evalkit.analysis.paired import compare_runs

    return compare_runs(store, run_a, run_b, **options)
