"""``evalkit report``: one folder per run, ``<reports_dir>/<run_id>/``.

  index.html      summary and per-task metrics with stderr, reliability diagrams, page links
  clusters.html   failure clusters: 2-D map, sortable table, central failing examples
  samples.html    sample browser: every sample with filters and search (report/samples_page.py)
  pages.json      the index's extra page links (other pages register with ``links.add_page_link``)

plotly's bundle is written once per reports folder, ``<reports_dir>/_assets/plotly.min.js``, and
every run's pages load it relatively (no CDN: the folder works offline). ``reports_dir`` defaults
to :func:`evalkit.env.reports_dir_default` (``$EVALKIT_REPORTS``, else ``./reports``).

The run's latest stored clustering is used; when it has none (or ``recluster``) the run is
clustered first and the clustering stored. This supersedes ``write_summary`` (same index page,
plus the cluster page and its link).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from evalkit.analysis.clusters import ClusterResult, cluster_run, load_clusters
from evalkit.env import reports_dir_default
from evalkit.errors import EvalkitError
from evalkit.report.clusters_page import write_clusters_page
from evalkit.report.links import add_page_link
from evalkit.report.samples_page import write_samples_page
from evalkit.report.summary import write_summary
from evalkit.store import RunStore


def write_run_report(
    store: RunStore,
    run_ref: str,
    reports_dir: str | None = None,
    *,
    recluster: bool = False,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    clusters: ClusterResult | None = None,
    notes: dict[str, str] | None = None,
) -> str:
    """Write ``<reports_dir>/<run_id>/`` (index + clusters and samples pages) and return the index path."""
    reports_dir = os.path.abspath(reports_dir or reports_dir_default())
    run = store.get_run(run_ref)
    out_dir = os.path.join(reports_dir, run.run_id)
    result, problem = clusters, None
    if result is None and not recluster:
        result = load_clusters(store, run.run_id)
        if result is not None and tasks and sorted(result.tasks or []) != sorted(tasks):
            result = None  # stored clustering covers other tasks
    if result is None:
        try:
            result = cluster_run(store, run.run_id, tasks=tasks, seed=seed)
        except EvalkitError as exc:  # e.g. a run with no scored samples: still write the pages
            problem = str(exc)
    write_clusters_page(store, run, result, out_dir, problem, reports_dir=reports_dir)
    note = (f"{len(result.clusters)} clusters of {result.n_samples} samples ({result.n_failures} failing)"
            if result is not None else "no clusters")
    add_page_link(out_dir, "Failure clusters", "clusters.html", note)
    write_samples_page(store, run.run_id, out_dir, clustering_id=result.clustering_id if result is not None else None)
    return write_summary(store, run.run_id, reports_dir, notes)
