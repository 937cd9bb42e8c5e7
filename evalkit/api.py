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
    >>> samples, metrics = api.load_run("runs/evalkit.sqlite", "latest")   # pandas DataFrames
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from evalkit.models.handle import ModelHandle, Runtime, get_model, resolve_runtime
from evalkit.runner import EvalSettings, RunResult, run_suite
from evalkit.store import RunStore, default_store_path
from evalkit.suite.config import Suite, load_suite
from evalkit.suite.freeze import FrozenSuite, freeze

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.kl import KLResult
    from evalkit.analysis.paired import Comparison

__all__ = [
    "EvalSettings", "FrozenSuite", "ModelHandle", "RunFrames", "RunResult", "RunStore", "Runtime", "Suite",
    "compare", "evaluate", "freeze_suite", "get_model", "load_run", "load_suite", "measure_kl", "metrics_frame",
    "open_store", "parse_tags", "resolve_runtime", "runs_frame", "samples_frame",
]


def open_store(path: str | None = None, *, create: bool = True) -> RunStore:
    """The SQLite run store (``EVALKIT_STORE`` or ``runs/evalkit.sqlite`` by default).
    ``create=False`` for reading: a missing file is an error, and nothing is created."""
    return RunStore(path or default_store_path(), create=create)


def evaluate(settings: EvalSettings, store: RunStore, say: Callable[[str], None] | None = None) -> RunResult:
    """Run a suite on a model into the store (:func:`evalkit.runner.run_suite`): reuses a complete run
    of the same identity, resumes an unfinished one, else evaluates."""
    return run_suite(settings, store) if say is None else run_suite(settings, store, say)


def freeze_suite(suite: str | Suite, data_dir: str | None = None, limit: int | None = None,
                 include_path: Sequence[str] = ()) -> FrozenSuite:
    """A suite resolved against its data into the exact configs that will run, with its hash
    (:func:`evalkit.suite.freeze.freeze`); ``include_path``: extra lm-eval task folders (like
    ``evalkit eval --include-path``). IFEval's sentence-splitter data is made present first."""
    from evalkit.data.punkt import ensure_punkt

    ensure_punkt()
    return freeze(load_suite(suite) if isinstance(suite, str) else suite, data_dir, limit,
                  include_path=tuple(include_path))


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


def parse_tags(items: Iterable[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (the ``--tag`` flags) as a dict; a later key replaces an earlier one.
    The value may be empty or contain ``=``; a missing ``=`` or an empty key is an :class:`EvalkitError`."""
    from evalkit.errors import EvalkitError

    tags: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EvalkitError(f"--tag '{item}': expected KEY=VALUE (e.g. --tag lr=3e-4)")
        tags[key.strip()] = value.strip()
    return tags


# ------------------------------------------------------------------ pandas
class RunFrames(NamedTuple):
    """What :func:`load_run` returns; unpacks as ``samples, metrics``."""

    samples: pd.DataFrame
    metrics: pd.DataFrame


def _as_store(store: RunStore | str | None) -> RunStore:
    return store if isinstance(store, RunStore) else open_store(store, create=False)


def runs_frame(store: RunStore | str | None = None, *, model: str | None = None, suite: str | None = None,
               name: str | None = None, tags: dict[str, str] | None = None, include_failed: bool = True,
               limit: int | None = None) -> pd.DataFrame:
    """One row per run, newest first, filtered as :meth:`RunStore.list_runs` (``model``/``suite``/``name``:
    exact or glob; ``tags``: all must match). Columns: run_id, name, status, model, model_hash, suite,
    suite_hash, created, finished (UTC timestamps), attempts, tags (a dict) and one ``tag.<key>``
    column per tag key present."""
    import pandas as pd

    runs = _as_store(store).list_runs(limit, include_failed=include_failed, model=model, suite=suite, name=name,
                                      tags=tags)
    rows = [{"run_id": r.run_id, "name": r.name, "status": r.status, "model": r.model_spec,
             "model_hash": r.model_hash, "suite": r.suite_name, "suite_hash": r.suite_hash,
             "created": r.created_at, "finished": r.finished_at, "attempts": r.attempts, "tags": r.tags}
            for r in runs]
    df = pd.DataFrame(rows, columns=["run_id", "name", "status", "model", "model_hash", "suite", "suite_hash",
                                     "created", "finished", "attempts", "tags"])
    for col in ("created", "finished"):
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    for key in sorted({k for r in runs for k in r.tags}):
        df[f"tag.{key}"] = [r.tags.get(key) for r in runs]
    return df


def samples_frame(store: RunStore | str | None = None, run: str = "latest") -> pd.DataFrame:
    """One row per sample of ``run`` (id, unique prefix or ``latest``): run_id, entry, task, doc_id,
    prompt, target, responses, filtered, loglik, metrics, doc, extra (nested values as Python objects),
    plus one ``metric.<name>`` column per per-sample metric (NaN where a task lacks it)."""
    import pandas as pd

    st = _as_store(store)
    run_id = st.get_run(run).run_id
    rows = st.samples(run_id)
    df = pd.DataFrame(rows, columns=["run_id", "entry", "task", "doc_id", "prompt", "target", "responses",
                                     "filtered", "loglik", "metrics", "doc", "extra"])
    for key in sorted({k for r in rows for k in (r["metrics"] or {})}):
        df[f"metric.{key}"] = pd.to_numeric(pd.Series([(r["metrics"] or {}).get(key) for r in rows], dtype=object),
                                            errors="coerce")
    return df


def metrics_frame(store: RunStore | str | None = None, run: str = "latest") -> pd.DataFrame:
    """The aggregate metrics of ``run``: run_id, entry, task, metric, value, stderr, n (one row each)."""
    import pandas as pd

    st = _as_store(store)
    run_id = st.get_run(run).run_id
    df = pd.DataFrame(st.metrics(run_id), columns=["entry", "task", "metric", "value", "stderr", "n"])
    df.insert(0, "run_id", run_id)
    return df


def load_run(store: RunStore | str | None = None, run: str = "latest") -> RunFrames:
    """The one call for analysis in pandas: ``samples, metrics = api.load_run("runs/evalkit.sqlite", "latest")``.
    ``store``: a path, an open :class:`RunStore`, or ``None`` (``EVALKIT_STORE`` or ``runs/evalkit.sqlite``;
    never created). ``run``: id, unique prefix or ``latest``. See :func:`samples_frame`, :func:`metrics_frame`;
    :func:`runs_frame` lists runs (filter by model, suite, name, tags) to pick ids from."""
    st = _as_store(store)
    run_id = st.get_run(run).run_id  # "latest" resolved once, so both frames are of the same run
    return RunFrames(samples_frame(st, run_id), metrics_frame(st, run_id))
