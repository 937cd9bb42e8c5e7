"""The failure-cluster page (``reports/<run_id>/clusters.html``): the verdict (does any
error-aware slice beat the plain metadata split?), a 2-D map coloured by cluster, a sortable
slice table (c-TF-IDF terms, size, error rate, lift with its 95% CI, beats-metadata), the
metadata split's groups for comparison, and per slice its typical member and its most central
failing examples with prompt, response and expected answer.

Why plotly from one shared file: the map needs pan/zoom/hover over thousands of points, and the
page must open from disk with no network ('cdn' breaks offline). ``plotly.min.js`` (4.8 MB) is
written once per reports folder, ``<reports_dir>/_assets/plotly.min.js`` (rewritten only when its
content differs), and loaded with the relative ``<script src="../_assets/plotly.min.js">``, so
each run folder costs kilobytes, not megabytes, and the folder still opens from ``file://``. Model text is
untrusted: it is autoescaped in the HTML, HTML-escaped inside hover text, and the JSON data
block uses Jinja's ``tojson`` (which escapes ``<``, ``>``, ``&``, ``'``).
"""

from __future__ import annotations

import os
from html import escape
from typing import Any

from evalkit.analysis.clusters.result import ClusterResult
from evalkit.analysis.clusters.texts import Item, build_item
from evalkit.report.jinja_env import environment
from evalkit.report.links import read_page_links
from evalkit.report.summary import fmt
from evalkit.store import RunStore
from evalkit.store.sqlite import RunRow

PLOTLY_FILE = "plotly.min.js"
ASSETS_DIR = "_assets"  # shared by every page under a reports folder
TEXT_CHARS = 4000
# 20 well-separated colours (D3 category20 order, pairs split) so neighbouring ids differ
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
           "#393b79", "#637939"]
OUTLIER_COLOUR = "#9a9a9a"


def ensure_plotly_js(reports_dir: str) -> str:
    """Write plotly's bundled JS once per reports folder, ``<reports_dir>/_assets/plotly.min.js``
    (rewritten only when its content differs). Returns the file's path."""
    from plotly.offline import get_plotlyjs

    data = get_plotlyjs().encode("utf-8")
    folder = os.path.join(reports_dir, ASSETS_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, PLOTLY_FILE)
    if not _same_content(path, data):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    return path


def plotly_src_for(page_dir: str, reports_dir: str) -> str:
    """The ``<script src>`` that reaches the shared asset from a page in ``page_dir`` (POSIX slashes)."""
    rel = os.path.relpath(os.path.join(reports_dir, ASSETS_DIR, PLOTLY_FILE), page_dir)
    return rel.replace(os.sep, "/")


def _same_content(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False


def map_layout() -> dict[str, Any]:
    """The map's plotly layout: titled axes (UMAP coordinates are unitless) and the legend below
    the plot area, so it never covers points."""
    return {
        "margin": {"l": 60, "r": 10, "t": 10, "b": 50}, "hovermode": "closest",
        "xaxis": {"title": {"text": "UMAP 1 (arbitrary units)"}, "zeroline": False, "showticklabels": False},
        "yaxis": {"title": {"text": "UMAP 2 (arbitrary units)"}, "zeroline": False, "showticklabels": False},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.08, "yanchor": "top", "font": {"size": 10},
                   "title": {"text": "cluster (click to hide)"}},
    }


def page_context(store: RunStore, run: RunRow, result: ClusterResult | None) -> dict[str, Any]:
    """Everything the template shows, as plain JSON-able data."""
    if result is None:
        return {"clusters": [], "traces": [], "n_points": 0, "layout": map_layout(), "baseline": {}}
    items: dict[tuple[str, str, int], Item] = {}
    for s in store.samples(run.run_id):
        it = build_item(s)
        if it is not None:
            items[it.key] = it
    ordered = sorted(result.clusters, key=lambda c: (c.is_outliers, -(c.lift or 0.0), -c.size, c.cluster_id))
    colour = {c.cluster_id: (OUTLIER_COLOUR if c.is_outliers else PALETTE[c.cluster_id % len(PALETTE)]) for c in result.clusters}
    clusters = []
    for c in ordered:
        examples = []
        for ex in c.examples:
            it = items.get((ex["entry"], ex["task"], int(ex["doc_id"])))
            if it is not None:
                examples.append({"entry": it.entry, "task": it.task, "doc_id": it.doc_id, "distance": ex["distance"],
                                 "prompt": _cut(it.instruction), "response": _cut(it.response), "expected": _cut(it.expected)})
        clusters.append({
            "id": c.cluster_id, "label": c.label, "size": c.size, "failures": c.failures, "error_rate": c.error_rate,
            "base_rate": c.base_rate, "lift": c.lift, "outliers": c.is_outliers, "colour": colour[c.cluster_id],
            "tasks": ", ".join(f"{t} {n}" for t, n in list(c.task_mix.items())[:4]) + (" …" if len(c.task_mix) > 4 else ""),
            "task_mix": c.task_mix, "tag_mix": c.tag_mix, "terms": c.terms, "examples": examples,
            "top_tags": ", ".join(f"{t} {v['failed']}/{v['n']}" for t, v in list(c.tag_mix.items())[:3]),
            "lift_ci": c.lift_ci, "error_ci": c.error_ci, "beats": c.beats_metadata,
            "term_list": ", ".join(t for t, _ in c.terms[:6]), "typical": _typical(c.typical, items),
        })
    traces = []
    for c in ordered:
        pts = result.members_of(c.cluster_id)
        hover = []
        for m in pts:
            it = items.get((m.entry, m.task, m.doc_id))
            head = f"<b>{escape(m.task)} #{m.doc_id}</b> — {'FAIL' if m.failed else 'pass'}"
            hover.append(f"{head}<br>{escape(c.label[:80])}<br>{escape(_cut(it.instruction, 110) if it else '')}")
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{c.cluster_id}: {c.label[:48]}",
            "x": [m.x for m in pts], "y": [m.y for m in pts], "text": hover, "hoverinfo": "text",
            "marker": {"color": colour[c.cluster_id], "size": 8, "opacity": 0.8,
                       "symbol": ["x" if m.failed else "circle" for m in pts]},
        })
    return {"clusters": clusters, "traces": traces, "n_points": len(result.members), "layout": map_layout(),
            "baseline": result.extra or {}}


def _typical(t: dict[str, Any] | None, items: dict[tuple[str, str, int], Item]) -> dict[str, Any] | None:
    """The typical member as shown: its embedded (error-describing) text, and what it was asked."""
    if not t:
        return None
    it = items.get((t["entry"], t["task"], int(t["doc_id"])))
    return {**t, "text": it.text if it else t.get("text", ""), "prompt": _cut(it.instruction, 600) if it else ""}


def write_clusters_page(store: RunStore, run: RunRow, result: ClusterResult | None, out_dir: str,
                        problem: str | None = None, reports_dir: str | None = None) -> str:
    """Write ``clusters.html`` into ``out_dir`` (a run folder); plotly goes to the shared
    ``<reports_dir>/_assets/`` (``reports_dir`` defaults to ``out_dir``'s parent). Returns the page path."""
    os.makedirs(out_dir, exist_ok=True)
    reports_dir = reports_dir or os.path.dirname(os.path.abspath(out_dir))
    ensure_plotly_js(reports_dir)
    stale = os.path.join(out_dir, PLOTLY_FILE)  # a per-run copy written by older versions
    if os.path.isfile(stale):
        os.remove(stale)
    plotly_src = plotly_src_for(out_dir, reports_dir)
    ctx = page_context(store, run, result)
    html = environment().get_template("clusters.html").render(
        run=run, r=result, problem=problem, fmt=fmt, plotly_src=plotly_src, links=read_page_links(out_dir), **ctx,
    )
    path = os.path.join(out_dir, "clusters.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path


def _cut(text: str, n: int = TEXT_CHARS) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[:n] + f"… [{len(text) - n} more characters]"
