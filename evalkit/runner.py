"""Run a frozen suite on a model into the store: the spine of ``evalkit eval``.

Order of work is chosen so that bad input costs nothing: parse the model string, load and
freeze the suite (validates every data file), resolve the weights hash, then find or create
the run; only then load the model. A run's identity is (weights hash, suite hash, settings);
starting the same identity again resumes the unfinished run (finished entries are skipped,
finished model calls come from the request cache) instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

from evalkit import __version__
from evalkit.data.punkt import ensure_punkt
from evalkit.env import set_offline
from evalkit.errors import EvalkitError
from evalkit.engines.base import ModelHandle, RunContext, get_engine
from evalkit.models.spec import ModelSpec, parse_model
from evalkit.store import RunStore
from evalkit.suite.config import load_suite
from evalkit.suite.freeze import FrozenSuite, freeze


@dataclass(frozen=True)
class EvalSettings:
    model: str = "smollm2-135m"
    suite: str = "core"
    data_dir: str | None = None
    limit: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8
    progress: bool = True
    reuse_complete: bool = False  # return an existing complete run of this exact model + suite (the loop)
    part: str = "all"  # "confirm": entries with a confirm_fraction run their confirmation half only


@dataclass
class RunResult:
    run_id: str
    suite_hash: str
    resumed: bool
    metrics: list[dict[str, Any]]
    notes: dict[str, str]
    seconds: float


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "evalkit": __version__}
    for pkg in ("torch", "transformers", "lm_eval", "datasets", "peft", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def prepare(settings: EvalSettings) -> tuple[ModelSpec, FrozenSuite]:
    from evalkit.suite.split import PARTS

    if settings.part not in ("all", "confirm"):
        raise EvalkitError(f"part '{settings.part}': choose all or confirm (of {', '.join(PARTS)})")
    spec = parse_model(settings.model)
    suite = load_suite(settings.suite)
    if settings.limit is not None and settings.limit <= 0:
        raise EvalkitError(f"--limit {settings.limit}: must be a positive number of samples per task")
    frozen = freeze(suite, settings.data_dir, settings.limit)
    ensure_punkt()  # lm-eval's IFEval would try to download it at import
    if frozen.all_local and spec.is_local_weights:
        set_offline()
    return spec, frozen


def run_suite(settings: EvalSettings, store: RunStore) -> RunResult:
    """Evaluate ``settings.model`` on the frozen suite; resume an unfinished identical run."""
    started = time.time()
    _quiet_libraries()
    spec, frozen = prepare(settings)
    from evalkit.models.hardware import resolve_device, resolve_dtype
    from evalkit.models.loader import resolve_weights

    device = resolve_device(settings.device) if spec.kind not in ("openai",) else "remote"
    dtype = resolve_dtype(settings.dtype, device) if device != "remote" else "remote"
    weights = resolve_weights(spec)
    lm_backend = os.environ.get("EVALKIT_LM_BACKEND", "fast")  # cached answers of two schedulers never mix
    run_settings = {"limit": settings.limit, "dtype": dtype, "device": device, "batch_size": settings.batch_size,
                    "data_dir": settings.data_dir, "lm_backend": lm_backend, "part": settings.part}
    ident = [weights.weights_hash, frozen.suite_hash, dtype, settings.batch_size, lm_backend]
    if settings.part != "all":  # a confirmation-only run measures fewer items: never the same run
        ident.append(settings.part)
    identity_blob = json.dumps(ident, sort_keys=True)
    identity = hashlib.sha256(identity_blob.encode()).hexdigest()[:24]
    if settings.reuse_complete and (done := store.find_complete(identity)):
        return RunResult(run_id=done, suite_hash=frozen.suite_hash, resumed=True, metrics=store.metrics(done),
                         notes={}, seconds=time.time() - started)
    run_id = store.find_resumable(identity)
    resumed = run_id is not None
    if run_id:
        store.reopen_run(run_id)
    else:
        run_id = store.create_run(
            identity=identity, model_spec=spec.raw, model_hash=weights.weights_hash, suite_name=frozen.suite.name,
            suite_hash=frozen.suite_hash, suite=frozen.canonical(), settings=run_settings, versions=library_versions(),
        )
    notes: dict[str, str] = {}
    timings: dict[str, float] = {}
    model = ModelHandle(spec, weights, dtype=settings.dtype, device=settings.device, batch_size=settings.batch_size)
    ctx = RunContext(store=store, run_id=run_id, batch_size=settings.batch_size, progress=settings.progress,
                     part=settings.part)
    try:
        for fe in frozen.entries:
            if fe.note:
                notes[fe.entry.name] = fe.note
            if store.entry_status(run_id, fe.entry.name) == "complete":
                continue
            t0 = time.time()
            get_engine(fe.entry.engine).run(fe, model, ctx)
            timings[f"{fe.entry.name}_s"] = round(time.time() - t0, 2)
        timings["total_s"] = round(time.time() - started, 2)
        store.finish_run(run_id, timings)
    except BaseException as exc:  # KeyboardInterrupt included: leave the run resumable
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return RunResult(run_id=run_id, suite_hash=frozen.suite_hash, resumed=resumed, metrics=store.metrics(run_id),
                     notes=notes, seconds=time.time() - started)


def _quiet_libraries() -> None:
    for name in ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate", "httpx", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
