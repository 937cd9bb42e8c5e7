"""Failure clustering: which kinds of samples does the model fail on, together?

``cluster_run(store, run_ref)`` embeds every sample of a run (failures and successes), reduces
with UMAP, clusters with HDBSCAN, labels clusters with c-TF-IDF terms and reports each cluster's
error rate and lift over its entries' overall error rate; results are stored in the run store
(``clusterings``, ``clusters``, ``cluster_members``) for the report and the training loop
(``load_clusters``). Modules: texts (sample -> text, pass/fail), embed, reduce, cluster, label.
"""

from __future__ import annotations

from evalkit.analysis.clusters.pipeline import cluster_run, load_clusters, select_samples
from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
from evalkit.analysis.clusters.texts import FAILURE_METRIC

__all__ = ["FAILURE_METRIC", "Cluster", "ClusterResult", "Member", "cluster_run", "load_clusters", "select_samples"]
