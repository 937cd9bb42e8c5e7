"""Freeze a suite: resolve every entry against data and engine into exact configs, and hash it.

The suite hash covers each entry's settings, each resolved lm-eval task config (prompts,
few-shot, filters, metrics; functions by source hash) and the sha256 of every data file read.
Two runs with the same hash measured the same thing; the training loop refuses to compare
runs whose hashes differ. Resolution happens before any model is loaded, so bad input (an
unknown task, a missing or corrupt data file) fails in seconds with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from evalkit.data import mirror
from evalkit.engines.lmeval import tasks as lmtasks
from evalkit.env import is_offline
from evalkit.errors import EvalkitError
from evalkit.suite.config import Suite, SuiteEntry


@dataclass
class FrozenEntry:
    entry: SuiteEntry
    limit: int | None
    task_configs: dict[str, dict[str, Any]]  # lm-eval task name -> full config (callables inside)
    files: dict[str, str] = field(default_factory=dict)
    source: str = "hub"
    note: str = ""

    def canonical(self) -> dict[str, Any]:
        return {
            "entry": {**self.entry.as_config(), "limit": self.limit},
            "tasks": {name: lmtasks.canonical(cfg) for name, cfg in sorted(self.task_configs.items())},
            "data": {os.path.basename(p): h for p, h in sorted(self.files.items())},
        }


@dataclass
class FrozenSuite:
    suite: Suite
    entries: list[FrozenEntry]
    suite_hash: str

    @property
    def all_local(self) -> bool:
        return all(e.source == "local" for e in self.entries)

    def canonical(self) -> dict[str, Any]:
        return {"name": self.suite.name, "entries": [e.canonical() for e in self.entries]}


def _entry_configs(entry: SuiteEntry, data_dir: str | None, suite_dir: str) -> tuple[dict[str, dict[str, Any]], mirror.ResolvedData]:
    names = lmtasks.leaf_tasks(entry.task)
    if entry.data_files:
        data = mirror.explicit_files(entry.data_files, names, suite_dir)
    else:
        adapter = mirror.adapter_for(entry.task, entry.data)
        if adapter and data_dir:
            data = mirror.ADAPTERS[adapter](data_dir, names)
        else:
            data = mirror.ResolvedData(tasks={n: {} for n in names}, source="hub")
    configs: dict[str, dict[str, Any]] = {}
    for name, overrides in data.tasks.items():
        cfg = lmtasks.apply_overrides(lmtasks.base_config(name), overrides)
        if entry.num_fewshot is not None:
            cfg["num_fewshot"] = entry.num_fewshot
        if entry.gen_kwargs:
            cfg["generation_kwargs"] = {**(cfg.get("generation_kwargs") or {}), **entry.gen_kwargs}
        configs[name] = cfg
    return configs, data


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached? False when offline variables are set."""
    if is_offline():
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or ""
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except (OSError, ImportError):
        return False


def freeze(suite: Suite, data_dir: str | None, limit: int | None = None) -> FrozenSuite:
    if data_dir is not None and not os.path.isdir(data_dir):
        raise EvalkitError(f"data dir '{data_dir}': no such folder")
    suite_dir = os.path.dirname(suite.path)
    frozen: list[FrozenEntry] = []
    for entry in suite.entries:
        try:
            configs, data = _entry_configs(entry, data_dir, suite_dir)
        except EvalkitError as exc:
            raise EvalkitError(f"suite {suite.path}:{entry.line}: entry '{entry.name}': {exc}") from exc
        frozen.append(
            FrozenEntry(
                entry=entry, limit=limit if limit is not None else entry.limit, task_configs=configs,
                files=data.files, source=data.source, note=data.note,
            )
        )
    hub_entries = [f.entry.name for f in frozen if f.source == "hub"]
    if hub_entries and not hub_reachable():
        raise EvalkitError(
            f"data: entries {', '.join(hub_entries)} need the Hugging Face hub, which is offline/unreachable; "
            "pass --data-dir (DATA_DIR=) with a local mirror (see README: Offline data)"
        )
    blob = json.dumps([f.canonical() for f in frozen], sort_keys=True, ensure_ascii=False)
    suite_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return FrozenSuite(suite=suite, entries=frozen, suite_hash=suite_hash)
