"""Comparing two stored runs: every shared ``(task, metric)`` as a :class:`MetricDelta`.

Why paired: two models evaluated on the *same* documents disagree on far fewer items than two
independent samples would, so comparing per-document differences (rather than two means with
their own stderrs) detects real changes with a fraction of the data. :func:`compare_runs` pairs
samples by ``(task, doc_id)`` for every ``(task, metric)`` two stored runs share, picks the test
that fits the metric (:mod:`~evalkit.analysis.paired.significance`), and adds calibration drift
(:mod:`~evalkit.analysis.paired.drift`). Each row says how it pairs in ``pairing``.

Entry-level metrics (``task == entry``, e.g. MMLU pooled over its subjects) pool all of the
entry's samples, keyed by ``(subject, doc_id)`` so subjects' doc ids do not collide.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evalkit.analysis.bootstrap import bootstrap_mean_ci
from evalkit.analysis.paired.drift import CalibrationDelta, calibration_delta
from evalkit.analysis.paired.significance import (
    ALPHA,
    binom_two_sided,
    discordant,
    excludes_zero,
    paired_ratio_bootstrap,
    ratio_contributions,
)
from evalkit.analysis.paired.values import Key, align, align_clusters, is_binary, is_clustered
from evalkit.errors import EvalkitError
from evalkit.jsonsafe import json_safe

CALIBRATION_METRICS = ("ece", "brier")
PAIRED_PER_DOC = "per document"
PAIRED_PER_CLUSTER = "per prompt (cluster), ratio estimator"


@dataclass
class MetricDelta:
    """One ``(entry, task, metric)`` compared on the documents both runs scored."""

    entry: str
    task: str
    metric: str
    level: str  # "entry" (pooled over the entry's tasks) or "task"
    n: int  # paired samples
    value_a: float
    value_b: float
    delta: float
    ci_lo: float
    ci_hi: float
    significant: bool
    binary: bool
    p_mcnemar: float | None
    a_only: int | None  # binary metrics: docs right in a only
    b_only: int | None
    stored_a: float | None  # the aggregate stored with each run (may pool differently)
    stored_b: float | None
    n_a: int  # samples with this metric in each run (paired or not)
    n_b: int
    # how the paired test pairs: PAIRED_PER_DOC (per-document values), or PAIRED_PER_CLUSTER
    # for pooled item-level metrics (IFEval inst_level_*: clusters = prompts, ratio estimator)
    pairing: str = PAIRED_PER_DOC
    n_items: int | None = None  # clustered metrics: paired items (instructions) in the pooled ratio
    diffs: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("diffs")
        return json_safe(d)


@dataclass
class Comparison:
    run_a: str
    run_b: str
    model_a: str
    model_b: str
    model_hash_a: str
    model_hash_b: str
    suite_hash_a: str
    suite_hash_b: str
    suite_mismatch: bool
    iters: int
    seed: int
    rows: list[MetricDelta]
    calibration: list[CalibrationDelta]
    skipped: list[dict[str, str]]  # shared (entry, task, metric) that could not be paired, with why
    notes: list[str]

    def row(self, entry: str, metric: str, task: str | None = None) -> MetricDelta | None:
        task = task or entry
        return next((r for r in self.rows if r.entry == entry and r.task == task and r.metric == metric), None)

    def entries(self) -> list[str]:
        return sorted({r.entry for r in self.rows})

    def significant_rows(self) -> list[MetricDelta]:
        return [r for r in self.rows if r.significant]

    def to_dict(self) -> dict[str, Any]:
        head = {k: getattr(self, k) for k in (
            "run_a", "run_b", "model_a", "model_b", "model_hash_a", "model_hash_b", "suite_hash_a", "suite_hash_b",
            "suite_mismatch", "iters", "seed",
        )}
        return {
            **head,
            "rows": [r.to_dict() for r in self.rows],
            "calibration": [c.to_dict() for c in self.calibration],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
        }


def compare_runs(
    store: Any,
    run_a: str,
    run_b: str,
    allow_suite_mismatch: bool = False,
    iters: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare run b against run a (deltas are b - a) on every shared ``(task, metric)``.

    ``store`` is a :class:`evalkit.store.RunStore`; runs may be ids, unique id prefixes or
    ``latest``. Refuses runs on different suite hashes unless ``allow_suite_mismatch``, and runs
    that share no ``(task, doc_id)``.
    """
    ra, rb = store.get_run(run_a), store.get_run(run_b)
    mismatch = ra.suite_hash != rb.suite_hash
    if mismatch and not allow_suite_mismatch:
        raise EvalkitError(
            f"runs {ra.run_id} and {rb.run_id} were measured on different suites (suite hash "
            f"{ra.suite_hash[:12]} vs {rb.suite_hash[:12]}); pass --allow-suite-mismatch to compare anyway"
        )
    samples_a = _by_entry(store.samples(ra.run_id))
    samples_b = _by_entry(store.samples(rb.run_id))
    stored_a = {(m["entry"], m["task"], m["metric"]): m for m in store.metrics(ra.run_id)}
    stored_b = {(m["entry"], m["task"], m["metric"]): m for m in store.metrics(rb.run_id)}
    shared = sorted(set(stored_a) & set(stored_b), key=lambda k: (k[0], k[1] != k[0], k[1], k[2]))
    if not shared:
        raise EvalkitError(f"runs {ra.run_id} and {rb.run_id} share no (task, metric) to compare")
    _require_overlap(ra.run_id, rb.run_id, samples_a, samples_b)

    cal = [
        c for entry in sorted(set(samples_a) & set(samples_b))
        if (c := calibration_delta(entry, samples_a[entry], samples_b[entry], iters, seed)) is not None
    ]
    calibrated = {c.entry for c in cal}
    rows: list[MetricDelta] = []
    skipped: list[dict[str, str]] = []
    for key in shared:
        entry, task, metric = key
        if metric in CALIBRATION_METRICS and entry in calibrated:
            continue  # reported in `calibration`
        va = metric_values(samples_a.get(entry, []), entry, task, metric)
        vb = metric_values(samples_b.get(entry, []), entry, task, metric)
        row = metric_delta(key, va, vb, stored_a[key].get("value"), stored_b[key].get("value"), iters, seed)
        if isinstance(row, str):
            skipped.append({"entry": entry, "task": task, "metric": metric, "reason": row})
        else:
            rows.append(row)
    notes = [f"run {r.run_id} is {r.status}, not complete" for r in (ra, rb) if r.status != "complete"]
    if mismatch:
        notes.append("suite hashes differ: the runs may have measured different things")
    return Comparison(
        run_a=ra.run_id, run_b=rb.run_id, model_a=ra.model_spec, model_b=rb.model_spec,
        model_hash_a=ra.model_hash, model_hash_b=rb.model_hash, suite_hash_a=ra.suite_hash,
        suite_hash_b=rb.suite_hash, suite_mismatch=mismatch, iters=iters, seed=seed,
        rows=rows, calibration=cal, skipped=skipped, notes=notes,
    )


def _by_entry(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        out[s["entry"]].append(s)
    return dict(out)


def _require_overlap(run_a: str, run_b: str, sa: dict[str, list[dict[str, Any]]], sb: dict[str, list[dict[str, Any]]]) -> None:
    keys_a = {(e, s["task"], int(s["doc_id"])) for e, ss in sa.items() for s in ss}
    keys_b = {(e, s["task"], int(s["doc_id"])) for e, ss in sb.items() for s in ss}
    if not keys_a & keys_b:
        raise EvalkitError(f"runs {run_a} and {run_b} share no (task, doc_id): nothing can be paired")


def metric_values(samples: list[dict[str, Any]], entry: str, task: str, metric: str) -> dict[Key, Any]:
    """Raw per-sample values of one metric, keyed by (task, doc_id); task == entry pools the entry."""
    pooled = task == entry
    return {
        (s["task"], int(s["doc_id"])): s["metrics"][metric]
        for s in samples
        if (pooled or s["task"] == task) and metric in (s.get("metrics") or {})
    }


def metric_delta(
    key: tuple[str, str, str],
    va: dict[Key, Any],
    vb: dict[Key, Any],
    stored_a: float | None,
    stored_b: float | None,
    iters: int,
    seed: int,
) -> MetricDelta | str:
    """The paired comparison of one metric, or the reason it cannot be made."""
    entry, task, metric = key
    if not va or not vb:
        return "no per-sample values"
    common = sorted(set(va) & set(vb))
    raw_a = [va[k] for k in common]
    raw_b = [vb[k] for k in common]
    if is_clustered(raw_a) or is_clustered(raw_b):
        return _clustered_delta(key, raw_a, raw_b, len(va), len(vb), stored_a, stored_b, iters, seed)
    xa, xb = align(raw_a, raw_b)
    if len(xa) == 0:
        return "no overlapping doc ids"
    delta, lo, hi = bootstrap_mean_ci(xb - xa, iters=iters, seed=seed)
    binary = is_binary(raw_a) and is_binary(raw_b) and len(xa) == len(common)
    a_only = b_only = None
    p = None
    if binary:
        a_only, b_only = discordant(xa, xb)
        p = binom_two_sided(min(a_only, b_only), a_only + b_only)
    return MetricDelta(
        entry=entry, task=task, metric=metric, level="entry" if task == entry else "task", n=len(xa),
        value_a=float(xa.mean()), value_b=float(xb.mean()), delta=delta, ci_lo=lo, ci_hi=hi,
        significant=(p < ALPHA) if binary and p is not None else excludes_zero(lo, hi), binary=binary, p_mcnemar=p, a_only=a_only, b_only=b_only,
        stored_a=stored_a, stored_b=stored_b, n_a=len(va), n_b=len(vb), diffs=xb - xa,
    )


def _clustered_delta(
    key: tuple[str, str, str], raw_a: list[Any], raw_b: list[Any], n_a: int, n_b: int,
    stored_a: float | None, stored_b: float | None, iters: int, seed: int,
) -> MetricDelta | str:
    """A pooled item-level metric (list per document): ratio estimator, cluster paired bootstrap.

    Never binary (a prompt is not one 0/1 outcome), so no McNemar; the CI decides significance.
    """
    entry, task, metric = key
    ca, cb = align_clusters(raw_a, raw_b)
    if not ca:
        return "no overlapping doc ids"
    ra, rb, delta, lo, hi = paired_ratio_bootstrap(ca, cb, iters=iters, seed=seed)
    return MetricDelta(
        entry=entry, task=task, metric=metric, level="entry" if task == entry else "task", n=len(ca),
        value_a=ra, value_b=rb, delta=delta, ci_lo=lo, ci_hi=hi, significant=excludes_zero(lo, hi),
        binary=False, p_mcnemar=None, a_only=None, b_only=None, stored_a=stored_a, stored_b=stored_b,
        n_a=n_a, n_b=n_b, pairing=PAIRED_PER_CLUSTER, n_items=sum(len(v) for v in ca),
        diffs=ratio_contributions(ca, cb),
    )
