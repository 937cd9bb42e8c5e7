"""``reports/<loop-id>/loop.json``: the loop's result for machines, from stored step results only.

Why a file next to the HTML page: a post-training pipeline wants to read "was a round promoted,
on what evidence, and where is the model" without scraping a page or opening SQLite. The schema
(``SCHEMA``, documented in README "loop.json") is versioned; fields are added, never renamed.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from evalkit.jsonsafe import json_safe
from evalkit.store.sqlite import RunStore
from trainloop.record import store as ls

SCHEMA = "evalkit.loop/1"
ROUND_KEYS = ("round", "decision", "reasons", "gated", "kl", "control", "data", "train", "train_fit", "clusters",
              "promoted_model", "run_id", "model")


def _subject(s: str) -> tuple[str, str]:
    m = re.match(r"^(.*?) \((.*)\)$", s or "")
    return (m.group(1), m.group(2)) if m else (s, "")


def _gated(gate: dict[str, Any], split: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {(r["entry"], r["metric"]): r for r in gate.get("rows", [])}
    out = []
    for c in gate.get("checks", []):
        entry, metric = _subject(c.get("subject", ""))
        r = rows.get((entry, metric), {})
        out.append({
            "check": c.get("name"), "entry": entry, "metric": metric or None,
            "split": "confirm" if entry in split else ("all" if c.get("name") != "kl" else None),
            "n": r.get("n"), "baseline": r.get("value_a"), "candidate": r.get("value_b"),
            "delta": c.get("value") if c.get("name") != "kl" else None, "ci_lo": c.get("ci_lo"), "ci_hi": c.get("ci_hi"),
            "mde": c.get("mde"), "p": c.get("p"), "limit": c.get("limit"),
            "status": c.get("status") or ("pass" if c.get("passed") else "fail"), "passed": c.get("passed"),
            "reason": c.get("reason"),
        })
    return out


def build(store: RunStore, loop_id: str) -> dict[str, Any]:
    loop = ls.get_loop(store, loop_id)
    if loop is None:
        raise KeyError(loop_id)
    steps = ls.steps(store, loop_id)
    res = {(s["round"], s["step"]): s["result"] for s in steps if s["status"] == "done"}
    suite = res.get((0, "suite")) or {}
    split = suite.get("split") or {}
    plan = res.get((0, "plan")) or {}
    n_rounds = max([s["round"] for s in steps], default=0)
    rounds: list[dict[str, Any]] = []
    for r in range(n_rounds + 1):
        ev = res.get((r, "eval")) or {}
        if r == 0:
            rounds.append({"round": 0, "decision": "start", "run_id": ev.get("run_id"), "model": ev.get("model"),
                           "metrics": ev.get("metrics", [])})
            continue
        gate, promote = res.get((r, "gate")) or {}, res.get((r, "promote"))
        sel = res.get((r, "select")) or {}
        self_stats = (sel.get("strategies") or {}).get("self") or {}
        train = res.get((r, "train")) or {}
        curve = [p.get("loss") for p in train.get("loss_curve", []) if isinstance(p.get("loss"), (int, float))]
        kl = res.get((r, "kl")) or {}
        fit = res.get((r, "fit"))
        ctl = gate.get("control")
        ctl_sel = res.get((r, "control_select")) or {}
        ctl_fit = None
        decision = "unfinished" if promote is None else ("promoted" if promote.get("promoted") else "rolled_back")
        rounds.append({
            "round": r, "decision": decision, "run_id": ev.get("run_id"), "model": ev.get("model"),
            "reasons": [c.get("reason") for c in gate.get("checks", [])],
            "gated": _gated(gate, split),
            "kl": {"mean": kl.get("mean_kl"), "stderr": kl.get("kl_stderr"), "n_tokens": kl.get("n_tokens"),
                   "prompts": kl.get("prompts_kind")} if kl else None,
            "control": None if not ctl else {"run_id": ctl.get("run_id"), "examples": ctl_sel.get("sft"),
                                              "equal_size": ctl_sel.get("equal"), "fit": ctl_fit,
                                              "control_vs_current": ctl.get("control_vs_current"),
                                              "targeted_vs_control": ctl.get("targeted_vs_control")},
            "data": {"sft": sel.get("sft"), "dpo": sel.get("dpo"), "per_cluster": self_stats.get("per_cluster"),
                     "budget_per_cluster": self_stats.get("budget_per_cluster"), "status": self_stats.get("status"),
                     "prompts": self_stats.get("prompts"), "repaired": self_stats.get("repaired"),
                     "natural": self_stats.get("natural"), "holdout": self_stats.get("holdout"), "scale": sel.get("scale")},
            "train": {"method": train.get("method"), "steps": train.get("steps"), "seconds": train.get("seconds"),
                      "loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None,
                      "config": train.get("train_config")} if train else None,
            "train_fit": None if not fit or fit.get("skipped") else
            {k: fit.get(k) for k in ("n", "base_pass", "cand_pass", "wins", "losses", "p", "ok", "reason")},
            "clusters": gate.get("clusters", []),
            "leak": gate.get("leak"), "control_leak": gate.get("control_leak"),
            "promoted_model": (promote or {}).get("promoted_model") if decision == "promoted" else None,
        })
    return json_safe({  # NaN -> null, evalkit's one helper for JSON
        "schema": SCHEMA, "loop_id": loop_id, "status": loop.get("status"), "suite_hash": loop.get("suite_hash"),
        "config": loop.get("config"),
        "split": suite.get("split_sizes") or {},
        "plan": {"rows": plan.get("rows", []), "refusal": plan.get("refusal"), "no_signal": plan.get("no_signal", []),
                 "overridden": plan.get("overridden")} if plan else None,
        "rounds": rounds,
        "promoted_model": next((x["promoted_model"] for x in reversed(rounds) if x.get("promoted_model")), None),
    })


def write(store: RunStore, loop_id: str, out_dir: str) -> str:
    data = build(store, loop_id)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "loop.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, allow_nan=False)
    os.replace(tmp, path)
    return path
