"""Run a frozen suite on a model into the store: the spine of ``evalkit eval``.

Order of work is chosen so that bad input costs nothing: parse the model string, load and
freeze the suite (validates every data file), resolve the weights hash, then find or create
the run; only then load the model.

A run's **identity** (:func:`run_identity`) is everything that changes its outputs: the resolved
weights (content hash, or a hub commit), the model form, the backend and its output-relevant
options, device, dtype, batch size, the suite hash (which covers limits and data files) and the
part. Starting the same identity again reuses a complete run (``force`` evaluates anew) or
resumes an unfinished one (finished entries are skipped, committed answers come from the
request cache). An unfinished run of the same model string and suite whose identity differs is
never resumed: the new run says which fields differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evalkit import __version__
from evalkit.data.punkt import ensure_punkt
from evalkit.env import set_offline
from evalkit.errors import EvalkitError
from evalkit.engines.base import RunContext, get_engine
from evalkit.models.handle import get_model
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
    force: bool = False  # evaluate again even when a complete run of this identity exists
    include_path: tuple[str, ...] = ()  # --include-path: lm-eval task folders for every lm-eval entry (hashed)
    part: str = "all"  # "confirm": entries with a confirm_fraction run their confirmation half only
    # labels stored with the run, not part of its identity: a reused or resumed run gets them too
    # (tags merged in, a name replaces the old one). ``tags`` may be given as a dict; it is kept
    # as sorted (key, value) pairs so the settings stay frozen and hashable.
    name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        pairs = self.tags.items() if isinstance(self.tags, Mapping) else self.tags
        object.__setattr__(self, "tags", tuple(sorted((str(k), str(v)) for k, v in dict(pairs).items())))

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


@dataclass
class RunResult:
    run_id: str
    suite_hash: str
    resumed: bool
    metrics: list[dict[str, Any]]
    notes: dict[str, str]
    seconds: float
    reused: bool = False  # an existing complete run of the same identity, nothing evaluated


def run_identity(spec: ModelSpec, weights_hash: str, *, device: str, dtype: str, batch_size: int,
                 lm_backend: str, suite_hash: str, part: str) -> dict[str, Any]:
    """The fields that decide a run's outputs (see module docstring); hashed into its identity."""
    from evalkit.models.lmeval_lm import openai_model_args, vllm_model_args

    if spec.kind == "openai":
        backend, options = "local-completions", openai_model_args(spec, batch_size)
        options = {k: v for k, v in options.items() if k not in ("num_concurrent", "max_retries")}
    elif spec.kind == "vllm":
        backend, options = "vllm", vllm_model_args(spec, dtype if dtype != "remote" else "auto")
        options = {k: v for k, v in options.items() if k not in ("gpu_memory_utilization", "batch_size")}
    else:
        backend, options = lm_backend, {}
    return {"weights": weights_hash, "form": spec.kind, "backend": backend, "backend_options": options,
            "device": device, "dtype": dtype, "batch_size": batch_size, "suite_hash": suite_hash, "part": part}


def identity_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for each identity field that differs (old runs may lack some)."""
    return [f"{k}: {old.get(k, '?')} -> {new[k]}" for k in new if old.get(k) != new[k]]


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
    if spec.kind == "vllm":
        from evalkit.models.hardware import cuda_available

        if not cuda_available():  # before a run is created: bad input leaves nothing behind
            raise EvalkitError(f"model '{spec.raw}': vLLM needs a CUDA GPU and none is visible on this machine")
    if spec.kind == "openai":
        from evalkit.models.lmeval_lm import check_endpoint

        check_endpoint(spec)  # a dead server is one line here, before a run exists (no failed run left behind)
    if spec.kind in ("hub", "vllm") and spec.path and not os.path.isdir(spec.path):
        from evalkit.models.loader import resolve_hub

        resolve_hub(spec)  # a hub id that is neither cached nor reachable fails here, in well under 5 s
    suite = load_suite(settings.suite)
    if settings.limit is not None and settings.limit <= 0:
        raise EvalkitError(f"--limit {settings.limit}: must be a positive number of samples per task")
    ensure_punkt()  # before freeze: resolving lm-eval's IFEval task imports it, which would try to download punkt
    frozen = freeze(suite, settings.data_dir, settings.limit, include_path=tuple(settings.include_path))
    if frozen.all_local and spec.is_local_weights:
        set_offline()
    return spec, frozen


def _labels_note(settings: EvalSettings) -> str:
    """The tail of a reuse/resume note when ``--name``/``--tag`` were given: what the run now carries."""
    parts = ([f"name set to '{settings.name}'"] if settings.name is not None else []) + \
        ([f"tags {', '.join(f'{k}={v}' for k, v in settings.tags)} merged in"] if settings.tags else [])
    return f"; {' and '.join(parts)}" if parts else ""


def _stderr(line: str) -> None:
    print(f"evalkit: {line}", file=sys.stderr, flush=True)


def run_suite(settings: EvalSettings, store: RunStore, say: Callable[[str], None] = _stderr) -> RunResult:
    """Evaluate ``settings.model`` on the frozen suite; reuse a complete identical run, resume an
    unfinished one. ``say`` receives one-line notes about that choice."""
    started = time.time()
    _quiet_libraries()
    spec, frozen = prepare(settings)
    model = get_model(spec, device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
    # device, dtype and backend are resolved once, in the handle; the backend is part of the identity
    # because cached answers of two schedulers never mix
    device, dtype, lm_backend = model.device, model.dtype, model.backend
    fields = run_identity(spec, model.weights.weights_hash, device=device, dtype=dtype,
                          batch_size=settings.batch_size, lm_backend=lm_backend, suite_hash=frozen.suite_hash,
                          part=settings.part)
    identity = identity_hash(fields)
    run_settings = {"limit": settings.limit, "dtype": dtype, "device": device, "batch_size": settings.batch_size,
                    "data_dir": settings.data_dir, "lm_backend": lm_backend, "part": settings.part,
                    "identity": fields}
    if not settings.force and (done := store.find_complete(identity)):
        store.label_run(done, settings.name, settings.tag_dict)
        say(f"reusing complete run {done}: same weights, suite and settings (--force evaluates again)"
            + _labels_note(settings))
        return RunResult(run_id=done, suite_hash=frozen.suite_hash, resumed=False, metrics=store.metrics(done),
                         notes={}, seconds=time.time() - started, reused=True)
    run_id = None if settings.force else store.find_resumable(identity)
    resumed = run_id is not None
    if run_id:
        say(f"resuming run {run_id} (attempt {store.get_run(run_id).attempts + 1})" + _labels_note(settings))
        store.reopen_run(run_id)
        store.label_run(run_id, settings.name, settings.tag_dict)
    else:
        for other in store.unfinished_runs(spec.raw, frozen.suite_hash):
            diff = identity_diff(other.settings.get("identity") or {}, fields)
            if diff:
                say(f"not resuming run {other.run_id} ({other.status}): it differs in {'; '.join(diff)}; "
                    "starting a new run")
                break
        run_id = store.create_run(
            identity=identity, model_spec=spec.raw, model_hash=model.weights.weights_hash, suite_name=frozen.suite.name,
            suite_hash=frozen.suite_hash, suite=frozen.canonical(), settings=run_settings, versions=library_versions(),
            name=settings.name, tags=settings.tag_dict,
        )
    notes: dict[str, str] = {}
    timings: dict[str, float] = {}
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
