"""What a failure clustering produces (and what ``load_clusters`` gives back from the store)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Cluster:
    cluster_id: int                       # < 0: HDBSCAN outliers (-(k+1) for the k-th entry clustered)
    label: str                            # "ifeval: no_comma, commas, itinerary"
    terms: list[tuple[str, float]]        # c-TF-IDF top terms with weights
    size: int
    failures: int
    error_rate: float
    base_rate: float                      # error rate expected from the cluster's entry mix
    lift: float | None                    # error_rate / base_rate (None when base_rate is 0)
    task_mix: dict[str, int]              # task (e.g. mmlu_astronomy) -> members
    tag_mix: dict[str, dict[str, int]]    # IFEval instruction id -> {"n": members with it, "failed": of those failing it}
    examples: list[dict[str, Any]]        # most central failing members: entry, task, doc_id, distance
    # error-aware slice statistics (absent from clusterings stored before they existed: None)
    error_ci: list[float] | None = None   # Wilson 95% CI of error_rate
    lift_ci: list[float] | None = None    # percentile-bootstrap 95% CI of lift (stats.lift_table)
    beats_metadata: bool | None = None    # lift CI lower bound > best metadata group's lift (stats)
    typical: dict[str, Any] | None = None  # the member closest to the centroid: entry, task, doc_id, failed, text

    @property
    def is_outliers(self) -> bool:
        return self.cluster_id < 0


@dataclass
class Member:
    entry: str
    task: str
    doc_id: int
    cluster_id: int
    failed: bool
    x: float                              # 2-D map position
    y: float
    distance: float                       # to the cluster centroid in the clustering space


@dataclass
class ClusterResult:
    run_id: str
    seed: int
    tasks: list[str] | None
    method: str                           # hdbscan | kmeans | single | by-entry, "+"-joined over entries
    params: dict[str, Any]
    stability: float | None               # mean pairwise adjusted Rand index over the seeds
    stability_pairs: list[float]
    n_samples: int
    n_failures: int
    timings: dict[str, float]
    clusters: list[Cluster]
    members: list[Member]
    clustering_id: str | None = None
    skipped: int = 0                      # samples without a pass/fail metric
    extra: dict[str, Any] = field(default_factory=dict)  # stats.compare_to_metadata's baseline comparison

    @property
    def no_slice_beats_metadata(self) -> bool | None:
        """True when no slice beats the plain metadata split (None: not computed, older result)."""
        return self.extra.get("no_slice_beats_metadata") if self.extra else None

    def cluster(self, cluster_id: int) -> Cluster:
        return next(c for c in self.clusters if c.cluster_id == cluster_id)

    def members_of(self, cluster_id: int, failed_only: bool = False) -> list[Member]:
        """Members of one cluster, most central first (what the training loop samples from)."""
        out = [m for m in self.members if m.cluster_id == cluster_id and (m.failed or not failed_only)]
        return sorted(out, key=lambda m: (m.distance, m.entry, m.task, m.doc_id))

    def to_dict(self, members: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["clusters"] = [{**c, "terms": [list(t) for t in c["terms"]]} for c in d["clusters"]]
        if not members:
            d.pop("members")
        return d

    @classmethod
    def from_rows(cls, header: dict[str, Any], clusters: list[dict[str, Any]], members: list[dict[str, Any]]) -> ClusterResult:
        return cls(
            run_id=header["run_id"], seed=int(header["seed"]), tasks=header.get("tasks"), method=header["method"],
            params=header.get("params") or {}, stability=header.get("stability"),
            stability_pairs=list(header.get("stability_pairs") or []), n_samples=int(header["n_samples"]),
            n_failures=int(header["n_failures"]), timings=header.get("timings") or {},
            clusters=[Cluster(**{k: c[k] for k in Cluster.__dataclass_fields__ if k in c}) for c in clusters],
            members=[Member(**{k: m[k] for k in Member.__dataclass_fields__}) for m in members],
            clustering_id=header.get("clustering_id"), skipped=int((header.get("params") or {}).get("skipped", 0)),
            extra=header.get("extra") or {},
        )
