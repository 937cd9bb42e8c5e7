"""The run index page (``reports/<run_id>/index.html``), written by every ``evalkit eval`` and by
``evalkit report``: summary and per-task metrics with stderr, reliability diagrams for
calibrated multiple-choice entries, and links to the run's other pages (see ``links.py``)."""

from __future__ import annotations

import math
import os
from typing import Any

from evalkit.report.jinja_env import environment
from evalkit.env import reports_dir_default
from evalkit.report.links import BEGIN, END, read_page_links, render_nav
from evalkit.store import RunStore


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def entry_metrics(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """Entry-level metrics (the summary rows): those whose task is the entry itself."""
    return [m for m in store.metrics(run_id) if m["task"] == m["entry"]]


def write_summary(store: RunStore, run_id: str, reports_dir: str | None = None, notes: dict[str, str] | None = None) -> str:
    """Write the run's ``index.html`` (links registered in its ``pages.json`` included); returns its
    absolute path. ``reports_dir`` defaults to :func:`evalkit.env.reports_dir_default`."""
    from evalkit.report.reliability import entry_reliability

    run = store.get_run(run_id)
    metrics = store.metrics(run.run_id)
    summary = [m for m in metrics if m["task"] == m["entry"]]
    details = [m for m in metrics if m["task"] != m["entry"]]
    out_dir = os.path.join(os.path.abspath(reports_dir or reports_dir_default()), run.run_id)
    os.makedirs(out_dir, exist_ok=True)
    links_html = BEGIN + render_nav(read_page_links(out_dir)) + END
    html = environment().get_template("summary.html").render(
        run=run, summary=summary, details=details, notes=notes or {}, fmt=fmt,
        reliability=entry_reliability(store, run.run_id), links_html=links_html,
    )
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path
