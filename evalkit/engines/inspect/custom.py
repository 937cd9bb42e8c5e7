"""The user's own inspect-ai task: ``task: path/to/file.py@task_name`` in a suite entry.

Freezing finds the file (relative to the suite file), checks without importing it that it
defines ``task_name`` decorated with ``@task``, and records the file's sha256 in the hashed
config, so editing the task changes the suite hash. Running hands inspect the same
``file.py@task_name`` spec (inspect's documented way to name a task in a file; it imports the
file itself) with the entry's epochs, limit and generation settings, on the run's model, and
copies each sample's completions and scores into the store.
"""

from __future__ import annotations

import ast
import math
import os
from collections import defaultdict
from typing import Any

from evalkit.data.validate import sha256_file
from evalkit.errors import EvalkitError
from evalkit.suite.config import SuiteEntry

_UNSUPPORTED = ("num_fewshot", "data", "data_files", "system_instruction", "fewshot_as_multiturn", "ks")
_GEN_KWARGS = ("max_gen_toks",)


def is_file_task(task: str) -> bool:
    """``path/to/file.py@name`` (or ``path/to/file.py``: its only ``@task``)."""
    return task.split("@", 1)[0].endswith(".py")


def _task_functions(path: str) -> list[str]:
    """Names of the top-level functions decorated with ``@task`` / ``@task(...)`` in a file."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except SyntaxError as exc:
        raise EvalkitError(f"inspect task file {path}:{exc.lineno}: not valid python ({exc.msg})") from exc
    names = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name == "task":
                names.append(node.name)
    return names


def resolve(task: str, suite_dir: str) -> tuple[str, str]:
    """(absolute file, task function name) for ``file.py@name``; one-line errors."""
    file_part, _, name = task.partition("@")
    full = os.path.abspath(os.path.join(suite_dir, os.path.expanduser(file_part)))
    if not os.path.isfile(full):
        raise EvalkitError(f"inspect engine: task file '{file_part}' not found ({full})")
    found = _task_functions(full)
    if not name:
        if len(found) != 1:
            raise EvalkitError(f"inspect engine: {file_part} defines {len(found)} @task functions "
                               f"({', '.join(found) or 'none'}); name one as {file_part}@NAME")
        name = found[0]
    if name not in found:
        raise EvalkitError(f"inspect engine: no @task '{name}' in {file_part} (found: {', '.join(found) or 'none'})")
    return full, name


def file_task_config(entry: SuiteEntry, suite_dir: str, limit: int | None) -> tuple[dict[str, Any], str]:
    """The canonical (hashed) config of a ``file.py@task`` entry, and the task file's path."""
    for key in _UNSUPPORTED:
        if getattr(entry, key) is not None:
            raise EvalkitError(f"'{key}' is not used by the inspect engine's file tasks; remove it")
    path, name = resolve(entry.task, suite_dir)
    gen = dict(entry.gen_kwargs or {})
    unknown = sorted(set(gen) - set(_GEN_KWARGS))
    if unknown:
        raise EvalkitError(f"gen_kwargs {unknown}: not supported by the inspect engine (allowed: {', '.join(_GEN_KWARGS)})")
    max_tokens = gen.get("max_gen_toks")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise EvalkitError(f"gen_kwargs.max_gen_toks must be a positive whole number, got {max_tokens!r}")
    n = int(entry.samples or 1)
    temperature = entry.temperature if entry.temperature is not None else (0.8 if n > 1 else 0.0)
    return {
        "task": entry.task,
        "file": os.path.basename(path),
        "task_name": name,
        "file_sha256": sha256_file(path),
        "limit": limit,
        "samples": n,
        "temperature": float(temperature),
        "top_p": float(entry.top_p) if entry.top_p is not None else None,
        "max_tokens": int(max_tokens) if max_tokens is not None else None,
        "seed": int(entry.seed),
    }, path


def generate_args(cfg: dict[str, Any]) -> dict[str, Any]:
    """The entry's generation settings as ``inspect_ai.eval`` keyword arguments (unset ones left to the task)."""
    out: dict[str, Any] = {"temperature": cfg["temperature"], "seed": cfg["seed"]}
    if cfg["top_p"] is not None:
        out["top_p"] = cfg["top_p"]
    if cfg["max_tokens"] is not None:
        out["max_tokens"] = cfg["max_tokens"]
    return out


def _value(v: Any) -> float | None:
    """A score value as a number: inspect's C/I/P/N letters, booleans, numbers."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}.get(str(v))


def sample_rows(log: Any, task: str) -> list[dict[str, Any]]:
    """One row per sample (all epochs): completions, per-scorer values and their mean over epochs."""
    by_id: dict[Any, list[Any]] = defaultdict(list)
    for s in log.samples or []:
        by_id[s.id].append(s)
    rows = []
    for doc_id, sid in enumerate(sorted(by_id, key=lambda v: (str(type(v)), v))):
        epochs = sorted(by_id[sid], key=lambda s: s.epoch)
        first = epochs[0]
        metrics: dict[str, float] = {"n": len(epochs)}
        per_epoch = []
        scorers = sorted({name for s in epochs for name in (s.scores or {})})
        for name in scorers:
            values = [_value((s.scores or {})[name].value) if name in (s.scores or {}) else None for s in epochs]
            known = [v for v in values if v is not None]
            if known:
                metrics[name] = sum(known) / len(known)
        for s in epochs:
            per_epoch.append({
                "epoch": s.epoch,
                "scores": {k: v.value for k, v in (s.scores or {}).items()},
                "answers": {k: v.answer for k, v in (s.scores or {}).items()},
                "error": s.error.message if s.error else None,
            })
        target = first.target if isinstance(first.target, str) else list(first.target)
        rows.append({
            "task": task,
            "doc_id": int(sid) if isinstance(sid, int) else doc_id,
            "prompt": first.input if isinstance(first.input, str) else str(first.input),
            "target": target,
            "responses": [s.output.completion if s.output else "" for s in epochs],
            "filtered": {k: [e["answers"].get(k) for e in per_epoch] for k in scorers},
            "loglikelihoods": None,
            "metrics": metrics,
            "doc": {"id": sid, "metadata": first.metadata or {}},
            "extra": {"sample_id": sid, "epochs": per_epoch},
        })
    return rows


def metric_rows(entry_name: str, log: Any, n: int) -> list[dict[str, Any]]:
    """inspect's own headline metrics (one row per scorer metric; ``stderr`` paired with its mean)
    over ``n`` samples."""
    out = []
    scores = log.results.scores if log.results else []
    for score in scores:
        stderr = score.metrics.get("stderr")
        prefix = "" if len(scores) == 1 else f"{score.name}/"
        for name, m in score.metrics.items():
            if name == "stderr":
                continue
            err = stderr.value if stderr is not None and name in ("accuracy", "mean") else None
            out.append({"task": entry_name, "metric": prefix + name, "value": m.value,
                        "stderr": None if err is None or math.isnan(err) else err, "n": n})
    return out
