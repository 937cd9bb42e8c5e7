"""Resolve a suite entry's data: a local mirror folder in the hub datasets' schemas, or the hub.

Layout of a mirror (as in ``../shared/data``)::

    gsm8k/test.jsonl, gsm8k/train.jsonl        {"question", "answer"}           (openai/gsm8k main)
    mmlu/test/<subject>_test.csv, mmlu/dev/... question,choice0..choice3,answer (cais/mmlu)
    ifeval/input_data.jsonl                    {"key","prompt","instruction_id_list","kwargs"}
    arc_easy/ARC-Easy-{Dev,Train}.jsonl        AI2 {"id","question":{"stem","choices"},"answerKey"}
    arc_challenge/ARC-Challenge-{Dev,Train}.jsonl
    piqa/valid.jsonl + piqa/valid-labels.lst   {"goal","sol1","sol2"} + one 0/1 per line
    winogrande/dev.jsonl, train_xs.jsonl       {"qID","sentence","option1","option2","answer"}

Each adapter validates the files row by row and returns lm-eval config overrides that point the
task's own definition (prompt, few-shot, filters, metrics untouched) at the local files. MMLU CSVs
are converted once to JSONL in the HF schema (``choices`` list, ``answer`` int) because the
``csv`` loader would re-type numeric choices ("1" -> 1.0) and change prompts. ARC, PIQA and
WinoGrande come in their authors' formats and are converted the same way to the hub schemas
(allenai/ai2_arc, baber/piqa, allenai/winogrande). ARC has no Test file here, so its evaluated
("test") split is Dev followed by Train; PIQA evaluates its validation file, WinoGrande dev.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalkit.data.validate import iter_jsonl, read_csv_rows, read_jsonl, require_file, sha256_file
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


def _converted_path(kind: str, stem: str, sources: list[str]) -> tuple[str, str]:
    """Cache path for a conversion of ``sources``, keyed by their sha256; and their hashes' digest."""
    digests = [sha256_file(p) for p in sources]
    digest = digests[0][:16] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    out_dir = os.path.join(cache_dir(), "data", kind)
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, f"{stem}-{digest}.jsonl"), digest


def _write_jsonl(out: str, docs: list[dict[str, Any]]) -> str:
    tmp = out + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    os.replace(tmp, out)
    return out


def _str_field(path: str, lineno: int, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EvalkitError(f"data {path}:{lineno}: '{key}' must be a non-empty string, got {value!r}")
    return value


# ---- ARC (AI2 format -> allenai/ai2_arc) ---------------------------------------------------

ARC_FILES = {  # lm-eval task -> (folder, file prefix)
    "arc_easy": ("arc_easy", "ARC-Easy"),
    "arc_challenge": ("arc_challenge", "ARC-Challenge"),
    "arc_challenge_chat": ("arc_challenge", "ARC-Challenge"),
}


def _arc_doc(path: str, lineno: int, row: dict[str, Any]) -> dict[str, Any]:
    q = row.get("question")
    if not isinstance(q, dict):
        raise EvalkitError(f"data {path}:{lineno}: 'question' must be an object with 'stem' and 'choices'")
    stem = _str_field(path, lineno, q, "stem")
    choices = q.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise EvalkitError(f"data {path}:{lineno}: 'question.choices' must be a list of at least 2 choices")
    texts, labels = [], []
    for k, ch in enumerate(choices):
        if not isinstance(ch, dict) or not isinstance(ch.get("text"), str) or not isinstance(ch.get("label"), str):
            raise EvalkitError(f"data {path}:{lineno}: choice {k} must be {{\"text\": str, \"label\": str}}")
        texts.append(ch["text"])
        labels.append(ch["label"])
    if len(set(labels)) != len(labels):
        raise EvalkitError(f"data {path}:{lineno}: duplicate choice labels {labels}")
    key = row.get("answerKey")
    if key not in labels:
        raise EvalkitError(f"data {path}:{lineno}: answerKey {key!r} is not one of the choice labels {labels}")
    return {"id": _str_field(path, lineno, row, "id"), "question": stem,
            "choices": {"text": texts, "label": labels}, "answerKey": key}


def _arc_jsonl(sources: list[str], stem: str) -> str:
    """AI2 rows -> hub rows; several sources are concatenated in order (e.g. Dev then Train)."""
    out, _ = _converted_path("arc", stem, sources)
    if os.path.isfile(out):
        return out
    docs = [
        _arc_doc(src, lineno, row)
        for src in sources
        for lineno, row in iter_jsonl(src, ("id", "question", "answerKey"))
    ]
    return _write_jsonl(out, docs)


def arc_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    """ARC Easy/Challenge: train = Train, validation = Dev, test (evaluated) = Dev + Train."""
    tasks: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for name in task_names:
        if name not in ARC_FILES:
            raise EvalkitError(f"data: no local ARC mirror for task '{name}' (known: {', '.join(sorted(ARC_FILES))})")
        folder, prefix = ARC_FILES[name]
        dev = require_file(os.path.join(data_dir, folder, f"{prefix}-Dev.jsonl"), f"{prefix} Dev")
        train = require_file(os.path.join(data_dir, folder, f"{prefix}-Train.jsonl"), f"{prefix} Train")
        converted = {
            "train": _arc_jsonl([train], f"{prefix}-Train"),
            "validation": _arc_jsonl([dev], f"{prefix}-Dev"),
            "test": _arc_jsonl([dev, train], f"{prefix}-Dev+Train"),
        }
        tasks[name] = _json_source(converted)
        files[dev] = sha256_file(dev)
        files[train] = sha256_file(train)
    return ResolvedData(tasks=tasks, files=files, source="local", note="ARC test split = Dev + Train (no Test file)")


# ---- PIQA (valid.jsonl + valid-labels.lst -> baber/piqa) -------------------------------------


def _piqa_jsonl(questions: str, labels_path: str) -> str:
    out, _ = _converted_path("piqa", "valid", [questions, labels_path])
    if os.path.isfile(out):
        return out
    rows = list(iter_jsonl(questions, ("goal", "sol1", "sol2")))
    try:
        with open(labels_path, encoding="utf-8") as fh:
            labels = fh.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"data {labels_path}: cannot read ({exc})") from exc
    if labels and labels[-1] == "":
        labels.pop()
    if len(labels) != len(rows):
        raise EvalkitError(f"data {labels_path}: {len(labels)} labels for {len(rows)} rows in {questions}")
    docs = []
    for (lineno, row), (k, label) in zip(rows, enumerate(labels, start=1)):
        if label.strip() not in ("0", "1"):
            raise EvalkitError(f"data {labels_path}:{k}: label must be 0 or 1, got {label!r}")
        doc = {key: _str_field(questions, lineno, row, key) for key in ("goal", "sol1", "sol2")}
        docs.append({**doc, "label": int(label)})
    return _write_jsonl(out, docs)


def piqa_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    """PIQA validation (no train file is available: few-shot, if asked for, draws from validation)."""
    questions = require_file(os.path.join(data_dir, "piqa", "valid.jsonl"), "PIQA valid")
    labels = require_file(os.path.join(data_dir, "piqa", "valid-labels.lst"), "PIQA valid labels")
    overrides = {**_json_source({"validation": _piqa_jsonl(questions, labels)}), "training_split": None}
    return ResolvedData(
        tasks={name: dict(overrides) for name in task_names},
        files={questions: sha256_file(questions), labels: sha256_file(labels)},
        source="local",
    )


# ---- WinoGrande (1.1 jsonl -> allenai/winogrande) --------------------------------------------


def _winogrande_jsonl(path: str) -> str:
    out, _ = _converted_path("winogrande", os.path.basename(path)[: -len(".jsonl")], [path])
    if os.path.isfile(out):
        return out
    docs = []
    for lineno, row in iter_jsonl(path, ("sentence", "option1", "option2", "answer")):
        sentence = _str_field(path, lineno, row, "sentence")
        if sentence.count("_") != 1:
            raise EvalkitError(f"data {path}:{lineno}: 'sentence' must contain exactly one '_' blank")
        if row["answer"] not in ("1", "2"):
            raise EvalkitError(f"data {path}:{lineno}: answer must be \"1\" or \"2\", got {row['answer']!r}")
        docs.append({"sentence": sentence, "option1": _str_field(path, lineno, row, "option1"),
                     "option2": _str_field(path, lineno, row, "option2"), "answer": row["answer"]})
    return _write_jsonl(out, docs)


def winogrande_local(data_dir: str, task_names: list[str]) -> ResolvedData:
    """WinoGrande dev as the validation (evaluated) split; train_xs as the training split."""
    dev = require_file(os.path.join(data_dir, "winogrande", "dev.jsonl"), "WinoGrande dev")
    train = require_file(os.path.join(data_dir, "winogrande", "train_xs.jsonl"), "WinoGrande train_xs")
    overrides = _json_source({"train": _winogrande_jsonl(train), "validation": _winogrande_jsonl(dev)})
    return ResolvedData(
        tasks={name: dict(overrides) for name in task_names},
        files={dev: sha256_file(dev), train: sha256_file(train)},
        source="local",
    )


ADAPTERS: dict[str, Adapter] = {
    "gsm8k": gsm8k_local,
    "ifeval": ifeval_local,
    "mmlu": mmlu_local,
    "arc_easy": arc_local,
    "arc_challenge": arc_local,
    "ai2_arc": arc_local,  # the lm-eval tag: arc_easy + arc_challenge
    "piqa": piqa_local,
    "winogrande": winogrande_local,
}


def adapter_for(task: str, explicit: str | None) -> str | None:
    """Which mirror adapter serves an entry: explicit ``data:``, else inferred from the task name."""
    if explicit:
        if explicit not in ADAPTERS:
            raise EvalkitError(f"data: unknown mirror '{explicit}' (known: {', '.join(sorted(ADAPTERS))})")
        return explicit
    if task in ADAPTERS:
        return task
    if task in ARC_FILES:
        return "ai2_arc"
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
