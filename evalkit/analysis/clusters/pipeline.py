"""The failure-clustering pipeline (BERTopic's recipe, Domino's question):
stored samples -> task-aware texts -> MiniLM -> UMAP -> HDBSCAN -> c-TF-IDF labels, then per
cluster the error rate against what its entry mix predicts (lift), so slices where the model
fails more than usual stand out. Stability = adjusted Rand index across seeds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from evalkit.analysis.clusters.cluster import MIN_POINTS, by_group, centroid_distances, partition, stability
from evalkit.analysis.clusters.embed import Embedder, load_minilm, minilm_embed
from evalkit.analysis.clusters.label import class_docs, ctfidf, label_for, typical_member
from evalkit.analysis.clusters import reduce
from evalkit.analysis.clusters.reduce import Timer, knn_graph, pca, umap_fit, warm_up
from evalkit.analysis.clusters.result import Cluster, ClusterResult, Member
from evalkit.analysis.clusters.stats import ITERS, compare_to_metadata
from evalkit.analysis.clusters.texts import Item, build_items, family_of
from evalkit.errors import EvalkitError
from evalkit.store import RunStore
from evalkit.store.clusters import load_clustering, save_clustering


def cluster_run(
    store: RunStore,
    run_ref: str,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    *,
    scope: str = "entry",
    n_components: int = 5,
    min_cluster_size: int | None = None,
    stability_seeds: int = 3,
    n_examples: int = 5,
    embedder: Embedder | None = None,
    save: bool = True,
    exclude: Collection[tuple[str, str, int]] | None = None,
) -> ClusterResult:
    """Cluster a run's samples (failures and successes) and, with ``save``, store the result.

    ``tasks`` keeps samples whose entry, task or family (mmlu, gsm8k, ifeval, ...) is listed.
    ``scope="entry"`` (default) clusters each entry separately: tasks are trivially apart in
    embedding space, and a joint clustering spends its clusters rediscovering which task a
    sample came from instead of slicing inside it. ``scope="run"`` clusters everything together
    (BERTopic as is). Seeds ``seed, seed+1, ...`` (``stability_seeds`` of them) are clustered;
    ``seed``'s partition is the result, all of them give the stability (mean pairwise ARI).
    Same inputs and seed -> same clusters. ``exclude`` leaves out samples by (entry, task, doc_id):
    the loop clusters only the selection half of a split entry.
    """
    if scope not in ("entry", "run"):
        raise EvalkitError(f"clusters: scope must be 'entry' or 'run', not '{scope}'")
    timer, t = Timer(), time.perf_counter()
    run = store.get_run(run_ref)
    samples = select_samples(store.samples(run.run_id), tasks, run.run_id)
    if exclude:
        samples = [s for s in samples if (s["entry"], s["task"], int(s["doc_id"])) not in exclude]
    items, skipped = build_items(samples)
    if not items:
        raise EvalkitError(f"run {run.run_id}: no samples with a pass/fail metric to cluster")
    t = timer.add("texts", t)
    if embedder is None:
        load_minilm()
        t = timer.add("embed_load", t)
    # UMAP's numba kernels compile (7-10 s, once per process) in a thread while the texts are
    # embedded: torch releases the GIL, compiling is mostly one core's Python/LLVM work. (Started
    # after the model loads: imports hold the GIL and would only take turns with the compiler.)
    jit = threading.Thread(target=warm_up, daemon=True) if len(items) >= MIN_POINTS and not reduce.is_warm() else None
    if jit is not None:
        # import umap (and with it sklearn) here, not in the thread: two threads importing sklearn at
        # once can see a partially initialised module ("cannot import name ... from partially
        # initialized module"), which the embedder's own sklearn import hit intermittently
        import umap  # noqa: F401

        jit.start()
    X = np.asarray((embedder or minilm_embed)([it.text for it in items]), dtype=np.float32)
    t = timer.add("embed", t)
    if jit is not None:
        jit.join()
        t = timer.add("umap_jit_wait", t)
    entries = [it.entry for it in items]
    seeds = [seed + i for i in range(max(1, stability_seeds))]
    labels = np.full(len(items), -1, dtype=int)
    dist = np.zeros(len(items))
    per_seed = [np.full(len(items), -1, dtype=int) for _ in seeds]
    methods: dict[str, str] = {}
    params: dict[str, Any] = {}
    if scope == "run" and len(items) < MIN_POINTS:
        part = by_group(entries)
        labels, methods["*"], params["*"] = part.labels, part.method, part.params
        dist = centroid_distances(pca(X, n_components), labels)
        per_seed = [labels] * len(seeds)
    else:
        names = sorted(set(entries)) if scope == "entry" else ["*"]
        offset = 0
        for g, name in enumerate(names):
            idx = np.array([i for i, e in enumerate(entries) if name in ("*", e)])
            Z, sets, method, prm = _cluster_group(X[idx], seeds, n_components, min_cluster_size, timer)
            t = time.perf_counter()
            methods[name], params[name] = method, prm
            for s_i, lab in enumerate(sets):  # ids global across entries; each entry's outliers get -(g+1)
                per_seed[s_i][idx] = np.where(lab >= 0, lab + offset, -(g + 1))
            labels[idx] = per_seed[0][idx]
            dist[idx] = centroid_distances(Z, labels[idx])
            offset += int(sets[0].max()) + 1
    seeded = any(m in ("hdbscan", "kmeans") for m in methods.values())  # fallbacks are deterministic
    stab, pairs = stability(per_seed) if seeded else (None, [])
    t = time.perf_counter()
    if len(items) >= MIN_POINTS:
        xy = umap_fit(X, 2, seed, knn_graph(X), min_dist=0.1)
        t = timer.add("umap_2d", t)
    else:
        xy = pca(X, 2)
    clusters, members = summarise(items, labels, dist, xy, n_examples)
    t = timer.add("labels", t)
    extra = compare_to_metadata(items, labels, clusters, iters=ITERS, seed=seed)
    t = timer.add("lift_ci", t)
    method = "+".join(sorted(set(methods.values())))
    result = ClusterResult(
        run_id=run.run_id, seed=seed, tasks=list(tasks) if tasks else None, method=method,
        params={"scope": scope, "groups": {k: {"method": methods[k], **params[k]} for k in methods},
                "n_components": n_components, "embedder": getattr(embedder, "__name__", "minilm"),
                "stability_seeds": len(seeds), "skipped": skipped},
        stability=None if stab is None else round(stab, 4), stability_pairs=pairs, n_samples=len(items),
        n_failures=sum(it.failed for it in items), timings=timer.seconds, clusters=clusters, members=members,
        skipped=skipped, extra=extra,
    )
    result.timings["total"] = round(sum(result.timings.values()), 3)
    if jit is not None and reduce.jit_seconds is not None:  # overlapped with embedding, not in total
        result.timings["umap_jit_background"] = reduce.jit_seconds
    if save:
        result.clustering_id = save_clustering(store, _header(result), result.to_dict(members=True)["clusters"],
                                               [m.__dict__ for m in members])
    return result


def _cluster_group(X: np.ndarray, seeds: list[int], n_components: int, min_cluster_size: int | None,
                   timer: Timer) -> tuple[np.ndarray, list[np.ndarray], str, dict[str, Any]]:
    """One group's clustering space and its partition for every seed (first = the result)."""
    t = time.perf_counter()
    if len(X) < MIN_POINTS:  # too few for UMAP/HDBSCAN: the group is one cluster
        zeros = np.zeros(len(X), dtype=int)
        return pca(X, n_components), [zeros for _ in seeds], "single", {"n": len(X), "min_points": MIN_POINTS}
    knn = knn_graph(X)
    t = timer.add("knn", t)
    warm_up()  # normally done already by the thread started in cluster_run
    t = timer.add("umap_jit_wait", t)
    sets, Z0, part0 = [], None, None
    for s in seeds:
        Z = umap_fit(X, n_components, s, knn)
        t = timer.add("umap_fit", t)
        part = partition(Z, s, min_cluster_size)
        t = timer.add("hdbscan", t)
        if Z0 is None:
            Z0, part0 = Z, part
        sets.append(part.labels)
    assert Z0 is not None and part0 is not None
    return Z0, sets, part0.method, {"n": len(X), **part0.params}


def load_clusters(store: RunStore, run_ref: str, clustering_id: str | None = None) -> ClusterResult | None:
    """The run's latest stored clustering (or the given one); None when it has none."""
    run_id = store.get_run(run_ref).run_id
    rows = load_clustering(store, run_id=run_id, clustering_id=clustering_id)
    return None if rows is None else ClusterResult.from_rows(*rows)


def select_samples(samples: list[dict[str, Any]], tasks: Sequence[str] | None, run_id: str) -> list[dict[str, Any]]:
    if not tasks:
        return samples
    wanted = set(tasks)
    keep = [s for s in samples if {s["entry"], s["task"], family_of(s["entry"], s["task"])} & wanted]
    if not keep:
        have = sorted({s["entry"] for s in samples})
        raise EvalkitError(f"run {run_id}: no samples for tasks {', '.join(sorted(wanted))} (entries: {', '.join(have) or 'none'})")
    return keep


def summarise(items: list[Item], labels: np.ndarray, dist: np.ndarray, xy: np.ndarray, n_examples: int = 5
              ) -> tuple[list[Cluster], list[Member]]:
    """Per-cluster size, failures, error rate, lift, mixes, labels and central failing examples.

    ``base_rate`` is the error rate the cluster would have if each member failed at its entry's
    overall rate (sum over entries of share x entry error rate), so lift = error_rate / base_rate
    is > 1 where the cluster fails more than its tasks usually do.
    """
    failed = np.array([it.failed for it in items], dtype=bool)
    entries = np.array([it.entry for it in items])
    base = {e: float(failed[entries == e].mean()) for e in sorted(set(entries.tolist()))}
    ids = sorted(set(labels.tolist()), key=lambda c: (c < 0, abs(c)))
    terms = ctfidf(class_docs([it.label_text or it.text for it in items], failed.tolist(), labels.tolist()))
    clusters = []
    for c in ids:
        idx = np.nonzero(labels == c)[0]
        size, fails = len(idx), int(failed[idx].sum())
        entry_mix = Counter(items[i].entry for i in idx)
        mix = dict(sorted(Counter(items[i].task for i in idx).items(), key=lambda kv: (-kv[1], kv[0])))
        base_rate = sum(n * base[e] for e, n in entry_mix.items()) / size
        rate = fails / size
        tag_mix: dict[str, dict[str, int]] = {}
        for i in idx:
            for tag, tag_failed in items[i].tags.items():
                slot = tag_mix.setdefault(tag, {"n": 0, "failed": 0})
                slot["n"] += 1
                slot["failed"] += int(bool(items[i].failed if tag_failed is None else tag_failed))
        central = sorted((i for i in idx if failed[i]), key=lambda i: (dist[i], i))[:n_examples]
        label = label_for(terms[c], entry_mix)
        ti = typical_member(idx.tolist(), dist, failed)
        typical = None if ti is None else {"entry": items[ti].entry, "task": items[ti].task, "doc_id": items[ti].doc_id,
                                           "failed": bool(failed[ti]), "text": items[ti].text[:400]}
        clusters.append(Cluster(
            cluster_id=int(c), label=("outliers · " + label) if c < 0 else label, terms=terms[c], size=size,
            failures=fails, error_rate=round(rate, 6), base_rate=round(base_rate, 6),
            lift=round(rate / base_rate, 4) if base_rate > 0 else None, task_mix=mix,
            tag_mix=dict(sorted(tag_mix.items(), key=lambda kv: (-kv[1]["n"], kv[0]))),
            examples=[{"entry": items[i].entry, "task": items[i].task, "doc_id": items[i].doc_id,
                       "distance": round(float(dist[i]), 4)} for i in central],
            typical=typical,
        ))
    members = [Member(it.entry, it.task, it.doc_id, int(labels[i]), bool(it.failed), round(float(xy[i, 0]), 5),
                      round(float(xy[i, 1]), 5), round(float(dist[i]), 5)) for i, it in enumerate(items)]
    return clusters, members


def _header(r: ClusterResult) -> dict[str, Any]:
    return {"run_id": r.run_id, "seed": r.seed, "tasks": r.tasks, "method": r.method, "params": r.params,
            "stability": r.stability, "stability_pairs": r.stability_pairs, "n_samples": r.n_samples,
            "n_failures": r.n_failures, "timings": r.timings, "extra": r.extra}
