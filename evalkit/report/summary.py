"""The run summary page written by every ``evalkit eval`` (``reports/<run_id>/index.html``)."""

from __future__ import annotations

import math
import os
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from evalkit.store import RunStore

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def entry_metrics(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """Entry-level metrics (the summary rows): those whose task is the entry itself."""
    return [m for m in store.metrics(run_id) if m["task"] == m["entry"]]


def write_summary(store: RunStore, run_id: str, reports_dir: str = "reports", notes: dict[str, str] | None = None) -> str:
    run = store.get_run(run_id)
    metrics = store.metrics(run.run_id)
    summary = [m for m in metrics if m["task"] == m["entry"]]
    details = [m for m in metrics if m["task"] != m["entry"]]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    html = env.get_template("summary.html").render(run=run, summary=summary, details=details, notes=notes or {}, fmt=fmt)
    out_dir = os.path.join(reports_dir, run.run_id)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path
