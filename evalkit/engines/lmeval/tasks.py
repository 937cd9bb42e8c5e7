"""Resolve an entry's lm-eval task name into leaf task configs, with our data overrides applied.

Why not ``TaskManager().load(...)``: building the full index reads ~10k YAML files (14 s here)
and constructing a Task downloads its dataset, which must not happen before we have pointed it
at local files. We index only the task's own folder when we can (full index as a fallback),
expand groups and tags to leaf tasks ourselves, and hand lm-eval fully resolved config dicts.

The user's own task folders (``include_path``) are indexed first and take precedence over
lm-eval's built-in tasks, as in ``TaskManager(include_path=...)``; their configs are resolved,
canonicalised and hashed exactly like built-in ones.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from copy import deepcopy
from typing import Any

from evalkit.errors import EvalkitError


def _tasks_root() -> str:
    import lm_eval.tasks

    return os.path.dirname(lm_eval.tasks.__file__)


@functools.lru_cache(maxsize=8)
def _manager(folder: str | None) -> Any:
    from lm_eval.tasks import TaskManager

    if folder is None:
        return TaskManager()
    return TaskManager(include_defaults=False, include_path=[folder])


def _candidate_folders(name: str) -> list[str]:
    root = _tasks_root()
    parts = name.split("_")
    out = []
    for i in range(len(parts), 0, -1):
        folder = os.path.join(root, "_".join(parts[:i]))
        if os.path.isdir(folder):
            out.append(folder)
    return out


def _user_manager(folders: tuple[str, ...]) -> Any:
    """An index of the user's task folders only (not cached: the user may be editing them)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=list(folders))


def find_manager(name: str, include: tuple[str, ...] = ()) -> Any:
    """A TaskManager whose index knows ``name``: the user's folders first, then lm-eval's own
    (narrow first, full index as a fallback)."""
    if include:
        tm = _user_manager(tuple(include))
        if name in tm._index:
            return tm
    for folder in _candidate_folders(name):
        tm = _manager(folder)
        if name in tm._index:
            return tm
    tm = _manager(None)
    if name not in tm._index:
        where = f" or in {', '.join(include)}" if include else ""
        raise EvalkitError(f"task '{name}': not an lm-eval task, group or tag{where} (see `lm_eval ls tasks`)")
    return tm


def task_file(name: str, include: tuple[str, ...] = ()) -> str | None:
    """The YAML file that defines task ``name`` (None for python-only tasks)."""
    return find_manager(name, include)._index[name].yaml_path


def leaf_tasks(name: str, include: tuple[str, ...] = ()) -> list[str]:
    """Expand a group or tag into its leaf task names (sorted, deduplicated)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = find_manager(name, include)
    entry = tm._index[name]
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [name]
    if entry.kind == Kind.TAG:
        return sorted({leaf for child in entry.tags for leaf in leaf_tasks(child, include)})
    if entry.kind == Kind.GROUP:
        cfg = load_yaml(entry.yaml_path, resolve_func=False) if entry.yaml_path else (entry.cfg or {})
        children = cfg.get("task") or []
        if isinstance(children, str):
            children = [children]
        out: set[str] = set()
        for child in children:
            if not isinstance(child, str):
                raise EvalkitError(f"task '{name}': groups with inline task definitions are not supported; name the subtasks")
            out.update(leaf_tasks(child, include))
        return sorted(out)
    raise EvalkitError(f"task '{name}': unsupported lm-eval index entry kind {entry.kind}")


def base_config(name: str, include: tuple[str, ...] = ()) -> dict[str, Any]:
    """The task's full config as lm-eval would build it (includes resolved, !function loaded)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = find_manager(name, include)
    entry = tm._index[name]
    if entry.yaml_path:
        cfg = deepcopy(load_yaml(entry.yaml_path, resolve_func=True))
    elif entry.cfg:
        cfg = deepcopy(entry.cfg)
    else:
        raise EvalkitError(f"task '{name}': has no YAML config (python-only tasks are not supported yet)")
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    cfg["task"] = name
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**cfg, **overrides}
    if "dataset_kwargs" in overrides and cfg.get("dataset_kwargs"):
        merged["dataset_kwargs"] = {**cfg["dataset_kwargs"], **overrides["dataset_kwargs"]}
    return merged


def canonical(value: Any) -> Any:
    """A JSON-able, machine-independent form of a config (for the suite hash).

    Functions become ``module.qualname#sha256(source)`` so editing a metric function changes
    the hash; absolute paths of lm-eval's own files and local data are not part of it (data
    files are hashed by content separately).
    """
    if callable(value) and not isinstance(value, type):
        try:
            src = inspect.getsource(value)
        except (OSError, TypeError):
            src = repr(value)
        mod = str(getattr(value, "__module__", "?"))
        if os.sep in mod:  # lm-eval names the user's !function modules by their absolute path
            mod = os.path.basename(mod)
        return f"fn:{mod}.{getattr(value, '__qualname__', repr(value))}#{hashlib.sha256(src.encode()).hexdigest()[:16]}"
    if isinstance(value, dict):
        out = {}
        for k, v in sorted(value.items(), key=lambda kv: str(kv[0])):
            if k in ("metadata",):
                v = {mk: mv for mk, mv in (v or {}).items() if mk != "config_source"} if isinstance(v, dict) else v
            if k == "data_files":
                v = {split: os.path.basename(str(p)) for split, p in (v or {}).items()} if isinstance(v, dict) else v
            out[str(k)] = canonical(v)
        return out
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
