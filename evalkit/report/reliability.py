"""Reliability diagrams for multiple-choice entries (MMLU), drawn as inline SVG.

Why SVG and not plotly: the index page should stay a few kilobytes and open anywhere. Bins come
from the entry's stored ``reliability`` (written by the engine when ``calibration: true``); for
older runs they are recomputed from the samples' choice log-likelihoods.
"""

from __future__ import annotations

import json
from typing import Any

from evalkit.store import RunStore

SIZE, PAD = 260, 34
X_TITLE, Y_TITLE = "confidence (probability)", "accuracy (fraction correct)"


def chart(bins: list[dict[str, float]]) -> dict[str, Any]:
    """Geometry: accuracy bars per confidence bin, the confidence each bin should have reached
    (outline), and the diagonal of perfect calibration."""
    total = sum(int(b.get("count", 0)) for b in bins) or 1
    bars = []
    for b in bins:
        if not b.get("count"):
            continue
        x, w = PAD + b["lo"] * SIZE, (b["hi"] - b["lo"]) * SIZE
        acc, conf = float(b["accuracy"]), float(b["confidence"])
        bars.append({"x": round(x, 2), "w": round(max(w - 1, 1), 2), "y": round(PAD + (1 - acc) * SIZE, 2),
                     "h": round(acc * SIZE, 2), "cy": round(PAD + (1 - conf) * SIZE, 2), "ch": round(conf * SIZE, 2),
                     "tip": f"confidence {b['lo']:.2f}–{b['hi']:.2f}: n={b['count']} ({b['count'] / total:.0%}), "
                            f"mean confidence {conf:.3f}, accuracy {acc:.3f}"})
    return {"bars": bars, "size": SIZE, "pad": PAD, "full": SIZE + 2 * PAD, "n": total,
            "x_title": X_TITLE, "y_title": Y_TITLE}


def entry_reliability(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """One diagram per entry that has calibration bins (stored, or from choice log-likelihoods)."""
    ece = {m["entry"]: m["value"] for m in store.metrics(run_id) if m["task"] == m["entry"] and m["metric"] == "ece"}
    out = []
    for e in store.entries(run_id):
        extra = json.loads(e.get("extra_json") or "{}")
        bins = extra.get("reliability")
        if not bins and e["entry"] in ece:
            bins = _bins_from_samples(store, run_id, e["entry"])
        if bins:
            out.append({"entry": e["entry"], "ece": ece.get(e["entry"]), "chart": chart(bins)})
    return out


def _bins_from_samples(store: RunStore, run_id: str, entry: str) -> list[dict[str, float]] | None:
    from evalkit.analysis.calibration import calibration

    logliks, golds = [], []
    for s in store.samples(run_id, entry):
        ll = s.get("loglik")
        try:
            gold = int(s.get("target"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not ll or not 0 <= gold < len(ll):
            return None
        logliks.append(ll)
        golds.append(gold)
    return calibration(logliks, golds).bins if logliks else None
