"""Resolve a suite entry's data: a local mirror folder in the hub datasets' schemas, or the hub.

Layout of a mirror (as in ``../shared/data``)::

    gsm8k/test.jsonl, gsm8k/train.jsonl        {"question", "answer"}           (openai/gsm8k main)
    mmlu/test/<subject>_test.csv, mmlu/dev/... question,choice0..choice3,answer (cais/mmlu)
    ifeval/input_data.jsonl                    {"key","prompt","instruction_id_list","kwargs"}

Each adapter validates the files row by row and returns lm-eval config overrides that point the
task's own definition (prompt, few-shot, filters, metrics untouched) at the local files. MMLU CSVs
are converted once to JSONL in the HF schema (``choices`` list, ``answer`` int) because the
``csv`` loader would re-type numeric choices ("1" -> 1.0) and change prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalkit.data.validate import read_csv_rows, read_jsonl, require_file, sha256_file
from evalkit.env import cache_dir
from evalkit.errors import EvalkitError

MMLU_HEADER = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


@dataclass
class ResolvedData:
    """lm-eval tasks to run for one entry, each with config overrides, and the files read."""

    tasks: dict[str, dict[str, Any]]  # lm-eval task name -> config overrides
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    source: str = "hub"  # "local" or "hub"
    note: str = ""  # e.g. "10/57 MMLU subjects"


Adapter = Callable[[str, list[str]], ResolvedData]


def _json_source(files: dict[str, str]) -> dict[str, Any]:
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}


def gsm8k_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    test = require_file(os.path.join(data_dir, "gsm8k", "test.jsonl"), "GSM8K test")
    train = require_file(os.path.join(data_dir, "gsm8k", "train.jsonl"), "GSM8K train (few-shot source)")
    for path in (test, train):
        read_jsonl(path, ("question", "answer"))
    overrides = _json_source({"test": test, "train": train})
    return ResolvedData(
        tasks={name: dict(overrides) for name in task_names},
        files={test: sha256_file(test), train: sha256_file(train)},
        source="local",
    )


def ifeval_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    path = require_file(os.path.join(data_dir, "ifeval", "input_data.jsonl"), "IFEval")
    read_jsonl(path, ("key", "prompt", "instruction_id_list", "kwargs"))
    return ResolvedData(
        tasks={name: _json_source({"train": path}) for name in task_names},
        files={path: sha256_file(path)},
        source="local",
    )


def mmlu_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    """Run the subjects whose test CSV is present; each needs its dev CSV for the 5 shots."""
    test_dir = os.path.join(data_dir, "mmlu", "test")
    if not os.path.isdir(test_dir):
        raise EvalkitError(f"data: missing MMLU folder {test_dir}")
    wanted = {name[len("mmlu_") :]: name for name in task_names}
    tasks: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for fname in sorted(os.listdir(test_dir)):
        if not fname.endswith("_test.csv"):
            continue
        subject = fname[: -len("_test.csv")]
        if subject not in wanted:
            continue
        test = os.path.join(test_dir, fname)
        dev = require_file(os.path.join(data_dir, "mmlu", "dev", f"{subject}_dev.csv"), f"MMLU {subject} dev")
        converted = {split: _mmlu_jsonl(path, subject) for split, path in (("test", test), ("dev", dev))}
        tasks[wanted[subject]] = _json_source(converted)
        files[test] = sha256_file(test)
        files[dev] = sha256_file(dev)
    if not tasks:
        raise EvalkitError(f"data: no MMLU subject test files (<subject>_test.csv) in {test_dir}")
    return ResolvedData(tasks=tasks, files=files, source="local", note=f"{len(tasks)}/{len(task_names)} MMLU subjects")


def _mmlu_jsonl(csv_path: str, subject: str) -> str:
    rows = read_csv_rows(csv_path, MMLU_HEADER)
    digest = sha256_file(csv_path)[:16]
    out_dir = os.path.join(cache_dir(), "data", "mmlu")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{os.path.basename(csv_path)[:-4]}-{digest}.jsonl")
    if os.path.isfile(out):
        return out
    lines = []
    for i, row in enumerate(rows, start=2):
        if row["answer"] not in ("0", "1", "2", "3"):
            raise EvalkitError(f"data {csv_path}:{i}: answer must be 0-3, got {row['answer']!r}")
        doc = {
            "question": row["question"],
            "subject": subject,
            "choices": [row[f"choice{k}"] for k in range(4)],
            "answer": int(row["answer"]),
        }
        lines.append(json.dumps(doc, ensure_ascii=False))
    tmp = out + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out


ADAPTERS: dict[str, Adapter] = {"gsm8k": gsm8k_local, "ifeval": ifeval_local, "mmlu": mmlu_local}


def adapter_for(task: str, explicit: str | None) -> str | None:
    """Which mirror adapter serves an entry: explicit ``data:``, else inferred from the task name."""
    if explicit:
        if explicit not in ADAPTERS:
            raise EvalkitError(f"data: unknown mirror '{explicit}' (known: {', '.join(sorted(ADAPTERS))})")
        return explicit
    if task in ADAPTERS:
        return task
    if task.startswith("mmlu_") and not task.startswith(("mmlu_flan", "mmlu_continuation", "mmlu_generative")):
        return "mmlu"
    return None


def explicit_files(data_files: dict[str, str], task_names: list[str], base_dir: str | None) -> ResolvedData:
    """``data_files:`` in a suite entry: split -> JSON/JSONL/CSV file for any task."""
    files: dict[str, str] = {}
    resolved: dict[str, str] = {}
    fmt = None
    for split, path in data_files.items():
        full = path if os.path.isabs(path) or not base_dir else os.path.join(base_dir, path)
        require_file(full, f"'{split}' split")
        kind = "csv" if full.endswith(".csv") else "json"
        if fmt and kind != fmt:
            raise EvalkitError(f"data: mixed CSV and JSON files in data_files ({full})")
        fmt = kind
        if kind == "json" and full.endswith((".jsonl", ".jsonl.gz")):
            read_jsonl(full)
        resolved[split] = full
        files[full] = sha256_file(full)
    overrides = {"dataset_path": fmt, "dataset_name": None, "dataset_kwargs": {"data_files": resolved}}
    return ResolvedData(tasks={n: dict(overrides) for n in task_names}, files=files, source="local")
