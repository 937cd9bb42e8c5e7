"""The loop report page (``reports/loop-<id>/index.html``): built only from stored step results.

Per round: the candidate's target and other-entry metrics with paired CIs against the model it
would replace, KL, the alignment tax, the gate's decision with one sentence per check; whether
the targeted clusters shrank; the training data's provenance and the loss curve; every step's
status (a resumed or failed loop shows where it stands). Written after every ``evalkit loop``,
finished or not, so a killed loop still has a page.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from evalkit.report.jinja_env import environment
from evalkit.store.sqlite import RunStore
from trainloop.record import store as ls

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")  # trainloop/templates
PRIMARY = {"mmlu": "acc", "gsm8k": "exact_match,strict-match", "ifeval": "inst_level_strict_acc"}


def pt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x * 100:+.1f} pt"


def _curve(points: list[dict[str, Any]], w: int = 420, h: int = 120) -> dict[str, Any] | None:
    losses = [p["loss"] for p in points if isinstance(p.get("loss"), (int, float))]
    if len(losses) < 2:
        return None
    top, bottom = max(losses), min(losses)
    span = (top - bottom) or 1.0
    xs = [30 + (w - 34) * i / (len(losses) - 1) for i in range(len(losses))]
    ys = [4 + (h - 22) * (top - v) / span for v in losses]
    return {"w": w, "h": h, "top": top, "bottom": bottom, "steps": len(losses),
            "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))}


def _provenance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    count: Counter[tuple[str, str, str, str, str]] = Counter()
    for r in rows:
        p = r["provenance"]
        clusters = p.get("clusters", [p.get("cluster_id")] if "cluster_id" in p else [])
        source = "training pool" if "source_row" in p else (", ".join(p.get("instructions", [])) or "–")
        count[(r["kind"], str(p.get("strategy", "?")), str(p.get("origin", "–")),
               ", ".join(str(c) for c in clusters if c is not None) or "–", source)] += 1
    return [{"kind": k, "strategy": s, "origin": o, "clusters": c, "source": src, "n": n}
            for (k, s, o, c, src), n in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))]


def page_context(store: RunStore, loop_id: str) -> dict[str, Any]:
    loop = ls.get_loop(store, loop_id)
    if loop is None:
        raise KeyError(loop_id)
    cfg = loop["config"]
    steps = ls.steps(store, loop_id)
    res = {(s["round"], s["step"]): s["result"] for s in steps if s["status"] == "done"}
    n_rounds = max([s["round"] for s in steps], default=0)
    entries: list[dict[str, str]] = []
    base = res.get((0, "eval")) or {}
    for m in base.get("metrics", []):
        want = (cfg.get("gate", {}).get("primary") or {}).get(m["entry"]) or PRIMARY.get(m["entry"])
        if m["metric"] == want and all(e["entry"] != m["entry"] for e in entries):
            entries.append({"entry": m["entry"], "metric": m["metric"]})
    # round 0 ran every item; with a split, the gate's baseline is its confirmation half (from the plan)
    confirm_base = {row["entry"]: row["baseline"] for row in (res.get((0, "plan")) or {}).get("rows", [])
                    if row.get("split") == "confirm"}
    rounds = []
    for r in range(n_rounds + 1):
        ev = res.get((r, "eval")) or {}
        gate = res.get((r, "gate")) or {}
        promote = res.get((r, "promote"))
        vals = {(m["entry"], m["metric"]): m["value"] for m in ev.get("metrics", [])}
        rows = {(x["entry"], x["metric"]): x for x in gate.get("rows", [])}
        cells = {}
        for e in entries:
            key = (e["entry"], e["metric"])
            if key in vals and vals[key] is not None:
                d = rows.get(key)
                cells[e["entry"]] = {"value": vals[key], "delta": d["delta"] if d else None,
                                     "lo": d["ci_lo"] if d else None, "hi": d["ci_hi"] if d else None,
                                     "confirm": confirm_base.get(e["entry"]) if r == 0 else None}
        train = res.get((r, "train"))
        model = ev.get("model") or cfg["model"]
        rounds.append({
            "round": r, "run_id": ev.get("run_id"), "model_short": model if len(model) < 60 else "…" + model[-58:],
            "cells": cells, "kl": (res.get((r, "kl")) or {}).get("mean_kl"), "tax": gate.get("tax"),
            "promoted": None if promote is None else promote.get("promoted"), "checks": gate.get("checks", []),
            "shrink": gate.get("clusters", []), "select": res.get((r, "select")), "train": train,
            "curve": _curve(train.get("loss_curve", [])) if train else None,
            "provenance": _provenance(ls.get_examples(store, loop_id, r)) if r > 0 else [],
            "fit": res.get((r, "fit")), "control": gate.get("control"), "leak": gate.get("leak") or [],
            "control_leak": {x["format"]: x for x in gate.get("control_leak") or []},
            "control_train": res.get((r, "control_train")), "control_select": res.get((r, "control_select")),
            "kl_kind": (res.get((r, "kl")) or {}).get("prompts_kind"),
        })
    plan = res.get((0, "plan"))
    return {"loop": loop, "cfg": cfg, "entries": entries, "rounds": rounds, "steps": steps, "pt": pt, "plan": plan,
            "split": (res.get((0, "suite")) or {}).get("split_sizes") or {}}


def write_loop_report(store: RunStore, loop_id: str, reports_dir: str = "reports") -> str:
    html = environment(TEMPLATES).get_template("loop.html").render(**page_context(store, loop_id))
    out_dir = os.path.join(reports_dir, loop_id)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    from trainloop.record.loopjson import write as write_json

    write_json(store, loop_id, out_dir)
    return path
