"""Turn lm-eval's output into store rows: one row per (task, doc) and one per metric.

lm-eval logs one sample record per (doc, filter); we merge them so a GSM8K doc is one row
with ``exact_match,strict-match`` and ``exact_match,flexible-extract`` side by side. Metric
values are lm-eval's own aggregates; stderrs come from :mod:`evalkit.analysis.stats` so every
metric has one, and entry-level values pool all of an entry's tasks (MMLU's subjects) by size,
as lm-eval's ``weight_by_size`` group aggregation does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from evalkit.analysis import calibration as calib
from evalkit.analysis.stats import clustered_ratio, mean_stderr

SKIP_KEYS = {"name", "alias", "sample_len", "sample_count", "samples"}


def _metric_key(metric: str, filt: str) -> str:
    return metric if filt in ("none", None) else f"{metric},{filt}"


def sample_rows(task: str, records: list[dict[str, Any]], output_type: str) -> list[dict[str, Any]]:
    by_doc: dict[int, dict[str, Any]] = {}
    for rec in records:
        doc_id = int(rec["doc_id"])
        filt = rec.get("filter", "none")
        row = by_doc.get(doc_id)
        if row is None:
            args = rec.get("arguments") or []
            prompt = args[0][0] if args and isinstance(args[0], (list, tuple)) else None
            resps = rec.get("resps") or []
            row = {
                "task": task,
                "doc_id": doc_id,
                "doc": rec.get("doc"),
                "prompt": prompt,
                "target": rec.get("target"),
                "responses": None,
                "loglikelihoods": None,
                "filtered": {},
                "metrics": {},
                "extra": {"output_type": output_type},
            }
            if output_type == "multiple_choice":
                row["loglikelihoods"] = [float(r[0][0]) for r in resps]
                row["extra"]["choices"] = [a[1] for a in args]
            else:
                row["responses"] = [x for r in resps for x in (r if isinstance(r, list) else [r])]
            by_doc[doc_id] = row
        row["filtered"][filt] = rec.get("filtered_resps")
        for metric in rec.get("metrics") or []:
            if metric in rec:
                row["metrics"][_metric_key(metric, filt)] = rec[metric]
    return [by_doc[k] for k in sorted(by_doc)]


def _per_sample_stats(values: list[Any]) -> tuple[float | None, int]:
    """stderr and n for a metric's per-sample values (numbers, or lists for ratio metrics)."""
    if values and all(isinstance(v, (list, tuple)) for v in values):
        _, se, n = clustered_ratio([[float(x) for x in v] for v in values])
        return se, n
    nums = [float(v) for v in values if isinstance(v, (int, float, bool, np.floating, np.integer))]
    return (mean_stderr(nums) if nums else None), len(nums)


def _pooled_value(values: list[Any]) -> float | None:
    if values and all(isinstance(v, (list, tuple)) for v in values):
        return clustered_ratio([[float(x) for x in v] for v in values])[0]
    nums = [float(v) for v in values if isinstance(v, (int, float, bool, np.floating, np.integer))]
    return float(np.mean(nums)) if nums else None


def _choice_index(sample: dict[str, Any]) -> int | None:
    target = sample.get("target")
    try:
        gold = int(target)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return gold if str(gold) == str(target).strip() and 0 <= gold < len(sample["loglikelihoods"]) else None


def metric_rows(
    entry: str,
    lm_results: dict[str, dict[str, Any]],
    samples_by_task: dict[str, list[dict[str, Any]]],
    calibrate: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-task metrics (lm-eval's values), plus entry-level pooled metrics and calibration."""
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[Any]] = defaultdict(list)
    for task, samples in samples_by_task.items():
        res = lm_results.get(task, {})
        per_metric: dict[str, list[Any]] = defaultdict(list)
        for s in samples:
            for m, v in s["metrics"].items():
                per_metric[m].append(v)
                pooled[m].append(v)
        for key, value in res.items():
            if key in SKIP_KEYS or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            mkey = _metric_key(metric, filt)
            se, n = _per_sample_stats(per_metric.get(mkey, []))
            rows.append({"task": task, "metric": mkey, "value": float(value), "stderr": se, "n": n or len(samples)})
    extra: dict[str, Any] = {"tasks": sorted(samples_by_task)}
    entry_rows: list[dict[str, Any]] = []
    if len(samples_by_task) == 1:
        only = next(iter(samples_by_task))
        entry_rows = [{**r, "task": entry} for r in rows if r["task"] == only] if only != entry else []
    else:
        for metric, values in sorted(pooled.items()):
            se, n = _per_sample_stats(values)
            entry_rows.append({"task": entry, "metric": metric, "value": _pooled_value(values), "stderr": se, "n": n})
    all_samples = [s for ss in samples_by_task.values() for s in ss]
    # calibration needs the gold choice index as the target; tasks that score one continuation
    # after several contexts (WinoGrande) log the continuation text instead and are left out
    mc = [s for s in all_samples if s.get("loglikelihoods") and _choice_index(s) is not None]
    if calibrate and mc:
        lls = [s["loglikelihoods"] for s in mc]
        golds = [_choice_index(s) for s in mc]
        cal = calib.calibration(lls, golds)
        briers = [calib.brier_one(calib.softmax(ll), g) for ll, g in zip(lls, golds)]
        for s, b in zip(mc, briers):
            s["metrics"]["brier"] = b
        entry_rows.append({"task": entry, "metric": "ece", "value": cal.ece, "stderr": calib.ece_stderr(lls, golds), "n": cal.n})
        entry_rows.append({"task": entry, "metric": "brier", "value": cal.brier, "stderr": mean_stderr(briers), "n": cal.n})
        extra["reliability"] = cal.bins
    have = {(r["task"], r["metric"]) for r in rows}
    rows.extend(r for r in entry_rows if (r["task"], r["metric"]) not in have)
    return rows, extra
