"""Score precomputed responses with exactly the scorer a suite uses (no model).

We build the same lm-eval task object the suite would run (same config, same filters, same
``process_results`` and aggregations) over the given data file and feed it the responses, so
``evalkit score`` and ``evalkit eval`` cannot disagree. Responses are matched to data rows by
order; a count mismatch, or (where both sides carry it) a prompt mismatch, is an error.

One quirk is inherited on purpose: a few IFEval checkers (e.g. ``letter_frequency`` given a
non-letter) draw a random argument from Python's global ``random``. We seed it with lm-eval's
default ``random_seed`` (0) before scoring, so repeated scoring is reproducible and equals
lm-eval's functions called in the same order from the same seed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from evalkit.data.validate import read_jsonl
from evalkit.engines.lmeval import tasks as lmtasks
from evalkit.data.punkt import ensure_punkt
from evalkit.env import set_offline
from evalkit.errors import EvalkitError

TASKS = {
    # task -> (data adapter schema fields, field in the data row that the response's "prompt" must equal)
    "ifeval": (("key", "prompt", "instruction_id_list", "kwargs"), "prompt"),
    "gsm8k": (("question", "answer"), "question"),
}


def score_responses(task: str, data_path: str, responses_path: str) -> dict[str, Any]:
    if task not in TASKS:
        raise EvalkitError(f"score: unknown task '{task}' (known: {', '.join(sorted(TASKS))}, humaneval)")
    fields, prompt_field = TASKS[task]
    if not os.path.isfile(data_path):
        raise EvalkitError(f"score: missing data file {data_path}")
    if not os.path.isfile(responses_path):
        raise EvalkitError(f"score: missing responses file {responses_path}")
    docs = read_jsonl(data_path, fields)
    responses = read_jsonl(responses_path, ("response",))
    if len(docs) != len(responses):
        raise EvalkitError(
            f"score: {responses_path} has {len(responses)} responses but {data_path} has {len(docs)} rows (matched by order)"
        )
    for i, (doc, resp) in enumerate(zip(docs, responses), start=1):
        if "prompt" in resp and resp["prompt"] != doc[prompt_field]:
            raise EvalkitError(f"score: {responses_path}:{i}: prompt does not match row {i} of {data_path}")
    set_offline()
    ensure_punkt()
    task_obj = _build_task(task, data_path)
    return _score(task_obj, [str(r["response"]) for r in responses])


def _build_task(task: str, data_path: str) -> Any:
    from lm_eval.api.task import ConfigurableTask

    split = "train" if task == "ifeval" else "test"
    overrides = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {split: data_path}}}
    cfg = lmtasks.apply_overrides(lmtasks.base_config(task), overrides)
    if task == "gsm8k":  # few-shot source is irrelevant when scoring; point it at the same file
        cfg["training_split"] = None
        cfg["fewshot_split"] = None
        cfg["num_fewshot"] = 0
    import datasets

    datasets.disable_progress_bars()
    return ConfigurableTask(config=cfg)


def _score(task_obj: Any, responses: list[str], seed: int = 0) -> dict[str, Any]:
    import random

    from lm_eval.api.instance import Instance

    random.seed(seed)
    docs = list(task_obj.eval_docs)
    instances = []
    for doc_id, (doc, resp) in enumerate(zip(docs, responses)):
        inst = Instance("generate_until", doc, ("", {}), 0, (task_obj.config.task, doc_id, 1))
        inst.resps = [resp]
        instances.append(inst)
    task_obj._instances = instances
    task_obj.apply_filters()
    per_metric: dict[str, list[Any]] = defaultdict(list)
    per_sample: list[dict[str, Any]] = []
    aggregations = task_obj.aggregation()
    for doc, inst in zip(docs, instances):
        row: dict[str, Any] = {}
        for fkey, filtered in inst.filtered_resps.items():
            for metric, value in task_obj.process_results(doc, [filtered]).items():
                key = metric if fkey == "none" else f"{metric},{fkey}"
                per_metric[key].append(value)
                row[key] = value
        per_sample.append(row)
    metrics = {}
    for key, values in per_metric.items():
        agg = aggregations[key.split(",")[0]]
        metrics[key] = float(agg(values))
    return {"task": task_obj.config.task, "n": len(docs), "metrics": metrics, "samples": per_sample}


__all__ = ["score_responses"]
