"""Score precomputed responses with exactly the scorer a suite uses (no model).

We build the same lm-eval task object the suite would run (same config, same filters, same
``process_results`` and aggregations) over the given data file and feed it the responses, so
``evalkit score`` and ``evalkit eval`` cannot disagree.

Matching responses to data rows: by ``key`` when every response carries one (and the data
rows do: IFEval), so the responses file may be in any order; otherwise by order. Either way the
counts must agree, keys must be unique and cover the data exactly, or it is an error.

Prompt drift: a response that carries a ``prompt`` which differs from its data row's prompt is
either *drift* (the same prompt, edited upstream after the responses were generated: a small
edit, or a row listed in :data:`KNOWN_DRIFTS`) or a misalignment (a different prompt: an error).
Drifted rows are scored, and all of them are listed (key, row, short diff) in ONE warning line;
``strict_prompts=True`` (CLI ``--strict-prompts``) makes any mismatch an error instead.

Which prompt text a drifted row is scored against: the data row's (``input_data``). The
instruction ids and kwargs come from the data row, and upstream's fixes keep prompt and kwargs
consistent there (IFEval key 2785: the GPT-4 responses of 2023-11-07 were generated from
"at least one placeholder", but the data's kwargs were ``num_placeholders: 3`` already then; the
later fix only made the prompt text say "3 placeholders"). Mixing the responses' old prompt with
the data's kwargs would score a row that exists nowhere. In practice no registered IFEval
checker reads the prompt text (``combination:repeat_prompt`` reads its ``prompt_to_repeat``
kwarg), so the choice cannot change a score; it only fixes what a per-sample record shows.

One quirk is inherited on purpose: a few IFEval checkers (e.g. ``letter_frequency`` given a
non-letter) draw a random argument from Python's global ``random``. We seed it with lm-eval's
default ``random_seed`` (0) before scoring, so repeated scoring is reproducible and equals
lm-eval's functions called in the same order from the same seed. ``langdetect`` (used by
``language:response_language`` and ``change_case:english_lowercase``/``english_capital``) keeps
its own RNG, which lm-eval and upstream never seed: identical short or mixed-language text can
be judged differently run to run. We seed it with the same seed while scoring
(:mod:`evalkit.engines.lmeval.determinism`, which ``evalkit eval`` uses too), so a score is a
function of the responses alone.
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


# Upstream edits made to data prompts after published responses were generated: (task, key) ->
# (old text, new text). These are drift however different the two prompts look.
KNOWN_DRIFTS: dict[tuple[str, str], tuple[str, str]] = {
    # google-research instruction_following_eval: the GPT-4 responses (2023-11-07) answer "at least
    # one placeholder"; input_data.jsonl now says "at least 3 placeholders" (kwargs were 3 in both).
    ("ifeval", "2785"): ("at least one placeholder", "at least 3 placeholders"),
}

# Below this similarity (difflib ratio) a differing prompt is another prompt, not an edit of it.
DRIFT_MIN_RATIO = 0.8


def score_responses(
    task: str, data_path: str, responses_path: str, strict_prompts: bool = False
) -> dict[str, Any]:
    """Score ``responses_path`` against ``data_path`` with the suite's scorer.

    The result has ``task``, ``n``, ``metrics``, ``samples`` (in data order), ``matched_by``
    ("key" or "order"), ``prompt_drift`` (one dict per drifted row: key, row, diff) and
    ``warnings`` (at most one line, for the caller to print; the CLI prints it to stderr).
    Prompts are scored as the data file has them (see the module docstring for why).
    """
    if task not in TASKS:
        raise EvalkitError(f"score: unknown task '{task}' (known: {', '.join(sorted(TASKS))}, humaneval)")
    fields, prompt_field = TASKS[task]
    if not os.path.isfile(data_path):
        raise EvalkitError(f"score: missing data file {data_path}")
    if not os.path.isfile(responses_path):
        raise EvalkitError(f"score: missing responses file {responses_path}")
    docs = read_jsonl(data_path, fields)
    responses = read_jsonl(responses_path, ("response",))
    aligned, matched_by = _align(docs, responses, data_path, responses_path)
    drift = _prompt_drift(task, docs, aligned, prompt_field, data_path, responses_path, matched_by)
    warnings: list[str] = []
    if drift:
        listed = "; ".join(
            (f"key {d['key']} (row {d['row']})" if d["key"] is not None else f"row {d['row']}") + f": {d['diff']}"
            for d in drift
        )
        if strict_prompts:
            raise EvalkitError(
                f"score: --strict-prompts: {len(drift)} response prompt(s) in {responses_path} differ from "
                f"{data_path}: {listed}"
            )
        warnings.append(
            f"score: {len(drift)} response prompt(s) in {responses_path} differ from {data_path} "
            f"(upstream prompt edits; scored against the data's prompt and kwargs): {listed}"
        )
    set_offline()
    ensure_punkt()
    task_obj = _build_task(task, data_path)
    result = _score(task_obj, [str(r["response"]) for r in aligned])
    result.update(matched_by=matched_by, prompt_drift=drift, warnings=warnings)
    return result


def _align(
    docs: list[dict[str, Any]], responses: list[dict[str, Any]], data_path: str, responses_path: str
) -> tuple[list[dict[str, Any]], str]:
    """Responses in data order: by ``key`` when every response has one, else by order."""
    with_key = [r for r in responses if "key" in r]
    if with_key and len(with_key) != len(responses):
        raise EvalkitError(
            f"score: {responses_path}: {len(with_key)} of {len(responses)} responses carry a key; "
            "give every response a key (matched by key) or none (matched by order)"
        )
    by_key = bool(with_key) and all("key" in d for d in docs)
    if len(docs) != len(responses):
        how = "matched by key" if by_key else "matched by order"
        raise EvalkitError(
            f"score: {responses_path} has {len(responses)} responses but {data_path} has {len(docs)} rows ({how})"
        )
    if not by_key:
        return list(responses), "order"
    index: dict[str, dict[str, Any]] = {}
    for lineno, r in enumerate(responses, start=1):
        k = str(r["key"])
        if k in index:
            raise EvalkitError(f"score: {responses_path}:{lineno}: duplicate key {k}")
        index[k] = r
    missing = [str(d["key"]) for d in docs if str(d["key"]) not in index]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise EvalkitError(f"score: {responses_path} has no response for key(s) {shown} of {data_path}")
    return [index[str(d["key"])] for d in docs], "key"


def _short_diff(old: str, new: str, width: int = 40) -> str:
    """The first differing span, as '"old words" -> "new words"' (words, clipped to ``width``)."""
    import difflib

    a, b = old.split(), new.split()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            x, y = " ".join(a[i1:i2]), " ".join(b[j1:j2])
            clip = lambda t: t if len(t) <= width else t[: width - 3] + "..."  # noqa: E731
            return f'"{clip(x)}" -> "{clip(y)}"'
    return "whitespace only"


def _prompt_drift(
    task: str,
    docs: list[dict[str, Any]],
    aligned: list[dict[str, Any]],
    prompt_field: str,
    data_path: str,
    responses_path: str,
    matched_by: str,
) -> list[dict[str, Any]]:
    import difflib

    drift = []
    for i, (doc, resp) in enumerate(zip(docs, aligned), start=1):
        if "prompt" not in resp or resp["prompt"] == doc[prompt_field]:
            continue
        old, new = str(resp["prompt"]), str(doc[prompt_field])
        key = str(doc["key"]) if "key" in doc else None
        known = key is not None and (task, key) in KNOWN_DRIFTS
        if not known and difflib.SequenceMatcher(None, old, new, autojunk=False).ratio() < DRIFT_MIN_RATIO:
            where = f": key {key}" if matched_by == "key" else f":{i}"
            raise EvalkitError(
                f"score: {responses_path}{where}: prompt does not match row {i} of {data_path} "
                f"(a different prompt, not an edit of it: responses misaligned?)"
            )
        drift.append({"key": key, "row": i, "diff": _short_diff(old, new)})
    return drift


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

    from evalkit.engines.lmeval.determinism import seeded_langdetect

    random.seed(seed)
    with seeded_langdetect():
        return _score_seeded(task_obj, responses)


def _score_seeded(task_obj: Any, responses: list[str]) -> dict[str, Any]:
    from lm_eval.api.instance import Instance

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


__all__ = ["KNOWN_DRIFTS", "score_responses"]
