"""The run history page of a suite (``<reports_dir>/history-<suite>.html``): every complete run of
the suite in time order, each headline metric (the summary rows: metrics whose task is the entry,
as on the run index) drawn as value ± 95% CI with plotly, and a table of the runs linking to each
run's report folder.

Why the suite hash is shown everywhere: runs of the same suite *name* with different suite hashes
ran different items or settings, so their intervals are not like-for-like; the table and the hover
show the hash and each hash gets its own marker.

Loop rounds: ``trainloop`` records which eval run each loop round made (``loop_steps`` rows with
step ``eval``; see ``trainloop/record/store.py``) in the same SQLite file. evalkit never imports
trainloop, so the rows are read here with plain SQL, and a store without those tables simply has
no loop lines. A loop's runs are joined by one line in round order, named by the loop id.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from typing import Any

from evalkit.env import reports_dir_default
from evalkit.errors import EvalkitError
from evalkit.report.clusters_page import ensure_plotly_js, plotly_src_for
from evalkit.report.jinja_env import environment
from evalkit.report.links import add_page_link
from evalkit.store import RunStore

Z95 = 1.959963984540054
MARKERS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "pentagon")
COLOURS = ("#4a6fa5", "#c0392b", "#17702e", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b")
X_TITLE = "run start time (UTC)"


def history_filename(suite_name: str) -> str:
    """``history-<suite>.html`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced."""
    return "history-" + re.sub(r"[^\w.-]", "_", suite_name) + ".html"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def metric_ci(m: dict[str, Any]) -> tuple[float | None, float | None]:
    """95% interval of a metric row: a stored one (``ci_low``/``ci_high`` or ``ci``) when present,
    else value ± 1.96·stderr; (None, None) when neither is known."""
    lo, hi = _num(m.get("ci_low")), _num(m.get("ci_high"))
    if lo is None and isinstance(m.get("ci"), (list, tuple)) and len(m["ci"]) == 2:
        lo, hi = _num(m["ci"][0]), _num(m["ci"][1])
    if lo is not None and hi is not None:
        return lo, hi
    value, se = _num(m.get("value")), _num(m.get("stderr"))
    if value is None or se is None:
        return None, None
    return value - Z95 * se, value + Z95 * se


def metric_unit(metric: str, values: list[float]) -> str:
    """The y axis unit: accuracy-like metrics (all values in [0, 1]) are fractions."""
    low = metric.lower()
    if any(k in low for k in ("perplexity", "ppl")):
        return "perplexity"
    if any(k in low for k in ("loss", "nll", "kl")):
        return "nats"
    if values and all(0.0 <= v <= 1.0 for v in values):
        return "fraction"
    return "score"


def loop_rounds(store: RunStore) -> dict[str, list[tuple[int, str]]]:
    """{loop id: [(round, eval run id), ...] in round order} from the loop's tables, read with SQL
    (``{}`` when the store has no loop tables)."""
    try:
        names = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "loop_steps" not in names:
            return {}
        rows = store._db.execute(
            "SELECT loop_id, round, result_json FROM loop_steps WHERE step='eval' AND status='done' "
            "ORDER BY loop_id, round").fetchall()
    except sqlite3.Error:
        return {}
    out: dict[str, list[tuple[int, str]]] = {}
    for loop_id, rnd, raw in rows:
        try:
            run_id = (json.loads(raw) or {}).get("run_id") if raw else None
        except (ValueError, AttributeError):
            run_id = None
        if run_id:
            out.setdefault(str(loop_id), []).append((int(rnd), str(run_id)))
    return out


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts is not None else ""


def build_history(store: RunStore, suite_name: str, reports_dir: str) -> dict[str, Any]:
    """Everything the page shows, as plain data (runs, headline metrics, plotly figures)."""
    runs = [r for r in store.list_runs(limit=None, suite=suite_name) if r.status == "complete"
            and r.suite_name == suite_name]
    if not runs:
        raise EvalkitError(f"suite '{suite_name}': no complete runs in store {store.path} (evalkit runs --suite "
                           f"{suite_name} --all)")
    runs.sort(key=lambda r: (r.created_at, r.run_id))  # time order, oldest first
    hashes: list[str] = []
    for r in runs:
        if r.suite_hash not in hashes:
            hashes.append(r.suite_hash)
    latest_hash = runs[-1].suite_hash
    loops = loop_rounds(store)
    member: dict[str, list[str]] = {}
    for loop_id, rounds in loops.items():
        for rnd, rid in rounds:
            member.setdefault(rid, []).append(f"loop {loop_id[:12]} round {rnd}")

    headline: list[tuple[str, str]] = []  # (entry, metric) in first-seen order
    rows: list[dict[str, Any]] = []
    points: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for i, r in enumerate(runs):
        metrics = {}
        for m in store.metrics(r.run_id):
            if m["task"] != m["entry"]:
                continue
            key = (m["entry"], m["metric"])
            if key not in headline:
                headline.append(key)
            lo, hi = metric_ci(m)
            point = {"value": _num(m.get("value")), "lo": lo, "hi": hi, "n": m.get("n")}
            metrics[key] = point
            points.setdefault(key, {})[r.run_id] = point
        has_report = os.path.isfile(os.path.join(reports_dir, r.run_id, "index.html"))
        rows.append({
            "index": i + 1, "run_id": r.run_id, "name": r.name or "", "tags": r.tags, "model": r.model_spec,
            "created": _when(r.created_at), "suite_hash": r.suite_hash, "hash_short": r.suite_hash[:12],
            "other_hash": r.suite_hash != latest_hash, "marker": MARKERS[hashes.index(r.suite_hash) % len(MARKERS)],
            "href": f"{r.run_id}/index.html" if has_report else None, "loops": member.get(r.run_id, []),
            "metrics": metrics,
        })
    headline.sort()
    by_id = {row["run_id"]: row for row in rows}
    for row in rows:
        row["cells"] = []
        for key in headline:
            p = row["metrics"].get(key)
            if p is None or p["value"] is None:
                row["cells"].append({"text": "–", "sort": ""})
            else:
                ci = f" [{_fmt(p['lo'])}, {_fmt(p['hi'])}]" if p["lo"] is not None else ""
                row["cells"].append({"text": _fmt(p["value"]), "ci": ci, "sort": p["value"]})
    charts = [_chart(entry, metric, points.get((entry, metric), {}), rows, by_id, hashes, loops, i)
              for i, (entry, metric) in enumerate(headline)]
    return {"suite": suite_name, "runs": rows, "headline": headline, "charts": charts, "hashes": hashes,
            "latest_hash": latest_hash, "loops": {k: v for k, v in loops.items() if any(rid in by_id for _, rid in v)},
            "store": store.path, "store_name": os.path.basename(store.path)}


def _hover(row: dict[str, Any], p: dict[str, Any], metric: str) -> str:
    label = row["name"] or row["run_id"]
    ci = f"<br>95% CI [{_fmt(p['lo'])}, {_fmt(p['hi'])}]" if p["lo"] is not None else ""
    loops = "".join(f"<br>{x}" for x in row["loops"])
    return (f"<b>{label}</b><br>run {row['run_id']}<br>{metric} {_fmt(p['value'])}{ci}"
            f"<br>n {p['n']}<br>suite hash {row['hash_short']}{loops}")


def _chart(entry: str, metric: str, pts: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
           by_id: dict[str, dict[str, Any]], hashes: list[str], loops: dict[str, list[tuple[int, str]]],
           index: int) -> dict[str, Any]:
    unit = metric_unit(metric, [p["value"] for p in pts.values() if p["value"] is not None])
    traces: list[dict[str, Any]] = []
    for h_i, h in enumerate(hashes):
        xs, ys, up, down, text = [], [], [], [], []
        for row in rows:
            p = pts.get(row["run_id"])
            if row["suite_hash"] != h or p is None or p["value"] is None:
                continue
            xs.append(row["created"])
            ys.append(p["value"])
            up.append(max(0.0, p["hi"] - p["value"]) if p["hi"] is not None else 0.0)
            down.append(max(0.0, p["value"] - p["lo"]) if p["lo"] is not None else 0.0)
            text.append(_hover(row, p, metric))
        if not xs:
            continue
        traces.append({
            "type": "scatter", "mode": "markers",
            "name": f"suite hash {h[:12]}" + ("" if h == rows[-1]["suite_hash"] else " (not the latest run's)"),
            "x": xs, "y": ys, "text": text, "hovertemplate": "%{text}<extra></extra>",
            "marker": {"symbol": MARKERS[h_i % len(MARKERS)], "size": 10, "color": COLOURS[h_i % len(COLOURS)]},
            "error_y": {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "visible": True,
                        "color": COLOURS[h_i % len(COLOURS)], "thickness": 1.5, "width": 4},
        })
    for l_i, (loop_id, rounds) in enumerate(sorted(loops.items())):
        xs, ys, text = [], [], []
        for rnd, rid in rounds:
            p, row = pts.get(rid), by_id.get(rid)
            if p is None or row is None or p["value"] is None:
                continue
            xs.append(row["created"])
            ys.append(p["value"])
            text.append(f"loop {loop_id[:12]} round {rnd}<br>run {rid}<br>{metric} {_fmt(p['value'])}")
        if not xs:
            continue
        traces.append({
            "type": "scatter", "mode": "lines", "name": f"loop {loop_id[:12]}", "x": xs, "y": ys, "text": text,
            "hovertemplate": "%{text}<extra></extra>",
            "line": {"color": COLOURS[(l_i + 3) % len(COLOURS)], "width": 2, "dash": "dot"},
        })
    layout = {
        "title": {"text": f"{entry} · {metric}"},
        "xaxis": {"title": {"text": X_TITLE}, "type": "date"},
        "yaxis": {"title": {"text": f"{metric} ({unit})"}},
        "legend": {"orientation": "h", "x": 0, "y": -0.25, "yanchor": "top"},
        "margin": {"l": 70, "r": 20, "t": 40, "b": 110}, "height": 380, "hovermode": "closest",
    }
    return {"id": f"chart-{index}", "entry": entry, "metric": metric, "unit": unit, "traces": traces, "layout": layout,
            "n_points": sum(len(t["x"]) for t in traces if t["mode"] == "markers")}


def write_history(store: RunStore, suite_name: str, reports_dir: str | None = None, *,
                  link_runs: bool = True) -> str:
    """Write ``<reports_dir>/history-<suite>.html``; returns its absolute path. ``link_runs``: also
    add a "Run history" link to each run's existing report index (``links.add_page_link``)."""
    reports = os.path.abspath(reports_dir or reports_dir_default())
    data = build_history(store, suite_name, reports)
    os.makedirs(reports, exist_ok=True)
    ensure_plotly_js(reports)
    name = history_filename(suite_name)
    html = environment().get_template("history.html").render(
        plotly_src=plotly_src_for(reports, reports), generated=_when(time.time()), **data)
    path = os.path.join(reports, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, path)
    if link_runs:
        for row in data["runs"]:
            if row["href"]:
                add_page_link(os.path.join(reports, row["run_id"]), "Run history", f"../{name}",
                              f"every run of suite {suite_name}")
    return path
