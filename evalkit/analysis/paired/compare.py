"""Paired comparison of two runs on the same frozen suite.

Why paired: two models evaluated on the *same* documents disagree on far fewer items than two
independent samples would, so comparing per-document differences (rather than two means with
their own stderrs) detects real changes with a fraction of the data. Every statistic here pairs
samples by ``(task, doc_id)``:

* :func:`paired_bootstrap` — percentile 95% CI of ``mean(b) - mean(a)`` resampling documents
  jointly (one index draws both models' values for that document);
* :func:`paired_ratio_bootstrap` — the same for pooled item-level metrics (IFEval instructions):
  ratio estimator, prompts (clusters) resampled jointly;
* :func:`mcnemar_exact` — exact two-sided binomial test on the discordant pairs of a 0/1 metric;
* :func:`compare_runs` — every ``(task, metric)`` two stored runs share, plus calibration drift
  (ECE / Brier recomputed from the stored choice log-likelihoods).

Per-sample values: numbers and bools are used as they are. List-valued metrics (IFEval's
instruction-level accuracies, one bool per instruction of a prompt) keep lm-eval's definition of
the figure: ``inst_level_strict_acc`` is *pooled* over all instructions (followed / total), the
value ``evalkit show`` prints. So the paired statistic is a ratio estimator,
``Δ = Σb/Σn − Σa/Σn`` over prompts, and its CI comes from a per-prompt (cluster) paired
bootstrap (:func:`paired_ratio_bootstrap`): each prompt is one paired unit, because a prompt's
instructions are not independent, and every resample recomputes both models' pooled ratios on the
same resampled prompts, so the CI is for the figure displayed. (The mean of per-prompt accuracies
is a different estimand: a prompt going [F]→[T] next to an unchanged [T,T,T] is +0.50 per prompt
but +0.25 pooled.) Each row says how it pairs in ``pairing``.

Entry-level metrics (``task == entry``, e.g. MMLU pooled over its subjects) pool all of the
entry's samples, keyed by ``(subject, doc_id)`` so subjects' doc ids do not collide.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evalkit.analysis import calibration as calib
from evalkit.analysis.stats import clustered_ratio
from evalkit.errors import EvalkitError

Key = tuple[str, int]
CALIBRATION_METRICS = ("ece", "brier")
PAIRED_PER_DOC = "per document"
PAIRED_PER_CLUSTER = "per prompt (cluster), ratio estimator"
_CHUNK_CELLS = 4_000_000  # resampled indices held in memory at once


# ------------------------------------------------------------------ per-sample values
def per_sample_value(value: Any) -> float | None:
    """One number per sample: bools/numbers as is, lists reduced to their mean, else None."""
    if isinstance(value, (list, tuple)):
        nums = [per_sample_value(v) for v in value]
        nums = [v for v in nums if v is not None]
        return float(np.mean(nums)) if nums else None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        return None if math.isnan(x) else x
    return None


def is_binary(values: Sequence[Any]) -> bool:
    """True when every raw value is a scalar 0/1 (bools included; lists never are)."""
    if not values:
        return False
    for v in values:
        if isinstance(v, (list, tuple)) or per_sample_value(v) not in (0.0, 1.0):
            return False
    return True


def align(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Paired float arrays. Mappings pair on shared keys (sorted); sequences must be aligned already.

    Pairs where either side has no usable value are dropped.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = sorted(set(a) & set(b), key=repr)
        pairs = [(per_sample_value(a[k]), per_sample_value(b[k])) for k in keys]
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("align: pass two mappings keyed by (task, doc_id) or two aligned sequences")
    else:
        if len(a) != len(b):
            raise ValueError(f"align: sequences differ in length ({len(a)} vs {len(b)})")
        pairs = [(per_sample_value(x), per_sample_value(y)) for x, y in zip(a, b)]
    kept = [(x, y) for x, y in pairs if x is not None and y is not None]
    xa = np.array([x for x, _ in kept], dtype=np.float64)
    xb = np.array([y for _, y in kept], dtype=np.float64)
    return xa, xb


def is_clustered(values: Sequence[Any]) -> bool:
    """True when a metric's values are lists of items per document (IFEval instruction lists)."""
    return any(isinstance(v, (list, tuple)) for v in values)


def cluster_items(value: Any) -> list[float] | None:
    """A document's usable item values: a list's numbers, a scalar as a cluster of one, else None."""
    items = value if isinstance(value, (list, tuple)) else [value]
    nums = [x for x in (per_sample_value(v) for v in items) if x is not None]
    return nums or None


def align_clusters(a: Sequence[Any], b: Sequence[Any]) -> tuple[list[list[float]], list[list[float]]]:
    """Aligned per-document item lists; documents with no usable item in either run are dropped."""
    if len(a) != len(b):
        raise ValueError(f"align_clusters: sequences differ in length ({len(a)} vs {len(b)})")
    kept = [(x, y) for x, y in ((cluster_items(u), cluster_items(v)) for u, v in zip(a, b)) if x and y]
    return [x for x, _ in kept], [y for _, y in kept]


# ------------------------------------------------------------------------- statistics
def bootstrap_indices(n: int, iters: int, seed: int) -> Iterator[np.ndarray]:
    """Resampled index rows (shape ``(rows, n)``) in memory-bounded chunks, ``iters`` rows in all."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    done = 0
    while done < iters:
        rows = min(per_chunk, iters - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def percentile_ci(stats: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_mean_ci(diffs: np.ndarray, iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile 95% CI (NaN bounds when n < 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    delta = float(d.mean())
    if n < 2 or iters < 1:
        return delta, float("nan"), float("nan")
    means = np.concatenate([d[idx].mean(axis=1) for idx in bootstrap_indices(n, iters, seed)])
    lo, hi = percentile_ci(means)
    return delta, lo, hi


def paired_ratio_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], iters: int = 2000, seed: int = 0
) -> tuple[float, float, float, float, float]:
    """``(ratio_a, ratio_b, delta, lo, hi)`` of a pooled (ratio) metric paired per cluster.

    ``a[i]``/``b[i]`` are the item values (e.g. instructions followed) of cluster ``i`` (a prompt)
    in each run. The ratios are the pooled means of :func:`~evalkit.analysis.stats.clustered_ratio`,
    ``Σ items / Σ sizes`` (lm-eval's ``inst_level_*_acc``), and ``delta = ratio_b - ratio_a``.
    The 95% percentile CI resamples *clusters* jointly: one index draws both runs' items of one
    prompt, and each resample recomputes both pooled ratios on the same prompts, so the interval
    is for the pooled difference itself. (Bootstrapping mean per-prompt differences instead gives
    a CI for a different number, and covers the pooled one far less often than 95% when gains sit
    on prompts with many instructions.) Runs may differ in a cluster's size; each ratio uses its
    own sizes. Same index stream as :func:`bootstrap_mean_ci` (:func:`bootstrap_indices`).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_ratio_bootstrap: cluster lists differ in length ({len(a)} vs {len(b)})")
    sums_a, size_a = _cluster_sums(a)
    sums_b, size_b = _cluster_sums(b)
    ra, rb = clustered_ratio(a)[0], clustered_ratio(b)[0]
    delta = rb - ra
    n = len(a)
    if n < 2 or iters < 1:
        return ra, rb, delta, float("nan"), float("nan")
    stats = np.concatenate([
        sums_b[idx].sum(axis=1) / size_b[idx].sum(axis=1) - sums_a[idx].sum(axis=1) / size_a[idx].sum(axis=1)
        for idx in bootstrap_indices(n, iters, seed)
    ])
    lo, hi = percentile_ci(stats)
    return ra, rb, delta, lo, hi


def _cluster_sums(clusters: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster item sums and sizes (plain ``sum``: thousands of short lists, no numpy per list)."""
    return (np.array([float(sum(v)) for v in clusters], dtype=np.float64),
            np.array([float(len(v)) for v in clusters], dtype=np.float64))


def ratio_contributions(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-cluster differences whose *mean* is the pooled delta: ``Σb_i/n̄_b − Σa_i/n̄_a``.

    ``MetricDelta.diffs`` holds one number per paired unit and consumers average it (the
    alignment tax's weighted mean); for a ratio metric these linearised contributions (sizes
    scaled by their mean, held fixed) keep that mean equal to the pooled delta shown.
    """
    sums_a, size_a = _cluster_sums(a)
    sums_b, size_b = _cluster_sums(b)
    mean_a = float(size_a.mean()) if len(a) else 1.0
    mean_b = float(size_b.mean()) if len(b) else 1.0
    return sums_b / mean_b - sums_a / mean_a


def paired_bootstrap(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any], iters: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(delta, lo, hi)``: mean(b) - mean(a) over paired samples with a 95% percentile CI.

    ``a``/``b`` are mappings keyed by ``(task, doc_id)`` (paired on shared keys) or aligned
    sequences. Documents are resampled jointly: each draw takes both runs' values of one doc.
    """
    xa, xb = align(a, b)
    return bootstrap_mean_ci(xb - xa, iters=iters, seed=seed)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (2 x the smaller tail, capped at 1)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def discordant(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> tuple[int, int]:
    """``(a_only, b_only)``: pairs right in a but not b, and right in b but not a."""
    xa, xb = align(a, b)
    if not (np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all()):
        raise ValueError("mcnemar_exact: needs binary (0/1) per-sample values")
    return int(((xa == 1) & (xb == 0)).sum()), int(((xa == 0) & (xb == 1)).sum())


def mcnemar_exact(a: Mapping[Any, Any] | Sequence[Any], b: Mapping[Any, Any] | Sequence[Any]) -> float:
    """Exact McNemar p-value for binary per-sample scores (1.0 when no pair is discordant)."""
    a_only, b_only = discordant(a, b)
    return binom_two_sided(min(a_only, b_only), a_only + b_only)


# ------------------------------------------------------------------------ comparison
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
        return _clean(d)


@dataclass
class CalibrationDelta:
    """Calibration drift of one multiple-choice entry (b minus a; lower ECE/Brier is better)."""

    entry: str
    n: int
    ece_a: float
    ece_b: float
    ece_delta: float
    ece_lo: float
    ece_hi: float
    ece_significant: bool
    brier_a: float
    brier_b: float
    brier_delta: float
    brier_lo: float
    brier_hi: float
    brier_significant: bool

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


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


ALPHA = 0.05
# Why McNemar decides for 0/1 metrics: with few discordant docs the percentile bootstrap is too
# liberal (4 wins, 0 losses gives a CI excluding 0 while the exact test says p = 0.125), and a
# promotion gate must not rest on that. Non-binary metrics use the bootstrap CI.


def excludes_zero(lo: float, hi: float) -> bool:
    return bool(not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0))


# ----------------------------------------------------------------------- calibration
def _mc_items(samples: list[dict[str, Any]]) -> dict[Key, tuple[list[float], int]]:
    """Multiple-choice samples with usable log-likelihoods and an integer gold index."""
    out: dict[Key, tuple[list[float], int]] = {}
    for s in samples:
        ll = s.get("loglik")
        if not ll:
            continue
        try:
            gold = int(str(s.get("target")).strip())
        except ValueError:
            continue
        if 0 <= gold < len(ll):
            out[(s["task"], int(s["doc_id"]))] = ([float(x) for x in ll], gold)
    return out


def _conf_correct_brier(items: list[tuple[list[float], int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = [calib.softmax(ll) for ll, _ in items]
    conf = np.array([p.max() for p in probs])
    correct = np.array([float(int(np.argmax(p)) == g) for p, (_, g) in zip(probs, items)])
    brier = np.array([calib.brier_one(p, g) for p, (_, g) in zip(probs, items)])
    return conf, correct, brier


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Same binning as :func:`evalkit.analysis.calibration.ece_from` (right-closed bins)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def _ece_rows(bins: np.ndarray, conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of each resample row of ``idx`` (vectorised: |sum acc - sum conf| per bin / n)."""
    rows, n = idx.shape
    flat_bins = (bins[idx] + n_bins * np.arange(rows)[:, None]).ravel()
    gap = np.bincount(flat_bins, weights=(correct[idx] - conf[idx]).ravel(), minlength=rows * n_bins)
    sum_abs = np.abs(gap.reshape(rows, n_bins))
    return sum_abs.sum(axis=1) / n


def calibration_delta(
    entry: str, samples_a: list[dict[str, Any]], samples_b: list[dict[str, Any]], iters: int, seed: int, n_bins: int = 15
) -> CalibrationDelta | None:
    """ECE and Brier drift for an entry whose samples carry choice log-likelihoods in both runs."""
    ia, ib = _mc_items(samples_a), _mc_items(samples_b)
    keys = sorted(k for k in set(ia) & set(ib) if len(ia[k][0]) == len(ib[k][0]) and ia[k][1] == ib[k][1])
    if not keys:
        return None
    conf_a, corr_a, brier_a = _conf_correct_brier([ia[k] for k in keys])
    conf_b, corr_b, brier_b = _conf_correct_brier([ib[k] for k in keys])
    ece_a, _ = calib.ece_from(conf_a, corr_a, n_bins)
    ece_b, _ = calib.ece_from(conf_b, corr_b, n_bins)
    n = len(keys)
    ece_lo = ece_hi = float("nan")
    if n >= 2 and iters >= 1:
        bins_a, bins_b = _bin_index(conf_a, n_bins), _bin_index(conf_b, n_bins)
        stats = np.concatenate([
            _ece_rows(bins_b, conf_b, corr_b, idx, n_bins) - _ece_rows(bins_a, conf_a, corr_a, idx, n_bins)
            for idx in bootstrap_indices(n, iters, seed)
        ])
        ece_lo, ece_hi = percentile_ci(stats)
    b_delta, b_lo, b_hi = bootstrap_mean_ci(brier_b - brier_a, iters=iters, seed=seed)
    return CalibrationDelta(
        entry=entry, n=n, ece_a=ece_a, ece_b=ece_b, ece_delta=ece_b - ece_a, ece_lo=ece_lo, ece_hi=ece_hi,
        ece_significant=excludes_zero(ece_lo, ece_hi), brier_a=float(brier_a.mean()), brier_b=float(brier_b.mean()),
        brier_delta=b_delta, brier_lo=b_lo, brier_hi=b_hi, brier_significant=excludes_zero(b_lo, b_hi),
    )


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            v = None if math.isnan(float(v)) else float(v)
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        out[k] = v
    return out
