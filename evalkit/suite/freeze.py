"""Freeze a suite: resolve every entry with its engine into exact configs, and hash it.

The suite hash covers each entry's settings, each engine's resolved config (for lm-eval: the
task configs with prompts, few-shot, filters, metrics; functions by source hash) and the sha256
of every data file read. Two runs with the same hash measured the same thing; the training
loop refuses to compare runs whose hashes differ. Freezing happens before any model is loaded,
so bad input (an unknown task, a missing or corrupt data file) fails in seconds with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

from evalkit.env import is_offline
from evalkit.errors import EvalkitError
from evalkit.registry import ENGINES
from evalkit.suite.config import INCLUDE_PATH_ENGINES, Suite, SuiteEntry, resolve_include_path


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


@dataclass
class FrozenSuite:
    suite: Suite
    entries: list[FrozenEntry]
    suite_hash: str

    @property
    def all_local(self) -> bool:
        return all(e.source == "local" for e in self.entries)

    def canonical(self) -> dict[str, Any]:
        return {"name": self.suite.name, "entries": [entry_canonical(e) for e in self.entries]}


_TASK_SOURCE_SUFFIXES = (".yaml", ".yml", ".py")


def folder_digest(folder: str) -> dict[str, str]:
    """A task folder's identity for the suite hash: its name and the sha256 of every task source
    in it (YAML and python, by relative path), so editing the user's task changes the hash but
    moving the folder does not."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(_TASK_SOURCE_SUFFIXES):
                continue
            full = os.path.join(root, name)
            with open(full, "rb") as fh:
                data = fh.read()
            h.update(os.path.relpath(full, folder).replace(os.sep, "/").encode() + b"\0")
            h.update(hashlib.sha256(data).hexdigest().encode() + b"\n")
    return {"folder": os.path.basename(os.path.normpath(folder)), "sha256": h.hexdigest()[:16]}


def entry_canonical(fe: FrozenEntry) -> dict[str, Any]:
    config = fe.entry.as_config()
    if config.get("include_path"):  # absolute folders (machine-specific) -> their names and contents
        config["include_path"] = [folder_digest(p) for p in config["include_path"]]
    out = {
        "entry": {**config, "limit": fe.limit},
        "configs": fe.canonical,
        "data": {os.path.basename(p): h for p, h in sorted(fe.files.items())},
    }
    if fe.split is not None:  # only split entries carry it, so other suites keep their hashes
        out["split"] = fe.split
    return out


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


def _with_include_path(entry: SuiteEntry, suite_dir: str, extra: tuple[str, ...]) -> SuiteEntry:
    """The entry with every task folder it sees as absolute paths: its own ``include_path``
    (relative to the suite file), then the suite's, then ``--include-path`` folders."""
    if entry.engine not in INCLUDE_PATH_ENGINES:
        return entry
    own = resolve_include_path(list(entry.include_path or ()), suite_dir, "")
    folders = tuple(dict.fromkeys(own + extra))
    return replace(entry, include_path=folders or None)


def freeze(suite: Suite, data_dir: str | None, limit: int | None = None, include_path: tuple[str, ...] | list[str] = ()) -> FrozenSuite:
    """Resolve every entry with its engine and hash the result. ``include_path``: extra lm-eval
    task folders (``--include-path``; relative to the working directory) for every lm-eval entry."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise EvalkitError(f"data dir '{data_dir}': no such folder")
    extra = suite.include_path + resolve_include_path(list(include_path), os.getcwd(), "--include-path")
    suite_dir = os.path.dirname(suite.path)
    frozen: list[FrozenEntry] = []
    for entry in suite.entries:
        try:
            entry = _with_include_path(entry, suite_dir, extra)
            engine = ENGINES.get(entry.engine)
            frozen.append(engine.freeze(entry, data_dir, suite_dir, limit if limit is not None else entry.limit))
        except EvalkitError as exc:
            raise EvalkitError(f"suite {suite.path}:{entry.line}: entry '{entry.name}': {exc}") from exc
    hub_entries = [f.entry.name for f in frozen if f.source == "hub"]
    if hub_entries and not hub_reachable():
        raise EvalkitError(
            f"data: entries {', '.join(hub_entries)} need the Hugging Face hub, which is offline/unreachable; "
            "pass --data-dir (DATA_DIR=) with a local mirror (see README: Offline data)"
        )
    blob = json.dumps([entry_canonical(f) for f in frozen], sort_keys=True, ensure_ascii=False)
    suite_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return FrozenSuite(suite=suite, entries=frozen, suite_hash=suite_hash)
