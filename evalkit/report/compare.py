"""The comparison page (``reports/compare-<id>/index.html``): per-metric paired deltas with CI
whiskers, calibration drift, alignment tax and an optional KL(policy||ref) histogram.

Why plain inline SVG: the page must open from disk with no network, and a few bars and a
histogram do not justify inlining 4.8 MB of plotly. Inputs are the JSON-able dicts the
analyses produce (``to_dict()``), so a comparison read back from the store renders the same.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from evalkit.analysis.paired import PAIRED_PER_DOC as PER_DOC
from evalkit.analysis.paired import Flips, flipped_items
from evalkit.analysis.tax import DEFAULT_PRIMARY
from evalkit.env import reports_dir_default
from evalkit.report.jinja_env import environment
from evalkit.report.summary import fmt

LABEL_W, PLOT_W, VALUE_W, ROW_H = 300, 420, 170, 18
PAIRING_W = 250  # extra value-column width when a row names its pairing
PREVIEW_CHARS = 160  # a flipped item's input shown before its <details> expand


def _as_dict(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x) and not math.isinf(x)


def pairing_label(r: Mapping[str, Any]) -> str:
    """How a row's paired test pairs, when it is not simply per document (e.g. IFEval's pooled
    inst-level accuracy: "per prompt (cluster), ratio estimator"); empty otherwise."""
    pairing = r.get("pairing") or PER_DOC
    return "" if pairing == PER_DOC else str(pairing)


def delta_chart(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Geometry for horizontal delta bars around 0 with CI whiskers (one row per metric).

    A row that is not paired per document says how it pairs after its CI, so a pooled ratio's
    delta is not read as a mean of per-document differences."""
    span = max([abs(float(r[k])) for r in rows for k in ("delta", "ci_lo", "ci_hi") if _finite(r.get(k))] or [1.0]) or 1.0
    half = PLOT_W / 2 - 10
    zero = LABEL_W + PLOT_W / 2

    def x(v: float) -> float:
        return round(zero + v / span * half, 2)

    bars = []
    for i, r in enumerate(rows):
        y = 20 + i * ROW_H
        d = float(r["delta"]) if _finite(r.get("delta")) else 0.0
        bar = {"y": y, "label": f"{r['entry']} · {r['task']} · {r['metric']}" if r["task"] != r["entry"] else f"{r['entry']} · {r['metric']}",
               "x": min(x(0), x(d)), "w": round(max(abs(x(d) - x(0)), 1.0), 2), "sig": bool(r.get("significant")),
               "up": d >= 0, "text": f"{fmt(r.get('delta'))} [{fmt(r.get('ci_lo'))}, {fmt(r.get('ci_hi'))}]", "whisker": None}
        if pairing_label(r):
            bar["text"] += f" · paired {pairing_label(r)}"
        if _finite(r.get("ci_lo")) and _finite(r.get("ci_hi")):
            bar["whisker"] = {"x1": x(float(r["ci_lo"])), "x2": x(float(r["ci_hi"]))}
        bars.append(bar)
    value_w = VALUE_W + (PAIRING_W if any(pairing_label(r) for r in rows) else 0)
    bottom = 30 + len(rows) * ROW_H
    return {"bars": bars, "zero": zero, "bottom": bottom, "height": bottom + 22, "width": LABEL_W + PLOT_W + value_w,
            "span": span, "label_w": LABEL_W, "plot_w": PLOT_W, "value_x": LABEL_W + PLOT_W + 6,
            "left": fmt(-span), "right": fmt(span), "x_mid": LABEL_W + PLOT_W / 2,
            "x_title": "Δ = b − a (in each metric's own units; bar = point estimate, whisker = 95% CI)",
            "y_title": "entry · metric"}


def kl_histogram(kl: Mapping[str, Any], n_bins: int = 20, width: int = 640, height: int = 210) -> dict[str, Any] | None:
    """Bars of the per-token exact KL values over all prompts, with titled axes (nats; tokens)."""
    values = [float(v) for p in kl.get("per_prompt") or [] for v in (p.get("token_kl") or []) if _finite(v)]
    if not values:
        return None
    lo, hi = min(0.0, min(values)), max(values)
    step = (hi - lo) / n_bins or 1.0
    counts = [0] * n_bins
    for v in values:
        counts[min(int((v - lo) / step), n_bins - 1)] += 1
    top = max(counts)
    left, right, head, foot = 58, 10, 10, 44
    plot_w, plot_h = width - left - right, height - head - foot
    bw = plot_w / n_bins
    bars = [{"x": round(left + i * bw, 2), "w": round(bw - 1, 2), "h": round(c / top * plot_h, 2),
             "y": round(head + plot_h - c / top * plot_h, 2), "count": c,
             "range": f"{lo + i * step:.4g}–{lo + (i + 1) * step:.4g}"} for i, c in enumerate(counts)]
    base = head + plot_h
    return {"bars": bars, "width": width, "height": height, "lo": f"{lo:.3g}", "hi": f"{hi:.3g}", "n": len(values),
            "left": left, "right_x": width - right, "head": head, "base": base, "top_count": top,
            "x_mid": left + plot_w / 2, "y_mid": head + plot_h / 2,
            "x_title": "per-token KL(policy ‖ reference) (nats)", "y_title": "count (tokens)"}


def entry_primary_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each entry's primary compared row: the entry-level row of its default primary metric
    (:data:`evalkit.analysis.tax.DEFAULT_PRIMARY`), else its first entry-level row."""
    out: dict[str, Mapping[str, Any]] = {}
    for entry in sorted({r["entry"] for r in rows}):
        mine = [r for r in rows if r["entry"] == entry]
        top = [r for r in mine if r["task"] == entry] or mine
        want = DEFAULT_PRIMARY.get(entry)
        out[entry] = next((r for r in top if r["metric"] == want), None) or sorted(top, key=lambda r: r["metric"])[0]
    return out


def entry_flips(comparison: Any, store: Any, cap: int | None = None) -> list[Flips]:
    """The flipped documents of every compared entry on its primary metric (reads both runs' samples)."""
    comp = _as_dict(comparison) or {}
    primary = entry_primary_rows(comp.get("rows") or [])
    if not primary:
        return []
    samples_a, samples_b = store.samples(comp["run_a"]), store.samples(comp["run_b"])
    kw = {} if cap is None else {"cap": cap}
    return [flipped_items(samples_a, samples_b, entry, metric=row["metric"], **kw) for entry, row in primary.items()]


def render_compare(comparison: Any, report_id: str, tax: Any = None, kl: Any = None, flips: Sequence[Flips] | None = None) -> str:
    comp = _as_dict(comparison) or {}
    rows = comp.get("rows") or []
    ordered = sorted(rows, key=lambda r: (r["entry"], r["task"] != r["entry"], r["task"], r["metric"]))
    kl_d = _as_dict(kl)
    primary = entry_primary_rows(ordered)
    flip_sections = [{"f": f, "row": primary.get(f.entry)} for f in flips or []]
    return environment().get_template("compare.html").render(
        id=report_id, c=comp, rows=ordered, chart=delta_chart(ordered) if ordered else None,
        tax=_as_dict(tax), kl=kl_d, hist=kl_histogram(kl_d) if kl_d else None, fmt=fmt,
        flips=flip_sections, preview=PREVIEW_CHARS,
    )


def write_compare_report(comparison: Any, report_id: str, reports_dir: str | None = None, tax: Any = None, kl: Any = None,
                         store: Any = None) -> str:
    """Write ``<reports_dir>/compare-<report_id>/index.html`` and return its absolute path
    (``reports_dir`` defaults to :func:`evalkit.env.reports_dir_default`).

    ``comparison``/``tax``/``kl`` are :class:`~evalkit.analysis.paired.Comparison`,
    :class:`~evalkit.analysis.tax.AlignmentTax`, :class:`~evalkit.analysis.kl.KLResult` or their
    ``to_dict()`` forms (a stored KL row from :func:`evalkit.store.analyses.get_kl` works too).
    ``comparison=None`` with a ``kl`` writes a KL-only page. With the ``store`` the runs are in,
    each entry also gets its flipped documents (:func:`entry_flips`): right→wrong and
    wrong→right on its primary metric, both models' outputs side by side.
    """
    flips = entry_flips(comparison, store) if store is not None and comparison is not None else None
    html = render_compare(comparison, report_id, tax=tax, kl=kl, flips=flips)
    out_dir = os.path.join(os.path.abspath(reports_dir or reports_dir_default()), f"compare-{report_id}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path
