"""An inspect ``EvalLog`` of a pass@k task turned into evalkit store rows.

One sample row per problem (not per epoch), because pass@k is a property of a problem's n
draws: ``responses`` holds the n raw completions in epoch order, ``filtered`` the extracted
programs' completions, ``metrics`` n, c and pass@k, ``extra`` each epoch's pass/fail with the
sandbox status and reason, plus inspect's own reduced pass@k values for cross-checking.
Entry-level rows are computed again here with :mod:`evalkit.analysis.passk` (mean and the
across-problem standard error, the project's convention) rather than copied from inspect, so
both engines report pass@k the same way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from evalkit.analysis.passk import pass_at_k, pass_at_k_table

CORRECT = "C"


def _reduced(log: Any, scorer: str) -> dict[Any, dict[str, float]]:
    """sample id -> {reducer name: value} from the log's per-sample reductions."""
    out: dict[Any, dict[str, float]] = defaultdict(dict)
    for red in log.reductions or []:
        if red.scorer != scorer:
            continue
        for s in red.samples:
            value = s.value
            out[s.sample_id][red.reducer or "mean"] = float(value) if isinstance(value, (int, float)) else value
    return out


def sample_rows(log: Any, task: str, scorer: str, ks: list[int], problems: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per problem, with all of its epochs."""
    by_id: dict[Any, list[Any]] = defaultdict(list)
    for s in log.samples or []:
        by_id[s.id].append(s)
    reduced = _reduced(log, scorer)
    rows = []
    for sid in sorted(by_id, key=lambda v: (str(type(v)), v)):
        epochs = sorted(by_id[sid], key=lambda s: s.epoch)
        first = epochs[0]
        problem = problems[first.metadata["task_id"]]
        per_epoch, passed = [], []
        for s in epochs:
            score = (s.scores or {}).get(scorer)
            ok = score is not None and score.value == CORRECT
            meta = (score.metadata or {}) if score is not None else {}
            passed.append(ok)
            per_epoch.append({
                "epoch": s.epoch, "passed": ok,
                "status": meta.get("status", "error" if s.error else "unscored"),
                "reason": meta.get("reason", s.error.message if s.error else ""),
                "duration_s": meta.get("duration_s"),
                "stop_reason": s.output.stop_reason if s.output and s.output.choices else None,
                "output_tokens": s.output.usage.output_tokens if s.output and s.output.usage else None,
            })
        n, c = len(passed), sum(passed)
        metrics: dict[str, float] = {"n": n, "n_correct": c, "mean": c / n}
        for k in ks:
            if k <= n:
                metrics[f"pass@{k}"] = pass_at_k(n, c, k)
        rows.append({
            "task": task,
            "doc_id": int(sid),
            "prompt": first.input if isinstance(first.input, str) else str(first.input),
            "target": problem["canonical_solution"],
            "responses": [s.output.completion if s.output else "" for s in epochs],
            "filtered": {"completion": [(s.scores or {}).get(scorer).answer if (s.scores or {}).get(scorer) else None
                                        for s in epochs]},
            "loglikelihoods": None,
            "metrics": metrics,
            "doc": dict(problem),
            "extra": {"task_id": problem["task_id"], "epochs": per_epoch, "inspect_reductions": reduced.get(sid, {})},
        })
    return rows


def metric_rows(entry_name: str, rows: list[dict[str, Any]], ks: list[int]) -> list[dict[str, Any]]:
    """Entry-level pass@k (mean, stderr across problems, n problems) and the per-sample mean."""
    counts = [(int(r["metrics"]["n"]), int(r["metrics"]["n_correct"])) for r in rows]
    out = []
    for k, row in pass_at_k_table(counts, ks).items():
        err = row["stderr"]
        out.append({"task": entry_name, "metric": f"pass@{k}", "value": row["mean"],
                     "stderr": None if math.isnan(err) else err, "n": row["num_problems"]})
    total = sum(n for n, _ in counts)
    if total:
        out.append({"task": entry_name, "metric": "sample_accuracy", "value": sum(c for _, c in counts) / total,
                    "stderr": None, "n": total})
    return out


def inspect_metrics(log: Any) -> dict[str, dict[str, float]]:
    """inspect's own headline numbers ({scorer/reducer: {metric: value}}), kept in the entry's extra."""
    out: dict[str, dict[str, float]] = {}
    for score in (log.results.scores if log.results else []):
        key = f"{score.name}/{score.reducer}" if score.reducer else score.name
        out[key] = {name: m.value for name, m in score.metrics.items()}
    return out
