"""Per-slice statistics and the metadata baseline: does any error-aware slice say more than the
task's own metadata split?

For every cluster (slice) and every metadata group (MMLU subject, IFEval instruction id, a task
inside a group entry; GSM8K has none): error rate, lift = rate / the rate its members' entries
have overall, and a 95% percentile-bootstrap CI of the lift. One bootstrap (the shared
``evalkit.analysis.bootstrap`` stream) resamples the samples; each resample recomputes both the
slice's rate and its entries' rates, so the CI carries the uncertainty of the baseline too.
Resamples in which a slice is empty are dropped.

The verdict, per entry: a slice BEATS the metadata split when it is not an outlier group, has at
least ``MIN_SLICE`` members, and the lower bound of its lift CI is above the best lift of any
metadata group of that entry with at least ``MIN_SLICE`` members (groups smaller than a slice
could be are not a fair bar; an entry with no metadata split is compared with its mean, lift 1).
When no slice of an entry beats it, the result carries ``no_slice_beats_metadata`` and the page
says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evalkit.analysis.bootstrap import bootstrap_indices, percentile_ci
from evalkit.analysis.clusters.result import Cluster
from evalkit.analysis.clusters.texts import Item
from evalkit.analysis.power import wilson_ci

MIN_SLICE = 5
ITERS = 1000
SPLIT_NAME = {"mmlu": "subject", "ifeval": "instruction type", "gsm8k": "none"}


def lift_table(items: Sequence[Item], membership: np.ndarray, iters: int = ITERS, seed: int = 0
               ) -> list[dict[str, Any]]:
    """Rate, base rate, lift and lift CI per column of ``membership`` (items x groups, 0/1; a
    sample may sit in several groups)."""
    n = len(items)
    failed = np.array([it.failed for it in items], dtype=np.float64)
    names = sorted({it.entry for it in items})
    entry_of = np.array([names.index(it.entry) for it in items])
    E = np.zeros((n, len(names)))
    E[np.arange(n), entry_of] = 1.0
    M = np.asarray(membership, dtype=np.float64)
    size = M.sum(axis=0)
    fails = failed @ M
    entry_rate = (failed @ E) / np.maximum(E.sum(axis=0), 1)
    base = (entry_rate[entry_of] @ M) / np.maximum(size, 1)
    lifts: list[list[float]] = [[] for _ in range(M.shape[1])]
    if n >= 2 and iters > 0:
        for idx in bootstrap_indices(n, iters, seed):
            W = np.zeros((len(idx), n))
            np.add.at(W, (np.repeat(np.arange(len(idx)), n), idx.ravel()), 1.0)
            e_n, e_f = W @ E, (W * failed) @ E
            e_rate = e_f / np.where(e_n > 0, e_n, 1)
            g_n = W @ M
            g_rate = ((W * failed) @ M) / np.where(g_n > 0, g_n, 1)
            g_base = ((W * e_rate[:, entry_of]) @ M) / np.where(g_n > 0, g_n, 1)
            ok = (g_n > 0) & (g_base > 0)
            lift = np.where(ok, g_rate / np.where(g_base > 0, g_base, 1), np.nan)
            for g in range(M.shape[1]):
                col = lift[:, g]
                lifts[g].extend(col[~np.isnan(col)].tolist())
    out = []
    for g in range(M.shape[1]):
        k, m = int(fails[g]), int(size[g])
        lo, hi = percentile_ci(lifts[g]) if lifts[g] else (math.nan, math.nan)
        err_lo, err_hi = wilson_ci(k, m)
        out.append({"n": m, "failures": k, "error_rate": round(k / m, 6) if m else 0.0,
                    "error_ci": [round(err_lo, 4), round(err_hi, 4)], "base_rate": round(float(base[g]), 6),
                    "lift": round(float(k / m / base[g]), 4) if m and base[g] > 0 else None,
                    "lift_ci": None if math.isnan(lo) else [round(lo, 4), round(hi, 4)]})
    return out


def compare_to_metadata(items: Sequence[Item], labels: np.ndarray, clusters: list[Cluster],
                        iters: int = ITERS, seed: int = 0) -> dict[str, Any]:
    """Fill each cluster's ``error_ci``, ``lift_ci`` and ``beats_metadata`` and return the
    baseline comparison (stored as ``ClusterResult.extra``): per entry the metadata split's
    groups with their lifts, the bar a slice must clear, the slices that clear it, and the flag."""
    labels = np.asarray(labels)
    ids = [c.cluster_id for c in clusters]
    groups = sorted({(it.entry, g) for it in items for g in it.groups})
    M = np.zeros((len(items), len(ids) + len(groups)))
    for i, it in enumerate(items):
        M[i, ids.index(int(labels[i]))] = 1.0
        for g in it.groups:
            M[i, len(ids) + groups.index((it.entry, g))] = 1.0
    table = lift_table(items, M, iters, seed)
    fams = {it.entry: it.family for it in items}
    entries: dict[str, Any] = {}
    for e in sorted(fams):
        rows = [{"group": g, **table[len(ids) + j]} for j, (ge, g) in enumerate(groups) if ge == e]
        fair = [r for r in rows if r["n"] >= MIN_SLICE and r["lift"] is not None]
        best = max(fair, key=lambda r: (r["lift"], r["n"]), default=None)
        entries[e] = {"split": SPLIT_NAME.get(fams[e], "task" if rows else "none"), "n_groups": len(rows),
                      "best": best, "bar": best["lift"] if best else 1.0,
                      "groups": sorted(rows, key=lambda r: (-(r["lift"] or 0), -r["n"], r["group"]))[:12],
                      "beating": []}
    for j, c in enumerate(clusters):
        row = table[j]
        c.error_ci, c.lift_ci = row["error_ci"], row["lift_ci"]
        mix = [it.entry for i, it in enumerate(items) if int(labels[i]) == c.cluster_id]
        bar = max(entries[e]["bar"] for e in set(mix)) if mix else 1.0
        c.beats_metadata = bool(not c.is_outliers and c.size >= MIN_SLICE and c.lift_ci is not None
                                and c.lift_ci[0] > bar)
        if c.beats_metadata:
            for e in sorted(set(mix)):
                entries[e]["beating"].append(c.cluster_id)
    for e, d in entries.items():
        d["no_slice_beats_metadata"] = not d["beating"]
        rate = float(np.mean([it.failed for it in items if it.entry == e]))
        d["entry_error_rate"] = round(rate, 4)
        d["lift_ceiling"] = round(1.0 / rate, 4) if rate > 0 else None  # a slice failing every sample
        d["verdict"] = verdict_line(e, d)
    return {"criterion": (f"a slice beats the metadata split when it has >= {MIN_SLICE} members, is not an outlier "
                          f"group, and its lift's 95% CI lower bound exceeds the best lift of any metadata group "
                          f"with >= {MIN_SLICE} members (lift 1 = the entry mean where there is no split)"),
            "min_slice": MIN_SLICE, "iters": iters, "entries": entries,
            "no_slice_beats_metadata": not any(d["beating"] for d in entries.values())}


def verdict_line(entry: str, d: dict[str, Any]) -> str:
    best = d.get("best")
    bar = (f"the best {d['split']} group ({best['group']}, n={best['n']}, lift {best['lift']:.2f})" if best
           else "the entry mean (lift 1.00; no metadata group large enough)" if d["n_groups"]
           else "the entry mean (lift 1.00; no metadata split)")
    if d["beating"]:
        ids = ", ".join(str(i) for i in d["beating"])
        return f"{entry}: slice(s) {ids} beat {bar}: their lift CI lower bound is above it."
    ceiling = d.get("lift_ceiling")
    note = (f" (the bar is the ceiling: at an entry error rate of {d['entry_error_rate']:.2f} no slice can exceed lift "
            f"{ceiling:.2f})" if best and ceiling and best["lift"] >= ceiling - 1e-9 else "")
    if not d["n_groups"]:
        return f"{entry}: no slice beats {bar}: no slice fails clearly more often than the entry as a whole."
    return f"{entry}: no slice beats {bar}{note}; the error-aware clusters say nothing the plain {d['split']} split does not."
